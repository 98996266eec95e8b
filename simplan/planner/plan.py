"""Plan: one ranked way to split a training job; it can be simulated, written, read back and
exported (torchrun, Megatron-LM, torchtitan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simplan.model_graph import ModelGraph
from simplan.parallel import ParallelConfig
from simplan.planfile import ClusterRef, PlanFile, read_plan, write_plan


@dataclass(frozen=True, kw_only=True)
class Plan:
    """model: the model spec (preset, TOML or file.py:factory); cluster: how to load the
    cluster it runs on; config: degrees, knobs and `stages` (layer boundaries per chunk);
    placement: placement[rank] = device; estimate: the analytic estimate; predicted: the
    simulated step (step_time_s, tokens_per_s, mfu, peak_memory_bytes, fits_memory, ...);
    solves: the ILP records; role: 'plan', 'baseline:pure-dp', 'baseline:megatron' or
    'baseline:<framework>-recipe'; framework: the framework it was planned for (None: any)."""

    model: str
    cluster: ClusterRef
    config: ParallelConfig
    placement: tuple[int, ...]
    layout: str = ""
    estimate: dict[str, Any] = field(default_factory=dict)
    predicted: dict[str, Any] = field(default_factory=dict)
    solves: tuple[dict[str, Any], ...] = ()
    role: str = "plan"
    framework: str | None = None
    graph: ModelGraph | None = field(default=None, repr=False, compare=False)
    cluster_obj: Any = field(default=None, repr=False, compare=False)

    @property
    def step_time_s(self) -> float:
        return float(self.predicted.get("step_time_s", self.estimate.get("step_time_s", 0.0)))

    @property
    def fits(self) -> bool:
        return bool(self.predicted.get("fits_memory", self.estimate.get("fits", False)))

    def load_cluster(self) -> Any:
        return self.cluster_obj if self.cluster_obj is not None else self.cluster.load()

    def simulate(
        self, *, record: bool = True, profile: Any = None, deadline: Any = None,
        headroom: Any = None,
    ) -> Any:  # fmt: skip
        """The SimResult of this plan under simplan.sim.run.simulate (stopped with
        simplan.deadline.TimeLimitReached at `deadline`, a simplan.deadline.Deadline; memory
        kept free per simplan.headroom.Headroom `headroom`, None: the default)."""
        from simplan.headroom import DEFAULT_HEADROOM
        from simplan.sim.run import simulate

        model = self.graph if self.graph is not None else self.model
        return simulate(
            model,
            self.load_cluster(),
            self.config,
            profile=profile,
            placement=list(self.placement) or None,
            record=record,
            deadline=deadline,
            headroom=DEFAULT_HEADROOM if headroom is None else headroom,
        )

    def summary(self) -> dict[str, Any]:
        """The JSON row of `simplan plan --json`."""
        p = self.predicted
        return {
            "role": self.role,
            "config": self.config.to_dict(),
            "describe": self.config.describe(),
            "layout": self.layout,
            "step_time_s": self.step_time_s,
            "peak_memory_bytes": p.get("peak_memory_bytes", self.estimate.get("peak_memory_bytes")),
            "fits_memory": self.fits,
            "tokens_per_s": p.get("tokens_per_s"),
            "mfu": p.get("mfu"),
            "estimated_step_time_s": self.estimate.get("step_time_s"),
        }

    def to_planfile(self) -> PlanFile:
        return PlanFile(
            model=self.model,
            cluster=self.cluster,
            config=self.config,
            placement=self.placement,
            predicted=dict(self.predicted),
            extra={
                "role": self.role,
                "layout": self.layout,
                "degrees": {"dp": self.config.dp, "tp": self.config.tp, "pp": self.config.pp},
                "stage_layers": stage_layers(self.config, self.graph),
                "estimate": dict(self.estimate),
                "solver": list(self.solves),
                **({"framework": self.framework} if self.framework else {}),
            },
        )

    def write(self, path: str | Path) -> Path:
        return write_plan(self.to_planfile(), path)

    @staticmethod
    def read(path: str | Path) -> Plan:
        return from_planfile(read_plan(path))

    def export(self, kind: str) -> str:
        from simplan.planner.export import export

        return export(self, kind)


def stage_layers(config: ParallelConfig, graph: ModelGraph | None) -> list[dict[str, Any]]:
    """Per chunk: its pipeline rank, layer range and (when the graph is known) layer names."""
    bounds = config.stages
    out = []
    for c in range(len(bounds) - 1):
        row: dict[str, Any] = {
            "chunk": c,
            "stage": c % config.pp,
            "layers": [bounds[c], bounds[c + 1]],
        }
        if graph is not None:
            names = [layer.name for layer in graph.layers[bounds[c] : bounds[c + 1]]]
            row["first"], row["last"] = names[0], names[-1]
        out.append(row)
    return out


def from_planfile(pf: PlanFile) -> Plan:
    extra = pf.extra
    return Plan(
        model=pf.model,
        cluster=pf.cluster,
        config=pf.config,
        placement=pf.placement,
        layout=str(extra.get("layout", "")),
        estimate=dict(extra.get("estimate", {})),
        predicted=dict(pf.predicted),
        solves=tuple(extra.get("solver", [])),
        role=str(extra.get("role", "plan")),
        framework=extra.get("framework"),
    )
