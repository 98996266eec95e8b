"""A separate distillation teacher and its students as two pipelines, run on SimPy at the
granularity of micro-batches: the teacher computes a micro-batch's logits and sends them; a
student receives them (the transfer starts once both sides are there), trains on them while the
teacher computes the next micro-batch's, and after its last micro-batch runs the rest of its step
(gradient synchronisation, optimizer). A transfer occupies both ranks for its time (on a CPU
gloo's thread competes with compute). The teacher serves its students in turn.

In steady state a step is max(teacher: replicas x micro-batches x (forward + send), student:
its step + micro-batches x receive); the run also shows the first step's fill.
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy


@dataclass(frozen=True, kw_only=True)
class PairTimes:
    """Inputs, seconds: per micro-batch the teacher's forward, one logits transfer, the
    student's forward+backward; per step the student's rest (synchronisation, optimizer)."""

    microbatches: int
    students: int  # student replicas this teacher serves
    teacher_forward_s: float
    transfer_s: float
    student_microbatch_s: float
    student_tail_s: float


@dataclass(frozen=True, kw_only=True)
class PairRun:
    step_ends_s: tuple[float, ...]  # the slowest student's step ends

    @property
    def steady_step_s(self) -> float:
        """The last step's duration (the pipelines are full by then)."""
        ends = self.step_ends_s
        return ends[-1] - ends[-2] if len(ends) > 1 else ends[0]


def run_pair(times: PairTimes, steps: int = 4) -> PairRun:
    """`steps` steps of the teacher and its students (at least 2 for a steady step)."""
    env = simpy.Environment()
    n = steps * times.microbatches
    issued = [[env.event() for _ in range(n)] for _ in range(times.students)]
    done = [[env.event() for _ in range(n)] for _ in range(times.students)]
    ends: list[list[float]] = [[] for _ in range(times.students)]

    def teacher() -> simpy.events.ProcessGenerator:
        for k in range(n):
            for s in range(times.students):
                yield env.timeout(times.teacher_forward_s)
                issued[s][k].succeed()
                yield done[s][k]  # the send occupies the teacher until the student has it

    def student(s: int) -> simpy.events.ProcessGenerator:
        for k in range(n):
            yield issued[s][k]
            yield env.timeout(times.transfer_s)
            done[s][k].succeed()
            yield env.timeout(times.student_microbatch_s)
            if (k + 1) % times.microbatches == 0:
                yield env.timeout(times.student_tail_s)
                ends[s].append(env.now)

    env.process(teacher())
    for s in range(times.students):
        env.process(student(s))
    env.run()
    return PairRun(step_ends_s=tuple(max(t) for t in zip(*ends, strict=True)))
