"""``stacks/demand.yaml``: what the fleet must serve and train, per month.

Strict schema (unknown keys are errors with a "did you mean" hint), read with
the fleet model's YAML loader, then cross-checked against the fleet: every
model and queue it names, every site, and the residency rules. Problems come
back as :class:`gpufleet.errors.FleetError`, one ``file: key.path: message``
each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gpufleet.errors import FleetError, Problem, did_you_mean
from gpufleet.schema import AcceleratorId, Name, Quantization

from .perf import Architecture, Workload

DEFAULT_DEMAND = Path("stacks/demand.yaml")

Pos = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Rate(_Strict):
    peak: NonNeg
    offpeak: NonNeg

    @model_validator(mode="after")
    def _order(self) -> Rate:
        if self.offpeak > self.peak:
            raise ValueError(f"offpeak ({self.offpeak:g}) is above peak ({self.peak:g})")
        return self


class SLO(_Strict):
    ttft_p95_s: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)]
    tpot_p95_ms: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)]


class ArchitectureSpec(_Strict):
    layers: int = Field(ge=1, le=1000)
    kv_heads: int = Field(ge=1, le=1024)
    head_dim: int = Field(ge=1, le=1024)


class ServingDemand(_Strict):
    model: Name
    sites: list[Name] = Field(min_length=1, description="sites that may serve this traffic (a group: the optimizer picks)")
    requests_per_s: Rate
    input_tokens: Annotated[float, Field(gt=0, le=1_048_576, allow_inf_nan=False)]
    output_tokens: Annotated[float, Field(gt=0, le=1_048_576, allow_inf_nan=False)]
    slo: SLO
    quantizations: list[Quantization] = Field(min_length=1, description="the quantizations the model's owner accepts")
    data_class: Name | None = None
    interruptible: bool = False  # may run on Spot capacity
    # For a model fleet.yaml does not serve yet:
    parameters_b: Annotated[float, Field(gt=0, le=2000, allow_inf_nan=False)] | None = None
    source: str | None = Field(None, min_length=1)
    context_length: int | None = Field(None, ge=256, le=1_048_576)
    architecture: ArchitectureSpec | None = None


class TrainingDemand(_Strict):
    queue: Name
    gpu_hours_per_month: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)]
    accelerators: list[AcceleratorId] | None = Field(None, min_length=1)
    min_gpu_memory_gib: Annotated[float, Field(gt=0, le=4096, allow_inf_nan=False)] | None = None
    interconnect: Literal["any", "nvswitch"] = "any"
    job_gpus: int = Field(ge=1, le=65536)
    interruptible: bool = False
    sites: list[Name] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _which(self) -> TrainingDemand:
        if self.accelerators is None and self.min_gpu_memory_gib is None:
            raise ValueError("name the accelerators that may run it, or a min_gpu_memory_gib")
        return self


class DemandSpec(_Strict):
    peak_hours_per_day: Annotated[float, Field(gt=0, le=24, allow_inf_nan=False)]
    serving: list[ServingDemand] = Field(default_factory=list)
    training: list[TrainingDemand] = Field(default_factory=list)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    parameters_b: float
    source: str
    context_length: int
    data_class: str | None
    architecture: Architecture | None


@dataclass
class Demand:
    spec: DemandSpec
    path: str
    models: dict[str, ModelInfo]  # every model the demand names
    serving_sites: list[list[str]]  # per serving entry: its candidate sites after residency
    training_sites: list[list[str]]
    training_data_class: list[str | None]

    @property
    def peak_fraction(self) -> float:
        return self.spec.peak_hours_per_day / 24

    def workload(self, i: int) -> Workload:
        d = self.spec.serving[i]
        m = self.models[d.model]
        return Workload(m.parameters_b, d.input_tokens, d.output_tokens, d.slo.ttft_p95_s, d.slo.tpot_p95_ms, m.architecture)


def load_demand(path: str | Path, fleet) -> Demand:  # noqa: ANN001 - gpufleet.model.Fleet
    from gpufleet.inventory import load_yaml
    from gpufleet.model import _validation_problems

    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise FleetError([Problem(file, "", "file not found" if not path.exists() else "not a file")])
    problems: list[Problem] = []
    data = load_yaml(path, file, problems)
    if problems:
        raise FleetError(problems)
    if not isinstance(data, dict):
        raise FleetError([Problem(file, "", f"expected a mapping with peak_hours_per_day, serving and training, not {type(data).__name__}")])
    try:
        spec = DemandSpec.model_validate(data)
    except ValidationError as exc:
        raise FleetError(_validation_problems(exc, file, DemandSpec)) from None
    return _cross_check(spec, file, fleet)


def _cross_check(spec: DemandSpec, file: str, fleet) -> Demand:  # noqa: ANN001
    problems: list[Problem] = []
    workers = set(fleet.worker_sites())
    known = {s.name for s in fleet.sites}
    fleet_models = {m.name: m for m in fleet.models}
    queues = {q.name: q for q in fleet.queues}
    models: dict[str, ModelInfo] = {}
    serving_sites: list[list[str]] = []
    seen: dict[tuple[str, str], int] = {}

    def sites_ok(sites: list[str], path: str, data_class: str | None, what: str) -> list[str]:
        out = []
        allowed = fleet.allowed_sites(data_class)
        for si, s in enumerate(sites):
            where = f"{path}.sites[{si}]"
            if s not in known:
                problems.append(Problem(file, where, f"unknown site '{s}'{did_you_mean(s, known)}"))
            elif s not in workers:
                problems.append(Problem(file, where, f"'{s}' is the hub; it runs no GPU work"))
            elif allowed is not None and s not in allowed:
                problems.append(Problem(file, where, f"{what} holds '{data_class}' data, which may only be at {', '.join(allowed) or 'no site'}; '{s}' is not allowed"))
            else:
                out.append(s)
        if len(set(sites)) != len(sites):
            problems.append(Problem(file, f"{path}.sites", "a site is listed twice"))
        return out

    for i, d in enumerate(spec.serving):
        path = f"serving[{i}]"
        fm = fleet_models.get(d.model)
        data_class = d.data_class
        if fm is not None:
            if d.data_class is not None and d.data_class != fm.data_class:
                problems.append(Problem(file, f"{path}.data_class", f"'{d.data_class}', but fleet.yaml's model '{d.model}' holds '{fm.data_class or 'unrestricted'}' data"))
            data_class = fm.data_class
            for key in ("parameters_b", "source", "context_length"):
                if getattr(d, key) is not None:
                    problems.append(Problem(file, f"{path}.{key}", f"'{d.model}' is in fleet.yaml, which states its {key}; leave it out here"))
            info = ModelInfo(d.model, fm.parameters_b, fm.source, fm.context_length, fm.data_class, _arch(d.architecture))
        else:
            missing = [k for k in ("parameters_b", "source", "context_length") if getattr(d, k) is None]
            if missing:
                problems.append(Problem(file, f"{path}.model", f"'{d.model}' is not a model in fleet.yaml{did_you_mean(d.model, fleet_models)}; a new model needs {', '.join(missing)}"))
                serving_sites.append([])
                continue
            if data_class is not None and fleet.allowed_sites(data_class) == []:
                problems.append(Problem(file, f"{path}.data_class", f"no residency rule for data class '{data_class}'"))
            info = ModelInfo(d.model, float(d.parameters_b), str(d.source), int(d.context_length), data_class, _arch(d.architecture))
        prev = models.get(d.model)
        if prev is not None and prev != info:
            problems.append(Problem(file, f"{path}", f"'{d.model}' is described differently in an earlier entry"))
        models[d.model] = info
        if d.input_tokens + d.output_tokens > info.context_length:
            problems.append(Problem(file, f"{path}.output_tokens", f"input + output tokens ({d.input_tokens + d.output_tokens:g}) exceed the model's context length {info.context_length}"))
        ok = sites_ok(list(d.sites), path, data_class, "model")
        for s in d.sites:
            key = (d.model, s)
            if key in seen and seen[key] != i:
                problems.append(Problem(file, f"{path}.sites", f"'{d.model}' at '{s}' is already in serving[{seen[key]}]"))
            seen.setdefault(key, i)
        serving_sites.append(ok)

    training_sites: list[list[str]] = []
    training_dc: list[str | None] = []
    seen_q: set[str] = set()
    for i, t in enumerate(spec.training):
        path = f"training[{i}]"
        q = queues.get(t.queue)
        if t.queue in seen_q:
            problems.append(Problem(file, f"{path}.queue", f"queue '{t.queue}' is listed twice"))
        seen_q.add(t.queue)
        if q is None:
            problems.append(Problem(file, f"{path}.queue", f"unknown queue '{t.queue}'{did_you_mean(t.queue, queues)}"))
            training_sites.append([])
            training_dc.append(None)
            continue
        dc = q.queue.data_class
        training_dc.append(dc)
        candidates = list(t.sites) if t.sites is not None else [s for s in fleet.worker_sites() if fleet.allowed_sites(dc) is None or s in (fleet.allowed_sites(dc) or [])]
        training_sites.append(sites_ok(candidates, path, dc, "queue") if t.sites is not None else candidates)
    if problems:
        raise FleetError(sorted(set(problems), key=lambda p: (p.file, p.path, p.message)))
    return Demand(spec, file, models, serving_sites, training_sites, training_dc)


def _arch(a: ArchitectureSpec | None) -> Architecture | None:
    return Architecture(a.layers, a.kv_heads, a.head_dim) if a else None
