"""The input layer: typed field specs (simplan.schema), strict file readers (simplan.io), and the
checks that meet a configuration with a model."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplan.errors import SimplanError
from simplan.io import read_json, read_json_object, read_text, read_toml
from simplan.schema import (
    Bool,
    Either,
    Float,
    Int,
    ListOf,
    MapOf,
    Nullable,
    Str,
    Table,
    first_non_finite,
    validate,
)

COUNT = Int(min=1, max=1000)


def _error(data: object, spec: object) -> str:
    with pytest.raises(SimplanError) as info:
        validate(data, spec, origin="f.toml", at="x")  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and message.startswith("f.toml: ")
    return message


@given(st.integers(min_value=1, max_value=1000))
def test_an_integer_in_range_is_itself(n: int) -> None:
    assert validate(n, COUNT, origin="f") == n
    assert validate(float(n), COUNT, origin="f") == n  # 2.0 is the integer 2
    assert type(validate(float(n), COUNT, origin="f")) is int


@given(st.integers().filter(lambda n: not 1 <= n <= 1000))
def test_an_integer_out_of_range_names_the_range(n: int) -> None:
    assert "an integer in [1, 1,000]" in _error(n, COUNT)


@given(st.floats().filter(lambda x: not (math.isfinite(x) and x.is_integer())))
def test_fractions_nan_and_inf_are_not_integers(x: float) -> None:
    _error(x, COUNT)


@pytest.mark.parametrize("value", [True, False, "2", b"2", [2], {"a": 2}, None])
def test_booleans_text_and_containers_are_not_integers(value: object) -> None:
    _error(value, COUNT)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_float_is_accepted_exactly_when_finite_and_in_range(x: float) -> None:
    spec = Float(min=0.0, min_open=True, max=10.0)
    if math.isfinite(x) and 0 < x <= 10:
        assert validate(x, spec, origin="f") == x
    else:
        assert "a finite number in (0, 10]" in _error(x, spec)


def test_an_integer_is_a_float_but_a_boolean_is_not() -> None:
    assert validate(3, Float(), origin="f") == 3.0
    _error(True, Float())
    _error(10**400, Float())  # too large for a float


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None, "yes"])
def test_only_true_and_false_are_booleans(value: object) -> None:
    assert "true or false" in _error(value, Bool())


def test_booleans_are_themselves() -> None:
    assert validate(False, Bool(), origin="f") is False


def test_choices_are_listed_when_refused() -> None:
    spec = Str(choices=("gelu", "swiglu"))
    assert validate("gelu", spec, origin="f") == "gelu"
    assert "one of 'gelu', 'swiglu', not 'relu'" in _error("relu", spec)
    _error(1, spec)
    _error("", Str(nonempty=True))


SHAPE = Table(
    {"hidden_size": COUNT, "num_layers": COUNT, "inner": Table({"rate": Float(min=0.0)})},
    required=("hidden_size",),
    fix="see the README",
)


def test_an_unknown_key_suggests_the_closest_known_one() -> None:
    message = _error({"hidden_size": 2, "num_layer": 3}, SHAPE)
    assert "unknown field x.num_layer; did you mean num_layers?" in message


def test_an_unknown_key_far_from_all_lists_the_known_ones() -> None:
    assert "known fields: hidden_size, inner, num_layers" in _error(
        {"hidden_size": 2, "colour": 1}, SHAPE
    )


def test_a_missing_key_says_what_to_add_and_the_fix() -> None:
    message = _error({"num_layers": 3}, SHAPE)
    assert "x.hidden_size is missing: add it (an integer in [1, 1,000]); see the README" in message


def test_nested_errors_name_the_whole_path() -> None:
    assert "x.inner.rate must be" in _error({"hidden_size": 1, "inner": {"rate": -1}}, SHAPE)
    lists = ListOf(Table({"n": COUNT}))
    assert "x[1].n must be" in _error([{"n": 1}, {"n": 0}], lists)
    assert "x.b must be" in _error({"a": 1, "b": "1"}, MapOf(COUNT))


def test_open_tables_keep_unknown_keys_and_still_check_known_ones() -> None:
    spec = Table({"n": COUNT}, open=True)
    assert validate({"n": 2, "extra": [1]}, spec, origin="f") == {"n": 2, "extra": [1]}
    _error({"n": "2"}, spec)


def test_nullable_and_either() -> None:
    assert validate(None, Nullable(COUNT), origin="f") is None
    device = Either((Str(nonempty=True), Table({"peak": Float()})))
    assert validate("h100", device, origin="f") == "h100"
    assert validate({"peak": 1}, device, origin="f") == {"peak": 1.0}
    assert "non-empty text or a table, not 5" in _error(5, device)


def test_list_lengths_are_bounded() -> None:
    assert "1 to 2 items, not 3" in _error([1, 1, 1], ListOf(COUNT, min_len=1, max_len=2))


@settings(max_examples=40)
@given(
    st.recursive(
        st.integers() | st.text() | st.floats(allow_nan=False, allow_infinity=False),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_first_non_finite_is_none_on_finite_data(data: object) -> None:
    assert first_non_finite(data) is None


def test_first_non_finite_names_the_path() -> None:
    assert first_non_finite({"a": [1, {"b": math.inf}]}) == "a[1].b"
    assert first_non_finite(math.nan) == "the document"


# ------------------------------------------------------------------ readers


def _read_error(fn: object, path: Path) -> str:
    with pytest.raises(SimplanError) as info:
        fn(path)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_text_must_be_utf8(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_bytes(b"name = 'caf\xe9'\n")
    assert "not UTF-8 text (byte 0xe9 at offset 11); save it as UTF-8" in _read_error(
        read_text, path
    )
    path.write_bytes(b"\x7fELF\x00\x01")
    assert "a binary file" in _read_error(read_text, path)
    assert "is a directory" in _read_error(read_text, tmp_path)
    assert "no such file" in _read_error(read_text, tmp_path / "absent.toml")
    path.write_bytes("\ufeffa = 1\n".encode())
    assert read_toml(path) == {"a": 1}  # a byte-order mark is dropped


def test_json_non_finite_numbers_are_refused_with_their_place(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"config": {"dp": NaN}}')
    assert "config.dp is NaN or infinite" in _read_error(read_json, path)
    path.write_text('{"x": ' + "9" * 5000 + "}")
    assert "invalid JSON value" in _read_error(read_json, path)
    path.write_text("[" * 50_000 + "]" * 50_000)
    assert "nested too deeply" in _read_error(read_json, path)


@pytest.mark.parametrize(("text", "kind"), [("[1]", "array"), ("3", "number"), ("null", "null")])
def test_json_that_must_be_an_object(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    assert f"holds a JSON {kind}, not an object" in _read_error(read_json_object, path)
    path.write_text(json.dumps({"a": 1}))
    assert read_json_object(path) == {"a": 1}


# ------------------------------------------------------------------ a config meets a model


def test_tp_must_divide_the_heads_and_kv_heads(tmp_path: Path) -> None:
    from simplan.parallel import ParallelConfig, check_config_for_model, tp_mismatch
    from simplan.sources import load_model

    path = tmp_path / "gqa.toml"
    path.write_text(
        "[transformer]\nhidden_size = 96\nnum_layers = 1\nnum_heads = 12\nnum_kv_heads = 4\n"
        "seq_len = 8\nvocab_size = 32\n"
    )
    graph = load_model(str(path))
    assert tp_mismatch(graph, 1) == tp_mismatch(graph, 2) == tp_mismatch(graph, 4) == ""
    assert "does not divide the 12 heads" in tp_mismatch(graph, 8)
    assert "does not divide the 4 KV heads" in tp_mismatch(graph, 6)  # 6 divides 12, not 4
    with pytest.raises(SimplanError, match="tp 3 does not divide the 4 KV heads"):
        check_config_for_model(ParallelConfig(tp=3, global_batch=1), graph)


def test_simulate_refuses_a_tp_that_does_not_divide_the_heads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simplan.cli import main

    path = tmp_path / "mha.toml"
    path.write_text(
        "[transformer]\nhidden_size = 64\nnum_layers = 1\nnum_heads = 16\nseq_len = 8\n"
        "vocab_size = 32\n"
    )
    argv = ["simulate", "--model", str(path), "--cluster", "dgx-h100", "--gpus-per-node", "3"]
    code = main([*argv, "--tp", "3", "--global-batch", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "tp 3 does not divide the 16 heads of layer blocks.0" in err
    assert main([*argv, "--tp", "1", "--global-batch", "3"]) == 0


def test_a_model_file_beyond_any_real_job_is_refused_with_the_limit(tmp_path: Path) -> None:
    from simplan.limits import MAX_PARAMS
    from simplan.sources import resolve, transformer_spec

    path = tmp_path / "huge.toml"
    path.write_text(
        "[transformer]\nhidden_size = 131072\nnum_layers = 512\nnum_heads = 128\n"
        "seq_len = 8\nvocab_size = 32\n"
    )
    with pytest.raises(SimplanError, match=re.escape(f"limit {MAX_PARAMS:.0e}")):
        transformer_spec(resolve(str(path)))


def test_a_bad_factory_timeout_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from simplan.sources import FACTORY_TIMEOUT_ENV, factory_timeout_s

    for bad in ("soon", "0", "-1", "nan", "inf"):
        monkeypatch.setenv(FACTORY_TIMEOUT_ENV, bad)
        with pytest.raises(SimplanError, match=FACTORY_TIMEOUT_ENV):
            factory_timeout_s()
    monkeypatch.setenv(FACTORY_TIMEOUT_ENV, "2.5")
    assert factory_timeout_s() == 2.5


def _spin() -> None:
    while True:
        pass


def test_the_time_bound_ends_a_loop_and_gives_back_an_outer_alarm() -> None:
    import signal
    import time

    from simplan.sources import run_user_code

    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        started = time.monotonic()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SIMPLAN_FACTORY_TIMEOUT_S", "0.2")
            with pytest.raises(SimplanError, match=r"spin\(\) did not return within 0.2 s"):
                run_user_code("spin()", _spin)
        assert time.monotonic() - started < 0.9  # ended by its own bound, not the outer alarm
        deadline = time.monotonic() + 5
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fired == [signal.SIGALRM]  # the outer alarm still went off, once
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
