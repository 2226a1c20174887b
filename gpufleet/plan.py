"""The planner: what each engine will do for each site, as plain data.

``build_plan(fleet)`` returns a JSON-serialisable dict whose shape is stable
for tools (keys sorted on output, lists in a deterministic order). The
formatters in :mod:`gpufleet.report` turn it into a terminal table or a
pull-request comment.
"""

from __future__ import annotations

from typing import Any

from gpufleet import __version__
from gpufleet.catalog import ACCELERATORS
from gpufleet.model import Fleet, Site, model_weights_gib, replica_memory_gib, replica_memory_need_gib

PLAN_FORMAT = 1


def _site_plan(fleet: Fleet, site: Site) -> dict[str, Any]:
    whole = site.gpu_capacity()
    mig = site.mig_capacity()
    entry: dict[str, Any] = {
        "name": site.name,
        "kind": site.kind,
        "role": "hub" if site.name == fleet.hub else "worker",
        "kubernetes_version": site.kubernetes_version,
        "fabric": site.fabric,
        "whole_gpus": dict(sorted(whole.items())),
        "mig_slices": [{"accelerator": a, "profile": p, "count": n} for (a, p), n in sorted(mig.items())],
        "models": [m.name for m in fleet.models if site.name in m.sites],
        "queues": [q.name for q in fleet.queues if site.name in q.queue.sites],
    }
    if site.aws:
        net, cl = site.aws.network, site.aws.cluster
        entry["region"] = site.region
        entry["node_pools"] = [
            {
                "name": p.name,
                "instance_types": list(p.instance_types),
                "capacity_type": p.capacity_type,
                "min_size": p.min_size,
                "max_size": p.max_size,
                "accelerator": p.accelerator,
                "gpus_per_node": p.gpus_per_node,
                "efa_interfaces": p.efa_interfaces,
            }
            for p in site.aws.node_pools
        ]
        gpu_pools = [p for p in site.aws.node_pools if p.accelerator]
        entry["stack"] = {
            "engine": "pulumi",
            "declares": [
                f"aws.Provider for {site.region}",
                f"VPC {net.vpc_cidr}: private and public subnets in {len(net.availability_zones)} AZs, NAT {net.nat_gateways}",
                f"EKS {cl.kubernetes_version}: endpoint {cl.endpoint_access}, API access entries, KMS-encrypted secrets, logs {', '.join(cl.log_types)}",
                f"{len(site.aws.node_pools)} managed node groups ({len(gpu_pools)} GPU, tainted nvidia.com/gpu=true:NoSchedule), IMDSv2, encrypted volumes",
                *[f"cluster placement group and {p.efa_interfaces} EFA interfaces per node for {p.name}" for p in site.aws.node_pools if p.efa],
                "fleet add-ons through this cluster's Kubernetes provider",
            ],
        }
    else:
        entry["location"] = site.spec.location
        classes: dict[str, dict[str, Any]] = {}
        for s in site.servers:
            c = classes.setdefault(
                s.spec.server_class,
                {"class": s.spec.server_class, "servers": 0, "accelerator": s.spec.accelerator, "gpus_per_server": s.spec.gpu_count, "pool": s.spec.pool, "nvswitch": s.spec.nvswitch},
            )
            c["servers"] += 1
        entry["server_classes"] = sorted(classes.values(), key=lambda c: c["class"])
        entry["racks"] = sorted({s.spec.rack for s in site.servers})
        entry["stack"] = {
            "engine": "pulumi + ansible",
            "declares": [
                f"Ansible: {len(site.servers)} servers from {site.spec.inventory} ("
                + ("driver, fabric manager, NCCL, MIG, DCGM, kubeadm join, acceptance gate" if any(s.spec.gpu_count for s in site.servers) else "OS baseline, containerd, kubeadm control plane")
                + ")",
                "Pulumi: no AWS resources; fleet add-ons through the cluster's kubeconfig (a stack secret)",
            ],
        }
    return entry


def _queues(fleet: Fleet) -> list[dict[str, Any]]:
    """Per queue: the MultiKueue dispatch order, the GPUs behind each step and
    the share of the queue's quota Kueue is given there (the same computation
    the Kueue add-on renders)."""
    from k8s.multikueue import dispatch_plan

    out = []
    for q in dispatch_plan(fleet):
        out.append(
            {
                "name": q["name"],
                "team": q["team"],
                "namespace": q["namespace"],
                "priority": q["priority"],
                "data_class": q["data_class"],
                "quota": dict(sorted(q["quota"].items())),
                "borrowing_limit": dict(sorted(q["borrowing_limit"].items())),
                "reordered": q["reordered"],
                "unplaced": q["unplaced"],
                "dispatch": [
                    {"order": st["step"], "site": st["site"], "kind": st["kind"], "gpus": dict(sorted(st["gpus"].items())), "quota": dict(sorted(st["quota"].items()))}
                    for st in q["steps"]
                ],
            }
        )
    return out


def build_plan(fleet: Fleet) -> dict[str, Any]:
    total: dict[str, int] = {}
    for site in fleet.sites:
        for a, n in site.gpu_capacity().items():
            total[a] = total.get(a, 0) + n
    queues = _queues(fleet)
    models = []
    for m in fleet.models:
        p = m.placement
        models.append(
            {
                "name": m.name,
                "source": m.source,
                "parameters_b": m.parameters_b,
                "quantization": m.quantization,
                "context_length": m.context_length,
                "placement": {"accelerator": p.accelerator, "gpus": p.gpus, "mig_profile": p.mig_profile},
                "tensor_parallel_size": p.gpus,
                "sites": list(m.sites),
                "replicas_per_site": m.replicas,
                "data_class": m.data_class,
                "memory_gib": {
                    "weights": round(model_weights_gib(m), 1),
                    "needed": round(replica_memory_need_gib(m), 1),
                    "offered": round(replica_memory_gib(m), 1),
                },
            }
        )
    return {
        "format": PLAN_FORMAT,
        "gpufleet_version": __version__,
        "fleet": fleet.name,
        "hub": fleet.hub,
        "accelerators": {a: ACCELERATORS[a].product for a in sorted({*total, *(m.placement.accelerator for m in fleet.models)})},
        "sites": [_site_plan(fleet, s) for s in fleet.sites],
        "queues": queues,
        "models": models,
        "residency": [{"data_class": r.data_class, "sites": list(r.sites), "description": r.description} for r in fleet.residency],
    }
