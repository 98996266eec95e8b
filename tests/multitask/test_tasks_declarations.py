"""Task declarations: the split into trunk and heads, the presets, and bad declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.sources import load_model
from simplan.tasks import TaskSpec, load_tasks, parse_tasks
from tests.helpers import assert_one_line_error, run_cli
from tests.multitask.graphs import dag, layer

TWO = [
    {"name": "a", "outputs": ["a1"], "loss": "cross_entropy"},
    {"name": "b", "outputs": ["b2"], "loss": "detection", "weight": 0.5, "batch_share": 0.25},
]


def _graph() -> ModelGraph:
    return dag(["t0", "t1"], {"a": ["a1"], "b": ["b1", "b2"]})


def test_split_into_trunk_and_heads() -> None:
    tasks = parse_tasks(TWO, _graph())
    assert tasks.trunk == ("t0", "t1")
    assert dict(tasks.heads) == {"a": ("a1",), "b": ("b1", "b2")}
    assert tasks.task("b") == TaskSpec(
        name="b", outputs=("b2",), loss="detection", weight=0.5, batch_share=0.25
    )


def test_mtl_vision_declares_classify_and_detect() -> None:
    g = load_model("mtl-vision")
    tasks = load_tasks(g)
    assert tasks is not None
    assert tasks.names == ("classify", "detect")
    assert tasks.trunk == ("stem", *(f"trunk.{i}" for i in range(13)))
    assert dict(tasks.heads) == {
        "classify": ("cls_head",),
        "detect": ("det_neck", "det_box", "det_cls"),
    }
    assert g.meta["outputs"] == ["cls_head", "det_box", "det_cls"]
    assert load_tasks(load_model("mlp")) is None


def test_mtl_text_heads_differ_in_cost() -> None:
    g = load_model("mtl-text")
    tasks = load_tasks(g)
    assert tasks is not None and tasks.names == ("lm", "classify", "tag")
    assert dict(tasks.heads)["tag"] == ("tag_blocks.0", "tag_blocks.1", "tag_out")
    cost = {t: sum(g.layer(n).fwd_flops for n in dict(tasks.heads)[t]) for t in tasks.names}
    assert cost["lm"] > cost["tag"] > 1000 * cost["classify"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"outputs": ["nope"]}, "does not have"),
        ({"loss": ""}, "has no loss"),
        ({"loss": "hinge"}, "loss 'hinge' is unknown"),
        ({"weight": -1}, "weight must be a number >= 0"),
        ({"batch_share": 0}, "batch_share must be in (0, 1]"),
        ({"outputs": ["b2"]}, "claimed by two tasks"),
        ({"outputs": ["t1"]}, "also feeds task"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_bad_declarations_are_one_line_errors(change: dict, needle: str) -> None:
    bad = [{**TWO[0], **change}, TWO[1]]
    with pytest.raises(SimplanError) as err:
        parse_tasks(bad, _graph())
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_head_not_reachable_from_trunk() -> None:
    g = dag(["t0", "t1"], {"a": ["a1"], "b": ["b1", "b2"], "c": ["c1"]})
    # c1 fed by nothing: task c's head hangs off the graph, not the trunk
    cut = ModelGraph(**{**g.__dict__, "edges": tuple(e for e in g.edges if e != ("t1", "c1"))})
    three = [*TWO, {"name": "c", "outputs": ["c1"], "loss": "mse"}]
    with pytest.raises(SimplanError, match=r"head of task 'c' .* not reachable from the trunk"):
        parse_tasks(three, cut)


def test_layer_used_by_no_task() -> None:
    g = _graph()
    extra = ModelGraph(
        **{**g.__dict__, "layers": (*g.layers, layer("z")), "edges": (*g.edges, ("t1", "z"))}
    )
    with pytest.raises(SimplanError, match="'z' feeds no task's output"):
        parse_tasks(TWO, extra)


BAD_FILE = """
import torch
from torch import nn

TASKS = [
    {"name": "a", "outputs": ["head_a"], "loss": "mse"},
    {"name": "b", "outputs": ["head_b"], "loss": "mse", "weight": -2},
]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(8, 8)
        self.head_a = nn.Linear(8, 1)
        self.head_b = nn.Linear(8, 2)

    def forward(self, x):
        h = self.trunk(x)
        return self.head_a(h), self.head_b(h)


def build():
    return Net(), torch.randn(2, 8)
"""


def test_bad_task_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad_mtl.py"
    path.write_text(BAD_FILE)
    result = run_cli("profile", f"{path}:build", "--device", "h200")
    assert_one_line_error(result, "task b", "weight must be a number >= 0, got -2")
    path.write_text(BAD_FILE.replace(', "weight": -2', ""))
    result = run_cli("profile", f"{path}:build", "--device", "h200", "--json")
    assert result.returncode == 0, result.stderr


TINY_TOML = """
[transformer]
hidden_size = 64
num_layers = 2
num_heads = 4
seq_len = 32
vocab_size = 100
"""


def test_toml_task_tables_are_validated(tmp_path: Path) -> None:
    """[[task]] tables of a TOML model reach the same validation as a module's TASKS."""
    path = tmp_path / "tiny_tasks.toml"
    path.write_text(
        TINY_TOML
        + '[[task]]\nname = "lm"\noutputs = ["head"]\nloss = "cross_entropy"\n'
        + '[[task]]\nname = "aux"\noutputs = ["pooler"]\nloss = "mse"\n'
    )
    with pytest.raises(SimplanError, match="names output layer 'pooler', which the model"):
        load_model(str(path), use_cache=False)
    path.write_text(TINY_TOML + '[[task]]\nname = "lm"\noutputs = ["head"]\nloss = "mse"\n')
    with pytest.raises(SimplanError, match="at least two tasks"):
        load_model(str(path), use_cache=False)


@pytest.mark.parametrize("preset", ["mtl-vision", "mtl-vision-lvis", "mtl-text"])
def test_outputs_are_in_the_order_forward_returns_them(preset: str) -> None:
    """Each tensor forward returns has the size of the layer OUTPUTS names at its position
    (fp32, one sample, on the meta device)."""
    import torch

    from simplan.sources import factory_of, preset_names, resolve

    assert preset in preset_names()
    graph = load_model(preset)
    with torch.device("meta"):
        model, inputs = factory_of(resolve(preset))(batch=1)
        outs = model(*inputs)
    assert len(outs) == len(graph.meta["outputs"])
    for out, name in zip(outs, graph.meta["outputs"], strict=True):
        assert out.numel() * 4 == graph.layer(name).output_bytes, name
