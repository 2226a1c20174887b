"""The optimizer: the cheapest fleet that meets the demand, owned GPUs first.

A mixed-integer program (:mod:`.formulation`), solved with HiGHS
(:mod:`.program`), read back as a proposal (:mod:`.solution`). Decisions:

* per served model, one replica shape (accelerator or MIG profile,
  quantization, tensor-parallel size): fleet.yaml holds one placement per
  model, so the program chooses one for all its sites (a binary per shape);
* per demand entry, site, shape and capacity: replicas at peak and off-peak
  (integers), where the capacity is an owned server class or a cloud capacity
  type (on-demand, Spot where the traffic is interruptible, a savings plan, or
  a capacity block / reservation a node pool already holds);
* per AWS site, instance type and capacity type: nodes at peak and off-peak;
* per owned server class: how many GPUs carry each MIG layout NVIDIA's
  placement rules allow (:func:`gpufleet.mig.gpu_layouts`), in blocks of four
  GPUs (half an 8-GPU server) so that whole GPUs stay aligned for
  tensor-parallel replicas;
* per training queue: GPU-hours on owned GPUs (what serving leaves over, peak
  and off-peak) and on each cloud capacity type.

Constraints: output tokens/s at peak and off-peak at least the demand, with
each replica's sustainable rate at the entry's SLO (:mod:`.perf`, which also
checks that weights and KV cache fit); residency (only the sites a demand
entry may use); quotas (vCPUs per region, quota class and Spot/on-demand) and
reservations (a capacity-block pool's maxSize); each owned GPU once (MIG
slices, serving replicas and the training share together); tensor-parallel
replicas packed into nodes and servers (sizes are powers of two, so a
threshold constraint per size is exact).

Objective: USD per month. Owned GPUs are committed cost (a constant: paid
whether used or not), so the program spends cloud money only where owned
GPUs run out; among plans of equal cost it holds the fewest owned GPU-hours,
so that it starts no replica or MIG partition it does not need. The reported
costs are recomputed from the solution.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .demand import Demand
from .formulation import MIG_BLOCK, TIE_BREAK, TP_SIZES, Capacity, FleetProgram, layouts_of
from .prices import Prices
from .program import Infeasible, Program
from .solution import Proposal, Reading
from .supply import CloudSite, OwnedClass, cloud_sites, gpu_instance_types, owned_classes

__all__ = [
    "MIG_BLOCK", "TIE_BREAK", "TP_SIZES", "Capacity", "CloudSite", "FleetProgram", "Infeasible", "Options", "OwnedClass", "Program", "Proposal",
    "cloud_sites", "gpu_instance_types", "layouts_of", "owned_classes", "solve",
]


@dataclass
class Options:
    """What the program may choose from, for one fleet, demand and price file."""

    owned: list[OwnedClass]
    cloud: list[CloudSite]
    allow_owned: bool = True
    capacity_types: tuple[str, ...] = ("on-demand", "spot", "savings-plan", "capacity-block", "reserved")
    residency: bool = True
    max_shapes_per_model: int | None = None  # keep only the cheapest shapes per token/s (a restriction of the program)
    lexicographic: bool = False  # cost first, then owned GPU-hours; else one objective, owned GPU-hours weighted TIE_BREAK


def solve(fleet, demand: Demand, prices: Prices, options: Options | None = None, calibration: Any = None, time_limit: float = 60.0, gap: float = 1e-4,
          threads: int | None = None, progress: Callable[[str], None] | None = None) -> Proposal:  # noqa: ANN001
    say = progress or (lambda _msg: None)
    opt = options or Options(owned_classes(fleet), cloud_sites(fleet))
    began = time.perf_counter()
    fp = FleetProgram(fleet, demand, prices, opt, calibration)
    say(f"building the program: {len(demand.spec.serving)} serving entries, {len(demand.spec.training)} queues, {len(fp.owned)} owned server classes, {len(fp.cloud)} cloud sites")
    fp.build()
    built = time.perf_counter() - began
    nv, ni, nr = fp.p.size
    say(f"solving with HiGHS: {nv} variables ({ni} integer), {nr} constraints")
    x, info = fp.p.solve(time_limit=time_limit, gap=gap, threads=threads)
    info["build_seconds"] = round(built, 3)
    if x is None:
        info["gap"] = None
        info.pop("objective", None)
        return Proposal(math.nan, 0.0, math.nan, 0.0, [], [], [], [], [], {}, info, fp.unmet or [f"the solver found no feasible plan ({info['status']}): demand exceeds what quotas, reservations and owned GPUs allow"])
    say("pricing the solution")
    info.pop("objective", None)
    return Reading(fp, x).proposal(info)
