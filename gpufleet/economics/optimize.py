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
so that it starts no replica or MIG partition it does not need (the two are
solved in that order, :func:`_solve_in_order`). The reported costs are
recomputed from the solution. ``solver.gap`` is the cost's gap against
HiGHS's dual bound of the whole program (``solver.bound_usd_per_month``, a
lower bound of the monthly cost of every plan it allows); ``solver.owned_gap``
is the tie-break's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    lexicographic: bool = True  # cost first, then owned GPU-hours at that cost; else one objective, owned GPU-hours weighted TIE_BREAK
    strengthen: bool = True  # the per-shape serving rows (same integer points, tighter relaxation)
    prune_dominated: bool = True  # drop shapes another shape of the model dominates (the optimum stays)


def solve(fleet, demand: Demand, prices: Prices, options: Options | None = None, calibration: Any = None, time_limit: float = 60.0, gap: float = 1e-4,
          threads: int | None = None, progress: Callable[[str], None] | None = None) -> Proposal:  # noqa: ANN001
    say = progress or (lambda _msg: None)
    opt = options or Options(owned_classes(fleet), cloud_sites(fleet))
    began, cpu = time.perf_counter(), time.process_time()
    fp = FleetProgram(fleet, demand, prices, opt, calibration)
    say(f"building the program: {len(demand.spec.serving)} serving entries, {len(demand.spec.training)} queues, {len(fp.owned)} owned server classes, {len(fp.cloud)} cloud sites")
    fp.build()
    built, built_cpu = time.perf_counter() - began, time.process_time() - cpu
    nv, ni, nr = fp.p.size
    say(f"solving with HiGHS: {nv} variables ({ni} integer), {nr} constraints")
    if opt.lexicographic:
        x, info = _solve_in_order(fp, time_limit, gap, threads)
    else:
        x, info = fp.p.solve(time_limit=time_limit, gap=gap, threads=threads)
    info["build_seconds"] = round(built, 3)
    info["build_cpu_seconds"] = round(built_cpu, 3)
    info.pop("objective", None)
    if x is None:
        info["gap"] = None
        return Proposal(math.nan, 0.0, math.nan, 0.0, [], [], [], [], [], {}, info, fp.unmet or [f"the solver found no feasible plan ({info['status']}): demand exceeds what quotas, reservations and owned GPUs allow"])
    say("pricing the solution")
    return Reading(fp, x).proposal(info)


def relative_gap(found: float | None, bound: float | None, atol: float = 1e-6) -> float | None:
    """``(found - bound) / found``: 0 when they agree within ``atol`` (USD) or 1e-9
    relative; 1 when ``found`` is 0 and the bound is not."""
    if found is None or bound is None or not math.isfinite(bound):
        return None
    diff = max(0.0, found - bound)
    if diff <= atol + 1e-9 * abs(found):
        return 0.0
    return min(1.0, diff / abs(found)) if abs(found) > atol else 1.0


def _solve_in_order(fp: FleetProgram, time_limit: float, gap: float, threads: int | None) -> tuple[Any, dict[str, Any]]:
    """Cloud cost first, then the owned GPU-hours among plans of that cost.

    1. ``find``: minimise ``W = cost + TIE_BREAK · owned`` (its relaxation is tight
       where owned GPUs are plentiful, so HiGHS finds good plans fast). Its dual
       bound ``W*`` gives two bounds for every plan ``y``: ``cost(y) ≥ W* −
       TIE_BREAK · owned_max`` (``owned_max`` the owned GPU-hours at every column's
       upper bound; and ``cost(y) ≥ 0``: every cost coefficient and column is
       non-negative), and, where ``cost(y) ≤ cost(x)``,
       ``owned(y) ≥ (W* − cost(x)) / TIE_BREAK``.
    2. If the cost is within ``gap`` of that bound, that is the plan.
    3. Else ``cost``: minimise the cloud cost from that plan (HiGHS's dual bound
       is a lower bound of the cloud cost of every plan the program allows), then
       ``owned``: with the cost held at what was found, minimise the owned GPU-hours.

    Reported: ``gap`` and ``bound_usd_per_month`` of the cost (plus the owned
    servers' committed cost, a constant), ``owned_gap`` of the owned GPU-hours.
    The shapes left out are dominated and the tightened rows keep every minimal
    plan (:mod:`.formulation`), so the bound holds for the program with every
    shape."""
    p = fp.p
    deadline = time.perf_counter() + time_limit
    left = lambda: deadline - time.perf_counter()  # noqa: E731
    cost, owned = p.coefficients("cost"), p.coefficients("owned")
    assert (cost >= 0).all() and (np.frombuffer(p.lb) >= 0).all(), "the cost bound 0 needs non-negative costs and columns"
    session = p.session(threads)
    x, first = session.minimise(cost + TIE_BREAK * owned, left(), gap)
    first["objective_name"] = "find"
    stages = [first]
    cost_status = owned_status = first["status"]
    cost_bound = owned_bound = None
    if x is not None:
        # cost(y) >= W - TIE_BREAK * owned(y) >= W - TIE_BREAK * (most owned GPU-hours any plan holds), and >= 0
        held = owned > 0
        most_owned = float(owned[held] @ np.frombuffer(p.ub)[held])
        w = first["bound"] if first["bound"] is not None and math.isfinite(first["bound"]) else -math.inf
        cost_bound = max(0.0, w - TIE_BREAK * most_owned)
        owned_bound = (w - cost @ x) / TIE_BREAK if math.isfinite(w) else None  # of every plan costing at most cost(x)
        if relative_gap(float(cost @ x), cost_bound) <= gap:
            cost_status = "optimal" if first["status"] in ("optimal", "time limit reached") else first["status"]
        else:
            xc, st = session.minimise(cost, left(), gap, start=x)
            st["objective_name"] = "cost"
            stages.append(st)
            if xc is not None and cost @ xc <= cost @ x:
                x = xc
            if st["bound"] is not None and math.isfinite(st["bound"]):
                cost_bound = max(cost_bound, st["bound"])
            cost_status = st["status"]
            session.hold(cost, float(cost @ x))
            xo, st = session.minimise(owned, left(), gap, start=x)
            st["objective_name"] = "owned"
            stages.append(st)
            if xo is not None:
                x = xo
            owned_bound, owned_status = st["bound"], st["status"]
    owned_committed = sum(c.gpus * fp.H * fp.owned_price(c.accelerator) for c in fp.owned)
    found = float(cost @ x) if x is not None else None
    finite = cost_bound is not None
    info: dict[str, Any] = {
        "name": session.name,
        "status": cost_status,
        "gap": relative_gap(found, cost_bound),
        "seconds": round(sum(st["seconds"] for st in stages), 3),
        "cpu_seconds": round(sum(st["cpu_seconds"] for st in stages), 3),
        "bound": cost_bound,
        "bound_usd_per_month": math.floor((owned_committed + cost_bound) * 100) / 100 if finite else None,  # a lower bound, rounded down
        **p.size_info(),
        "owned_status": owned_status,
        # the owned bound from the find stage carries HiGHS's absolute tolerance divided by TIE_BREAK: a cent
        "owned_gap": relative_gap(float(owned @ x), owned_bound, atol=0.01) if x is not None else None,
        "owned_objective": round(float(owned @ x), 4) if x is not None else None,
        "stages": [{k: st.get(k) for k in ("objective_name", "status", "objective", "bound", "gap", "seconds", "cpu_seconds", "nodes")} for st in stages],
    }
    return x, info
