"""Host variables gpufleet derives from the fleet model for the Ansible roles.

The inventory holds what data-centre staff know about a server (class, rack,
fabric, MIG layout); the roles also need what follows from the whole fleet:
the site's cluster endpoint and Kubernetes version, node labels and taints,
the mig-parted configuration, and the NCCL fabric settings.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from gpufleet import mig
from gpufleet.model import Fleet, Server, Site

GPU_TAINT = "nvidia.com/gpu=true:NoSchedule"


def node_labels(site: Site, server: Server) -> dict[str, str]:
    labels = {
        "gpufleet.io/site": site.name,
        "gpufleet.io/pool": server.spec.pool,
        "gpufleet.io/rack": server.spec.rack,
        "gpufleet.io/server-class": server.spec.server_class,
    }
    if server.spec.ib_block:
        labels["gpufleet.io/ib-block"] = server.spec.ib_block
    if server.spec.accelerator:
        labels["gpufleet.io/accelerator"] = server.spec.accelerator
        labels["nvidia.com/mig.config"] = server.mig_config
    return labels


def node_taints(server: Server) -> list[str]:
    taints = list(server.spec.node_taints)
    if server.spec.accelerator and GPU_TAINT not in taints:
        taints.append(GPU_TAINT)
    return taints


def host_variables(fleet: Fleet, site: Site, server: Server) -> dict[str, Any]:
    """Variables for one host that follow from the whole fleet, not just its inventory.

    Role variables are set by name (``k8s_node_labels_extra``,
    ``k8s_control_plane_pod_subnet``); ``gpufleet_*`` ones are read by several
    roles. The roles derive site, rack, pool, accelerator and MIG labels from
    the inventory themselves; the extra labels here are the InfiniBand block
    (Kueue's topology level), the server class and the device-plugin
    configuration of time-shared GPUs.
    """
    labels = node_labels(site, server)
    if server.spec.accelerator and importlib.util.find_spec("k8s.gpu_operator") is not None:
        from k8s.gpu_operator import device_plugin_node_labels

        labels.update(device_plugin_node_labels(fleet, site).get(server.spec.accelerator, {}))
    derived_by_role = {"gpufleet.io/site", "gpufleet.io/rack", "gpufleet.io/accelerator", "gpufleet.io/pool", "nvidia.com/mig.config"}
    out: dict[str, Any] = {
        "gpufleet_fleet": fleet.name,
        "gpufleet_kubernetes_version": site.kubernetes_version,
        "gpufleet_k8s_api_endpoint": f"{site.spec.api_endpoint}:6443",
        "gpufleet_node_labels": labels,
        "gpufleet_node_taints": node_taints(server),
        "k8s_node_labels_extra": {k: v for k, v in labels.items() if k not in derived_by_role},
    }
    if site.spec.pod_cidr:
        out["k8s_control_plane_pod_subnet"] = site.spec.pod_cidr
    if server.spec.accelerator:
        layout = [g.model_dump() for g in server.spec.mig_layout]
        out["gpufleet_mig_config_name"] = server.mig_config
        out["gpufleet_mig_parted_config"] = mig.mig_parted_config({server.mig_config: layout} if layout else {}, server.spec.gpu_count)
    return out
