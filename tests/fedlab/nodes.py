"""The Node objects of each site, as the real nodes would register.

Derived from the fleet model and from what ``gpufleet render`` wrote, never
written by hand:

* Data centres: one node per inventory server. Labels and taints are the
  ones the ``k8s_node``/``k8s_control_plane`` roles apply, read from the
  rendered ``gpufleet-derived.yml`` (``gpufleet_node_labels``,
  ``gpufleet_node_taints``); control-plane hosts also get the label and taint
  kubeadm gives them (roles/k8s_control_plane/templates/kubeadm-init.yaml.j2).
  Allocatable GPUs are what the GPU operator's device plugin advertises with
  MIG strategy ``mixed`` (k8s/gpu_operator.py): ``nvidia.com/gpu`` for the
  whole GPUs (times the time-slicing replicas where the node carries a
  sharing configuration), ``nvidia.com/mig-<profile>`` per MIG slice
  (``Server.whole_gpus`` / ``Server.mig_slices``).
* AWS sites: ``minSize`` nodes per EKS managed node group, with the labels and
  taints :class:`cloud.nodepools.NodePoolArgs` gives the node group (plus the
  time-slicing label cloud/program.py adds), the labels EKS itself sets
  (``eks.amazonaws.com/nodegroup``, ``eks.amazonaws.com/capacityType``,
  ``node.kubernetes.io/instance-type``, zone and region), and the instance's
  vCPUs, memory and GPUs from gpufleet/catalog.py. A node of an EFA pool
  registers without ``vpc.amazonaws.com/efa``: on EKS that resource appears
  only once the EFA device plugin registered with the node's kubelet, and the
  lab adds it when a pod of the rendered plugin DaemonSet runs on the node
  (fedlab.py ``EfaRegistration``). The same node with its EFA interfaces (what
  the group's ``node-template/resources`` tag says, cloud/nodepools.py) and
  without a name is the template cluster-autoscaler's kwok provider grows the
  group from.

Not in the fleet model, so fixed here (and said in tests/fedlab/README.md):
the CPU and memory of data-centre servers (``DC_CPU``/``DC_MEMORY``) and the
kubelet's pod limit (110, kubeadm's and the kubelet's default). Allocatable is
reported equal to capacity (no kubelet reservations).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from gpufleet.catalog import INSTANCE_TYPES
from gpufleet.model import Fleet, Site

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
CA_NODEGROUP = "cluster-autoscaler.kwok.nodegroup/name"
CA_MIN = "cluster-autoscaler.kwok.nodegroup/min-count"
CA_MAX = "cluster-autoscaler.kwok.nodegroup/max-count"
CA_DESIRED = "cluster-autoscaler.kwok.nodegroup/desired-count"
MAX_PODS = "110"
DC_CPU = {"cpu-control-plane": "32", "default": "128"}
DC_MEMORY = {"cpu-control-plane": "128Gi", "default": "1Ti"}
EFA_RESOURCE = "vpc.amazonaws.com/efa"
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def _taint(text: str) -> dict[str, str]:
    """``key=value:Effect`` (the roles' form) as a Node taint."""
    key_value, effect = text.rsplit(":", 1)
    key, _, value = key_value.partition("=")
    out = {"key": key, "effect": effect}
    if value:
        out["value"] = value
    return out


def _node(name: str, labels: dict[str, str], taints: list[dict[str, str]], resources: dict[str, str],
          annotations: dict[str, str] | None = None, provider_id: str | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", **labels},
            # KWOK manages the nodes carrying this annotation (--manage-nodes-with-annotation-selector).
            "annotations": {KWOK_ANNOTATION: "fake", **(annotations or {})},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }
    if provider_id:
        node["spec"]["providerID"] = provider_id
    return node


def _gpu_resources(whole: int, replicas: int, mig: Counter[str]) -> dict[str, str]:
    out = {}
    if whole:
        out["nvidia.com/gpu"] = str(whole * replicas)
    for profile, count in sorted(mig.items()):
        out[f"nvidia.com/mig-{profile}"] = str(count)
    return out


def _sharing(fleet: Fleet, site: Site) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    from k8s.gpu_operator import DEVICE_PLUGIN_LABEL, device_plugin_node_labels, time_slicing_configs

    labels = device_plugin_node_labels(fleet, site)
    configs = time_slicing_configs(fleet, site)
    replicas = {acc: configs[lab[DEVICE_PLUGIN_LABEL]] for acc, lab in labels.items()}
    return labels, replicas


def datacenter_nodes(fleet: Fleet, site: Site, render: Path) -> list[dict[str, Any]]:
    derived_file = render / "sites" / site.name / "ansible" / "inventory" / "gpufleet-derived.yml"
    derived = yaml.safe_load(derived_file.read_text())["all"]["hosts"]
    _, replicas = _sharing(fleet, site)
    nodes = []
    for server in site.servers:
        host = derived[server.name]
        labels = {k: str(v) for k, v in host["gpufleet_node_labels"].items()}
        taints = [_taint(t) for t in host["gpufleet_node_taints"]]
        if "control_plane" in server.groups:
            labels["node-role.kubernetes.io/control-plane"] = ""
            taints.append(dict(CONTROL_PLANE_TAINT))
        cls = server.spec.server_class
        resources = {
            "cpu": DC_CPU.get(cls, DC_CPU["default"]),
            "memory": DC_MEMORY.get(cls, DC_MEMORY["default"]),
            "pods": MAX_PODS,
            "ephemeral-storage": "1Ti",
        }
        if server.spec.accelerator:
            rep = replicas.get(server.spec.accelerator, 1) if labels.get("nvidia.com/device-plugin.config") else 1
            resources.update(_gpu_resources(server.whole_gpus, rep, server.mig_slices))
        nodes.append(_node(server.name, labels, taints, resources))
    return nodes


def _pool_args(fleet: Fleet, site: Site):
    """cloud.nodepools.NodePoolArgs per pool, as cloud/program.py builds them."""
    from dataclasses import replace

    from cloud.nodepools import NodePoolArgs
    from cloud.program import cluster_name

    assert site.aws is not None
    sharing, _ = _sharing(fleet, site)
    out = []
    for pool in site.aws.node_pools:
        args = NodePoolArgs.from_config(pool, site.name, cluster_name(fleet, site), list(site.aws.network.availability_zones))
        if args.accelerator in sharing:
            args = replace(args, labels={**args.labels, **sharing[args.accelerator]})
        out.append((pool, args))
    return out


_EKS_CAPACITY_LABEL = {"ON_DEMAND": "ON_DEMAND", "SPOT": "SPOT", "CAPACITY_BLOCK": "CAPACITY_BLOCK"}


def pool_template(fleet: Fleet, site: Site, pool, args, index: int = 0, zone: str | None = None,
                  efa: bool = False) -> dict[str, Any]:
    """One node of the pool, as EKS registers it; with ``efa`` its EFA interfaces too
    (as the device plugin would add them; the autoscaler's template)."""
    _, replicas = _sharing(fleet, site)
    itype = INSTANCE_TYPES[args.instance_types[0]]
    zone = zone or args.zones[index % len(args.zones)]
    labels = {
        **args.labels,
        "eks.amazonaws.com/nodegroup": args.node_group_name,
        "eks.amazonaws.com/capacityType": _EKS_CAPACITY_LABEL[args.eks_capacity_type],
        "node.kubernetes.io/instance-type": itype.name,
        "topology.kubernetes.io/region": str(site.region),
        "topology.kubernetes.io/zone": zone,
    }
    resources = {"cpu": str(itype.vcpus), "memory": f"{itype.memory_gib}Gi", "pods": MAX_PODS, "ephemeral-storage": f"{args.disk_gib}Gi"}
    if itype.gpus:
        rep = replicas.get(str(itype.accelerator), 1) if "nvidia.com/device-plugin.config" in labels else 1
        resources.update(_gpu_resources(itype.gpus, rep, Counter()))
    if efa and args.efa_interfaces:
        resources[EFA_RESOURCE] = str(args.efa_interfaces)
    name = f"{args.node_group_name}-{index}"
    annotations = {CA_NODEGROUP: pool.name, CA_MIN: str(pool.min_size), CA_MAX: str(pool.max_size), CA_DESIRED: str(pool.min_size)}
    return _node(name, labels, [dict(t) for t in args.taints], resources, annotations, provider_id=f"kwok:{name}")


def aws_nodes(fleet: Fleet, site: Site) -> list[dict[str, Any]]:
    nodes = []
    for pool, args in _pool_args(fleet, site):
        for i in range(pool.min_size):
            nodes.append(pool_template(fleet, site, pool, args, i))
    return nodes


def aws_templates(fleet: Fleet, site: Site) -> list[dict[str, Any]]:
    """One template node per pool, for cluster-autoscaler's kwok provider."""
    out = []
    for pool, args in _pool_args(fleet, site):
        t = pool_template(fleet, site, pool, args, 0, efa=True)
        t["metadata"]["name"] = args.node_group_name
        t["metadata"]["labels"]["kubernetes.io/hostname"] = args.node_group_name
        del t["spec"]["providerID"]
        out.append(t)
    return out


def efa_interfaces(fleet: Fleet, site: Site) -> dict[str, int]:
    """Pool name -> EFA interfaces per node, for the site's EFA pools."""
    if not site.is_aws:
        return {}
    return {pool.name: args.efa_interfaces for pool, args in _pool_args(fleet, site) if args.efa_interfaces}


def site_nodes(fleet: Fleet, site: Site, render: Path) -> list[dict[str, Any]]:
    return aws_nodes(fleet, site) if site.is_aws else datacenter_nodes(fleet, site, render)
