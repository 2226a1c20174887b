"""Reading a solved program back as a proposal, priced without the tie-break.

:class:`Reading` turns the column values of a :class:`.formulation.FleetProgram`
into the rows ``gpufleet optimize`` prints: the shape chosen per model, node
pools and their cost, the training split, serving rows (a cloud row's cost is
its GPU-hour share of the pools of its accelerator and capacity type), MIG
layouts, and the owned cost and utilisation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpufleet.catalog import INSTANCE_TYPES

from .formulation import FleetProgram, layouts_of, slice_gpus
from .prices import COMMITTED


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


class Reading:
    """The proposal in one solution ``x`` of program ``fp``."""

    def __init__(self, fp: FleetProgram, x: np.ndarray) -> None:
        self.fp, self.x = fp, x
        self.prices = fp.prices
        self.H = fp.prices.hours
        self.hours = dict(fp.periods)
        self.site_cost: dict[str, dict[str, float]] = defaultdict(lambda: {"owned": 0.0, "cloud": 0.0})
        self.pools: list[dict[str, Any]] = []
        self.owned_train_hours: dict[int, float] = defaultdict(float)
        self.owned_serving_hours: dict[int, float] = defaultdict(float)

    def n(self, col: int) -> int:
        return int(round(self.x[col]))

    def proposal(self, solver: dict[str, Any]) -> Proposal:
        placements = self.placements()
        self.cloud_pools()
        training = self.training()
        serving = self.serving()
        mig_rows = self.mig_layouts()
        owned_total, utilisation = self.owned()
        cloud_total = sum(v["cloud"] for v in self.site_cost.values())
        return Proposal(
            total_usd_per_month=round(owned_total + cloud_total, 2),
            owned_usd_per_month=round(owned_total, 2),
            cloud_usd_per_month=round(cloud_total, 2),
            owned_gpu_utilisation=utilisation,
            serving=serving,
            training=sorted(training, key=lambda r: (r["queue"], r["site"], r["capacity_type"])),
            sites=self.sites(),
            mig_layouts=mig_rows,
            pools=sorted(self.pools, key=lambda p: (p["site"], p["instance_type"], p["capacity_type"])),
            placements=placements,
            solver=solver,
            unmet=self.fp.unmet,
        )

    def placements(self) -> dict[str, dict[str, Any]]:
        """The shape each model runs."""
        out = {}
        for (model, k), v in self.fp.pick.items():
            if self.x[v] > 0.5:
                out[model] = {"accelerator": k.accelerator, "mig_profile": k.mig_profile, "quantization": k.quantization, "tensor_parallel": k.tensor_parallel}
        return out

    def cloud_pools(self) -> None:
        """Node pools with nodes at peak or off-peak, and their cost (committed capacity: every hour of the month)."""
        node = self.fp.node
        for (site, it, cap, per), v in node.items():
            if per != "peak":
                continue
            n_peak, n_off = self.n(v), self.n(node[(site, it, cap, "offpeak")])
            price = self.fp.node_price[(site, it, cap)]
            cost = price * self.H * n_peak if cap in COMMITTED else price * (n_peak * self.hours["peak"] + n_off * self.hours["offpeak"])
            if n_peak or n_off:
                self.site_cost[site]["cloud"] += cost
                self.pools.append({"site": site, "instance_type": it, "capacity_type": cap, "nodes_peak": n_peak, "nodes_offpeak": n_off, "usd_per_month": round(cost, 2), "for": []})

    def training(self) -> list[dict[str, Any]]:
        """The training split. On-demand and Spot GPU-hours are billed per GPU-hour
        (a pool row of their own); GPU-hours on committed capacity tag its pool."""
        out = []
        allowance = self.prices.spec.spot_interruption_allowance
        for g in self.fp.train:
            gh = float(self.x[g.col])
            if gh < 0.5:
                continue
            t = self.fp.demand.spec.training[g.queue]
            it = g.instance_type
            if g.kind == "owned":
                acc = self.fp.owned[g.owned].accelerator
                cost = gh * self.prices.owned_usd_per_gpu_hour(acc)
                self.owned_train_hours[g.owned] += gh
            else:
                acc = INSTANCE_TYPES[it].accelerator
                factor = 1 + allowance if g.kind == "spot" else 1.0
                cost = gh * self.fp.node_price[(g.site, it, g.kind)] / INSTANCE_TYPES[it].gpus * factor
                if g.kind not in COMMITTED:
                    self.site_cost[g.site]["cloud"] += cost
                    nodes = max(math.ceil(t.job_gpus / INSTANCE_TYPES[it].gpus), math.ceil(gh * factor / self.H / INSTANCE_TYPES[it].gpus))
                    self.pools.append({"site": g.site, "instance_type": it, "capacity_type": g.kind, "nodes_peak": nodes, "nodes_offpeak": 0, "usd_per_month": round(cost, 2), "for": [t.queue], "training": True})
                else:
                    for p in self.pools:
                        if p["site"] == g.site and p["instance_type"] == it and p["capacity_type"] == g.kind:
                            p["for"].append(t.queue)
                            p["training"] = True
            out.append({"queue": t.queue, "site": g.site, "accelerator": acc, "capacity_type": g.kind, "instance_type": it, "gpu_hours_per_month": round(gh, 1), "usd_per_month": round(cost, 2)})
        return out

    def serving(self) -> list[dict[str, Any]]:
        """One row per model, site, shape and capacity. An owned row costs its GPU-hours
        at the committed price; a cloud row its GPU-hour share of the serving pools of
        its accelerator and capacity type."""
        rows: dict[tuple, dict[str, Any]] = {}
        cloud_share: dict[tuple[str, str, str], float] = {}
        demand = self.fp.demand
        for rep in self.fp.replicas:
            n = self.n(rep.col)
            if not n:
                continue
            i, site, k, cap, per = rep.entry, rep.site, rep.shape, rep.capacity, rep.period
            d = demand.spec.serving[i]
            e = self.fp.estimates[(i, k)]
            r = rows.setdefault((d.model, site, k, cap.kind, cap.owned, i), {
                "model": d.model, "site": site, "accelerator": k.accelerator, "mig_profile": k.mig_profile, "quantization": k.quantization,
                "tensor_parallel": k.tensor_parallel, "replicas_peak": 0, "replicas_offpeak": 0, "capacity_type": cap.label,
                "tokens_per_s_per_replica": round(e.tokens_per_s, 1), "demand_tokens_per_s": round(d.requests_per_s.peak * d.output_tokens, 1),
                "demand_entry": i, "batch": e.batch, "kv_cache_gib": round(e.kv_cache_gib, 1), "weights_gib": round(e.weights_gib, 1),
                "memory_offered_gib": round(e.memory_offered_gib, 1), "tpot_p95_ms": round(e.tpot_p95_ms, 1), "ttft_p95_s": round(e.ttft_p95_s, 2),
                "perf_provenance": e.provenance, "usd_per_month": 0.0, "server_class": self.fp.owned[cap.owned].server_class if cap.owned is not None else None,
            })
            r[f"replicas_{per}"] += n
            if cap.kind == "owned":
                gpus = slice_gpus(k)
                r["usd_per_month"] += n * gpus * self.hours[per] * self.prices.owned_usd_per_gpu_hour(k.accelerator)
                self.owned_serving_hours[cap.owned] += n * gpus * self.hours[per]
            else:
                gh = (n * k.gpus * self.H if per == "peak" else 0.0) if cap.kind in COMMITTED else n * k.gpus * self.hours[per]
                r["_gpu_hours"] = r.get("_gpu_hours", 0.0) + gh
                key = (site, k.accelerator, cap.kind)
                cloud_share[key] = cloud_share.get(key, 0.0) + gh
                for p in self.pools:
                    if p["site"] == site and INSTANCE_TYPES[p["instance_type"]].accelerator == k.accelerator and p["capacity_type"] == cap.kind and d.model not in p["for"]:
                        p["for"].append(d.model)
        pool_cost: dict[tuple[str, str, str], float] = defaultdict(float)
        for p in self.pools:
            if not p.get("training"):
                pool_cost[(p["site"], INSTANCE_TYPES[p["instance_type"]].accelerator, p["capacity_type"])] += p["usd_per_month"]
        out = []
        for r in rows.values():
            gh = r.pop("_gpu_hours", None)
            if gh is not None:
                key = (r["site"], r["accelerator"], r["capacity_type"])
                r["usd_per_month"] = pool_cost[key] * gh / cloud_share[key] if cloud_share.get(key) else 0.0
            r["usd_per_month"] = round(r["usd_per_month"], 2)
            out.append(r)
        out.sort(key=lambda r: (r["model"], r["site"], r["capacity_type"]))
        return out

    def mig_layouts(self) -> list[dict[str, Any]]:
        out = []
        for j, mc in self.fp.mig.items():
            c = self.fp.owned[j]
            for li, v in mc.layouts.items():
                n = self.n(v)
                if n:
                    out.append({"site": c.site, "server_class": c.server_class, "accelerator": c.accelerator, "gpus": n, "profiles": dict(layouts_of(c.accelerator)[li])})
        return out

    def owned(self) -> tuple[float, float]:
        """Committed cost of every owned GPU (used or not) and the share of owned GPU-hours in use."""
        total = hours = used = 0.0
        for j, c in enumerate(self.fp.owned):
            cost = c.gpus * self.H * self.prices.owned_usd_per_gpu_hour(c.accelerator)
            total += cost
            self.site_cost[c.site]["owned"] += cost
            hours += c.gpus * self.H
            used += self.owned_serving_hours.get(j, 0.0) + self.owned_train_hours.get(j, 0.0)
        return total, (round(used / hours, 4) if hours else 0.0)

    def sites(self) -> list[dict[str, Any]]:
        out = []
        for s in self.fp.fleet.sites:
            if s.name in self.site_cost:
                sc = self.site_cost[s.name]
                out.append({"site": s.name, "kind": s.kind, "owned_usd_per_month": round(sc["owned"], 2), "cloud_usd_per_month": round(sc["cloud"], 2), "usd_per_month": round(sc["owned"] + sc["cloud"], 2)})
        return out
