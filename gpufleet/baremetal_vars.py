"""Host variables gpufleet derives from the fleet model for the Ansible roles.

The inventory holds what data-centre staff know about a server (class, rack,
fabric, MIG layout). Everything that follows from it and from the rest of the
fleet is computed here, once, and ``gpufleet render`` writes it beside the
inventory as ``gpufleet-derived.yml``: node labels and taints, the mig-parted
configuration and its name, the DCGM counters, the PCI ids the roles detect
GPUs by, the driver branch, the acceptance thresholds and InfiniBand blocks,
the site's API endpoint and Kubernetes minor. The roles read these and stop
with a message naming ``gpufleet render`` when they are missing; none of them
works any of it out again.

``gpufleet_derived_inputs`` records the inventory values the derivation used;
``baremetal/validate.yml`` refuses to run when the inventory has changed
since (rerun ``gpufleet render``).
"""

from __future__ import annotations

from typing import Any

from gpufleet import acceptance, drivers, facts, mig
from gpufleet.catalog import ACCELERATORS
from gpufleet.model import Fleet, Server, Site

# Bumped when the variables' meaning changes; validate.yml checks it.
FORMAT = 1

# The inventory variables the derivation reads (gpufleet_ prefix removed).
# gpufleet_node_taints is left out: the derived variable of that name (the
# inventory's taints plus the GPU taint) shadows the inventory's in Ansible.
INPUTS = ("site", "server_class", "pool", "rack", "ib_block", "accelerator", "gpu_count", "nvswitch",
          "fabric", "fabric_hcas", "mig_layout")

GPU_TAINT = facts.GPU_TAINT.string


def node_labels(site: Site, server: Server, fleet: Fleet | None = None) -> dict[str, str]:
    """Every label the node joins with (kubeadm JoinConfiguration)."""
    labels = {
        facts.LABEL_SITE: site.name,
        facts.LABEL_POOL: server.spec.pool,
        facts.LABEL_RACK: server.spec.rack,
        facts.LABEL_SERVER_CLASS: server.spec.server_class,
    }
    if server.spec.ib_block:
        labels[facts.LABEL_IB_BLOCK] = server.spec.ib_block
    if server.spec.accelerator:
        labels[facts.LABEL_ACCELERATOR] = server.spec.accelerator
        labels[facts.LABEL_MIG_CONFIG] = server.mig_config
        labels.update(facts.operand_owner_labels(site))
        if fleet is not None:
            labels.update(facts.device_plugin_node_labels(fleet, site).get(server.spec.accelerator, {}))
    return labels


def node_taints(server: Server) -> list[str]:
    """The node's taints as ``key=value:Effect`` strings: the inventory's, and the GPU taint on GPU servers."""
    taints = list(server.spec.node_taints)
    if server.spec.accelerator and GPU_TAINT not in taints:
        taints.append(GPU_TAINT)
    return taints


def driver(server: Server) -> dict[str, str | int]:
    """The driver branch a server runs and the newest CUDA major it runs
    (gpufleet/drivers.py); the nccl and dcgm roles build for that major."""
    branch = drivers.BRANCHES[server.driver_branch]
    return {"gpufleet_driver_branch": branch.name, "gpufleet_driver_cuda": branch.cuda_major}


def _inputs(server: Server) -> dict[str, Any]:
    """Each input as the inventory gave it; null where the inventory left it out."""
    spec = server.spec.model_dump()
    given = server.spec.model_fields_set
    return {f"gpufleet_{k}": spec.get(k) if k in given else None for k in INPUTS}


def host_variables(fleet: Fleet, site: Site, server: Server) -> dict[str, Any]:
    """Variables for one host that follow from the whole fleet, not just its inventory."""
    out: dict[str, Any] = {
        "gpufleet_derived_format": FORMAT,
        "gpufleet_derived_inputs": _inputs(server),
        "gpufleet_fleet": fleet.name,
        "gpufleet_kubernetes_version": site.kubernetes_version,
        "gpufleet_k8s_api_endpoint": f"{site.spec.api_endpoint}:6443",
        "gpufleet_node_labels": node_labels(site, server, fleet),
        "gpufleet_node_taints": node_taints(server),
        "gpufleet_acceptance_taint": facts.ACCEPTANCE_TAINT.as_dict(),
        "gpufleet_pci_gpu_models": facts.pci_device_models(),
        "gpufleet_pci_nvswitch_ids": facts.nvswitch_device_ids(),
    }
    if site.spec.pod_cidr:
        out["k8s_control_plane_pod_subnet"] = site.spec.pod_cidr
    if server.spec.accelerator:
        layout = [g.model_dump() for g in server.spec.mig_layout]
        out.update(driver(server))
        out.update({
            "gpufleet_mig_capable": ACCELERATORS[server.spec.accelerator].mig,
            "gpufleet_mig_owner": facts.owner(site, "mig"),
            "gpufleet_mig_config_name": server.mig_config,
            "gpufleet_mig_parted_config": mig.mig_parted_config({server.mig_config: layout} if layout else {}, server.spec.gpu_count),
            "gpufleet_dcgm_owner": facts.owner(site, "dcgm"),
            "gpufleet_dcgm_counters_csv": facts.dcgm_counters_csv(),
            "gpufleet_acceptance": acceptance.thresholds(site, server),
        })
    return out
