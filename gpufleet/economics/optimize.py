"""The optimizer: the cheapest fleet that meets the demand, owned GPUs first.

A mixed-integer program, solved with HiGHS (``highspy``). Decisions:

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
GPUs run out; a negligible tie-break keeps it from starting replicas or MIG
partitions it does not need. The reported costs are recomputed from the
solution without the tie-break.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpufleet import mig
from gpufleet.catalog import ACCELERATORS, INSTANCE_TYPES

from .demand import Demand
from .perf import Estimate, ReplicaShape, estimate
from .prices import COMMITTED, Prices, quota_class

TP_SIZES = (1, 2, 4, 8)
MIG_BLOCK = 4  # GPUs of an 8-GPU server partitioned together
TIE_BREAK = 1e-4  # share of the owned GPU-hour price charged for using an owned GPU (chooses among equal-cost plans)
INF = math.inf


# ------------------------------------------------------------------ the program


class Mip:
    """Columns and rows, passed to HiGHS in one piece (fast on large models)."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[int] = []
        self.names: list[Any] = []
        self.rows: list[tuple[list[int], list[float], float, float]] = []

    def var(self, name: Any, cost: float = 0.0, lb: float = 0.0, ub: float = INF, integer: bool = True) -> int:
        self.cost.append(cost)
        self.lb.append(lb)
        self.ub.append(ub)
        self.names.append(name)
        if integer:
            self.integer.append(len(self.cost) - 1)
        return len(self.cost) - 1

    def row(self, terms: dict[int, float] | list[tuple[int, float]], lo: float = -INF, hi: float = INF) -> None:
        items = list(terms.items()) if isinstance(terms, dict) else list(terms)
        if items:
            self.rows.append(([i for i, _ in items], [v for _, v in items], lo, hi))
        elif lo > 1e-9 or hi < -1e-9:
            raise Infeasible("a constraint with no variables cannot hold")

    @property
    def size(self) -> tuple[int, int, int]:
        return len(self.cost), len(self.integer), len(self.rows)

    def solve(self, time_limit: float = 60.0, gap: float = 1e-4, threads: int | None = None) -> tuple[np.ndarray | None, dict[str, Any]]:
        import highspy

        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("time_limit", float(time_limit))
        h.setOptionValue("mip_rel_gap", float(gap))
        if threads:
            h.setOptionValue("threads", int(threads))
        n = len(self.cost)
        inf = highspy.kHighsInf
        lb = np.array(self.lb, dtype=np.float64)
        ub = np.array([inf if math.isinf(u) else u for u in self.ub], dtype=np.float64)
        h.addCols(n, np.array(self.cost, dtype=np.float64), lb, ub, 0, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float64))
        starts, idx, val, lo, hi = [], [], [], [], []
        for cols, coefs, rlo, rhi in self.rows:
            starts.append(len(idx))
            idx.extend(cols)
            val.extend(coefs)
            lo.append(-inf if math.isinf(rlo) else rlo)
            hi.append(inf if math.isinf(rhi) else rhi)
        if self.rows:
            h.addRows(len(self.rows), np.array(lo, np.float64), np.array(hi, np.float64), len(idx), np.array(starts, np.int32), np.array(idx, np.int32), np.array(val, np.float64))
        if self.integer:
            h.changeColsIntegrality(len(self.integer), np.array(self.integer, np.int32), np.ones(len(self.integer), np.uint8))
        start = time.perf_counter()
        h.run()
        seconds = time.perf_counter() - start
        status = h.modelStatusToString(h.getModelStatus()).lower()
        info = h.getInfo()
        has = info.primal_solution_status == 2  # kSolutionStatusFeasible
        obj = info.objective_function_value if has else None
        bound = info.mip_dual_bound if self.integer else obj
        gap_v = info.mip_gap if self.integer else 0.0
        if has and (gap_v is None or not math.isfinite(gap_v)):
            gap_v = 0.0
        result = {"name": f"HiGHS {h.version()} (highspy)", "status": status, "gap": float(gap_v) if has else None, "seconds": round(seconds, 3), "objective": obj, "bound": bound, "variables": n, "integer_variables": len(self.integer), "constraints": len(self.rows)}
        x = np.array(h.getSolution().col_value) if has else None
        return x, result


class Infeasible(Exception):
    pass


# ------------------------------------------------------------------- the supply


@dataclass
class OwnedClass:
    site: str
    server_class: str
    accelerator: str
    gpus_per_server: int
    hosts: list[str]
    nvswitch: bool

    @property
    def gpus(self) -> int:
        return self.gpus_per_server * len(self.hosts)


@dataclass
class CloudSite:
    site: str
    region: str
    pools: list[Any]  # NodePool objects of the stack
    reservations: dict[tuple[str, str], int]  # (instance type, capacity type) -> nodes reserved (pool maxSize)


def owned_classes(fleet) -> list[OwnedClass]:  # noqa: ANN001
    out: dict[tuple[str, str], OwnedClass] = {}
    for site in fleet.sites:
        if site.is_aws or site.name == fleet.hub:
            continue
        for s in site.servers:
            if not s.spec.gpu_count or not s.spec.accelerator:
                continue
            key = (site.name, s.spec.server_class)
            c = out.setdefault(key, OwnedClass(site.name, s.spec.server_class, s.spec.accelerator, s.spec.gpu_count, [], s.spec.nvswitch))
            c.hosts.append(s.name)
    return sorted(out.values(), key=lambda c: (c.site, c.server_class))


def cloud_sites(fleet) -> list[CloudSite]:  # noqa: ANN001
    out = []
    for site in fleet.sites:
        if not site.is_aws:
            continue
        res: dict[tuple[str, str], int] = defaultdict(int)
        for p in site.aws.node_pools:
            if p.capacity_type in ("capacity-block", "reserved") and p.accelerator:
                res[(p.instance_types[0], p.capacity_type)] += p.max_size
        out.append(CloudSite(site.name, str(site.region), list(site.aws.node_pools), dict(res)))
    return out


def gpu_instance_types(prices: Prices, accelerator: str | None = None) -> list[str]:
    """GPU instance types priced in the price file; of one GPU count, only those
    no other type beats on both price and vCPUs (a dominated type is never chosen)."""
    cands = [n for n in prices.spec.instances if n in INSTANCE_TYPES and INSTANCE_TYPES[n].gpus and (accelerator is None or INSTANCE_TYPES[n].accelerator == accelerator)]
    keep = []
    for n in cands:
        t = INSTANCE_TYPES[n]
        p = prices.spec.instances[n].on_demand
        dominated = any(
            m != n and INSTANCE_TYPES[m].accelerator == t.accelerator and INSTANCE_TYPES[m].gpus == t.gpus and INSTANCE_TYPES[m].vcpus <= t.vcpus
            and prices.spec.instances[m].on_demand <= p and (prices.spec.instances[m].on_demand, m) < (p, n)
            and INSTANCE_TYPES[m].efa_interfaces >= t.efa_interfaces
            for m in cands
        )
        if not dominated:
            keep.append(n)
    return sorted(keep)


# ---------------------------------------------------------------------- options


@dataclass(frozen=True)
class Capacity:
    """Where a replica or a training GPU-hour runs."""

    site: str
    kind: str  # "owned" or the cloud capacity type
    owned: int | None = None  # index into the owned classes
    instance_type: str | None = None

    @property
    def label(self) -> str:
        return "owned" if self.kind == "owned" else self.kind


@dataclass
class Options:
    """What the program may choose from, for one fleet, demand and price file."""

    owned: list[OwnedClass]
    cloud: list[CloudSite]
    allow_owned: bool = True
    capacity_types: tuple[str, ...] = ("on-demand", "spot", "savings-plan", "capacity-block", "reserved")
    residency: bool = True
    max_shapes_per_model: int | None = None


@dataclass
class Proposal:
    total_usd_per_month: float
    owned_usd_per_month: float
    cloud_usd_per_month: float
    owned_gpu_utilisation: float
    serving: list[dict[str, Any]]
    training: list[dict[str, Any]]
    sites: list[dict[str, Any]]
    mig_layouts: list[dict[str, Any]]
    pools: list[dict[str, Any]]
    placements: dict[str, dict[str, Any]]  # model -> the shape chosen for it
    solver: dict[str, Any]
    unmet: list[str] = field(default_factory=list)


def _shapes(quantizations: list[str], accelerators: set[str], mig_accelerators: set[str], max_tp: dict[str, int]) -> list[ReplicaShape]:
    out = []
    for q in quantizations:
        for a in sorted(accelerators):
            for tp in TP_SIZES:
                if tp <= max_tp.get(a, 0):
                    out.append(ReplicaShape(a, None, q, tp))
        for a in sorted(mig_accelerators):
            for prof in mig.MIG_PROFILES.get(a, {}):
                if "+me" not in prof and not prof.startswith("7g"):
                    out.append(ReplicaShape(a, prof, q, 1))
    return out


def _layouts(accelerator: str) -> list[dict[str, int]]:
    return [lay for lay in mig.gpu_layouts(accelerator) if not any("+me" in p for p in lay) and not any(p.startswith("7g") for p in lay)]


def solve(fleet, demand: Demand, prices: Prices, options: Options | None = None, calibration: Any = None, time_limit: float = 60.0, gap: float = 1e-4,
          threads: int | None = None, progress: Callable[[str], None] | None = None) -> Proposal:  # noqa: ANN001
    say = progress or (lambda _msg: None)
    opt = options or Options(owned_classes(fleet), cloud_sites(fleet))
    H = prices.hours
    h_peak = H * demand.peak_fraction
    h_off = H - h_peak
    periods = (("peak", h_peak), ("offpeak", h_off))
    owned = opt.owned if opt.allow_owned else []
    owned_by_site: dict[str, list[int]] = defaultdict(list)
    for j, c in enumerate(owned):
        owned_by_site[c.site].append(j)
    cloud = {c.site: c for c in opt.cloud}
    region_of = {c.site: c.region for c in opt.cloud}
    itypes = gpu_instance_types(prices)
    m = Mip()
    say(f"building the program: {len(demand.spec.serving)} serving entries, {len(demand.spec.training)} queues, {len(owned)} owned server classes, {len(cloud)} cloud sites")

    # ---- nodes per cloud site / instance type / capacity type / period
    node: dict[tuple[str, str, str, str], int] = {}
    node_price: dict[tuple[str, str, str], float] = {}
    for site, cs in cloud.items():
        for it in itypes:
            for cap in opt.capacity_types:
                price = prices.instance_usd_per_hour(it, cs.region, cap)
                if price is None:
                    continue
                if cap in ("capacity-block", "reserved"):
                    limit = cs.reservations.get((it, cap), 0)
                    if not limit:
                        continue
                else:
                    limit = INF
                node_price[(site, it, cap)] = price
                if cap in COMMITTED:
                    n_peak = m.var(("node", site, it, cap, "peak"), price * H, 0, limit)
                    node[(site, it, cap, "peak")] = n_peak
                    n_off = m.var(("node", site, it, cap, "offpeak"), 0.0, 0, limit)
                    node[(site, it, cap, "offpeak")] = n_off
                    m.row({n_off: 1.0, n_peak: -1.0}, hi=0.0)  # committed: off-peak runs at most what is paid for
                else:
                    for per, hours in periods:
                        node[(site, it, cap, per)] = m.var(("node", site, it, cap, per), price * hours, 0, limit)

    # ---- MIG layouts per owned class (in blocks of MIG_BLOCK GPUs)
    layout_var: dict[tuple[int, int], int] = {}
    block_var: dict[int, int] = {}
    mig_server_var: dict[int, int] = {}
    layouts: dict[str, list[dict[str, int]]] = {}
    for j, c in enumerate(owned):
        acc = ACCELERATORS[c.accelerator]
        if not acc.mig or c.gpus_per_server % MIG_BLOCK:
            continue
        layouts.setdefault(c.accelerator, _layouts(c.accelerator))
        owned_price = prices.owned_usd_per_gpu_hour(c.accelerator)
        blocks = m.var(("mig_blocks", j), 0.0, 0, c.gpus // MIG_BLOCK)
        block_var[j] = blocks
        servers = m.var(("mig_servers", j), 0.0, 0, len(c.hosts))
        mig_server_var[j] = servers
        m.row({servers: float(c.gpus_per_server), blocks: -float(MIG_BLOCK)}, lo=0.0)  # servers touched by MIG hold the blocks
        terms = {blocks: -float(MIG_BLOCK)}
        for li, _lay in enumerate(layouts[c.accelerator]):
            v = m.var(("mig_layout", j, li), TIE_BREAK * owned_price * H, 0, c.gpus)
            layout_var[(j, li)] = v
            terms[v] = 1.0
        m.row(terms, lo=0.0, hi=0.0)  # the GPUs with a layout fill the blocks exactly

    # ---- serving
    est_cache: dict[tuple[int, ReplicaShape], Estimate] = {}
    shape_var: dict[tuple[str, ReplicaShape], int] = {}
    replicas: list[tuple[int, str, ReplicaShape, Capacity, str, int]] = []  # (entry, site, shape, capacity, period, var)
    owned_use: dict[tuple[int, str], dict[int, float]] = defaultdict(dict)  # (class, period) -> GPUs (whole)
    owned_tp: dict[tuple[int, str, int], dict[int, float]] = defaultdict(dict)  # (class, period, tp) -> GPUs of replicas with tp >= that
    slice_use: dict[tuple[int, str, str], dict[int, float]] = defaultdict(dict)  # (class, period, profile) -> slices
    cloud_gpu: dict[tuple[str, str, str, str, int], dict[int, float]] = defaultdict(dict)  # (site, acc, cap, period, tp threshold) -> GPUs
    by_model: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(demand.spec.serving):
        by_model[d.model].append(i)
    unmet: list[str] = []
    for model, entries in by_model.items():
        quants = sorted({q for i in entries for q in demand.spec.serving[i].quantizations})
        accs: set[str] = set()
        mig_accs: set[str] = set()
        max_tp: dict[str, int] = {}
        for i in entries:
            for s in _entry_sites(demand, i, opt, fleet):
                for j in owned_by_site.get(s, []):
                    accs.add(owned[j].accelerator)
                    max_tp[owned[j].accelerator] = max(max_tp.get(owned[j].accelerator, 0), owned[j].gpus_per_server)
                    if j in block_var:
                        mig_accs.add(owned[j].accelerator)
                if s in cloud:
                    for it in itypes:
                        a = INSTANCE_TYPES[it].accelerator
                        accs.add(a)
                        max_tp[a] = max(max_tp.get(a, 0), INSTANCE_TYPES[it].gpus)
        shapes = _shapes(quants, accs, mig_accs, max_tp)
        feasible_shapes = []
        for k in shapes:
            ok = False
            for i in entries:
                if k.quantization not in demand.spec.serving[i].quantizations:
                    continue
                e = estimate(k, demand.workload(i), model, calibration)
                est_cache[(i, k)] = e
                ok = ok or e.feasible
            if ok:
                feasible_shapes.append(k)
        if opt.max_shapes_per_model and len(feasible_shapes) > opt.max_shapes_per_model:
            feasible_shapes = _prune(feasible_shapes, entries, est_cache, prices, opt.max_shapes_per_model)
        if not feasible_shapes:
            unmet.append(f"{model}: no accelerator, MIG profile, quantization and tensor-parallel size at its sites meets the SLO with its weights and KV cache in memory")
            continue
        pick = {}
        for k in feasible_shapes:
            pick[k] = shape_var[(model, k)] = m.var(("shape", model, k), 0.0, 0, 1)
        m.row({v: 1.0 for v in pick.values()}, lo=1.0, hi=1.0)
        for i in entries:
            d = demand.spec.serving[i]
            need = {"peak": d.requests_per_s.peak * d.output_tokens, "offpeak": d.requests_per_s.offpeak * d.output_tokens}
            sites = _entry_sites(demand, i, opt, fleet)
            cover: dict[str, dict[int, float]] = {"peak": {}, "offpeak": {}}
            for k in feasible_shapes:
                e = est_cache.get((i, k))
                if e is None or not e.feasible:
                    continue
                bound = math.ceil(max(need.values()) / e.tokens_per_s) + 1
                caps: list[Capacity] = []
                for s in sites:
                    for j in owned_by_site.get(s, []):
                        c = owned[j]
                        if c.accelerator != k.accelerator:
                            continue
                        if k.mig_profile and j not in block_var:
                            continue
                        if not k.mig_profile and k.tensor_parallel > c.gpus_per_server:
                            continue
                        caps.append(Capacity(s, "owned", owned=j))
                    if s in cloud and not k.mig_profile:
                        for cap in opt.capacity_types:
                            if cap == "spot" and not d.interruptible:
                                continue
                            if cap in ("capacity-block", "reserved"):
                                continue  # reservations are bought for training here
                            if any(node.get((s, it, cap, "peak")) is not None and INSTANCE_TYPES[it].accelerator == k.accelerator and INSTANCE_TYPES[it].gpus >= k.tensor_parallel for it in itypes):
                                caps.append(Capacity(s, cap))
                for cap in caps:
                    rate = e.tokens_per_s / (1 + prices.spec.spot_serving_allowance) if cap.kind == "spot" else e.tokens_per_s
                    for per, _hours in periods:
                        tie = 0.0
                        if cap.kind == "owned":
                            tie = TIE_BREAK * prices.owned_usd_per_gpu_hour(k.accelerator) * _hours * k.gpus
                        v = m.var(("replicas", i, cap.site, k, cap.kind, cap.owned, per), tie, 0, bound)
                        replicas.append((i, cap.site, k, cap, per, v))
                        m.row({v: 1.0, pick[k]: -float(bound)}, hi=0.0)  # only the model's chosen shape runs
                        cover[per][v] = rate
                        if cap.kind == "owned":
                            j = cap.owned
                            if k.mig_profile:
                                slice_use[(j, per, k.mig_profile)][v] = 1.0
                            else:
                                owned_use[(j, per)][v] = float(k.tensor_parallel)
                                for t in TP_SIZES:
                                    if 1 < t <= k.tensor_parallel:
                                        owned_tp[(j, per, t)][v] = float(k.tensor_parallel)
                        else:
                            for t in TP_SIZES:
                                if t <= k.tensor_parallel:
                                    cloud_gpu[(cap.site, k.accelerator, cap.kind, per, t)][v] = float(k.tensor_parallel)
            for per in ("peak", "offpeak"):
                if need[per] > 0:
                    if not cover[per]:
                        unmet.append(f"serving[{i}] ({d.model}): no shape meets its SLO at {', '.join(sites) or 'any allowed site'}")
                        continue
                    m.row(cover[per], lo=need[per])

    # ---- training
    train_vars: list[tuple[int, str, str, str | None, int | None, int]] = []  # (queue, site, capacity kind, instance type, class, var)
    owned_train: dict[int, dict[int, float]] = defaultdict(dict)
    cloud_train: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)  # (site, instance type, cap) -> GPU-hours
    for qi, t in enumerate(demand.spec.training):
        sites = _train_sites(demand, qi, opt, fleet)
        ok_acc = (lambda a: a in t.accelerators) if t.accelerators else (lambda a: ACCELERATORS[a].memory_gib >= float(t.min_gpu_memory_gib or 0))
        terms: dict[int, float] = {}
        for s in sites:
            for j in owned_by_site.get(s, []):
                c = owned[j]
                if not ok_acc(c.accelerator) or (t.interconnect == "nvswitch" and not c.nvswitch) or t.job_gpus > c.gpus:
                    continue
                v = m.var(("train", qi, s, "owned", j), TIE_BREAK * prices.owned_usd_per_gpu_hour(c.accelerator), 0, c.gpus * H, integer=False)
                train_vars.append((qi, s, "owned", None, j, v))
                owned_train[j][v] = 1.0
                terms[v] = 1.0
            if s in cloud:
                for it in itypes:
                    a = INSTANCE_TYPES[it].accelerator
                    if not ok_acc(a) or (t.interconnect == "nvswitch" and not ACCELERATORS[a].nvswitch):
                        continue
                    if t.job_gpus > INSTANCE_TYPES[it].gpus and INSTANCE_TYPES[it].efa_interfaces == 0:
                        continue  # a multi-node job needs EFA
                    for cap in opt.capacity_types:
                        if cap == "spot" and not t.interruptible:
                            continue
                        if (s, it, cap) not in node_price:
                            continue
                        gpu_price = node_price[(s, it, cap)] / INSTANCE_TYPES[it].gpus
                        factor = 1 + prices.spec.spot_interruption_allowance if cap == "spot" else 1.0
                        cost = 0.0 if cap in COMMITTED else gpu_price * factor
                        v = m.var(("train", qi, s, cap, it), cost, 0, INF, integer=False)
                        train_vars.append((qi, s, cap, it, None, v))
                        cloud_train[(s, it, cap)][v] = factor
                        terms[v] = 1.0
        if not terms:
            unmet.append(f"training[{qi}] ({t.queue}): no allowed site has a fitting accelerator")
            continue
        m.row(terms, lo=t.gpu_hours_per_month, hi=t.gpu_hours_per_month)

    # ---- owned GPUs, each once
    for j, c in enumerate(owned):
        whole = {}
        if j in block_var:
            whole[block_var[j]] = float(MIG_BLOCK)
        # slices: per period, replicas on a profile at most the slices the layouts give
        if j in block_var:
            for per, _ in periods:
                for prof in mig.MIG_PROFILES[c.accelerator]:
                    use = slice_use.get((j, per, prof))
                    if not use:
                        continue
                    terms = dict(use)
                    for li, lay in enumerate(layouts[c.accelerator]):
                        if lay.get(prof):
                            terms[layout_var[(j, li)]] = -float(lay[prof])
                    m.row(terms, hi=0.0)
        avail_hours: dict[int, float] = {}
        for per, hours in periods:
            terms = dict(whole)
            terms.update(owned_use.get((j, per), {}))
            m.row(terms, hi=float(c.gpus))  # serving whole GPUs + MIG blocks <= GPUs
            for t in TP_SIZES:
                if t > 1 and owned_tp.get((j, per, t)):
                    terms_t = dict(owned_tp[(j, per, t)])
                    if t > MIG_BLOCK and j in mig_server_var:
                        terms_t[mig_server_var[j]] = float(c.gpus_per_server)  # whole-server replicas only on servers without MIG
                        m.row(terms_t, hi=float(c.gpus))
                    else:
                        if j in block_var:
                            terms_t[block_var[j]] = float(MIG_BLOCK)
                        m.row(terms_t, hi=float(c.gpus))
            # training GPU-hours: what serving and MIG leave in this period
            for v, coef in owned_use.get((j, per), {}).items():
                avail_hours[v] = avail_hours.get(v, 0.0) + coef * hours
        if owned_train.get(j):
            terms = dict(owned_train[j])
            for v, gh in avail_hours.items():
                terms[v] = terms.get(v, 0.0) + gh
            if j in block_var:
                terms[block_var[j]] = float(MIG_BLOCK) * H
            m.row(terms, hi=float(c.gpus) * H)

    # ---- cloud nodes: replicas packed into nodes; training GPU-hours into node-hours; quotas
    for site, cs in cloud.items():
        for per, hours in periods:
            for (s2, acc, cap, per2, t), terms in cloud_gpu.items():
                if s2 != site or per2 != per:
                    continue
                row = dict(terms)
                for it in itypes:
                    if INSTANCE_TYPES[it].accelerator == acc and INSTANCE_TYPES[it].gpus >= t and (site, it, cap, per) in node:
                        row[node[(site, it, cap, per)]] = -float(INSTANCE_TYPES[it].gpus)
                m.row(row, hi=0.0)
        # training GPU-hours on nodes: committed capacity counts what serving leaves (serving never uses reservations)
        for (s2, it, cap), terms in cloud_train.items():
            if s2 != site:
                continue
            gpus = float(INSTANCE_TYPES[it].gpus)
            if cap in COMMITTED:
                row = dict(terms)
                row[node[(site, it, cap, "peak")]] = -gpus * H
                m.row(row, hi=0.0)
            # on-demand and spot training: billed per GPU-hour above; its nodes count against the quota
        for cap_kind in ("on-demand", "spot"):
            for qc in ("P", "G"):
                quota = prices.quota_vcpus(cs.region, cap_kind, qc)
                caps = ("on-demand", "savings-plan") if cap_kind == "on-demand" else ("spot",)
                for per, _hours in periods:
                    row: dict[int, float] = {}
                    for it in itypes:
                        if quota_class(it) != qc:
                            continue
                        for cap in caps:
                            v = node.get((site, it, cap, per))
                            if v is not None:
                                row[v] = row.get(v, 0.0) + INSTANCE_TYPES[it].vcpus
                            for tv, factor in cloud_train.get((site, it, cap), {}).items():
                                # average running nodes of the training GPU-hours
                                row[tv] = row.get(tv, 0.0) + factor * INSTANCE_TYPES[it].vcpus / INSTANCE_TYPES[it].gpus / H
                    if row:
                        m.row(row, hi=float(quota))

    nv, ni, nr = m.size
    say(f"solving with HiGHS: {nv} variables ({ni} integer), {nr} constraints")
    x, info = m.solve(time_limit=time_limit, gap=gap, threads=threads)
    if x is None:
        info["gap"] = None
        return Proposal(math.nan, 0.0, math.nan, 0.0, [], [], [], [], [], {}, info, unmet or [f"the solver found no feasible plan ({info['status']}): demand exceeds what quotas, reservations and owned GPUs allow"])
    say("pricing the solution")
    return _read(fleet, demand, prices, opt, owned, cloud, region_of, x, info, replicas, shape_var, train_vars, node, node_price, layout_var, layouts, est_cache, periods, unmet)


def _entry_sites(demand: Demand, i: int, opt: Options, fleet) -> list[str]:  # noqa: ANN001
    if opt.residency:
        sites = demand.serving_sites[i]
    else:
        sites = list(demand.spec.serving[i].sites)
    cloud = {c.site for c in opt.cloud}
    owned = {c.site for c in opt.owned} if opt.allow_owned else set()
    usable = [s for s in sites if s in cloud or s in owned]
    if not usable and not opt.residency:
        usable = sorted(cloud)  # everything on cloud: the regulated traffic priced in the cloud regions
    return usable


def _train_sites(demand: Demand, qi: int, opt: Options, fleet) -> list[str]:  # noqa: ANN001
    sites = demand.training_sites[qi] if opt.residency else list(demand.spec.training[qi].sites or fleet.worker_sites())
    cloud = {c.site for c in opt.cloud}
    owned = {c.site for c in opt.owned} if opt.allow_owned else set()
    usable = [s for s in sites if s in cloud or s in owned]
    if not usable and not opt.residency:
        usable = sorted(cloud)
    return usable


def _prune(shapes: list[ReplicaShape], entries: list[int], est: dict, prices: Prices, keep: int) -> list[ReplicaShape]:
    """The ``keep`` shapes with the lowest on-demand cost per output token/s (a restriction: the gap is then relative to it)."""

    def score(k: ReplicaShape) -> float:
        best = INF
        for i in entries:
            e = est.get((i, k))
            if e is None or not e.feasible:
                continue
            per_gpu = prices.owned_usd_per_gpu_hour(k.accelerator) if k.accelerator in prices.spec.owned else 10.0
            gpus = k.gpus if not k.mig_profile else mig.MIG_PROFILES[k.accelerator][k.mig_profile].memory_slices / 8
            best = min(best, per_gpu * gpus / e.tokens_per_s)
        return best

    return sorted(shapes, key=score)[:keep]


# ---------------------------------------------------------------- the solution


def _read(fleet, demand, prices, opt, owned, cloud, region_of, x, info, replicas, shape_var, train_vars, node, node_price, layout_var, layouts, est_cache, periods, unmet) -> Proposal:  # noqa: ANN001, PLR0913
    H = prices.hours
    hours = dict(periods)
    val = lambda v: int(round(x[v]))  # noqa: E731
    placements = {}
    for (model, k), v in shape_var.items():
        if x[v] > 0.5:
            placements[model] = {"accelerator": k.accelerator, "mig_profile": k.mig_profile, "quantization": k.quantization, "tensor_parallel": k.tensor_parallel}
    # cloud node cost, and the price of one GPU-hour in each (site, accelerator, capacity)
    site_cost: dict[str, dict[str, float]] = defaultdict(lambda: {"owned": 0.0, "cloud": 0.0})
    pools = []
    gpu_hour_price: dict[tuple[str, str, str], float] = {}
    for (site, it, cap, per), v in node.items():
        if per != "peak":
            continue
        n_peak, n_off = val(v), val(node[(site, it, cap, "offpeak")])
        price = node_price[(site, it, cap)]
        cost = price * H * n_peak if cap in COMMITTED else price * (n_peak * hours["peak"] + n_off * hours["offpeak"])
        acc = INSTANCE_TYPES[it].accelerator
        key = (site, acc, cap)
        gpu_hour_price[key] = min(gpu_hour_price.get(key, INF), price / INSTANCE_TYPES[it].gpus)
        if n_peak or n_off:
            site_cost[site]["cloud"] += cost
            pools.append({"site": site, "instance_type": it, "capacity_type": cap, "nodes_peak": n_peak, "nodes_offpeak": n_off, "usd_per_month": round(cost, 2), "for": []})
    # training on cloud: on-demand and spot are billed per GPU-hour (not in nodes above)
    training = []
    owned_train_hours: dict[int, float] = defaultdict(float)
    for qi, site, cap, it, j, v in train_vars:
        gh = float(x[v])
        if gh < 0.5:
            continue
        t = demand.spec.training[qi]
        if cap == "owned":
            acc = owned[j].accelerator
            cost = gh * prices.owned_usd_per_gpu_hour(acc)
            owned_train_hours[j] += gh
            row_cap = "owned"
        else:
            acc = INSTANCE_TYPES[it].accelerator
            factor = 1 + prices.spec.spot_interruption_allowance if cap == "spot" else 1.0
            gpu_price = node_price[(site, it, cap)] / INSTANCE_TYPES[it].gpus
            cost = gh * gpu_price * factor
            if cap not in COMMITTED:
                site_cost[site]["cloud"] += cost
                nodes = max(math.ceil(t.job_gpus / INSTANCE_TYPES[it].gpus), math.ceil(gh * factor / H / INSTANCE_TYPES[it].gpus))
                pools.append({"site": site, "instance_type": it, "capacity_type": cap, "nodes_peak": nodes, "nodes_offpeak": 0, "usd_per_month": round(cost, 2), "for": [t.queue], "training": True})
            else:
                for p in pools:
                    if p["site"] == site and p["instance_type"] == it and p["capacity_type"] == cap:
                        p["for"].append(t.queue)
                        p["training"] = True
            row_cap = cap
        training.append({"queue": t.queue, "site": site, "accelerator": acc, "capacity_type": row_cap, "instance_type": it, "gpu_hours_per_month": round(gh, 1), "usd_per_month": round(cost, 2)})
    # serving rows
    rows: dict[tuple, dict[str, Any]] = {}
    owned_serving_gpu_hours: dict[int, float] = defaultdict(float)
    cloud_share: dict[tuple[str, str, str], float] = {}
    for i, site, k, cap, per, v in replicas:
        n = val(v)
        if not n:
            continue
        d = demand.spec.serving[i]
        key = (d.model, site, k, cap.kind, cap.owned, i)
        e = est_cache[(i, k)]
        r = rows.setdefault(key, {
            "model": d.model, "site": site, "accelerator": k.accelerator, "mig_profile": k.mig_profile, "quantization": k.quantization,
            "tensor_parallel": k.tensor_parallel, "replicas_peak": 0, "replicas_offpeak": 0, "capacity_type": cap.label,
            "tokens_per_s_per_replica": round(e.tokens_per_s, 1), "demand_tokens_per_s": round(d.requests_per_s.peak * d.output_tokens, 1),
            "demand_entry": i, "batch": e.batch, "kv_cache_gib": round(e.kv_cache_gib, 1), "weights_gib": round(e.weights_gib, 1),
            "memory_offered_gib": round(e.memory_offered_gib, 1), "tpot_p95_ms": round(e.tpot_p95_ms, 1), "ttft_p95_s": round(e.ttft_p95_s, 2),
            "perf_provenance": e.provenance, "usd_per_month": 0.0, "server_class": owned[cap.owned].server_class if cap.owned is not None else None,
        })
        r[f"replicas_{per}"] += n
        gpus = k.gpus if not k.mig_profile else mig.MIG_PROFILES[k.accelerator][k.mig_profile].memory_slices / mig.MEMORY_SLICES
        if cap.kind == "owned":
            r["usd_per_month"] += n * gpus * hours[per] * prices.owned_usd_per_gpu_hour(k.accelerator)
            owned_serving_gpu_hours[cap.owned] += n * gpus * hours[per]
        else:
            gh = (n * k.gpus * H if per == "peak" else 0.0) if cap.kind in COMMITTED else n * k.gpus * hours[per]
            r["_gpu_hours"] = r.get("_gpu_hours", 0.0) + gh
            cloud_share[(site, k.accelerator, cap.kind)] = cloud_share.get((site, k.accelerator, cap.kind), 0.0) + gh
            for p in pools:
                if p["site"] == site and INSTANCE_TYPES[p["instance_type"]].accelerator == k.accelerator and p["capacity_type"] == cap.kind and d.model not in p["for"]:
                    p["for"].append(d.model)
    # a cloud row's cost: its share (GPU-hours) of the serving pools of its accelerator and capacity type
    pool_cost: dict[tuple[str, str, str], float] = defaultdict(float)
    for p in pools:
        if not p.get("training"):
            pool_cost[(p["site"], INSTANCE_TYPES[p["instance_type"]].accelerator, p["capacity_type"])] += p["usd_per_month"]
    serving = []
    for r in rows.values():
        gh = r.pop("_gpu_hours", None)
        if gh is not None:
            key = (r["site"], r["accelerator"], r["capacity_type"])
            r["usd_per_month"] = pool_cost[key] * gh / cloud_share[key] if cloud_share.get(key) else 0.0
        r["usd_per_month"] = round(r["usd_per_month"], 2)
        serving.append(r)
    serving.sort(key=lambda r: (r["model"], r["site"], r["capacity_type"]))
    # MIG layouts chosen
    mig_rows = []
    mig_gpus: dict[int, int] = defaultdict(int)
    for (j, li), v in layout_var.items():
        n = val(v)
        if n:
            c = owned[j]
            mig_rows.append({"site": c.site, "server_class": c.server_class, "accelerator": c.accelerator, "gpus": n, "profiles": dict(layouts[c.accelerator][li])})
            mig_gpus[j] += n
    # owned cost and utilisation
    owned_total = 0.0
    owned_hours = 0.0
    used_hours = 0.0
    for j, c in enumerate(opt.owned if opt.allow_owned else []):
        price = prices.owned_usd_per_gpu_hour(c.accelerator)
        owned_total += c.gpus * H * price
        site_cost[c.site]["owned"] += c.gpus * H * price
        owned_hours += c.gpus * H
        used_hours += owned_serving_gpu_hours.get(j, 0.0) + owned_train_hours.get(j, 0.0)
    cloud_total = sum(v["cloud"] for v in site_cost.values())
    sites = []
    for s in fleet.sites:
        if s.name in site_cost:
            sc = site_cost[s.name]
            sites.append({"site": s.name, "kind": s.kind, "owned_usd_per_month": round(sc["owned"], 2), "cloud_usd_per_month": round(sc["cloud"], 2), "usd_per_month": round(sc["owned"] + sc["cloud"], 2)})
    info = dict(info)
    info.pop("objective", None)
    return Proposal(
        total_usd_per_month=round(owned_total + cloud_total, 2),
        owned_usd_per_month=round(owned_total, 2),
        cloud_usd_per_month=round(cloud_total, 2),
        owned_gpu_utilisation=round(used_hours / owned_hours, 4) if owned_hours else 0.0,
        serving=serving,
        training=sorted(training, key=lambda r: (r["queue"], r["site"], r["capacity_type"])),
        sites=sites,
        mig_layouts=mig_rows,
        pools=sorted(pools, key=lambda p: (p["site"], p["instance_type"], p["capacity_type"])),
        placements=placements,
        solver=info,
        unmet=unmet,
    )
