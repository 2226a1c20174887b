"""What the optimizer may use: owned server classes, AWS sites and GPU instance types."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from gpufleet.catalog import INSTANCE_TYPES

from .prices import Prices


@dataclass
class OwnedClass:
    """The GPU servers of one class at one data centre."""

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
