"""The NVIDIA GPU operator at every site with GPUs (pinned in :mod:`k8s.versions`).

What the operator does and does not manage here:

* Drivers: never. Data-centre servers get theirs from the ``nvidia_driver``
  role, AWS nodes from the EKS NVIDIA AMI, so ``driver.enabled`` is false.
* Container toolkit: never. The ``nvidia_container_toolkit`` role configures
  containerd on data-centre servers and the AMI ships it in AWS.
* MIG: strategy ``mixed`` (a node may carry whole GPUs beside MIG slices,
  each advertised under its own resource name). The MIG manager applies the
  mig-parted configuration generated from the inventory, the same named
  layouts the bare-metal ``mig`` role applies (:func:`mig_parted_config`); a
  node picks its layout with the ``nvidia.com/mig.config`` label that the
  join role sets.
* Time-slicing: for each accelerator that a served model at this site wants
  time-sliced, the device plugin gets a named configuration sharing each GPU
  ``replicas`` ways. A node uses it when labelled
  ``nvidia.com/device-plugin.config=<name>`` (:func:`time_slicing_configs`
  gives the names; the node pools or servers of that accelerator carry the
  label); other nodes keep the default, unshared configuration.
* dcgm-exporter: runs with the counters file the monitoring add-on ships
  (when that add-on is present), scraped by its own ServiceMonitor.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import yaml

from gpufleet import facts, mig
from gpufleet.catalog import ACCELERATORS
from gpufleet.model import Fleet, Site
from k8s import versions
from k8s.core import AddonBundle, Chart
from k8s.kueue import gpu_nodes, tolerations

NAMESPACE = "gpu-operator"
RELEASE = "gpu-operator"
MIG_CONFIG_NAME = "gpufleet-mig-parted-config"
DEVICE_PLUGIN_CONFIG_NAME = "gpufleet-device-plugin-config"
DEVICE_PLUGIN_DEFAULT = "default"
DEVICE_PLUGIN_LABEL = facts.LABEL_DEVICE_PLUGIN_CONFIG


class GpuOperatorError(ValueError):
    """A site whose MIG or sharing settings cannot be expressed (``where: what``)."""


def has_gpus(site: Site) -> bool:
    return bool(site.gpu_capacity() or site.mig_capacity())


def mig_parted_config(site: Site) -> dict[str, Any]:
    """One mig-parted v1 configuration holding every layout used at ``site``.

    Built per server with :func:`gpufleet.mig.mig_parted_config`, exactly as
    the bare-metal role's host variables are, and merged by name; two servers
    whose layouts share a name must resolve to the same configuration.
    """
    merged: dict[str, list[dict[str, Any]]] = {}
    owner: dict[str, str] = {}
    for server in site.servers:
        if not server.spec.accelerator:
            continue
        layout = [g.model_dump() for g in server.spec.mig_layout]
        one = mig.mig_parted_config({server.mig_config: layout} if layout else {}, server.spec.gpu_count)
        for name, entries in one["mig-configs"].items():
            if name in merged and merged[name] != entries:
                raise GpuOperatorError(
                    f"{site.name}: {server.name}: MIG layout '{name}' resolves differently than on {owner[name]} "
                    "(servers with a different GPU count need their own layout)"
                )
            merged.setdefault(name, entries)
            owner.setdefault(name, server.name)
    if not merged:
        merged = mig.mig_parted_config({})["mig-configs"]
    return {"version": "v1", "mig-configs": merged}


# The time-slicing configurations and the node labels that select them are
# derived once, in the model (gpufleet/facts.py): the roles label data-centre
# servers and cloud/ labels node pools from the same function.
time_slicing_configs = facts.time_slicing_configs
device_plugin_node_labels = facts.device_plugin_node_labels


def device_plugin_config(fleet: Fleet, site: Site) -> dict[str, str]:
    """The device plugin's named configurations (ConfigMap data)."""
    base = {"version": "v1", "flags": {"migStrategy": "mixed"}}
    data = {DEVICE_PLUGIN_DEFAULT: yaml.safe_dump(base, sort_keys=False)}
    for name, replicas in time_slicing_configs(fleet, site).items():
        cfg = {
            **base,
            "sharing": {
                "timeSlicing": {
                    # A pod asking for more than one shared GPU would get the same GPU twice.
                    "failRequestsGreaterThanOne": True,
                    "resources": [{"name": "nvidia.com/gpu", "replicas": replicas}],
                }
            },
        }
        data[name] = yaml.safe_dump(cfg, sort_keys=False)
    return data


def _image(component: str) -> dict[str, str]:
    """A ClusterPolicy image: the operator composes repository/image:version, so
    the version is ``<tag>@<digest>`` (k8s/versions.py GPU_OPERATOR_DIGESTS)."""
    repository, image, version = versions.GPU_OPERATOR_IMAGES[component]
    return {"repository": repository, "image": image, "version": versions.tag_at_digest(version, versions.GPU_OPERATOR_DIGESTS.get(component))}


def _operator_image() -> dict[str, str]:
    repository, image, version, digest = versions.GPU_OPERATOR_OPERATOR_IMAGE
    return {"repository": repository, "image": image, "version": versions.tag_at_digest(version, digest)}


def _dcgm_counters() -> tuple[str, str] | None:
    """(ConfigMap name, file key) of the monitoring add-on's counters, if it ships one."""
    if importlib.util.find_spec("k8s.monitoring") is None or importlib.util.find_spec("k8s.monitoring.dcgm") is None:
        return None
    dcgm = importlib.import_module("k8s.monitoring.dcgm")
    name, key = getattr(dcgm, "CONFIGMAP_NAME", None), getattr(dcgm, "CSV_KEY", None)
    return (name, key) if name and key else None


def values(fleet: Fleet, site: Site) -> dict[str, Any]:
    """The chart values; those under driver, toolkit, mig, migManager,
    devicePlugin and dcgmExporter become the ClusterPolicy's spec."""
    mig_capable = any(ACCELERATORS[a].mig for a in site.accelerators())
    taints = [t for nodes in gpu_nodes(site).values() for t in nodes.taints]
    unique_taints = list(dict.fromkeys(taints))
    dcgm: dict[str, Any] = {"enabled": True, **_image("dcgmExporter"), "serviceMonitor": {"enabled": False}}
    counters = _dcgm_counters()
    if counters:
        dcgm["config"] = {"name": counters[0]}
        dcgm["env"] = [{"name": "DCGM_EXPORTER_COLLECTORS", "value": f"/etc/dcgm-exporter/{counters[1]}"}]
    nfd_repo, nfd_tag, nfd_digest = versions.NFD_IMAGE
    return {
        "operator": _operator_image(),
        "validator": _operator_image(),  # the validator runs the operator's image
        "node-feature-discovery": {"image": {"repository": nfd_repo, "tag": versions.tag_at_digest(nfd_tag, nfd_digest)}},
        "daemonsets": {"tolerations": tolerations(unique_taints)},
        "driver": {"enabled": False},
        "toolkit": {"enabled": False, **_image("toolkit")},
        "mig": {"strategy": "mixed"},
        "migManager": {
            "enabled": mig_capable,
            **_image("migManager"),
            "config": {
                "create": True,
                "name": MIG_CONFIG_NAME,
                "default": "all-disabled",
                "data": {"config.yaml": yaml.safe_dump(mig_parted_config(site), sort_keys=False)},
            },
        },
        "devicePlugin": {
            "enabled": True,
            **_image("devicePlugin"),
            "config": {"create": True, "name": DEVICE_PLUGIN_CONFIG_NAME, "default": DEVICE_PLUGIN_DEFAULT, "data": device_plugin_config(fleet, site)},
        },
        "gfd": {"enabled": True, **_image("gfd")},
        "dcgmExporter": dcgm,
        "nfd": {"enabled": True},
    }


def chart(fleet: Fleet, site: Site) -> Chart:
    return Chart(RELEASE, versions.GPU_OPERATOR_CHART, versions.GPU_OPERATOR_REPOSITORY, versions.GPU_OPERATOR_VERSION, NAMESPACE, values(fleet, site))


def build(fleet: Fleet, site: Site) -> AddonBundle | None:
    """The GPU operator for ``site``; None where the site has no GPUs (such as a CPU-only hub)."""
    if not has_gpus(site):
        return None
    return AddonBundle("gpu-operator", charts=[chart(fleet, site)])
