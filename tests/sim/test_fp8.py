"""FP8 training: the linear GEMMs at the FP8 peak, the attention core in bf16, FP8 weight
copies in memory, one-line refusals."""

from __future__ import annotations

import pytest

from simplan.devices import get_device
from simplan.errors import SimplanError
from simplan.fp8 import FP8_GEMM_EFFICIENCY_RATIO, cast_elements, is_attention_core
from simplan.parallel import ParallelConfig
from simplan.sim.costs import layer_steps
from simplan.sim.run import simulate
from simplan.sources import load_model
from tests.sim.test_experts import moe_graph
from tests.sim.test_oracles import h100s


@pytest.fixture(scope="module")
def gpt():  # type: ignore[no-untyped-def]
    return load_model("gpt3-125m", seq_len=512, dtype="bf16")


def test_fp8_gemms_scale_by_the_peak_ratio(gpt) -> None:  # type: ignore[no-untyped-def]
    # compute-bound device on the roofline (no tile model): memory and launches cost nothing,
    # so a GEMM costs flops / peak
    dev = get_device("h100-sxm").with_(
        memory_bandwidth_Bps=1e30, kernel_overhead_s=1e-15, gemm_tiles=()
    )
    b = 4
    base = ParallelConfig(micro_batch=b, global_batch=b)
    bf16 = layer_steps(gpt, dev, base)
    fp8 = layer_steps(gpt, dev, base.replace(fp8="delayed"))
    block = next(i for i, layer in enumerate(gpt.layers) if layer.kind == "transformer_block")
    layer = gpt.layers[block]
    s, h = 512, 768
    attention = 4.0 * s * s * h  # the fused attention core, forward, per sample
    linear = 2.0 * s * h * (3 * h + h + 4 * h + 4 * h)  # QKV, out, FC1, FC2
    assert layer.fwd_ops.gemm_flops == pytest.approx(attention + linear)
    rate = dev.matrix_efficiency
    # the fused attention kernel runs at the stack's attention share of the matrix rate
    core_s = b * attention / (989.5e12 * rate * dev.stack_attention_efficiency)
    bf16_s = core_s + b * linear / (989.5e12 * rate)
    fp8_s = core_s + b * linear / (1979e12 * rate * FP8_GEMM_EFFICIENCY_RATIO)
    assert bf16[block].fwd_s == pytest.approx(bf16_s, rel=1e-6)
    assert fp8[block].fwd_s == pytest.approx(fp8_s, rel=1e-6)
    # the embedding and the output head stay in bf16
    assert fp8[0].fwd_s == bf16[0].fwd_s
    assert fp8[-1].fwd_s == bf16[-1].fwd_s


def test_attention_core_is_told_from_projections(gpt) -> None:  # type: ignore[no-untyped-def]
    layer = next(x for x in gpt.layers if x.kind == "transformer_block")
    core = [g for g in layer.fwd_ops.gemms if is_attention_core(layer, g)]
    assert [g[0] for g in core] == [4.0 * 512 * 512 * 768]
    core_bwd = [g for g in layer.bwd_ops.gemms if is_attention_core(layer, g)]
    assert sum(g[0] * g[2] for g in core_bwd) == 10.0 * 512 * 512 * 768


def test_fp8_step_is_faster_and_weights_gain_fp8_copies(gpt) -> None:  # type: ignore[no-untyped-def]
    cluster = h100s(1)
    base = ParallelConfig(micro_batch=4, global_batch=8)
    # launches at the device model's prior (5 us), not the fitted floor, so the GEMMs dominate
    dev = get_device("h100-sxm").with_(kernel_overhead_s=5e-6)
    bf16 = simulate(gpt, cluster, base, record=False, device=dev)
    fp8 = simulate(gpt, cluster, base.replace(fp8="delayed"), record=False, device=dev)
    assert fp8.step_time_s < bf16.step_time_s
    block_params = sum(x.params for x in gpt.layers if x.kind == "transformer_block")
    # bf16 weights as before, plus TE's FP8 weight and its transpose: 2 bytes per FP8 parameter
    extra = fp8.devices[0].memory["weights"] - bf16.devices[0].memory["weights"]
    assert extra == pytest.approx(2.0 * block_params)
    # the inputs the linear GEMMs save for wgrad are kept in 1 byte instead of 2
    s, h, blocks = 512, 768, 12
    saved = 4 * blocks * s * (3 * h + 4 * h)
    assert bf16.devices[0].saved_activation_bytes - fp8.devices[0].saved_activation_bytes == (
        pytest.approx(saved)
    )


def test_fp8_refused_without_fp8_tensor_cores(gpt) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SimplanError, match="a100-80gb has no FP8 tensor cores"):
        layer_steps(gpt, get_device("a100-80gb"), ParallelConfig(fp8="current"))


def test_fp8_needs_mixed_precision() -> None:
    with pytest.raises(SimplanError, match=r"--fp8 block .* use --dtype bf16"):
        ParallelConfig(fp8="block", dtype="fp32")
    with pytest.raises(SimplanError, match="fp8 must be one of"):
        ParallelConfig(fp8="e5m2")


def test_an_inline_device_has_fp8_when_its_spec_says_so(gpt) -> None:  # type: ignore[no-untyped-def]
    from simplan.topology import load_cluster

    device = {"name": "my-gpu", "peak_tflops": 400, "memory_gib": 96,
              "memory_bandwidth_gbps": 3000}  # fmt: skip
    spec = {"node_group": [{"devices_per_node": 1, "device": {**device, "peak_fp8_tflops": 800},
                            "fabric": {"kind": "loopback", "bandwidth_GBps": 450}}]}  # fmt: skip
    config = ParallelConfig(fp8="current")
    assert load_cluster(spec).device_model(0).fp8_flops == 800e12
    assert layer_steps(gpt, load_cluster(spec).device_model(0), config)
    spec["node_group"][0]["device"] = device
    with pytest.raises(SimplanError, match="my-gpu has no FP8 tensor cores"):
        layer_steps(gpt, load_cluster(spec).device_model(0), config)


@pytest.mark.parametrize("recipe,per_element", [("delayed", 4), ("current", 6), ("block", 4)])
def test_casts_are_memory_bound_work(gpt, recipe: str, per_element: int) -> None:  # type: ignore[no-untyped-def]
    # memory-bound device: GEMMs cost their operand bytes, so the FP8 pass differs from the
    # bf16 one by the casts' bytes less half the linear GEMMs' operand bytes (1-byte operands)
    dev = get_device("h100-sxm").with_(
        peak_flops={"bf16": 1e30, "fp16": 1e30, "fp32": 1e30}, fp8_flops=1e30,
        kernel_overhead_s=1e-15,
    )  # fmt: skip
    bw = dev.memory_bandwidth_Bps * dev.mem_efficiency
    b = 2
    base = ParallelConfig(micro_batch=b, global_batch=b)
    i = next(i for i, layer in enumerate(gpt.layers) if layer.kind == "transformer_block")
    layer = gpt.layers[i]
    bf16 = layer_steps(gpt, dev, base)[i]
    fp8 = layer_steps(gpt, dev, base.replace(fp8=recipe))[i]
    s, h = 512, 768
    linear_bytes = sum(n * nb for f, nb, n in layer.fwd_ops.gemms if f != 4.0 * s * s * h)
    casts = (b * s * (3 * h + 4 * h) + layer.params) * per_element
    assert fp8.fwd_s - bf16.fwd_s == pytest.approx((casts - b * linear_bytes / 2) / bw)


def test_blackwell_presets_take_their_fp8_peak_from_the_datasheet() -> None:
    # device_specs.csv: B200 SXM 4500, GB200 (per GPU) 5000 dense FP8 TFLOP/s
    assert get_device("b200").fp8_flops == pytest.approx(4500e12)
    assert get_device("gb200").fp8_flops == pytest.approx(5000e12)
    assert get_device("a100-80gb").fp8_flops == 0.0


def test_moe_block_casts_each_routed_copy_and_its_expert_shard() -> None:
    # Mixtral-like block by hand: s 1024, h 512, 8 heads of 64 (2 kv heads), 8 experts of
    # f 1792, top-2, SwiGLU; the router stays in bf16
    graph = moe_graph()
    block = next(layer for layer in graph.layers if layer.attrs.get("num_experts"))
    s, h, kv, f, k, tp, ep = 1024, 512, 128, 1792, 2, 2, 4
    experts = 8 * (h * 2 * f + f * h)
    assert block.attrs["expert_params"] == experts
    weights = (block.params - experts) / tp + experts / ep
    fwd = s * (h + h + k * (h + f)) / tp + weights  # QKV, out, expert FC1 and FC2 inputs
    bwd = s * (h + 2 * kv + h + k * (2 * f + h)) / tp  # their outputs' gradients
    assert cast_elements(block, False, "bf16", 1, tp, ep) == pytest.approx(fwd)
    assert cast_elements(block, True, "bf16", 1, tp, ep) == pytest.approx(bwd)
