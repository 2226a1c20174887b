"""Kueue at every site: flavors, topology, cohorts, cluster and local queues.

Every site runs Kueue (pinned in :mod:`k8s.versions`). A team queue from
``fleet.yaml`` becomes, at each worker site it dispatches to, a ClusterQueue
of the same name in the site's cohort and a LocalQueue of the same name in the
team's namespace (MultiKueue finds the worker's queue by that namespace and
name). The hub gets the same queues with the MultiKueue admission check
(:mod:`k8s.multikueue`).

Quota: GPUs are the governed resource (the Kueue configuration checks only
the resources a ClusterQueue declares, so CPU, memory and device resources
such as EFA are bounded by the GPU nodes themselves). A queue's quota is the
fleet-wide number of GPUs it is promised; :func:`allocate_quota` places it on
its sites in dispatch order, higher-priority queues first, never more than a
site has, so the nominal quotas at a site add up to at most its GPUs. What a
queue does not use, the others in the cohort may borrow (up to each queue's
``borrowing_limit_percent`` of its quota), with fair sharing between them.

Flavors select nodes by ``gpufleet.io/site`` and ``gpufleet.io/accelerator``
and tolerate the GPU taint (and any pool or server taints), so every pod that
Kueue admits carries a node selector pinning it to its site: that is what the
residency admission policy (:mod:`k8s.policy`) checks.

Topology Aware Scheduling (TAS) at data centres: *every* data-centre flavor is
a TAS flavor, whole GPUs and MIG slices alike. Kueue 0.19 treats a workload
without a topology annotation as "unconstrained TAS" only in a ClusterQueue
whose flavors are all TAS (``clusterQueue.isTASOnly``,
pkg/cache/scheduler/clusterqueue.go; ``isTASImplied``,
pkg/scheduler/flavorassigner/tas_flavorassigner.go); in a queue that mixes TAS
and non-TAS flavors, ``checkPodSetAndFlavorMatchForTAS`` refuses such a
workload on the TAS flavor ("supports only TopologyAwareScheduling"). So a
site's queues are TAS-only: flavors whose servers all carry rack and
InfiniBand-block labels use the Topology ``gpufleet-fabric`` (a multi-node job
can ask for one InfiniBand block with ``kueue.x-k8s.io/podset-required-topology:
gpufleet.io/ib-block``), the others ``gpufleet-hosts`` (host level only).
Cloud flavors are quota-only (no TAS): TAS places pods on nodes that exist, and
a cloud pool scaled to zero has none until cluster-autoscaler adds them for
the pending pods (:mod:`k8s.autoscaler`).

The hub's flavors are TAS flavors of a ``gpufleet-fabric`` Topology too, as in
upstream's MultiKueue + TAS setup (site/static/examples/multikueue/tas/
manager-setup.yaml): the manager checks a workload's topology request against
its own flavor (``checkPodSetAndFlavorMatchForTAS``) before dispatching, and
delays the placement itself to the worker (``podSetTopologyRequest``,
``DelayedTopologyRequest``). The hub has no GPU nodes, so its flavors only
name the accelerator label.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

from gpufleet.model import Fleet, QueueRef, Site
from gpufleet.model.dispatch import allocate_quota, borrowing_limit, dispatch_order, queues_by_priority  # noqa: F401  (k8s.kueue's API)
from k8s import versions
from k8s.core import AddonBundle, Chart

NAMESPACE = "kueue-system"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = ("nvidia.com/gpu", "true", "NoSchedule")
LABEL_SITE = "gpufleet.io/site"
LABEL_ACCELERATOR = "gpufleet.io/accelerator"
LABEL_RACK = "gpufleet.io/rack"
LABEL_IB_BLOCK = "gpufleet.io/ib-block"
LABEL_HOSTNAME = "kubernetes.io/hostname"
TOPOLOGY = "gpufleet-fabric"
TOPOLOGY_LEVELS = (LABEL_IB_BLOCK, LABEL_RACK, LABEL_HOSTNAME)
# Data-centre servers without rack and InfiniBand-block labels: host level only,
# so that their flavors are TAS flavors too (see the module docstring).
TOPOLOGY_HOSTS = "gpufleet-hosts"
TOPOLOGIES = {TOPOLOGY: TOPOLOGY_LEVELS, TOPOLOGY_HOSTS: (LABEL_HOSTNAME,)}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
# Job kinds Kueue manages at every site.
FRAMEWORKS = ("batch/job", "jobset.x-k8s.io/jobset", "trainer.kubeflow.org/trainjob")
WAIT_FOR_PODS_READY_TIMEOUT = "20m"  # multi-node GPU pods pull large images


class KueueError(ValueError):
    """A fleet that cannot be expressed as Kueue objects (``where: what``)."""


# ------------------------------------------------------------------ GPU nodes


@dataclass
class GpuNodes:
    """The nodes of one accelerator at one site, as Kueue needs to know them."""

    accelerator: str
    taints: list[tuple[str, str, str]] = field(default_factory=list)  # key, value, effect
    topology: bool = True  # every node carries the rack and InfiniBand-block labels
    mig_profiles: set[str] = field(default_factory=set)


def _parse_taint(text: str, where: str) -> tuple[str, str, str]:
    head, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise KueueError(f"{where}: taint '{text}' is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
    key, _, value = head.partition("=")
    return key, value, effect


def gpu_nodes(site: Site) -> dict[str, GpuNodes]:
    """Accelerator -> its nodes' taints, topology labels and MIG profiles at ``site``."""
    out: dict[str, GpuNodes] = {}
    for pool in site.node_pools:
        if not pool.accelerator:
            continue
        g = out.setdefault(pool.accelerator, GpuNodes(pool.accelerator, [GPU_TAINT], topology=False))
        for t in pool.taints:
            if (t.key, t.value, t.effect) not in g.taints:
                g.taints.append((t.key, t.value, t.effect))
    for server in site.servers:
        acc = server.spec.accelerator
        if not acc:
            continue
        g = out.setdefault(acc, GpuNodes(acc, [GPU_TAINT]))
        g.topology = g.topology and bool(server.spec.ib_block and server.spec.rack)
        g.mig_profiles |= set(server.mig_slices)
        for text in server.spec.node_taints:
            t = _parse_taint(text, f"{site.name}: {server.name}.gpufleet_node_taints")
            if t not in g.taints:
                g.taints.append(t)
    return out


def tolerations(taints: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    out = []
    for key, value, effect in taints:
        if value:
            out.append({"key": key, "operator": "Equal", "value": value, "effect": effect})
        else:
            out.append({"key": key, "operator": "Exists", "effect": effect})
    return out


# ------------------------------------------------------------ dispatch and quota


def cohort_name(fleet: Fleet) -> str:
    return fleet.name


def priority_class_name(ref: QueueRef) -> str:
    return f"{ref.name}-priority"


# ---------------------------------------------------------------------- objects


def _meta(name: str, namespace: str | None = None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "gpufleet", **labels}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def priority_class(ref: QueueRef) -> dict[str, Any]:
    return {
        "apiVersion": versions.KUEUE_API,
        "kind": "WorkloadPriorityClass",
        "metadata": _meta(priority_class_name(ref), **{"gpufleet.io/queue": ref.name}),
        "value": ref.queue.priority,
        "description": f"Priority of the {ref.team.name} team's queue {ref.name}",
    }


def topology(name: str = TOPOLOGY) -> dict[str, Any]:
    return {
        "apiVersion": versions.KUEUE_API,
        "kind": "Topology",
        "metadata": _meta(name),
        "spec": {"levels": [{"nodeLabel": label} for label in TOPOLOGIES[name]]},
    }


def topologies_of(flavors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Topology objects the given flavors name, in a stable order."""
    used = {f["spec"].get("topologyName") for f in flavors}
    return [topology(name) for name in TOPOLOGIES if name in used]


def mig_flavor_name(accelerator: str) -> str:
    return f"{accelerator}-mig"


def flavor(site: Site | None, nodes: GpuNodes | None, accelerator: str, mig: bool = False) -> dict[str, Any]:
    """A ResourceFlavor.

    At a data centre it is always a TAS flavor (``gpufleet-fabric`` where every
    server has rack and InfiniBand-block labels, else ``gpufleet-hosts``); at a
    cloud site it is quota-only; at the hub (``site`` None) it is a TAS flavor
    of ``gpufleet-fabric`` that only names the accelerator (a TAS flavor needs
    at least one node label: the ResourceFlavor CRD's validation rule)."""
    name = mig_flavor_name(accelerator) if mig else accelerator
    spec: dict[str, Any] = {}
    if site is not None and nodes is not None:
        spec["nodeLabels"] = {LABEL_SITE: site.name, LABEL_ACCELERATOR: accelerator}
        spec["tolerations"] = tolerations(nodes.taints)
        if not site.is_aws:
            spec["topologyName"] = TOPOLOGY if nodes.topology else TOPOLOGY_HOSTS
    else:
        spec["nodeLabels"] = {LABEL_ACCELERATOR: accelerator}
        spec["topologyName"] = TOPOLOGY
    return {"apiVersion": versions.KUEUE_API, "kind": "ResourceFlavor", "metadata": _meta(name, **{"gpufleet.io/accelerator": accelerator}), "spec": spec}


def mig_resource(profile: str) -> str:
    return f"nvidia.com/mig-{profile}"


def cluster_queue(
    fleet: Fleet,
    ref: QueueRef,
    nominal: Counter[str],
    mig: dict[str, list[str]] | None = None,
    admission_check: str | None = None,
) -> dict[str, Any]:
    """The ClusterQueue of ``ref``: one GPU resource group (a flavor per
    accelerator, tried in name order) and, where MIG slices exist, one group
    per accelerator's MIG profiles with no quota of its own (it borrows the
    slices the site's cohort holds)."""
    groups = [
        {
            "coveredResources": [GPU_RESOURCE],
            "flavors": [
                {
                    "name": acc,
                    "resources": [{"name": GPU_RESOURCE, "nominalQuota": nominal[acc], "borrowingLimit": borrowing_limit(ref, acc)}],
                }
                for acc in sorted(ref.queue.quota)
            ],
        }
    ]
    for acc, profiles in sorted((mig or {}).items()):
        resources = [mig_resource(p) for p in profiles]
        groups.append({"coveredResources": resources, "flavors": [{"name": mig_flavor_name(acc), "resources": [{"name": r, "nominalQuota": 0} for r in resources]}]})
    spec: dict[str, Any] = {
        "cohortName": cohort_name(fleet),
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ref.namespace}},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": groups,
        # Fair sharing: a queue over its share yields to one under it.
        "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority"},
        "fairSharing": {"weight": 1},
    }
    if admission_check:
        spec["admissionChecksStrategy"] = {"admissionChecks": [{"name": admission_check}]}
    labels = {"gpufleet.io/team": ref.team.name}
    if ref.queue.data_class:
        labels["gpufleet.io/data-class"] = ref.queue.data_class
    return {"apiVersion": versions.KUEUE_API, "kind": "ClusterQueue", "metadata": _meta(ref.name, **labels), "spec": spec}


def local_queue(ref: QueueRef) -> dict[str, Any]:
    return {
        "apiVersion": versions.KUEUE_API,
        "kind": "LocalQueue",
        "metadata": _meta(ref.name, ref.namespace, **{"gpufleet.io/team": ref.team.name}),
        "spec": {"clusterQueue": ref.name},
    }


def cohort(fleet: Fleet, mig_quota: dict[str, Counter[str]] | None = None) -> dict[str, Any]:
    """The site's cohort; it holds the MIG slices, which every queue may borrow."""
    spec: dict[str, Any] = {}
    groups = []
    for acc, slices in sorted((mig_quota or {}).items()):
        resources = sorted(slices)
        groups.append(
            {
                "coveredResources": [mig_resource(p) for p in resources],
                "flavors": [{"name": mig_flavor_name(acc), "resources": [{"name": mig_resource(p), "nominalQuota": slices[p]} for p in resources]}],
            }
        )
    if groups:
        spec["resourceGroups"] = groups
    return {"apiVersion": versions.KUEUE_API, "kind": "Cohort", "metadata": _meta(cohort_name(fleet)), "spec": spec}


def worker_objects(fleet: Fleet, site: Site) -> list[dict[str, Any]]:
    """Kueue objects at a worker site: only the queues that dispatch to it."""
    nominal = allocate_quota(fleet)
    refs = [r for r in queues_by_priority(fleet) if site.name in nominal[r.name]]
    if not refs:
        return []
    nodes = gpu_nodes(site)
    accs = sorted({a for r in refs for a in r.queue.quota})
    missing = [a for a in accs if a not in nodes]
    objs: list[dict[str, Any]] = []
    mig_quota: dict[str, Counter[str]] = {}
    for (acc, profile), n in site.mig_capacity().items():
        if acc in accs:
            mig_quota.setdefault(acc, Counter())[profile] = n
    flavors = [flavor(site, nodes[a], a) for a in accs if a not in missing]
    # An accelerator a queue asks for but the site lacks still gets a flavor
    # (quota 0), so the ClusterQueue stays valid; nothing is admitted on it.
    flavors += [flavor(site, GpuNodes(a, [GPU_TAINT], topology=False), a) for a in missing]
    flavors += [flavor(site, nodes[a], a, mig=True) for a in sorted(mig_quota)]
    objs += topologies_of(flavors)
    objs += flavors
    objs.append(cohort(fleet, mig_quota))
    objs += [priority_class(r) for r in refs]
    mig_profiles = {a: sorted(q) for a, q in mig_quota.items()}
    objs += [cluster_queue(fleet, r, nominal[r.name][site.name], {a: p for a, p in mig_profiles.items() if a in r.queue.quota}) for r in refs]
    objs += [local_queue(r) for r in refs]
    return objs


# ---------------------------------------------------------------------- chart


def manager_config(fleet: Fleet, site: Site) -> dict[str, Any]:
    """The Kueue Configuration (config.kueue.x-k8s.io/v1beta2) for ``site``."""
    cfg: dict[str, Any] = {
        "apiVersion": versions.KUEUE_CONFIG_API,
        "kind": "Configuration",
        "health": {"healthProbeBindAddress": ":8081"},
        # enableClusterQueueResources: Kueue reports kueue_cluster_queue_resource_usage,
        # _nominal_quota, _borrowing_limit ... only with it (cmd/kueue/main.go passes
        # cfg.Metrics.EnableClusterQueueResources to the caches; pkg/metrics/metrics.go);
        # the queue dashboard's quota panel reads kueue_cluster_queue_resource_usage.
        "metrics": {"bindAddress": ":8443", "enableClusterQueueResources": True},
        "webhook": {"port": 9443},
        "leaderElection": {"leaderElect": True, "resourceName": "c1f6bfd2.kueue.x-k8s.io"},
        "controller": {"groupKindConcurrency": {"Job.batch": 5, "Pod": 5, "Workload.kueue.x-k8s.io": 10, "LocalQueue.kueue.x-k8s.io": 5, "ClusterQueue.kueue.x-k8s.io": 5, "ResourceFlavor.kueue.x-k8s.io": 1}},
        "clientConnection": {"qps": 300, "burst": 500},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": list(FRAMEWORKS)},
        # Only GPUs (and MIG slices) are governed; the GPU nodes bound the rest.
        "resources": {"quotaCheckStrategy": "IgnoreUndeclared"},
        "fairSharing": {"preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]},
        # All-or-nothing: a multi-node job that cannot start all its pods is requeued.
        "waitForPodsReady": {"timeout": WAIT_FOR_PODS_READY_TIMEOUT, "blockAdmission": False, "requeuingStrategy": {"timestamp": "Eviction", "backoffLimitCount": 5}},
    }
    if site.name == fleet.hub:
        from k8s import multikueue

        cfg["multiKueue"] = multikueue.manager_settings()
    return cfg


def chart(fleet: Fleet, site: Site) -> Chart:
    repo, tag = versions.KUEUE_IMAGE
    values = {
        "controllerManager": {"manager": {"image": {"repository": repo, "tag": versions.tag_at_digest(tag, versions.KUEUE_IMAGE_DIGEST), "pullPolicy": "IfNotPresent"}}},
        "enablePrometheus": False,  # the monitoring add-on scrapes Kueue itself
        "managerConfig": {"controllerManagerConfigYaml": yaml.safe_dump(manager_config(fleet, site), sort_keys=False)},
    }
    return Chart("kueue", versions.KUEUE_CHART, versions.KUEUE_REPOSITORY, versions.KUEUE_VERSION, NAMESPACE, values)


def build(fleet: Fleet, site: Site) -> AddonBundle:
    """Kueue for ``site``: the chart and, at a worker, its queues (the hub's are in :mod:`k8s.multikueue`)."""
    objs = [] if site.name == fleet.hub else worker_objects(fleet, site)
    return AddonBundle("kueue", objects=objs, charts=[chart(fleet, site)])
