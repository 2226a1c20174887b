"""The optimizer's mixed-integer program, one method per constraint family.

:class:`FleetProgram` builds the program for one fleet, demand, price file
and set of options. Notation (per month; ``H`` hours in it, ``h_peak`` and
``h_off`` its peak and off-peak hours, ``per`` a period):

* ``n[s,it,c,per]`` nodes of instance type ``it`` and capacity type ``c`` at
  AWS site ``s``;
* ``b_j``, ``σ_j``, ``y_jl``: MIG blocks of four GPUs, servers touched by MIG
  and GPUs carrying layout ``l`` in owned server class ``j``;
* ``z_mk`` = 1 when model ``m`` runs replica shape ``k`` (accelerator or MIG
  profile, quantization, tensor-parallel size ``tp_k``);
* ``x[i,k,cap,per]`` replicas of demand entry ``i`` in shape ``k`` on
  capacity ``cap`` (an owned class, or a cloud capacity type at a site);
* ``g[q,...]`` GPU-hours of training queue ``q`` on an owned class or on an
  instance and capacity type at a site (continuous).

Two objectives. ``cost``: cloud USD a month (owned GPUs are committed cost, a
constant added when the solution is priced). ``owned``: the owned GPU-hours
the plan holds, priced (whole GPUs of replicas, a MIG replica counted as the
GPU it would otherwise take, GPUs partitioned by MIG layouts, owned training);
it only chooses among plans of equal cost, so that the plan starts no replica
or MIG partition it does not need.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from gpufleet import mig
from gpufleet.catalog import ACCELERATORS, INSTANCE_TYPES

from .demand import Demand
from .perf import Estimate, ReplicaShape, Workload, estimate
from .prices import COMMITTED, Prices, quota_class
from .program import INF, Program
from .supply import CloudSite, OwnedClass, gpu_instance_types

TP_SIZES = (1, 2, 4, 8)
MIG_BLOCK = 4  # GPUs of an 8-GPU server partitioned together
TIE_BREAK = 1e-4  # weight of the ``owned`` objective when both are folded into one (Options.lexicographic False)
RESERVED = ("capacity-block", "reserved")  # bought for training here; serving never runs on them


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


class Replicas(NamedTuple):
    """One column: replicas of a demand entry's shape on one capacity in one period."""

    entry: int
    site: str
    shape: ReplicaShape
    capacity: Capacity
    period: str
    col: int


class TrainingHours(NamedTuple):
    """One column: GPU-hours of a training queue on an owned class or a cloud instance and capacity type."""

    queue: int
    site: str
    kind: str  # "owned" or the cloud capacity type
    instance_type: str | None
    owned: int | None
    col: int


@dataclass
class MigColumns:
    blocks: int
    servers: int
    layouts: dict[int, int]  # index into layouts_of(accelerator) -> column


@lru_cache(maxsize=None)
def layouts_of(accelerator: str) -> tuple[dict[str, int], ...]:
    """The maximal MIG layouts of one GPU under NVIDIA's placement rules, without
    media-extension and whole-GPU (7g) profiles: the layouts the program chooses from."""
    return tuple(lay for lay in mig.gpu_layouts(accelerator) if not any("+me" in p for p in lay) and not any(p.startswith("7g") for p in lay))


@lru_cache(maxsize=None)
def useful_layouts(accelerator: str, profiles: frozenset[str]) -> tuple[int, ...]:
    """Indices of the layouts no other layout beats on every one of ``profiles``
    (of equal ones, the first)."""
    lays = layouts_of(accelerator)
    vec = [tuple(lay.get(p, 0) for p in sorted(profiles)) for lay in lays]
    keep = []
    for a, va in enumerate(vec):
        if not any(va):
            continue
        if any(b != a and all(x >= y for x, y in zip(vb, va)) and (vb != va or b < a) for b, vb in enumerate(vec)):
            continue
        keep.append(a)
    return tuple(keep)


def candidate_shapes(quantizations: list[str], accelerators: set[str], mig_accelerators: set[str], max_tp: dict[str, int]) -> list[ReplicaShape]:
    """Whole-GPU shapes (every quantization, accelerator and TP size up to the largest
    server or instance) and one-slice MIG shapes (no media-extension or 7g profiles)."""
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


def slice_gpus(shape: ReplicaShape) -> float:
    """GPUs a replica occupies: its TP size, or its MIG profile's share of memory slices."""
    if shape.mig_profile:
        return mig.MIG_PROFILES[shape.accelerator][shape.mig_profile].memory_slices / mig.MEMORY_SLICES
    return float(shape.gpus)


class FleetProgram:
    """The program for one fleet, demand, price file and options (:class:`.optimize.Options`).

    ``build()`` adds the constraint families in order; each method's docstring
    states the columns and rows it adds. The capacity families read what
    ``serving`` and ``training`` recorded in the usage maps below.
    """

    def __init__(self, fleet, demand: Demand, prices: Prices, opt: Any, calibration: Any = None) -> None:  # noqa: ANN001
        self.fleet, self.demand, self.prices, self.opt, self.calibration = fleet, demand, prices, opt, calibration
        self.H = prices.hours
        h_peak = self.H * demand.peak_fraction
        self.periods: tuple[tuple[str, float], ...] = (("peak", h_peak), ("offpeak", self.H - h_peak))
        self.owned: list[OwnedClass] = opt.owned if opt.allow_owned else []
        self.owned_by_site: dict[str, list[int]] = defaultdict(list)
        for j, c in enumerate(self.owned):
            self.owned_by_site[c.site].append(j)
        self.owned_sites = set(self.owned_by_site)
        # owned classes that may carry MIG: an accelerator with MIG, servers in whole blocks of four GPUs
        self.mig_capable = {j for j, c in enumerate(self.owned) if ACCELERATORS[c.accelerator].mig and c.gpus_per_server % MIG_BLOCK == 0}
        self.cloud: dict[str, CloudSite] = {c.site: c for c in opt.cloud}
        self.itypes = gpu_instance_types(prices)
        self.p = Program()
        # columns, by family
        self.node: dict[tuple[str, str, str, str], int] = {}  # (site, instance type, capacity, period)
        self.node_price: dict[tuple[str, str, str], float] = {}  # (site, instance type, capacity) -> USD per node-hour
        self.node_limit: dict[tuple[str, str, str], float] = {}  # (site, instance type, capacity) -> most nodes
        self.largest_node: dict[tuple[str, str, str], int] = {}  # (site, capacity, accelerator) -> GPUs of its largest instance type
        self.mig: dict[int, MigColumns] = {}  # owned class -> its MIG columns
        self.pick: dict[tuple[str, ReplicaShape], int] = {}  # (model, shape) -> z
        self.replicas: list[Replicas] = []
        self.train: list[TrainingHours] = []
        self.estimates: dict[tuple[int, ReplicaShape], Estimate] = {}
        self._estimate_cache: dict[tuple[ReplicaShape, Workload, str | None], Estimate] = {}
        # usage, recorded by serving and training, summed by the capacity families
        self.owned_gpus: dict[tuple[int, str], dict[int, float]] = defaultdict(dict)  # (class, period) -> {x: tp}
        self.owned_tp: dict[tuple[int, str, int], dict[int, float]] = defaultdict(dict)  # (class, period, t) -> {x: tp} for tp >= t > 1
        self.slices: dict[tuple[int, str, str], dict[int, float]] = defaultdict(dict)  # (class, period, profile) -> {x: 1}
        self.cloud_gpus: dict[tuple[str, str, str, str, int], dict[int, float]] = defaultdict(dict)  # (site, acc, cap, period, t) -> {x: tp} for tp >= t
        self.owned_train: dict[int, dict[int, float]] = defaultdict(dict)  # class -> {g: 1}
        self.cloud_train: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)  # (site, instance type, cap) -> {g: factor}
        self.unmet: list[str] = []

    # ----------------------------------------------------------- helpers

    def _col(self, name: Any, cost: float, owned_use: float, lb: float, ub: float, integer: bool = True) -> int:
        """A column with its cloud cost and its owned GPU-hours (priced); folded into
        one objective with weight TIE_BREAK unless the options solve them in order."""
        if self.opt.lexicographic:
            return self.p.var(name, cost, lb, ub, integer, owned=owned_use)
        return self.p.var(name, cost + TIE_BREAK * owned_use, lb, ub, integer)

    def owned_price(self, accelerator: str) -> float:
        return self.prices.owned_usd_per_gpu_hour(accelerator)

    def build(self) -> FleetProgram:
        self.cloud_nodes()
        self.serving()
        self.training()
        self.mig_layouts()
        self.owned_capacity()
        self.cloud_capacity()
        return self

    # ------------------------------------------------------- cloud nodes

    def cloud_nodes(self) -> None:
        """Node prices per AWS site ``s``, GPU instance type ``it`` and capacity type ``c``.

        The columns ``n[s,it,c,per]`` (integer ≥ 0) come with the first row that
        uses them (:meth:`node_columns`): a type no replica or training GPU-hour can
        use gets none. For a capacity block or reservation only where a node pool
        holds one, and ``n ≤`` the pools' maxSize.
        """
        for site, cs in self.cloud.items():
            for it in self.itypes:
                for cap in self.opt.capacity_types:
                    price = self.prices.instance_usd_per_hour(it, cs.region, cap)
                    if price is None:
                        continue
                    if cap in RESERVED:
                        limit = cs.reservations.get((it, cap), 0)
                        if not limit:
                            continue
                    else:
                        limit = INF
                    self.node_price[(site, it, cap)] = price
                    self.node_limit[(site, it, cap)] = limit
                    key = (site, cap, INSTANCE_TYPES[it].accelerator)
                    self.largest_node[key] = max(self.largest_node.get(key, 0), INSTANCE_TYPES[it].gpus)

    def node_columns(self, site: str, it: str, cap: str) -> dict[str, int]:
        """``n[site,it,cap,per]`` per period, made on first use. Cost: on-demand and
        Spot ``price · hours(per)``; committed capacity (savings plan, capacity block,
        reservation) ``price · H`` on the peak column, with ``n[.., offpeak] ≤ n[.., peak]``
        (off-peak runs at most what is paid for)."""
        if (site, it, cap, "peak") not in self.node:
            price, limit = self.node_price[(site, it, cap)], self.node_limit[(site, it, cap)]
            if cap in COMMITTED:
                peak = self.node[(site, it, cap, "peak")] = self._col(("node", site, it, cap, "peak"), price * self.H, 0.0, 0, limit)
                off = self.node[(site, it, cap, "offpeak")] = self._col(("node", site, it, cap, "offpeak"), 0.0, 0.0, 0, limit)
                self.p.row(((off, 1.0), (peak, -1.0)), hi=0.0)
            else:
                for per, hours in self.periods:
                    self.node[(site, it, cap, per)] = self._col(("node", site, it, cap, per), price * hours, 0.0, 0, limit)
        return {per: self.node[(site, it, cap, per)] for per, _ in self.periods}

    # -------------------------------------------------------- MIG layouts

    def mig_layouts(self) -> None:
        """MIG layouts of each owned class with MIG replicas, in blocks of four GPUs.

        ``b_j ∈ [0, GPUs/4]`` blocks, ``σ_j ∈ [0, servers]`` servers touched by MIG,
        ``y_jl ∈ [0, GPUs]`` GPUs carrying layout ``l``: ``g·σ_j ≥ 4·b_j`` (the blocks
        lie on the servers counted) and ``Σ_l y_jl = 4·b_j`` (the partitioned GPUs fill
        the blocks). A partitioned GPU is held all month (``owned`` objective:
        ``H · price`` per GPU).

        The layouts are the maximal ones of NVIDIA's placement rules
        (:func:`layouts_of`) that no other gives at least as many instances of every
        profile a replica here may use: a GPU with a dominated layout could carry the
        other at the same cost. A class no MIG replica may use gets no MIG columns
        (partitioning it would only hold GPUs).
        """
        wanted: dict[int, set[str]] = defaultdict(set)
        for (j, _per, prof) in self.slices:
            wanted[j].add(prof)
        for j, profiles in sorted(wanted.items()):
            c = self.owned[j]
            price = self.owned_price(c.accelerator)
            blocks = self._col(("mig_blocks", j), 0.0, 0.0, 0, c.gpus // MIG_BLOCK)
            servers = self._col(("mig_servers", j), 0.0, 0.0, 0, len(c.hosts))
            self.p.row(((servers, float(c.gpus_per_server)), (blocks, -float(MIG_BLOCK))), lo=0.0)
            kept = useful_layouts(c.accelerator, frozenset(profiles)) if self.opt.strengthen else range(len(layouts_of(c.accelerator)))
            cols = {li: self._col(("mig_layout", j, li), 0.0, price * self.H, 0, c.gpus) for li in kept}
            self.p.row([(blocks, -float(MIG_BLOCK))] + [(v, 1.0) for v in cols.values()], lo=0.0, hi=0.0)
            self.mig[j] = MigColumns(blocks, servers, cols)

    # ------------------------------------------------------------ serving

    def serving(self) -> None:
        """Per model one replica shape; per demand entry, shape, capacity and period, replicas.

        ``Σ_k z_mk = 1`` (fleet.yaml holds one placement per model). For entry ``i``
        of model ``m`` and each shape ``k`` that meets its SLO with weights and KV
        cache in memory (:mod:`.perf`), on each capacity at its sites that can hold
        it: ``x[i,k,cap,per]`` integer in ``[0, M]`` with ``M = ⌈max_per need / rate⌉ + 1``,
        ``x ≤ M · z_mk`` (only the chosen shape runs), and per period
        ``Σ_{k,cap} rate(k,cap) · x ≥ need(per)`` (output tokens/s; a Spot replica
        counts ``rate / (1 + spot serving allowance)``). An owned replica holds
        ``tp · hours(per)`` owned GPU-hours (``owned`` objective). These are the plain
        rows; by default (``Options.strengthen``) they are written per shape, with
        the same integer points and a tighter relaxation (:meth:`_serve_entry_tight`).
        Shapes another shape of the model dominates are left out
        (``Options.prune_dominated``, :meth:`_undominated`).
        """
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, d in enumerate(self.demand.spec.serving):
            by_model[d.model].append(i)
        for model, entries in by_model.items():
            shapes = self._model_shapes(model, entries)
            if not shapes:
                self.unmet.append(f"{model}: no accelerator, MIG profile, quantization and tensor-parallel size at its sites meets the SLO with its weights and KV cache in memory")
                continue
            pick = {k: self._col(("shape", model, k), 0.0, 0.0, 0, 1) for k in shapes}
            self.pick.update({(model, k): v for k, v in pick.items()})
            self.p.row([(v, 1.0) for v in pick.values()], lo=1.0, hi=1.0)
            for i in entries:
                self._serve_entry(i, shapes, pick)

    def _model_shapes(self, model: str, entries: list[int]) -> list[ReplicaShape]:
        """The shapes that meet at least one of the model's entries, with their estimates."""
        d0 = self.demand.spec.serving
        quants = sorted({q for i in entries for q in d0[i].quantizations})
        accs: set[str] = set()
        mig_accs: set[str] = set()
        max_tp: dict[str, int] = {}
        for i in entries:
            for s in self.entry_sites(i):
                for j in self.owned_by_site.get(s, []):
                    a = self.owned[j].accelerator
                    accs.add(a)
                    max_tp[a] = max(max_tp.get(a, 0), self.owned[j].gpus_per_server)
                    if j in self.mig_capable:
                        mig_accs.add(a)
                if s in self.cloud:
                    for it in self.itypes:
                        a = INSTANCE_TYPES[it].accelerator
                        accs.add(a)
                        max_tp[a] = max(max_tp.get(a, 0), INSTANCE_TYPES[it].gpus)
        feasible = []
        for k in candidate_shapes(quants, accs, mig_accs, max_tp):
            ok = False
            for i in entries:
                if k.quantization not in d0[i].quantizations:
                    continue
                e = self.estimates[(i, k)] = self._estimate(k, self.demand.workload(i), model)
                ok = ok or e.feasible
            if ok:
                feasible.append(k)
        if self.opt.prune_dominated:
            feasible = self._undominated(feasible, entries)
        return feasible

    def _estimate(self, k: ReplicaShape, w: Workload, model: str) -> Estimate:
        """:func:`.perf.estimate`, once per shape and workload (and model, where measured figures may apply)."""
        key = (k, w, model if self.calibration is not None else None)
        e = self._estimate_cache.get(key)
        if e is None:
            e = self._estimate_cache[key] = estimate(k, w, model, self.calibration)
        return e

    def _undominated(self, shapes: list[ReplicaShape], entries: list[int]) -> list[ReplicaShape]:
        """The shapes no other shape of the model dominates.

        ``B`` dominates ``A`` when both run on the same accelerator, both on whole
        GPUs with ``tp_B`` dividing ``tp_A`` (or both on the same MIG profile, ``r = 1``),
        and at every entry where ``A`` meets the SLO ``B`` meets it too with
        ``r · rate_B ≥ rate_A``, ``r = tp_A / tp_B``. Then any plan that runs ``A``
        stays a plan when each ``A`` replica becomes ``r`` replicas of ``B`` on the
        same capacity: the same GPUs (and owned GPU-hours), at least the same tokens/s,
        and ``B`` fits wherever ``A`` fits (a smaller TP size fits every server and
        instance a larger one fits; a smaller TP size only loosens the TP packing
        rows). So dropping ``A`` changes neither the optimal cost nor the owned
        GPU-hours. Of shapes that dominate each other (equal everywhere) the first in
        candidate order stays.
        """
        est = self.estimates
        rates = {k: [(e.tokens_per_s if (e := est.get((i, k))) is not None and e.feasible else 0.0) for i in entries] for k in shapes}

        def weakly(b: ReplicaShape, a: ReplicaShape) -> bool:
            if a.tensor_parallel % b.tensor_parallel:
                return False
            r = a.tensor_parallel // b.tensor_parallel
            return all(ra == 0.0 or (rb > 0.0 and r * rb >= ra) for ra, rb in zip(rates[a], rates[b]))

        groups: dict[tuple[str, str | None], list[ReplicaShape]] = defaultdict(list)
        for k in shapes:
            groups[(k.accelerator, k.mig_profile)].append(k)
        order = {k: n for n, k in enumerate(shapes)}
        dropped = set()
        for group in groups.values():
            for a in group:
                if any(b is not a and weakly(b, a) and (not weakly(a, b) or order[b] < order[a]) for b in group):
                    dropped.add(a)
        return [k for k in shapes if k not in dropped]

    def capacities(self, i: int, shape: ReplicaShape) -> list[Capacity]:
        """Where a replica of entry ``i`` in ``shape`` may run: owned classes of its
        accelerator (with MIG for a MIG shape; a whole-GPU replica within one server)
        and cloud capacity types with an instance type that holds it (Spot only for
        interruptible traffic; no capacity blocks or reservations)."""
        d = self.demand.spec.serving[i]
        caps: list[Capacity] = []
        for s in self.entry_sites(i):
            for j in self.owned_by_site.get(s, []):
                c = self.owned[j]
                if c.accelerator != shape.accelerator:
                    continue
                if shape.mig_profile and j not in self.mig_capable:
                    continue
                if not shape.mig_profile and shape.tensor_parallel > c.gpus_per_server:
                    continue
                caps.append(Capacity(s, "owned", owned=j))
            if s in self.cloud and not shape.mig_profile:
                for cap in self.opt.capacity_types:
                    if cap == "spot" and not d.interruptible:
                        continue
                    if cap in RESERVED:
                        continue
                    if self.largest_node.get((s, cap, shape.accelerator), 0) >= shape.tensor_parallel:
                        caps.append(Capacity(s, cap))
        return caps

    def _serve_entry(self, i: int, shapes: list[ReplicaShape], pick: dict[ReplicaShape, int]) -> None:
        if self.opt.strengthen:
            self._serve_entry_tight(i, shapes, pick)
            return
        d = self.demand.spec.serving[i]
        need = self.need(i)
        cover: dict[str, list[tuple[int, float]]] = {"peak": [], "offpeak": []}
        for k in shapes:
            e = self.estimates.get((i, k))
            if e is None or not e.feasible:
                continue
            bound = math.ceil(max(need.values()) / e.tokens_per_s) + 1
            for cap in self.capacities(i, k):
                rate = self.rate(e, cap)
                for per, hours in self.periods:
                    v = self._replica_col(i, k, cap, per, hours, bound)
                    self.p.row(((v, 1.0), (pick[k], -float(bound))), hi=0.0)
                    cover[per].append((v, rate))
        for per in ("peak", "offpeak"):
            if need[per] > 0:
                if not cover[per]:
                    self.unmet.append(f"serving[{i}] ({d.model}): no shape meets its SLO at {', '.join(self.entry_sites(i)) or 'any allowed site'}")
                    continue
                self.p.row(cover[per], lo=need[per])

    def _serve_entry_tight(self, i: int, shapes: list[ReplicaShape], pick: dict[ReplicaShape, int]) -> None:
        """The same choices as the plain rows, written per shape (the tighter relaxation).

        For entry ``i``, shape ``k`` and a period with ``need > 0``, with ``r_c`` the
        rate of a replica on capacity ``c``:

        * ``x_c ≤ ⌈need / r_c⌉`` and ``Σ_c x_c ≤ ⌈need / min_c r_c⌉ · z_k``: a plan
          with more replicas keeps meeting every row when replicas are dropped until
          none can be (every other row has non-negative replica coefficients on its
          ``≤`` side and every objective is non-negative), and such a minimal cover
          has at most those counts;
        * ``Σ_c min(r_c, need) · x_c ≥ need · z_k`` (the demand, met by the chosen
          shape itself: with ``Σ z = 1`` and the row above, the same integer points
          as one row over all shapes);
        * ``Σ_c x_c ≥ ⌈need / max_c r_c⌉ · z_k`` (implied by the row above for
          integers; it cuts the relaxation's fractional replicas).

        Where the two counts agree (one capacity, or rates alike) the rows are one:
        ``Σ_c x_c = ⌈need / r⌉ · z_k`` (then any that many replicas meet the demand).

        A period without demand gets no replica columns. A shape that cannot serve
        a period the entry needs is excluded (``z_k = 0``), as the plain row over all
        shapes excludes it.
        """
        d = self.demand.spec.serving[i]
        need = self.need(i)
        served = {"peak": False, "offpeak": False}
        blocked: dict[str, list[ReplicaShape]] = {"peak": [], "offpeak": []}
        for k in shapes:
            e = self.estimates.get((i, k))
            caps = self.capacities(i, k) if e is not None and e.feasible else []
            for per, hours in self.periods:
                if need[per] <= 0:
                    continue
                if not caps:
                    blocked[per].append(k)
                    continue
                served[per] = True
                rates = [self.rate(e, cap) for cap in caps]
                cols = [self._replica_col(i, k, cap, per, hours, math.ceil(need[per] / r * (1 + 1e-9))) for cap, r in zip(caps, rates)]
                most = math.ceil(need[per] / min(rates) * (1 + 1e-9))
                least = math.ceil(need[per] / max(rates) * (1 - 1e-9))
                z = pick[k]
                count = [(v, 1.0) for v in cols]
                if least == most:
                    # any `most` replicas meet the demand: one row says it all
                    self.p.row(count + [(z, -float(most))], lo=0.0, hi=0.0)
                    continue
                self.p.row(count + [(z, -float(most))], hi=0.0)
                self.p.row([(v, min(r, need[per])) for v, r in zip(cols, rates)] + [(z, -need[per])], lo=0.0)
                if least > 1:
                    self.p.row(count + [(z, -float(least))], lo=0.0)
        for per in ("peak", "offpeak"):
            if need[per] <= 0:
                continue
            if not served[per]:
                self.unmet.append(f"serving[{i}] ({d.model}): no shape meets its SLO at {', '.join(self.entry_sites(i)) or 'any allowed site'}")
                continue
            for k in blocked[per]:
                self.p.ub[pick[k]] = 0.0

    def need(self, i: int) -> dict[str, float]:
        """Output tokens/s entry ``i`` needs, per period."""
        d = self.demand.spec.serving[i]
        return {"peak": d.requests_per_s.peak * d.output_tokens, "offpeak": d.requests_per_s.offpeak * d.output_tokens}

    def rate(self, e: Estimate, cap: Capacity) -> float:
        """Output tokens/s a replica counts for: a Spot replica ``rate / (1 + spot serving allowance)``."""
        return e.tokens_per_s / (1 + self.prices.spec.spot_serving_allowance) if cap.kind == "spot" else e.tokens_per_s

    def _replica_col(self, i: int, k: ReplicaShape, cap: Capacity, per: str, hours: float, ub: float) -> int:
        use = self.owned_price(k.accelerator) * hours * k.gpus if cap.kind == "owned" else 0.0
        v = self._col(("replicas", i, cap.site, k, cap.kind, cap.owned, per), 0.0, use, 0, ub)
        self.replicas.append(Replicas(i, cap.site, k, cap, per, v))
        self._record(cap, k, per, v)
        return v

    def _record(self, cap: Capacity, k: ReplicaShape, per: str, v: int) -> None:
        """Note what replica column ``v`` uses, for the capacity families."""
        tp = float(k.tensor_parallel)
        if cap.kind == "owned":
            j = cap.owned
            if k.mig_profile:
                self.slices[(j, per, k.mig_profile)][v] = 1.0
            else:
                self.owned_gpus[(j, per)][v] = tp
                for t in TP_SIZES:
                    if 1 < t <= k.tensor_parallel:
                        self.owned_tp[(j, per, t)][v] = tp
        else:
            for t in TP_SIZES:
                if t <= k.tensor_parallel:
                    self.cloud_gpus[(cap.site, k.accelerator, cap.kind, per, t)][v] = tp

    # ----------------------------------------------------------- training

    def training(self) -> None:
        """GPU-hours of each training queue where its jobs fit.

        ``g ≥ 0`` (continuous) on every owned class at the queue's sites whose
        accelerator it accepts (by name, or by GPU memory), with NVSwitch where the
        queue needs it and at least a job's GPUs; and on every cloud instance and
        capacity type at its AWS sites (EFA for a job larger than one node, Spot
        only when interruptible). ``Σ g = `` the queue's GPU-hours. Cost: on-demand
        and Spot per GPU-hour (Spot × (1 + interruption allowance)); committed
        capacity costs nothing here (its nodes are paid in ``cloud_nodes``). Owned
        training holds its GPU-hours (``owned`` objective).
        """
        allowance = self.prices.spec.spot_interruption_allowance
        for qi, t in enumerate(self.demand.spec.training):
            if t.accelerators:
                accepts = set(t.accelerators).__contains__
            else:
                accepts = lambda a, t=t: ACCELERATORS[a].memory_gib >= float(t.min_gpu_memory_gib or 0)  # noqa: E731
            terms: list[tuple[int, float]] = []
            for s in self.train_sites(qi):
                for j in self.owned_by_site.get(s, []):
                    c = self.owned[j]
                    if not accepts(c.accelerator) or (t.interconnect == "nvswitch" and not c.nvswitch) or t.job_gpus > c.gpus:
                        continue
                    v = self._col(("train", qi, s, "owned", j), 0.0, self.owned_price(c.accelerator), 0, c.gpus * self.H, integer=False)
                    self.train.append(TrainingHours(qi, s, "owned", None, j, v))
                    self.owned_train[j][v] = 1.0
                    terms.append((v, 1.0))
                if s not in self.cloud:
                    continue
                for it in self.itypes:
                    a = INSTANCE_TYPES[it].accelerator
                    if not accepts(a) or (t.interconnect == "nvswitch" and not ACCELERATORS[a].nvswitch):
                        continue
                    if t.job_gpus > INSTANCE_TYPES[it].gpus and INSTANCE_TYPES[it].efa_interfaces == 0:
                        continue  # a multi-node job needs EFA
                    for cap in self.opt.capacity_types:
                        if (cap == "spot" and not t.interruptible) or (s, it, cap) not in self.node_price:
                            continue
                        factor = 1 + allowance if cap == "spot" else 1.0
                        cost = 0.0 if cap in COMMITTED else self.node_price[(s, it, cap)] / INSTANCE_TYPES[it].gpus * factor
                        v = self._col(("train", qi, s, cap, it), cost, 0.0, 0, INF, integer=False)
                        self.train.append(TrainingHours(qi, s, cap, it, None, v))
                        self.cloud_train[(s, it, cap)][v] = factor
                        terms.append((v, 1.0))
            if not terms:
                self.unmet.append(f"training[{qi}] ({t.queue}): no allowed site has a fitting accelerator")
                continue
            self.p.row(terms, lo=t.gpu_hours_per_month, hi=t.gpu_hours_per_month)

    # ----------------------------------------------------- owned capacity

    def owned_capacity(self) -> None:
        """Each owned GPU once: MIG slices, serving replicas and the training share together.

        Per owned class ``j`` and period:

        * MIG slices: replicas on profile ``p`` ``≤ Σ_l count_p(l) · y_jl``;
        * GPUs: ``Σ tp · x + 4 · b_j ≤ GPUs`` (whole-GPU replicas and MIG blocks);
        * tensor-parallel packing (TP sizes are powers of two, so one threshold row
          per size is exact): for ``t`` in 2, 4, 8 ``Σ_{tp ≥ t} tp · x + 4 · b_j ≤ GPUs``,
          and for ``t = 8`` ``g · σ_j`` in place of ``4 · b_j`` (whole-server replicas only
          on servers without MIG); with ``Options.strengthen`` only ``t = 8``, since the
          GPU row above holds the others' columns with the same coefficients;

        and over the month, training GPU-hours in what serving and MIG leave:
        ``Σ g_j + Σ_per hours(per) · Σ tp · x + 4 · b_j · H ≤ GPUs · H``.
        """
        for j, c in enumerate(self.owned):
            mc = self.mig.get(j)
            base = {mc.blocks: float(MIG_BLOCK)} if mc else {}
            if mc:
                lays = layouts_of(c.accelerator)
                for per, _ in self.periods:
                    for prof in mig.MIG_PROFILES[c.accelerator]:
                        use = self.slices.get((j, per, prof))
                        if not use:
                            continue
                        terms = dict(use)
                        for li, v in mc.layouts.items():
                            if lays[li].get(prof):
                                terms[v] = -float(lays[li][prof])
                        self.p.row(terms, hi=0.0)
            hours_used: dict[int, float] = {}
            for per, hours in self.periods:
                self.p.row({**base, **self.owned_gpus.get((j, per), {})}, hi=float(c.gpus))
                for t in TP_SIZES:
                    if self.opt.strengthen and t <= MIG_BLOCK:
                        continue  # implied: the GPU row holds the same columns with the same coefficients
                    if t > 1 and self.owned_tp.get((j, per, t)):
                        terms_t = dict(self.owned_tp[(j, per, t)])
                        if t > MIG_BLOCK and mc:
                            terms_t[mc.servers] = float(c.gpus_per_server)
                        elif mc:
                            terms_t[mc.blocks] = float(MIG_BLOCK)
                        self.p.row(terms_t, hi=float(c.gpus))
                for v, tp in self.owned_gpus.get((j, per), {}).items():
                    hours_used[v] = hours_used.get(v, 0.0) + tp * hours
            if self.owned_train.get(j):
                terms = dict(self.owned_train[j])
                for v, gh in hours_used.items():
                    terms[v] = terms.get(v, 0.0) + gh
                if mc:
                    terms[mc.blocks] = float(MIG_BLOCK) * self.H
                self.p.row(terms, hi=float(c.gpus) * self.H)

    # ----------------------------------------------------- cloud capacity

    def cloud_capacity(self) -> None:
        """Cloud replicas packed into nodes, training into reserved node-hours, and quotas.

        Per AWS site:

        * packing, per accelerator, capacity type, period and TP threshold ``t``:
          ``Σ_{tp ≥ t} tp · x ≤ Σ_{it: GPUs(it) ≥ t} GPUs(it) · n[it, c, per]``;
        * committed capacity: training ``Σ factor · g ≤ GPUs(it) · H · n[it, c, peak]``
          per instance type, and where serving runs on the same accelerator and
          capacity type, both together within the nodes paid:
          ``Σ factor · g + Σ_per hours(per) · Σ tp · x ≤ Σ_it GPUs(it) · H · n[it, c, peak]``
          (on-demand and Spot training is billed per GPU-hour instead);
        * quotas, per quota class (P, G) and kind (on-demand with savings plans; Spot),
          per period: ``Σ vCPUs(it) · n + Σ factor · g · vCPUs(it) / GPUs(it) / H ≤ quota``
          (training counted as its average running nodes).
        """
        by_site_period: dict[tuple[str, str], list[tuple[str, str, int, dict[int, float]]]] = defaultdict(list)
        for (s, acc, cap, per, t), terms in self.cloud_gpus.items():
            by_site_period[(s, per)].append((acc, cap, t, terms))
        for site, cs in self.cloud.items():
            for per, _hours in self.periods:
                for acc, cap, t, terms in by_site_period.get((site, per), []):
                    row = dict(terms)
                    for it in self.itypes:
                        if INSTANCE_TYPES[it].accelerator == acc and INSTANCE_TYPES[it].gpus >= t and (site, it, cap) in self.node_price:
                            row[self.node_columns(site, it, cap)[per]] = -float(INSTANCE_TYPES[it].gpus)
                    self.p.row(row, hi=0.0)
            self._committed(site)
            self._quotas(site, cs)

    def _committed(self, site: str) -> None:
        """Training GPU-hours on committed nodes, within what the nodes paid for leave."""
        shared: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)  # (accelerator, cap) -> training and serving GPU-hours
        for (s2, it, cap), terms in self.cloud_train.items():
            if s2 != site or cap not in COMMITTED:
                continue
            gpus = float(INSTANCE_TYPES[it].gpus)
            self.p.row({**terms, self.node_columns(site, it, cap)["peak"]: -gpus * self.H}, hi=0.0)
            shared[(INSTANCE_TYPES[it].accelerator, cap)].update(terms)
        for (acc, cap), row in shared.items():
            serving = [(per, hours, self.cloud_gpus.get((site, acc, cap, per, 1), {})) for per, hours in self.periods]
            if not any(terms for _, _, terms in serving):
                continue
            for _per, hours, terms in serving:
                for v, tp in terms.items():
                    row[v] = row.get(v, 0.0) + tp * hours
            for it in self.itypes:
                n = self.node.get((site, it, cap, "peak"))
                if n is not None and INSTANCE_TYPES[it].accelerator == acc:
                    row[n] = -float(INSTANCE_TYPES[it].gpus) * self.H
            self.p.row(row, hi=0.0)

    def _quotas(self, site: str, cs: CloudSite) -> None:
        for kind in ("on-demand", "spot"):
            caps = ("on-demand", "savings-plan") if kind == "on-demand" else ("spot",)
            for qc in ("P", "G"):
                quota = self.prices.quota_vcpus(cs.region, kind, qc)
                for per, _hours in self.periods:
                    row: dict[int, float] = {}
                    for it in self.itypes:
                        if quota_class(it) != qc:
                            continue
                        vcpus = INSTANCE_TYPES[it].vcpus
                        for cap in caps:
                            v = self.node.get((site, it, cap, per))
                            if v is not None:
                                row[v] = row.get(v, 0.0) + vcpus
                            for g, factor in self.cloud_train.get((site, it, cap), {}).items():
                                row[g] = row.get(g, 0.0) + factor * vcpus / INSTANCE_TYPES[it].gpus / self.H
                    if row:
                        self.p.row(row, hi=float(quota))

    # ------------------------------------------------------------- sites

    def entry_sites(self, i: int) -> list[str]:
        """The sites a serving entry may use (after residency, unless the options set it aside)."""
        opt = self.opt
        sites = self.demand.serving_sites[i] if opt.residency else list(self.demand.spec.serving[i].sites)
        return self._usable(sites)

    def train_sites(self, qi: int) -> list[str]:
        opt = self.opt
        sites = self.demand.training_sites[qi] if opt.residency else list(self.demand.spec.training[qi].sites or self.fleet.worker_sites())
        return self._usable(sites)

    def _usable(self, sites: list[str]) -> list[str]:
        usable = [s for s in sites if s in self.cloud or s in self.owned_sites]
        if not usable and not self.opt.residency:
            usable = sorted(self.cloud)  # everything on cloud: the regulated traffic priced in the cloud regions
        return usable
