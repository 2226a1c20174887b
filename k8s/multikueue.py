"""MultiKueue at the hub: one federated queue per team queue.

The hub's Kueue is the MultiKueue manager. Users submit TrainJobs to their
team's LocalQueue at the hub; its ClusterQueue carries an AdmissionCheck whose
MultiKueueConfig lists the worker clusters in dispatch order (data centres
first, then cloud regions).

Which workers get a copy of a workload is decided by gpufleet's own
dispatcher, ``gpufleet.io/onprem-first`` (:mod:`k8s.dispatcher`), through
Kueue's external-dispatcher contract: the first site of the list is
nominated at once, and the next one only when the last nominated site reports
that it cannot admit the workload (its copy has ``QuotaReserved=False`` and no
preemption under way) or its MultiKueueCluster is not Active. Earlier sites
stay nominated, so whichever admits first wins. There is no timer: Kueue's
own incremental dispatcher (``kueue.x-k8s.io/multikueue-dispatcher-incremental``)
adds the next cluster after a fixed five minutes whether or not the earlier
ones could admit the workload, and at once after a manager restart, because
it keeps the round start in memory (``incrementalDispatcherRoundTimeout``,
``roundStartTimes``, pkg/controller/workloaddispatcher/incrementaldispatcher.go).

The manager does not run what it dispatches (a cluster cannot be its own
worker), so the hub is a small CPU-only cluster; the fleet model refuses a
queue that lists the hub as a worker. Its flavors are Topology Aware
Scheduling flavors (:func:`k8s.kueue.flavor`), so a job that asks for one
InfiniBand block passes the manager and is placed by the worker.

Each worker is a MultiKueueCluster that names a kubeconfig Secret in the
hub's ``kueue-system`` namespace; the Secret itself is never rendered (see
:func:`kubeconfig_secret_name` for what to create).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from gpufleet.model import Fleet, QueueRef
from gpufleet.model.dispatch import DISPATCHER, dispatch_plan  # noqa: F401  (dispatch_plan: k8s.multikueue's API)
from k8s import kueue, versions
from k8s.kueue import cohort, flavor, local_queue, priority_class, topologies_of

CONTROLLER = "kueue.x-k8s.io/multikueue"


def manager_settings() -> dict[str, Any]:
    """The ``multiKueue`` section of the hub's Kueue configuration."""
    return {
        "gcInterval": "1m",
        "origin": "multikueue",
        "workerLostTimeout": "15m",
        # An external dispatcher: Kueue copies a workload only to the clusters in
        # .status.nominatedClusterNames, which gpufleet's dispatcher writes.
        "dispatcherName": DISPATCHER,
    }


def kubeconfig_secret_name(site: str) -> str:
    """The Secret (key ``kubeconfig``, namespace ``kueue-system`` at the hub) that
    lets the manager reach ``site``. Create it out of band, for example:
    ``kubectl -n kueue-system create secret generic <name> --from-file=kubeconfig=worker.yaml``."""
    return f"multikueue-{site}"


def admission_check_name(ref: QueueRef) -> str:
    return f"{ref.name}-multikueue"


def dispatch_sites(fleet: Fleet) -> list[str]:
    """Worker sites some queue dispatches to, in fleet order."""
    used = {s for ref in fleet.queues for s in kueue.dispatch_order(fleet, ref)}
    return [s.name for s in fleet.sites if s.name in used]


def multikueue_cluster(site: str) -> dict[str, Any]:
    return {
        "apiVersion": versions.KUEUE_API,
        "kind": "MultiKueueCluster",
        "metadata": {"name": site, "labels": {"app.kubernetes.io/part-of": "gpufleet", "gpufleet.io/site": site}},
        "spec": {"clusterSource": {"kubeConfig": {"locationType": "Secret", "location": kubeconfig_secret_name(site)}}},
    }


def multikueue_config(fleet: Fleet, ref: QueueRef) -> dict[str, Any]:
    return {
        "apiVersion": versions.KUEUE_API,
        "kind": "MultiKueueConfig",
        "metadata": {"name": ref.name, "labels": {"app.kubernetes.io/part-of": "gpufleet", "gpufleet.io/queue": ref.name}},
        "spec": {"clusters": kueue.dispatch_order(fleet, ref)},
    }


def admission_check(ref: QueueRef) -> dict[str, Any]:
    return {
        "apiVersion": versions.KUEUE_API,
        "kind": "AdmissionCheck",
        "metadata": {"name": admission_check_name(ref), "labels": {"app.kubernetes.io/part-of": "gpufleet", "gpufleet.io/queue": ref.name}},
        "spec": {
            "controllerName": CONTROLLER,
            "parameters": {"apiGroup": "kueue.x-k8s.io", "kind": "MultiKueueConfig", "name": ref.name},
        },
    }


def hub_objects(fleet: Fleet) -> list[dict[str, Any]]:
    """Everything the hub's Kueue needs to federate every queue."""
    refs = kueue.queues_by_priority(fleet)
    if not refs:
        return []
    accs = sorted({a for r in refs for a in r.queue.quota})
    flavors = [flavor(None, None, a) for a in accs]
    objs: list[dict[str, Any]] = topologies_of(flavors) + flavors
    objs.append(cohort(fleet))
    objs += [multikueue_cluster(s) for s in dispatch_sites(fleet)]
    for ref in refs:
        objs.append(multikueue_config(fleet, ref))
        objs.append(admission_check(ref))
    objs += [priority_class(r) for r in refs]
    # The hub admits a workload against the queue's whole quota, then the
    # worker it is dispatched to admits it against that site's share.
    objs += [kueue.cluster_queue(fleet, r, Counter(r.queue.quota), admission_check=admission_check_name(r)) for r in refs]
    objs += [local_queue(r) for r in refs]
    return objs


def build(fleet: Fleet):
    """The hub's MultiKueue objects as an add-on bundle."""
    from k8s.core import AddonBundle

    return AddonBundle("multikueue", objects=hub_objects(fleet))
