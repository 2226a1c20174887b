"""Where each queue's workloads go, in order, and the share of its quota at each site.

One computation, read by ``gpufleet plan`` and rendered by the Kueue add-ons
(:mod:`k8s.kueue`, :mod:`k8s.multikueue`): data centres before cloud regions,
only the sites a queue's data class may be at, higher-priority queues placed
first, never more quota at a site than it has GPUs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from gpufleet.model.types import Fleet, QueueRef


# Who decides when a job may go past a site, and by what rule: gpufleet's own
# dispatcher at the hub (k8s/dispatcher/, through Kueue's external-dispatcher
# contract, multiKueue.dispatcherName). Its controller is a standalone
# program and carries the same name (tests/k8s/test_k8s_dispatcher.py).
DISPATCHER = "gpufleet.io/onprem-first"
DISPATCH_RULE = (
    "next site only when the last nominated one reports it cannot admit the job"
    " (QuotaReserved=False, no preemption pending) or is unreachable"
)


class DispatchError(ValueError):
    """A queue the model let through but that no site can take (an invariant)."""


def dispatch_order(fleet: Fleet, ref: QueueRef) -> list[str]:
    """The queue's worker sites in dispatch order: data centres first, then cloud
    regions, each group in the order fleet.yaml gives; only sites its data class
    may be at. The hub is never a worker."""
    allowed = fleet.allowed_sites(ref.queue.data_class)
    sites = []
    for name in ref.queue.sites:
        try:
            site = fleet.site(name)
        except KeyError:
            raise DispatchError(f"queue {ref.name}: unknown site '{name}'") from None
        if name == fleet.hub:
            raise DispatchError(f"queue {ref.name}: '{name}' is the hub, which cannot run the workloads it dispatches")
        if allowed is not None and name not in allowed:
            continue  # never dispatch regulated data where it may not be
        sites.append(site)
    ordered = [s.name for s in sites if not s.is_aws] + [s.name for s in sites if s.is_aws]
    if not ordered:
        raise DispatchError(f"queue {ref.name}: no site to dispatch to (sites {ref.queue.sites}, data class {ref.queue.data_class})")
    return ordered


def queues_by_priority(fleet: Fleet) -> list[QueueRef]:
    return sorted(fleet.queues, key=lambda r: (-r.queue.priority, r.name))


def allocate_quota(fleet: Fleet) -> dict[str, dict[str, Counter[str]]]:
    """queue -> site -> {accelerator: nominal GPUs}.

    Higher-priority queues are placed first; each queue fills its sites in
    dispatch order, never beyond what a site has left. A queue whose quota does
    not fit beside higher-priority queues gets what is left and borrows the rest.
    """
    left: dict[str, Counter[str]] = {s.name: Counter(s.gpu_capacity()) for s in fleet.sites}
    out: dict[str, dict[str, Counter[str]]] = {}
    for ref in queues_by_priority(fleet):
        per_site: dict[str, Counter[str]] = {s: Counter() for s in dispatch_order(fleet, ref)}
        for acc, want in sorted(ref.queue.quota.items()):
            for site in per_site:
                take = min(want, left[site][acc])
                per_site[site][acc] = take
                left[site][acc] -= take
                want -= take
        out[ref.name] = per_site
    return out


def borrowing_limit(ref: QueueRef, accelerator: str) -> int:
    return ref.queue.quota.get(accelerator, 0) * ref.queue.borrowing_limit_percent // 100


def _steps(fleet: Fleet, ref: QueueRef, nominal: dict[str, Counter[str]]) -> list[dict[str, Any]]:
    steps = []
    for i, name in enumerate(dispatch_order(fleet, ref), start=1):
        site = fleet.site(name)
        capacity = site.gpu_capacity()
        steps.append({
            "step": i,
            "site": name,
            "kind": site.kind,
            "gpus": {a: capacity[a] for a in sorted(ref.queue.quota)},
            "quota": {a: nominal[name][a] for a in sorted(ref.queue.quota)},
        })
    return steps


def dispatch_plan(fleet: Fleet) -> list[dict[str, Any]]:
    """Per queue, highest priority first: where its workloads go, in order, and
    the GPUs behind each step.

    Each step has ``site``, ``kind`` (aws or datacenter), ``gpus`` (whole GPUs
    of each of the queue's accelerators at that site) and ``quota`` (the share
    of the queue's quota placed there; the rest of ``gpus`` is shared with
    other queues in the site's cohort). ``unplaced`` is quota that did not fit
    beside higher-priority queues (the queue must borrow it);
    ``reordered`` is true when data centres were moved before cloud regions.
    """
    nominal = allocate_quota(fleet)
    plan = []
    for ref in queues_by_priority(fleet):
        order = dispatch_order(fleet, ref)
        placed: Counter[str] = Counter()
        for per_site in nominal[ref.name].values():
            placed.update(per_site)
        plan.append({
            "name": ref.name,
            "team": ref.team.name,
            "namespace": ref.namespace,
            "priority": ref.queue.priority,
            "data_class": ref.queue.data_class,
            "allowed_sites": fleet.allowed_sites(ref.queue.data_class),
            "quota": dict(sorted(ref.queue.quota.items())),
            "borrowing_limit": {a: borrowing_limit(ref, a) for a in sorted(ref.queue.quota)},
            "dispatcher": DISPATCHER,
            "rule": DISPATCH_RULE,
            "reordered": [s for s in ref.queue.sites if s in order] != order,
            "steps": _steps(fleet, ref, nominal[ref.name]),
            "unplaced": {a: n - placed[a] for a, n in sorted(ref.queue.quota.items()) if n > placed[a]},
        })
    return plan
