"""Knowledge distillation as a job: a frozen teacher (forward only, no gradients, no optimizer
state, optionally in a lower dtype) whose logits train a student (KL on softened logits plus the
hard-label loss), in one of three placements:

- colocated: every student replica runs its own teacher forward on its micro-batch, on its own
  device, before its forward/backward: step = student step + micro-batches x teacher forward.
- separate: the teacher runs on devices of its own and sends each micro-batch's logits to its
  student point-to-point (priced on the topology); the two pipelines overlap (the teacher works
  on the next micro-batch while the student trains), run on SimPy (simplan.sim.distill_pair):
  in steady state a step is the slower of the two, max(teacher: its micro-batches x (forward +
  send), student: its step + its receives).
- precomputed: the logits were written once; the student reads their bytes from storage at a
  bandwidth the user gives (the cluster specs describe no storage).

The student's step comes from the simulator (simplan.sim.run.simulate), the teacher's forward
from the same cost model (a measured profile where one matches, else the roofline).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from simplan.costmodel import layer_costs
from simplan.errors import SimplanError
from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.profiles import Profile
from simplan.quant_time import int8_dynamic_forward_s
from simplan.sim.distill_pair import PairTimes, run_pair
from simplan.units import DTYPE_BYTES, dtype_bytes

PLACEMENTS = ("colocated", "separate", "precomputed")
# the teacher's inference dtypes: float ones, and torch's int8 dynamic quantization (int8
# linear weights, activations quantized per call, on a CPU: simplan.quant_time)
INT8_DYNAMIC = "int8-dynamic"
TEACHER_DTYPES = (*DTYPE_BYTES, INT8_DYNAMIC)


@dataclass(frozen=True, kw_only=True)
class Distillation:
    """How a student is distilled from a teacher.

    teacher: the teacher model spec (preset, TOML file or file.py:factory).
    placement: 'colocated', 'separate' or 'precomputed' (see the module's docstring).
    teacher_devices: devices the teacher gets of its own (separate only).
    temperature: the softmax temperature of the KL term (> 0).
    alpha: the weight of the KL term; 1 - alpha weighs the hard-label loss.
    teacher_dtype: the teacher's inference dtype ('' = the student's).
    logits_read_Bps: storage read bandwidth for precomputed logits, bytes/s.
    """

    teacher: str
    placement: str = "colocated"
    teacher_devices: int = 1
    temperature: float = 2.0
    alpha: float = 0.5
    teacher_dtype: str = ""
    logits_read_Bps: float = 0.0

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise SimplanError(
                f"unknown placement {self.placement!r}: use one of {', '.join(PLACEMENTS)}"
            )
        if self.teacher_devices < 1:
            raise SimplanError(f"teacher devices must be >= 1, got {self.teacher_devices}")
        if not self.temperature > 0:
            raise SimplanError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise SimplanError(f"alpha must be within [0, 1], got {self.alpha}")
        if self.teacher_dtype and self.teacher_dtype not in TEACHER_DTYPES:
            raise SimplanError(
                f"unknown teacher dtype {self.teacher_dtype!r}: use one of "
                f"{', '.join(TEACHER_DTYPES)}"
            )
        if self.placement == "precomputed" and not self.logits_read_Bps > 0:
            raise SimplanError(
                "precomputed logits are read from storage: give its read bandwidth "
                "(--logits-read-gbps)"
            )


def logits_per_sample(graph: ModelGraph) -> int:
    """Elements of the model's output (its last layer's) per sample."""
    last = graph.layers[-1]
    return round(last.output_bytes / dtype_bytes(graph.dtype))


def check_pair(student: ModelGraph, teacher: ModelGraph) -> None:
    """The teacher's logits must be shaped like the student's (one line otherwise)."""
    s, t = logits_per_sample(student), logits_per_sample(teacher)
    if s != t or student.seq_len != teacher.seq_len:
        raise SimplanError(
            f"teacher {teacher.name} outputs {t} logits per sample (seq_len {teacher.seq_len}), "
            f"student {student.name} {s} (seq_len {student.seq_len}): distill from a teacher "
            "with the student's output shape"
        )


def logits_bytes(student: ModelGraph, samples: int) -> float:
    """Bytes of the teacher logits for `samples` samples, at the student's dtype (what is sent
    or read: the student's loss consumes them at its own dtype)."""
    return float(logits_per_sample(student) * dtype_bytes(student.dtype) * samples)


def teacher_memory_bytes(teacher: ModelGraph, micro_batch: int) -> dict[str, float]:
    """A frozen teacher's memory on its device (graph counted at the teacher's dtype): its
    weights only (no gradients, no optimizer state, no saved activations) and, while its
    forward runs, one layer's input and output for the micro-batch."""
    live = max(x.input_bytes + x.output_bytes for x in teacher.layers) * micro_batch
    weights = float(teacher.param_bytes)
    return {
        "weights_bytes": weights,
        "activations_bytes": float(live),
        "total_bytes": weights + live,
    }


def teacher_forward_s(
    teacher: ModelGraph, device: Any, micro_batch: int, profile: Profile | None = None
) -> float:
    """One teacher forward of a micro-batch: the profile's whole-model forward where it was
    measured at this micro-batch and dtype, else the layers' forward times from the cost model;
    an int8-dynamic teacher's with its linear layers at this CPU's measured int8 rates."""
    whole = profile.whole_model if profile is not None else None
    if (
        profile is not None
        and whole is not None
        and profile.micro_batch == micro_batch
        and profile.dtype == teacher.dtype
    ):
        forward = whole.fwd_s
    else:
        costs = layer_costs(teacher, device, teacher.dtype, micro_batch, profile)
        forward = sum(c.fwd_s for c in costs)
    if teacher.meta.get("quantize") == INT8_DYNAMIC:
        return int8_dynamic_forward_s(teacher, forward, micro_batch, device)
    return forward


@dataclass(frozen=True, kw_only=True)
class DistillResult:
    """One placement's simulated step. Times per step in seconds, bytes per step.

    student_step_s: the student's own step (simulator, plus the distillation loss's extra
        work per micro-batch, loss_extra_s), without the teacher.
    teacher_forward_s: one teacher forward of one micro-batch.
    teacher_busy_s: the teacher's work per step on its busiest device (colocated: on each
        student device, in series with the student).
    transfer_s: the logits' send/receive (separate) or read (precomputed) per student step.
    logits_bytes: the logits every student replica gets per step, all replicas together.
    peak_memory_bytes: the fullest device's, teacher included.
    """

    placement: str
    step_time_s: float
    student_step_s: float
    loss_extra_s: float
    teacher_forward_s: float
    teacher_busy_s: float
    transfer_s: float
    logits_bytes: float
    student_devices: int
    teacher_devices: int
    teacher_memory: dict[str, float]
    student_peak_memory_bytes: float
    peak_memory_bytes: float
    usable_bytes: float  # the smallest device's capacity less its headroom (simplan.headroom)
    bound: str  # what sets the step: 'student + teacher', 'teacher', 'student'

    @property
    def fits(self) -> bool:
        return self.peak_memory_bytes <= self.usable_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"fits": self.fits}


def simulate_distill(
    student: ModelGraph,
    teacher: ModelGraph,
    cluster: Any,
    config: ParallelConfig,
    distill: Distillation,
    *,
    student_profile: Profile | None = None,
    teacher_profile: Profile | None = None,
    loss_extra_s: float = 0.0,
) -> DistillResult:
    """One distillation step of `config` (the student's) with `distill`'s placement on
    `cluster`. Separate: the teacher on devices 0..teacher_devices-1, the student's ranks on
    the devices after them. loss_extra_s: what the distillation loss adds to a student's
    micro-batch beyond the hard-label loss (measured: simplan.runtime.distill_run.loss_extra_s;
    0 where not measured)."""
    from simplan.sim.run import simulate

    check_pair(student, teacher)
    first = distill.teacher_devices if distill.placement == "separate" else 0
    if first + config.world_size > cluster.num_devices:
        raise SimplanError(
            f"{distill.placement} needs {first + config.world_size} devices ({first} teacher, "
            f"{config.world_size} student), the cluster has {cluster.num_devices}"
        )
    placement = list(range(first, first + config.world_size))
    sim = simulate(
        student,
        cluster,
        config,
        profile=student_profile,
        placement=placement,
        record=False,
        spare_devices=True,
    )
    m, mb = config.num_microbatches, config.micro_batch
    fwd_s = teacher_forward_s(teacher, cluster.device_model(first), mb, teacher_profile)
    mem = teacher_memory_bytes(teacher, mb)
    per_mb = logits_bytes(student, mb)
    student_s = sim.step_time_s + m * loss_extra_s
    # what a student does after its last micro-batch: exposed gradient sync and the optimizer
    tail_s = max(d.exposed_comm_s + d.optimizer_s for d in sim.devices)
    parts = _placement_step(distill, cluster, config, student_s, fwd_s, per_mb, tail_s)
    student_peak = sim.peak_memory_bytes
    peak = student_peak + (mem["total_bytes"] if distill.placement == "colocated" else 0.0)
    if distill.placement == "separate":  # the student holds one micro-batch's logits more
        peak = max(peak + per_mb, mem["total_bytes"] + per_mb)
    return DistillResult(
        placement=distill.placement,
        step_time_s=parts["step_s"],
        student_step_s=student_s,
        loss_extra_s=loss_extra_s,
        teacher_forward_s=fwd_s,
        teacher_busy_s=parts["teacher_busy_s"],
        transfer_s=parts["transfer_s"],
        logits_bytes=per_mb * m * config.dp,
        student_devices=config.world_size,
        teacher_devices=first,
        teacher_memory=mem,
        student_peak_memory_bytes=student_peak,
        peak_memory_bytes=peak,
        usable_bytes=min(d.usable_bytes for d in sim.devices),
        bound=parts["bound"],
    )


def _placement_step(
    distill: Distillation,
    cluster: Any,
    config: ParallelConfig,
    student_s: float,
    fwd_s: float,
    per_mb_bytes: float,
    tail_s: float = 0.0,
) -> dict[str, Any]:
    """The step and its parts for the placement (see the module's docstring)."""
    m = config.num_microbatches
    if distill.placement == "colocated":
        busy = m * fwd_s
        return {
            "step_s": student_s + busy,
            "teacher_busy_s": busy,
            "transfer_s": 0.0,
            "bound": "student + teacher",
        }
    if distill.placement == "precomputed":
        read = m * per_mb_bytes / distill.logits_read_Bps
        return {
            "step_s": student_s + read,
            "teacher_busy_s": 0.0,
            "transfer_s": read,
            "bound": "student + read",
        }
    t = distill.teacher_devices
    send_s = cluster.transfer_time(0, t, per_mb_bytes)
    replicas_per_teacher = math.ceil(config.dp / t)
    teacher = replicas_per_teacher * m * (fwd_s + send_s)
    student = student_s + m * send_s
    pair = PairTimes(
        microbatches=m,
        students=replicas_per_teacher,
        teacher_forward_s=fwd_s,
        transfer_s=send_s,
        student_microbatch_s=(student_s - tail_s) / m,
        student_tail_s=tail_s,
    )
    return {
        "step_s": run_pair(pair).steady_step_s,
        "teacher_busy_s": teacher,
        "transfer_s": m * send_s,
        "bound": "teacher" if teacher > student else "student",
    }


def separate_config(config: ParallelConfig, teacher_devices: int) -> ParallelConfig:
    """The student's configuration when `teacher_devices` of the colocated run's devices go to
    the teacher: fewer data-parallel replicas, the same global batch and micro-batch (more
    micro-batches each). One line when the global batch does not split so."""
    dp = config.dp - teacher_devices // (config.tp * config.pp)
    if teacher_devices % (config.tp * config.pp) or dp < 1:
        raise SimplanError(
            f"{teacher_devices} teacher device(s) leave no whole student replica of "
            f"tp {config.tp} x pp {config.pp} out of {config.world_size} devices"
        )
    if config.global_batch % (dp * config.micro_batch):
        raise SimplanError(
            f"global batch {config.global_batch} does not split into {dp} replicas of "
            f"micro-batch {config.micro_batch}"
        )
    return config.replace(dp=dp)
