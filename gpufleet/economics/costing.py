"""What the fleet as described costs a month, and how full its owned GPUs are.

No optimisation: the replicas and pools stay as written. Owned servers cost
their committed GPU-hours (every GPU, used or not). At an AWS site, each GPU
node pool runs the nodes its site's models need (replicas x GPUs, packed into
the pool's nodes, at least ``minSize``) for the whole month at its capacity
type's price; a capacity-block or reservation pool is paid for at ``maxSize``.
With a demand, each training queue's GPU-hours go down its dispatch order
(higher priority first): the whole owned GPUs serving leaves free, then the
reservations a pool already pays for, then the next pools at their price.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from gpufleet.catalog import INSTANCE_TYPES

from .demand import Demand
from .perf import ReplicaShape, estimate
from .prices import COMMITTED, Prices


def _model_gpus(m, site: str) -> float:  # noqa: ANN001 - ServedModel
    """Whole GPUs the model's replicas at ``site`` take (none on MIG slices)."""
    p = m.placement
    if p.mig_profile:
        return 0.0
    return m.replicas_for(site) * p.gpus / (m.time_slicing or 1)


def as_described(fleet, prices: Prices, demand: Demand | None = None, calibration: Any = None) -> dict[str, Any]:  # noqa: ANN001
    H = prices.hours
    site_cost: dict[str, dict[str, float]] = defaultdict(lambda: {"owned": 0.0, "cloud": 0.0})
    owned_gpu_hours = 0.0
    used_gpu_hours = 0.0
    free_owned: dict[tuple[str, str], float] = {}  # (site, accelerator) -> GPU-hours serving leaves
    pools_out = []
    pool_left: dict[tuple[str, int], float] = {}  # (site, pool index) -> GPU-hours the pool could still run
    for site in fleet.sites:
        if site.is_aws:
            need: dict[str, float] = defaultdict(float)
            for m in fleet.models:
                if site.name in m.sites:
                    need[m.placement.accelerator] += _model_gpus(m, site.name)
            for pi, pool in enumerate(site.aws.node_pools):
                acc = pool.accelerator
                if not acc:
                    continue  # CPU pools are not GPU cost
                it = pool.instance_types[0]
                price = prices.instance_usd_per_hour(it, site.region, pool.capacity_type)
                if price is None:
                    price = prices.instance_usd_per_hour(it, site.region, "on-demand") or 0.0
                gpn = pool.gpus_per_node
                want = math.ceil(need[acc] / gpn) if need[acc] > 0 else 0
                nodes = min(pool.max_size, max(pool.min_size, want))
                need[acc] = max(0.0, need[acc] - nodes * gpn)
                if pool.capacity_type in COMMITTED or pool.capacity_type == "reserved":
                    paid = pool.max_size
                    cost = paid * price * H
                    pool_left[(site.name, pi)] = (paid - nodes) * gpn * H
                else:
                    paid = nodes
                    cost = nodes * price * H
                    pool_left[(site.name, pi)] = (pool.max_size - nodes) * gpn * H
                site_cost[site.name]["cloud"] += cost
                pools_out.append({"site": site.name, "pool": pool.name, "instance_type": it, "capacity_type": pool.capacity_type, "nodes": nodes, "paid_nodes": paid, "usd_per_month": round(cost, 2)})
        else:
            serving: dict[str, float] = defaultdict(float)
            for m in fleet.models:
                if site.name in m.sites:
                    serving[m.placement.accelerator] += _model_gpus(m, site.name)
            mig_gpus: dict[str, float] = defaultdict(float)
            for s in site.servers:
                if s.spec.accelerator and s.spec.gpu_count:
                    price = prices.owned_usd_per_gpu_hour(s.spec.accelerator)
                    site_cost[site.name]["owned"] += s.spec.gpu_count * H * price
                    owned_gpu_hours += s.spec.gpu_count * H
                    mig_gpus[s.spec.accelerator] += s.mig_gpus
            for acc, whole in site.gpu_capacity().items():
                used = min(whole, serving.get(acc, 0.0))
                used_gpu_hours += used * H
                free_owned[(site.name, acc)] = (whole - used) * H
            # MIG GPUs: busy in the share of slices the site's models use
            for (acc, prof), slices in site.mig_capacity().items():
                from gpufleet import mig

                want = sum(m.replicas_for(site.name) for m in fleet.models if site.name in m.sites and m.placement.mig_profile == prof and m.placement.accelerator == acc)
                used_slices = min(slices, want)
                used_gpu_hours += used_slices * mig.MIG_PROFILES[acc][prof].memory_slices / mig.MEMORY_SLICES * H

    training_out = []
    unmet: list[str] = []
    if demand is not None:
        queues = {q.name: q for q in fleet.queues}
        order = sorted(range(len(demand.spec.training)), key=lambda i: -queues[demand.spec.training[i].queue].queue.priority)
        for qi in order:
            t = demand.spec.training[qi]
            q = queues[t.queue].queue
            left = t.gpu_hours_per_month
            accs = set(q.quota)
            for s in q.sites:
                site = fleet.site(s)
                if left <= 0:
                    break
                if not site.is_aws:
                    for acc in sorted(accs):
                        take = min(left, free_owned.get((s, acc), 0.0))
                        if take > 0:
                            free_owned[(s, acc)] -= take
                            left -= take
                            used_gpu_hours += take
                            cost = take * prices.owned_usd_per_gpu_hour(acc)
                            training_out.append({"queue": t.queue, "site": s, "accelerator": acc, "capacity_type": "owned", "gpu_hours_per_month": round(take, 1), "usd_per_month": round(cost, 2)})
                    continue
                for pi, pool in enumerate(site.aws.node_pools):
                    if pool.accelerator not in accs or left <= 0:
                        continue
                    room = pool_left.get((s, pi), 0.0)
                    factor = 1 + prices.spec.spot_interruption_allowance if pool.capacity_type == "spot" else 1.0
                    take = min(left, room / factor)
                    if take <= 0:
                        continue
                    pool_left[(s, pi)] = room - take * factor
                    left -= take
                    it = pool.instance_types[0]
                    if pool.capacity_type in COMMITTED or pool.capacity_type == "reserved":
                        cost = 0.0  # the reservation is already paid for above
                    else:
                        price = prices.gpu_usd_per_hour(it, site.region, pool.capacity_type) or 0.0
                        cost = take * factor * price
                        site_cost[s]["cloud"] += cost
                    training_out.append({"queue": t.queue, "site": s, "accelerator": pool.accelerator, "capacity_type": pool.capacity_type, "gpu_hours_per_month": round(take, 1), "usd_per_month": round(cost, 2)})
            if left > 0.5:
                unmet.append(f"{t.queue}: {left:,.0f} of {t.gpu_hours_per_month:,.0f} GPU-hours find no capacity at its sites ({', '.join(q.sites)})")
        _serving_shortfall(fleet, demand, calibration, unmet)

    owned = sum(v["owned"] for v in site_cost.values())
    cloud = sum(v["cloud"] for v in site_cost.values())
    sites = [
        {"site": s.name, "kind": s.kind, "owned_usd_per_month": round(site_cost[s.name]["owned"], 2), "cloud_usd_per_month": round(site_cost[s.name]["cloud"], 2), "usd_per_month": round(site_cost[s.name]["owned"] + site_cost[s.name]["cloud"], 2)}
        for s in fleet.sites
        if s.name in site_cost
    ]
    return {
        "total_usd_per_month": round(owned + cloud, 2),
        "owned_usd_per_month": round(owned, 2),
        "cloud_usd_per_month": round(cloud, 2),
        "owned_gpu_utilisation": round(min(1.0, used_gpu_hours / owned_gpu_hours), 4) if owned_gpu_hours else 0.0,
        "sites": sites,
        "pools": pools_out,
        "training": training_out,
        "meets_demand": not unmet if demand is not None else None,
        "unmet": unmet,
    }


def _serving_shortfall(fleet, demand: Demand, calibration: Any, unmet: list[str]) -> None:  # noqa: ANN001
    """Does each demand entry get its peak output tokens/s from the replicas as described?"""
    models = {m.name: m for m in fleet.models}
    for i, d in enumerate(demand.spec.serving):
        m = models.get(d.model)
        need = d.requests_per_s.peak * d.output_tokens
        if m is None:
            unmet.append(f"serving[{i}] ({d.model}): not served by the fleet as described")
            continue
        p = m.placement
        shape = ReplicaShape(p.accelerator, p.mig_profile, m.quantization, p.gpus)
        e = estimate(shape, demand.workload(i), d.model, calibration)
        sites = [s for s in d.sites if s in m.sites]
        replicas = sum(m.replicas_for(s) for s in sites) / (m.time_slicing or 1)
        have = e.tokens_per_s * replicas
        if have + 1e-6 < need:
            why = f"; {e.reason}" if e.reason else ""
            unmet.append(f"serving[{i}] ({d.model} at {', '.join(d.sites)}): {have:,.0f} of {need:,.0f} output tokens/s at the SLO with {replicas:g} replicas of {shape.label()}{why}")


def instance_gpus(it: str) -> int:
    return INSTANCE_TYPES[it].gpus
