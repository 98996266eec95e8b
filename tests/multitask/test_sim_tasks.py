"""The multi-task step: branches on different devices overlap, the trunk's backward waits for
every task's gradient; hand-checked on a synthetic DAG and on mtl-vision."""

from __future__ import annotations

import pytest

from simplan.errors import SimplanError
from simplan.parallel import ParallelConfig
from simplan.profiles import LayerTiming, Profile
from simplan.sim.multitask import predict_task_step, simulate_tasks
from simplan.sim.task_engine import HeadTimes, StepTimes, run_task_step
from simplan.sim.task_placement import named_placement, parse_placement
from simplan.sources import load_model
from simplan.tasks import parse_tasks
from simplan.validate import local_cluster
from tests.multitask.graphs import dag

MS = 1e-3


def _times(a_devices: tuple[int, ...], fwd_only: bool, blocking: bool = False) -> StepTimes:
    """A 2 ms trunk on device 0, branch a (3 ms) and branch b (5 ms) on device 1; backward
    twice the forward unless fwd_only; free transfers."""
    k = 0.0 if fwd_only else 2.0
    return StepTimes(
        trunk_devices=(0,),
        trunk_fwd_s=2 * MS,
        trunk_bwd_s=2 * k * MS,
        heads=(
            HeadTimes(task="a", devices=a_devices, fwd_s=3 * MS, bwd_s=3 * k * MS),
            HeadTimes(task="b", devices=(1,), fwd_s=5 * MS, bwd_s=5 * k * MS),
        ),
        comm_blocks_compute=blocking,
    )


@pytest.mark.parametrize("a_devices", [(), (2,)])
def test_forward_branches_overlap(a_devices: tuple[int, ...]) -> None:
    """2 ms trunk, then 3 ms and 5 ms branches side by side: 2 + max(3, 5) = 7 ms, not 10."""
    run = run_task_step(_times(a_devices, fwd_only=True))
    assert run.step_s == pytest.approx(7 * MS)
    b = next(t for t in run.timelines if t.task == "b")
    assert (b.fwd_start_s, b.fwd_end_s) == pytest.approx((2 * MS, 7 * MS))


@pytest.mark.parametrize("blocking", [False, True])
def test_trunk_backward_waits_for_every_gradient(blocking: bool) -> None:
    """Device 0: trunk 2, a fwd 3, a bwd 6 (ends at 11); device 1: b fwd 5 + bwd 10 (ends at
    17). The trunk's backward (4) starts at 17, after b's gradient: 21 ms, not the 30 of one
    chain (2 + 3 + 5 + 6 + 10 + 4)."""
    run = run_task_step(_times((), fwd_only=False, blocking=blocking))
    assert run.step_s == pytest.approx(21 * MS)
    trunk_bwd = next(e for e in run.events if e[2] == "trunk bwd")
    assert trunk_bwd[4] == pytest.approx(17 * MS)
    serial = run_task_step(
        StepTimes(
            trunk_devices=(0,),
            trunk_fwd_s=2 * MS,
            trunk_bwd_s=4 * MS,
            heads=(
                HeadTimes(task="a", devices=(), fwd_s=3 * MS, bwd_s=6 * MS),
                HeadTimes(task="b", devices=(), fwd_s=5 * MS, bwd_s=10 * MS),
            ),
        )
    )
    assert serial.step_s == pytest.approx(30 * MS)


TASKS = [
    {"name": "a", "outputs": ["a1"], "loss": "cross_entropy"},
    {"name": "b", "outputs": ["b1"], "loss": "mse"},
]


def _profiled(batch: int) -> tuple:
    graph = dag(["t"], {"a": ["a1"], "b": ["b1"]})
    tasks = parse_tasks(TASKS, graph)
    times = {"t": (2, 4), "a1": (3, 6), "b1": (5, 10)}
    profile = Profile(
        model=graph,
        device="cpu",
        device_name="test cpu",
        dtype="fp32",
        micro_batch=batch,
        seq_len=0,
        timings={
            n: LayerTiming(fwd_s=f * MS, bwd_s=b * MS, repeats=3) for n, (f, b) in times.items()
        },
    )
    return graph, tasks, profile


def test_simulate_tasks_uses_measured_layer_times_and_the_topology() -> None:
    """Through the cost model (a profile at the step's samples) and the 2-CPU topology: the
    step is the hand-checked 21 ms plus the two transfers of the cut and the optimizer."""
    graph, tasks, profile = _profiled(4)
    cluster = local_cluster(2)
    config = ParallelConfig(dp=2, micro_batch=1, global_batch=4, dtype="fp32")
    placement = parse_placement("b=1", graph, tasks, (0, 1))
    result = simulate_tasks(graph, tasks, placement, cluster, config, profile=profile)
    (cut,) = result.cut
    assert cut["slice_bytes"] == 4 * 1e6  # 4 samples of the trunk's 1 MB output
    assert cut["slice_s"] == pytest.approx(cluster.transfer_time(0, 1, 4e6), rel=0.2)
    expected = 21 * MS + 2 * cut["slice_s"] + result.trunk["optimizer_s"]
    assert result.step_s == pytest.approx(expected)
    assert result.cost_sources == {"measured": 3}
    replicated = named_placement("replicated", graph, tasks, (0, 1))
    assert replicated.trunk_devices == (0, 1)


def test_mtl_vision_overlap_is_what_the_dag_allows() -> None:
    """Detection on rank 1, the trunk and classification on rank 0 (CPU: transfers hold both
    ranks): the step is the serialised chain less the overlap of the two heads,
    min(classify fwd + bwd, detect fwd + bwd)."""
    result = predict_task_step("mtl-vision", "task-parallel", 2, local_cluster(2), 8)
    assert result.placement["heads"] == {"classify": "replicated", "detect": [1]}
    heads = {t["task"]: t["fwd_s"] + t["bwd_s"] for t in result.tasks}
    (cut,) = result.cut
    trunk = result.trunk
    serial = (trunk["fwd_s"] + trunk["bwd_s"] + trunk["optimizer_s"] + 2 * cut["slice_s"]) + sum(
        heads.values()
    )
    overlap = min(heads.values())
    assert result.step_s == pytest.approx(serial - overlap)
    assert overlap > 0


def test_bad_placements_are_one_line_errors() -> None:
    graph = load_model("mtl-vision")
    tasks = parse_tasks(graph.meta["tasks"], graph)
    for text, needle in [
        ("detect=0-1", "leave at least one for the trunk"),
        ("detect=5", "ranks must lie in 0..1"),
        ("segment=1", "no task 'segment'"),
        ("detect=x", "give ranks as N or A-B"),
        ("sideways", "unknown task placement 'sideways'"),
    ]:
        with pytest.raises(SimplanError, match=None) as err:
            parse_placement(text, graph, tasks, (0, 1))
        assert needle in str(err.value)
    with pytest.raises(SimplanError, match="task-parallel needs at least 2 ranks"):
        named_placement("task-parallel", graph, tasks, (0,))


@pytest.mark.parametrize(("cluster", "batch"), [("localhost-cpu", 8), ("dgx-h100", 256)])
def test_replicated_agrees_with_the_data_parallel_simulator(cluster: str, batch: int) -> None:
    """Everything replicated is plain data parallelism: the DAG simulation and the chain
    simulator (simplan.sim.run, dp over every device) price the same step within 2%."""
    from simplan.sim.run import simulate
    from simplan.topology import load_cluster

    c = local_cluster(2) if cluster == "localhost-cpu" else load_cluster(cluster)
    dtype = "fp32" if cluster == "localhost-cpu" else "bf16"
    graph = load_model("mtl-vision", dtype=dtype)
    tasks = parse_tasks(graph.meta["tasks"], graph)
    n = c.num_devices
    config = ParallelConfig(dp=n, micro_batch=batch // n, global_batch=batch, dtype=dtype)
    chain = simulate(graph, c, config, record=False)
    placement = named_placement("replicated", graph, tasks, tuple(range(n)))
    dag_step = simulate_tasks(graph, tasks, placement, c, config, record=False)
    assert dag_step.step_s == pytest.approx(chain.step_time_s, rel=0.02)


def test_predict_from_a_profile_without_task_declarations() -> None:
    """A profile measured before the loader kept tasks: the declarations come from the model."""
    import dataclasses

    graph = load_model("mtl-vision", dtype="fp32")
    meta = {k: v for k, v in graph.meta.items() if k not in ("tasks", "outputs")}
    bare = dataclasses.replace(graph, meta=meta)
    timing = LayerTiming(fwd_s=1 * MS, bwd_s=2 * MS, repeats=3)
    profile = Profile(
        model=bare,
        device="cpu",
        device_name="test cpu",
        dtype="fp32",
        micro_batch=8,
        seq_len=0,
        timings={layer.identity: timing for layer in graph.layers},
    )
    result = predict_task_step("mtl-vision", "replicated", 2, local_cluster(2), 8, profile=profile)
    assert result.cost_sources == {"measured-scaled": 18}
    assert {t["task"] for t in result.tasks} == {"classify", "detect"}


def test_memory_per_device_by_hand() -> None:
    """fp32 Adam keeps 16 bytes a parameter (weights, gradients, two moments); activations
    are kept per sample. Trunk device: t and a1 (1000 parameters each), a1's 4 samples of 1 MB
    (t, the first layer, saves only its input: the data, counted with the batch, not here).
    Head device: b1's 1000 parameters and 4 samples of 1 MB."""
    graph, tasks, profile = _profiled(4)
    config = ParallelConfig(dp=2, micro_batch=1, global_batch=4, dtype="fp32")
    placement = parse_placement("b=1", graph, tasks, (0, 1))
    result = simulate_tasks(graph, tasks, placement, local_cluster(2), config, profile=profile)
    peak = {d["device"]: d["peak_memory_bytes"] for d in result.devices}
    assert peak == {0: pytest.approx(2000 * 16 + 4e6), 1: pytest.approx(1000 * 16 + 4e6)}
    assert result.fits


def test_two_heads_on_one_device_take_turns() -> None:
    """a and b both on device 1: it runs them one after the other (3 + 5 forward, 6 + 10
    backward after the trunk's 2 ms forward); the trunk's backward (4) follows: 30 ms plus the
    transfers and the optimizers, the same work as one chain on one device."""
    graph, tasks, profile = _profiled(4)
    config = ParallelConfig(dp=2, micro_batch=1, global_batch=4, dtype="fp32")
    placement = parse_placement("a=1,b=1", graph, tasks, (0, 1))
    result = simulate_tasks(graph, tasks, placement, local_cluster(2), config, profile=profile)
    roles = {d["device"]: d["role"] for d in result.devices}
    assert roles == {0: "trunk", 1: "head a+b"}
    assert result.step_s >= 30 * MS
    busy = {d["device"]: d["compute_s"] for d in result.devices}
    assert busy[1] == pytest.approx(24 * MS, rel=0.01)  # 3 + 6 + 5 + 10, optimizers tiny
