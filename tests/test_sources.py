"""Model sources: presets, TOML files, factories; caching; bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from simplan.sources import load_model, preset_names
from tests.helpers import ROOT, assert_one_line_error, run_cli

GOOD_TOML = """\
[transformer]
hidden_size = 256
num_layers = 3
num_heads = 4
seq_len = 128
vocab_size = 1000
"""


def test_presets_listed() -> None:
    names = preset_names()
    for expected in (
        "mlp",
        "gpt3-125m",
        "gpt3-175b",
        "llama3-8b",
        "llama3-70b",
        "resnet50",
        "mtl-vision",
    ):
        assert expected in names


def test_toml_model_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(GOOD_TOML + 'activation = "swiglu"\nffn_hidden_size = 512\nnum_kv_heads = 2\n')
    g = load_model(str(path))
    assert g.name == "tiny" and len(g.layers) == 5 and g.seq_len == 128
    assert g.layer("blocks.0").attrs["num_kv_heads"] == 2


def test_factory_model(tmp_path: Path) -> None:
    path = tmp_path / "net.py"
    path.write_text(
        textwrap.dedent("""
        import torch
        from torch import nn
        def make():
            return nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 3)), torch.randn(8, 10)
    """)
    )
    g = load_model(f"{path}:make")
    assert g.fwd_flops == 2 * (10 * 20 + 20 * 3)  # per sample, the example batch was 8


def test_cached_graph_loads_without_torch(tmp_path: Path) -> None:
    env = dict(os.environ, SIMPLAN_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    code = "import simplan, sys; g = simplan.load_model('gpt3-350m'); print('torch' in sys.modules)"
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert first.stdout.strip() == "True" and second.stdout.strip() == "False", second.stderr


def test_gpt3_175b_counted_whole_in_bounded_memory(tmp_path: Path) -> None:
    env = dict(os.environ, SIMPLAN_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    code = textwrap.dedent("""
        import resource, simplan
        g = simplan.load_model('gpt3-175b', use_cache=False)
        print(g.params, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    params, rss_kib = (int(x) for x in out.stdout.split())
    assert abs(params - 174.6e9) / 174.6e9 < 0.001
    assert rss_kib * 1024 < 2e9


def test_unknown_preset() -> None:
    assert_one_line_error(run_cli("profile", "gpt5-1t"), "unknown model 'gpt5-1t'", "preset")


def test_malformed_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[transformer\nhidden_size = 3\n")
    assert_one_line_error(run_cli("profile", str(bad), "--device", "h200"), "malformed TOML")


def test_missing_field(tmp_path: Path) -> None:
    bad = tmp_path / "short.toml"
    bad.write_text(GOOD_TOML.replace("num_heads = 4\n", ""))
    assert_one_line_error(run_cli("profile", str(bad), "--device", "h200"), "num_heads")


def test_bad_field_value(tmp_path: Path) -> None:
    bad = tmp_path / "odd.toml"
    bad.write_text(GOOD_TOML.replace("num_heads = 4", "num_heads = 3"))
    assert_one_line_error(run_cli("profile", str(bad), "--device", "h200"), "divisible")


def test_factory_that_raises(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def build():\n    raise RuntimeError('no weights here')\n")
    assert_one_line_error(
        run_cli("profile", f"{path}:build"), "raised RuntimeError", "no weights here"
    )


def test_missing_factory(tmp_path: Path) -> None:
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    assert_one_line_error(run_cli("profile", f"{path}:build"), "has no function 'build'")


def test_unknown_dtype() -> None:
    assert_one_line_error(
        run_cli("profile", "mlp", "--dtype", "fp8"), "argument --dtype: invalid choice: 'fp8'"
    )


def test_unknown_device() -> None:
    assert_one_line_error(run_cli("profile", "mlp", "--device", "tpu9"), "unknown device")
