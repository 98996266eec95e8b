"""The RetinaNet head over LVIS (mtl-vision-lvis): its size counted by hand, the head-placement
planner putting it on devices of its own where its gradient all-reduce is dear (8 A100s on PCIe
at RetinaNet's published batch, 16 images on 8 GPUs), and the placement's round trip through a
plan file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simplan.sources import describe, load_model, resolve
from simplan.tasks import load_tasks
from tests.helpers import run_main

TRUNK_CHANNELS, GRID, BF16_BYTES = 1024, 14, 2  # ResNet-50's stage 3 output at 224 px: stride 16
WIDTH, ANCHORS, CLASSES = 256, 9, 1203


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def test_retinanet_head_counted_by_hand() -> None:
    graph = load_model("mtl-vision-lvis", dtype="bf16")
    tasks = load_tasks(graph)
    assert tasks is not None
    heads = {t: sum(graph.layer(n).params for n in tasks.heads[t]) for t in tasks.names}
    subnet = 4 * _conv(WIDTH, WIDTH, 3)
    neck = _conv(TRUNK_CHANNELS, WIDTH, 1) + _conv(WIDTH, WIDTH, 3)
    detect = neck + 2 * subnet + _conv(WIDTH, 4 * ANCHORS, 3) + _conv(WIDTH, CLASSES * ANCHORS, 3)
    assert heads["detect"] == detect  # 30,612,335
    plain = load_model("mtl-vision", dtype="bf16")
    plain_tasks = load_tasks(plain)
    assert plain_tasks is not None and plain_tasks.trunk == tasks.trunk
    trunk = sum(graph.layer(n).params for n in tasks.trunk)
    assert trunk == sum(plain.layer(n).params for n in plain_tasks.trunk)
    assert heads["detect"] > 3 * trunk
    assert graph.layer(tasks.trunk[-1]).output_bytes == TRUNK_CHANNELS * GRID * GRID * BF16_BYTES
    text = describe(resolve("mtl-vision-lvis"))  # what `simplan models` prints
    assert "RetinaNet" in text and "LVIS 1,203 classes" in text


PLAN = ("plan", "--model", "mtl-vision-lvis", "--cluster", "pcie-a100", "--global-batch", "16")


def test_plan_puts_the_retinanet_head_alone_and_beats_replicated(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Replicated, the head's 30.6 M parameters join the all-reduce over PCIe every step; the
    planner puts it on a group of its own, the simulated step is shorter, and --explain says
    what was traded: that all-reduce against the features sent (batch x 1024 x 14 x 14 x 2
    bytes each way). The plan file carries the placement and simulate --plan reads it back."""
    out_dir = tmp_path / "plan"
    code, out, err = run_main(capsys, *PLAN, "--json", "--out", str(out_dir))
    assert code == 0, err
    heads = json.loads(out)["task_heads"]
    best = heads["candidates"][heads["chosen"]]
    detect = best["placement"]["heads"]["detect"]
    assert detect != "replicated"
    assert not set(detect) & set(best["placement"]["trunk_devices"])
    assert best["step_time_s"] < heads["candidates"]["replicated"]["step_time_s"]
    cut = next(c for c in best["cut"] if c["task"] == "detect")
    assert cut["sample_bytes"] == TRUNK_CHANNELS * GRID * GRID * BF16_BYTES  # 401,408
    each_way = cut["slices_each_way"] * cut["slice_bytes"]
    assert each_way == pytest.approx(16 * TRUNK_CHANNELS * GRID * GRID * BF16_BYTES)
    why = "\n".join(heads["why"])
    assert "detect alone trades its gradient sync for its features" in why
    assert "30.6 M parameters leave replicated's all-reduce over 8 devices" in why
    assert "0.401 MB of features a sample x 16 samples = 6.42 MB go each way" in why

    written = json.loads((out_dir / "plan.json").read_text())["task_heads"]
    assert written["heads"] == best["placement"]["heads"]
    assert written["global_batch"] == 16 and written["chosen"] == heads["chosen"]
    plans = json.loads((out_dir / "plans.json").read_text())["plans"]
    assert plans[0]["task_heads"] == written
    code, out, err = run_main(capsys, "simulate", "--plan", str(out_dir / "plan.json"), "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["placement"]["heads"] == best["placement"]["heads"]
    assert again["step_time_s"] == pytest.approx(written["step_time_s"], rel=1e-9)


def test_explain_prints_both_steps(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, *PLAN, "--explain")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.startswith("replicated ") and " ms " in line for line in lines)
    over = [line for line in lines if "over replicated (" in line]
    assert over and "detect alone trades its gradient sync" in over[0]


def _damaged(good: Path, tmp_path: Path, change: dict[str, object]) -> Path:
    doc = json.loads(good.read_text())
    doc["task_heads"].update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    return path


def test_simulate_refuses_a_bad_head_placement_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_main(capsys, *PLAN, "--out", str(tmp_path / "plan"))
    assert code == 0, err
    good = tmp_path / "plan" / "plan.json"
    # detect on devices 4 and 5, classify replicated: the plan's other devices run the trunk
    trunk = len(json.loads(good.read_text())["task_heads"]["devices"]) - 2
    for change, message in (
        ({"heads": {"segment": [1]}}, "no task 'segment'"),
        ({"devices": [0, 1, 2, 3, 4, 5, 8]}, "beyond the cluster's 8 devices"),
        ({"heads": {"detect": "alone"}}, "detect"),
        ({"heads": {"detect": []}}, "detect"),
        ({"heads": {"classify": [1, 2], "detect": [2, 3]}}, "partly overlap"),
        ({"global_batch": 0}, "global_batch"),
        (
            {"heads": {"classify": "replicated", "detect": [4, 5]}, "global_batch": trunk + 1},
            f"does not split over the {trunk} trunk devices",
        ),
    ):
        path = _damaged(good, tmp_path, change)
        code, _, err = run_main(capsys, "simulate", "--plan", str(path))
        assert code == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1
    code, _, err = run_main(capsys, "simulate", "--plan", str(good), "--framework", "megatron")
    assert code == 2 and "task_heads does not combine with --framework" in err
