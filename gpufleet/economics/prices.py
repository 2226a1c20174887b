"""Prices and supply, read from ``prices.yaml`` (beside this module).

One reviewed file holds every price: the planner, ``gpufleet optimize`` and
the monitoring dashboards read it through this module. ``load_prices()``
validates it with a strict schema; problems come back as ``file: key: message``
lines (:class:`gpufleet.errors.FleetError`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpufleet.catalog import ACCELERATORS, INSTANCE_TYPES
from gpufleet.errors import FleetError, Problem

PRICES_FILE = Path(__file__).with_name("prices.yaml")
CapacityType = Literal["on-demand", "spot", "capacity-block", "reserved", "savings-plan"]
CAPACITY_TYPES: tuple[str, ...] = ("on-demand", "spot", "capacity-block", "reserved", "savings-plan")
COMMITTED = frozenset({"capacity-block", "reserved", "savings-plan"})  # paid for every hour of the month

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Share = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OwnedServer(_Strict):
    server: str
    gpus_per_server: int = Field(ge=1, le=16)
    purchase_usd: Positive
    purchase_source: str = Field(min_length=1)
    power_kw: Positive
    load_factor: Share
    colocation_usd_per_month: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    estimate: bool = False


class Region(_Strict):
    multiplier: Positive
    estimate: bool = False


class InstancePrice(_Strict):
    on_demand: Positive
    spot_share: Share | None = None
    capacity_block: Positive | None = None
    savings_plan_1y_share: Share | None = None
    estimate: bool = False


class Quota(_Strict):
    P: int = Field(ge=0)
    G: int = Field(ge=0)


class PricesSpec(_Strict):
    reviewed: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    hours_per_month: Positive
    power_usd_per_kwh: Positive
    pue: Annotated[float, Field(ge=1, le=3, allow_inf_nan=False)]
    write_off_months: int = Field(ge=1, le=240)
    owned: dict[str, OwnedServer]
    reference_region: str
    regions: dict[str, Region]
    default_region_multiplier: Positive
    spot_interruption_allowance: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
    spot_serving_allowance: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
    instances: dict[str, InstancePrice]
    quotas: dict[str, dict[Literal["on-demand", "spot"], Quota]]


class Prices:
    """Typed access to the price file."""

    def __init__(self, spec: PricesSpec, source: str):
        self.spec = spec
        self.source = source

    @property
    def hours(self) -> float:
        return self.spec.hours_per_month

    def owned_usd_per_gpu_hour(self, accelerator: str) -> float:
        o = self.spec.owned[accelerator]
        per_month = o.purchase_usd / self.spec.write_off_months + o.power_kw * o.load_factor * self.spec.hours_per_month * self.spec.pue * self.spec.power_usd_per_kwh + o.colocation_usd_per_month
        return per_month / o.gpus_per_server / self.spec.hours_per_month

    def region_multiplier(self, region: str | None) -> float:
        r = self.spec.regions.get(region or "")
        return r.multiplier if r else self.spec.default_region_multiplier

    def instance_usd_per_hour(self, instance_type: str, region: str | None, capacity: str) -> float | None:
        """Price of one instance-hour, or None when that capacity type is not offered for it."""
        p = self.spec.instances.get(instance_type)
        if p is None:
            return None
        base = {
            "on-demand": p.on_demand,
            "spot": p.on_demand * p.spot_share if p.spot_share else None,
            "capacity-block": p.capacity_block,
            "reserved": p.on_demand * p.savings_plan_1y_share if p.savings_plan_1y_share else None,  # an On-Demand Capacity Reservation under a savings plan
            "savings-plan": p.on_demand * p.savings_plan_1y_share if p.savings_plan_1y_share else None,
        }[capacity]
        return None if base is None else base * self.region_multiplier(region)

    def gpu_usd_per_hour(self, instance_type: str, region: str | None, capacity: str) -> float | None:
        price = self.instance_usd_per_hour(instance_type, region, capacity)
        gpus = INSTANCE_TYPES[instance_type].gpus if instance_type in INSTANCE_TYPES else 0
        return None if price is None or not gpus else price / gpus

    def quota_vcpus(self, region: str | None, capacity: str, quota_class: str) -> int:
        table = self.spec.quotas.get(region or "") or self.spec.quotas["default"]
        kind = "spot" if capacity == "spot" else "on-demand"
        return getattr(table[kind], quota_class)

    def reference_gpu_usd_per_hour(self, accelerator: str) -> float | None:
        """The cheapest on-demand GPU-hour of ``accelerator`` in the reference region (for dashboards)."""
        best = None
        for name, it in INSTANCE_TYPES.items():
            if it.accelerator == accelerator and name in self.spec.instances:
                v = self.gpu_usd_per_hour(name, self.spec.reference_region, "on-demand")
                if v is not None and (best is None or v < best):
                    best = v
        return best


def quota_class(instance_type: str) -> str:
    """The EC2 quota class an instance counts against: P (p4, p5 ...) or G (g5, g6 ...)."""
    return "P" if instance_type.startswith("p") else "G"


def load_prices(path: str | Path = PRICES_FILE) -> Prices:
    from gpufleet.inventory import load_yaml
    from gpufleet.model import _validation_problems  # the model's one-line-per-problem formatting

    path = Path(path)
    display = str(path)
    problems: list[Problem] = []
    data = load_yaml(path, display, problems)
    if problems:
        raise FleetError(problems)
    if not isinstance(data, dict):
        raise FleetError([Problem(display, "", "expected a mapping")])
    try:
        spec = PricesSpec.model_validate(data)
    except ValidationError as exc:
        raise FleetError(_validation_problems(exc, display, PricesSpec)) from None
    for acc in spec.owned:
        if acc not in ACCELERATORS:
            problems.append(Problem(display, f"owned.{acc}", "unknown accelerator"))
    for name in spec.instances:
        if name not in INSTANCE_TYPES:
            problems.append(Problem(display, f"instances.{name}", "unknown instance type"))
    if "default" not in spec.quotas:
        problems.append(Problem(display, "quotas", "needs a 'default' entry"))
    if problems:
        raise FleetError(problems)
    return Prices(spec, display)


@lru_cache(maxsize=1)
def default_prices() -> Prices:
    return load_prices(PRICES_FILE)


def dashboard_prices() -> dict[str, dict[str, float]]:
    """Per accelerator: the on-demand GPU-hour at AWS (reference region) and the
    owned committed GPU-hour, rounded to the cent: the monitoring add-on's cost
    rules and dashboards price GPUs with these."""
    p = default_prices()
    out: dict[str, dict[str, float]] = {}
    for acc in ACCELERATORS:
        aws = p.reference_gpu_usd_per_hour(acc)
        dc = p.owned_usd_per_gpu_hour(acc) if acc in p.spec.owned else None
        if aws is None or dc is None or not (math.isfinite(aws) and math.isfinite(dc)):
            raise FleetError([Problem(p.source, acc, "needs an owned price and an on-demand instance carrying it")])
        out[acc] = {"aws": round(aws, 2), "datacenter": round(dc, 2)}
    return out
