"""`simplan run --plan`: bad plans are refused on one line with exit 2 before any rank starts;
a run prints its losses (one JSON document with --json); --reference exits 4 when the losses
differ from the single-process run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simplan.cli import main
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile, write_plan
from tests.helpers import assert_one_line_error, run_cli
from tests.plan_files import TINY_MODEL

UNTIED = TINY_MODEL + "tie_embeddings = false\n"


def _plan(directory: Path, model_text: str = UNTIED, **degrees: Any) -> Path:
    model = directory / "tiny.toml"
    model.write_text(model_text)
    config = ParallelConfig(micro_batch=1, global_batch=8, **degrees)
    ref = ClusterRef(spec="dgx-h100", nodes=1, gpus_per_node=config.world_size)
    return write_plan(PlanFile(model=str(model), cluster=ref, config=config), directory / "p.json")


@pytest.mark.parametrize(
    ("degrees", "model_text", "needle"),
    [
        ({"dp": 2, "tp": 2, "zero": 1}, UNTIED, "ZeRO-1 with tp has no exact torch equivalent"),
        ({"pp": 2}, TINY_MODEL, "set tie_embeddings = false"),
        ({"tp": 8}, UNTIED, "tp 8 must divide the attention heads"),
        ({"pp": 2, "stages": (0, 5, 4)}, UNTIED, "stages must be 3 increasing layer indices"),
        ({"pp": 8}, UNTIED, "exceeds the model's 6 layers"),
    ],
    ids=["zero1-tp", "tied-pp", "tp-heads", "bad-stages", "pp-too-deep"],
)
def test_plans_it_cannot_run(
    tmp_path: Path, degrees: dict[str, Any], model_text: str, needle: str
) -> None:
    result = run_cli("run", "--plan", str(_plan(tmp_path, model_text, **degrees)), timeout=120)
    assert_one_line_error(result, needle)


def test_a_file_that_is_no_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("{not json")
    assert_one_line_error(run_cli("run", "--plan", str(path)), "plan.json")
    assert_one_line_error(run_cli("run", "--plan", str(tmp_path / "none.json")), "none.json")


def test_steps_must_be_positive(tmp_path: Path) -> None:
    result = run_cli("run", "--plan", str(_plan(tmp_path, dp=2)), "--steps", "0")
    assert_one_line_error(result, "--steps")


@pytest.mark.distributed
def test_json_is_one_document_and_different_losses_exit_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import simplan.runtime.reference as reference

    plan = str(_plan(tmp_path, dp=2))
    assert main(["run", "--plan", plan, "--steps", "3", "--reference", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)  # refuses anything after the one document
    assert doc["reference"]["equal"] and len(doc["losses"]) == 3
    assert doc["strategy"] == "ddp" and doc["world_size"] == 2

    # a reference that is off by 1e-3 relative: the comparison says so, with exit 4
    real = reference.reference_losses
    monkeypatch.setattr(
        reference,
        "reference_losses",
        lambda *a, **k: tuple(x * (1 + 1e-3) for x in real(*a, **k)),
    )
    assert main(["run", "--plan", plan, "--steps", "2", "--reference"]) == 4
    out = capsys.readouterr().out
    assert "losses DIFFER to the single-process reference" in out
    assert "step 2: loss" in out and "step 3:" not in out  # not "median step 3x.x ms"
