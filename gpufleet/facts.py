"""Facts several engines share: node label keys, taints, resource names, the
device-plugin node labels, the DCGM counters, PCI ids, and who owns MIG and
DCGM on a node.

Everything here is written once. ``k8s/`` and ``cloud/`` import it, and the
Ansible roles read it from what ``gpufleet render`` derives
(:mod:`gpufleet.baremetal_vars`, ``gpufleet-derived.yml``): no role keeps a
copy of its own (tests/ansible/test_shared_facts.py checks that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpufleet import catalog

if TYPE_CHECKING:
    from gpufleet.model import Fleet, Site

# ------------------------------------------------------------------ labels

LABEL_SITE = "gpufleet.io/site"
LABEL_POOL = "gpufleet.io/pool"
LABEL_RACK = "gpufleet.io/rack"
LABEL_SERVER_CLASS = "gpufleet.io/server-class"
LABEL_IB_BLOCK = "gpufleet.io/ib-block"  # Kueue's topology level inside a data centre
LABEL_ACCELERATOR = "gpufleet.io/accelerator"
LABEL_FABRIC = "gpufleet.io/fabric"
LABEL_DATA_CLASS = "gpufleet.io/data-class"
LABEL_TEAM = "gpufleet.io/team"
LABEL_QUEUE = "gpufleet.io/queue"
LABEL_MODEL = "gpufleet.io/model"
LABEL_LWS_ROLE = "gpufleet.io/lws-role"
# The GPU operator's labels: the mig-parted configuration a node applies, and
# the device-plugin configuration it uses (k8s/gpu_operator.py builds both).
LABEL_MIG_CONFIG = "nvidia.com/mig.config"
LABEL_DEVICE_PLUGIN_CONFIG = "nvidia.com/device-plugin.config"

# The GPU operator deploys an operand on a node unless the node already
# carries its gpu.deploy label set to "false": addGPUStateLabels in
# controllers/state_manager.go "honors the current value" of a state label
# that exists, and sets nvidia.com/gpu.deploy.mig-manager only when absent.
OPERAND_DEPLOY_LABELS = {
    "mig-manager": "nvidia.com/gpu.deploy.mig-manager",
    "dcgm": "nvidia.com/gpu.deploy.dcgm",
    "dcgm-exporter": "nvidia.com/gpu.deploy.dcgm-exporter",
}

# ------------------------------------------------------------------ taints


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    @property
    def string(self) -> str:
        """``key=value:Effect``, as kubectl and kubelet's --register-with-taints write it."""
        return f"{self.key}={self.value}:{self.effect}"

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}


# Every GPU node: only pods that tolerate it (GPU workloads) land there.
GPU_TAINT = Taint("nvidia.com/gpu", "true", "NoSchedule")
# A data-centre GPU node joins with it; the acceptance gate removes it once
# the server passed burn-in, so no workload lands on an untested server.
ACCEPTANCE_TAINT = Taint("gpufleet.io/acceptance", "pending", "NoSchedule")
TAINTS = (GPU_TAINT, ACCEPTANCE_TAINT)

GPU_RESOURCE = "nvidia.com/gpu"


def mig_resource(profile: str) -> str:
    """The extended resource a MIG slice is advertised as (strategy mixed)."""
    return f"nvidia.com/mig-{profile}"


def label_and_taint_keys() -> set[str]:
    """Every label and taint key gpufleet writes or selects on."""
    keys = {v for k, v in globals().items() if k.startswith("LABEL_") and isinstance(v, str)}
    keys |= set(OPERAND_DEPLOY_LABELS.values())
    keys |= {t.key for t in TAINTS}
    keys.add(GPU_RESOURCE)
    return keys


# ------------------------------------------------- time-sliced GPUs (device plugin)


def time_slicing_configs(fleet: Fleet, site: Site) -> dict[str, int]:
    """Device-plugin configuration name -> replicas per GPU, per accelerator
    that a model served at ``site`` asks to time-slice (the largest ask wins)."""
    want: dict[str, int] = {}
    for model in fleet.models:
        if site.name not in model.sites or not model.time_slicing or model.placement.mig_profile:
            continue
        acc = model.placement.accelerator
        want[acc] = max(want.get(acc, 0), model.time_slicing)
    return {f"{acc}-time-sliced": replicas for acc, replicas in sorted(want.items())}


def device_plugin_node_labels(fleet: Fleet, site: Site) -> dict[str, dict[str, str]]:
    """Accelerator -> the node label that selects its time-slicing configuration,
    for the node pools or servers of that accelerator at ``site``."""
    return {name.removesuffix("-time-sliced"): {LABEL_DEVICE_PLUGIN_CONFIG: name} for name in time_slicing_configs(fleet, site)}


# ------------------------------------------------ who owns MIG and DCGM on a node
#
# One owner each. On data-centre servers the Ansible roles do: the mig role
# applies the layout at boot, before containerd and kubelet start, and the
# DCGM host engine (with dcgm-exporter beside it) runs before the node joins,
# because the acceptance gate runs dcgmi diag on servers that are not in the
# cluster yet. Those nodes join labelled so that the GPU operator does not
# deploy its MIG manager, DCGM or dcgm-exporter there. In AWS regions there
# are no roles: the GPU operator owns both.

HOST_OWNED_OPERANDS = ("mig-manager", "dcgm", "dcgm-exporter")


def operand_owner_labels(site: Site) -> dict[str, str]:
    """The gpu.deploy labels a GPU node at ``site`` joins with ({} where the operator owns everything)."""
    if site.is_aws:
        return {}
    return {OPERAND_DEPLOY_LABELS[o]: "false" for o in HOST_OWNED_OPERANDS}


def owner(site: Site, what: str) -> str:
    """``"role"`` or ``"gpu-operator"``: who applies MIG (``mig``) or runs DCGM (``dcgm``) at ``site``."""
    if what not in ("mig", "dcgm"):
        raise ValueError(what)
    return "gpu-operator" if site.is_aws else "role"


# ------------------------------------------------------------- DCGM counters


@dataclass(frozen=True)
class Counter:
    field: str  # DCGM field (DCGM_FI_...) or exporter metric (DCGM_EXP_...)
    type: str  # gauge, counter or label
    help: str


# The defaults of dcgm-exporter's etc/default-counters.csv plus the error
# counters alerts need, which that file leaves commented out (XID, ECC,
# row remapping, retired pages, NVLink errors, throttling).
DCGM_COUNTERS: tuple[Counter, ...] = tuple(Counter(*c) for c in (
    # Clocks, temperature, power
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock (MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock (MHz)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (C)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (C)."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (W)."),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Energy used since boot (mJ)."),
    # Utilisation and memory
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilisation (%)."),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory copy utilisation (%)."),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Frame buffer free (MiB)."),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Frame buffer used (MiB)."),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "PCIe replays."),
    # Throttling
    ("DCGM_FI_DEV_POWER_VIOLATION", "counter", "Time throttled by the power limit (ns)."),
    ("DCGM_FI_DEV_THERMAL_VIOLATION", "counter", "Time throttled by temperature (ns)."),
    # XID: the value of the last XID error the driver reported.
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Last XID error seen."),
    # ECC: volatile (since the last driver load) and aggregate (lifetime).
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Single-bit ECC errors since driver load."),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Double-bit ECC errors since driver load."),
    ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "counter", "Single-bit ECC errors over the lifetime."),
    ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "counter", "Double-bit ECC errors over the lifetime."),
    # Row remapping (Ampere and later)
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter", "Rows remapped after uncorrectable errors."),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter", "Rows remapped after correctable errors."),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "1 when a row remap has failed."),
    # Page retirement (pre-Ampere GPUs)
    ("DCGM_FI_DEV_RETIRED_SBE", "counter", "Pages retired after single-bit errors."),
    ("DCGM_FI_DEV_RETIRED_DBE", "counter", "Pages retired after double-bit errors."),
    ("DCGM_FI_DEV_RETIRED_PENDING", "counter", "Pages waiting to be retired."),
    # NVLink errors, summed over links
    ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "counter", "NVLink flow-control CRC errors."),
    ("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "counter", "NVLink data CRC errors."),
    ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", "counter", "NVLink replays."),
    ("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "counter", "NVLink recovery errors."),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter", "NVLink bandwidth counter over all lanes."),
    # Labels on every series
    ("DCGM_FI_DRIVER_VERSION", "label", "Driver version."),
    # Profiling (Volta and later data-centre GPUs)
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Share of time the graphics engine is active."),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", "Share of cycles the tensor pipe is active."),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge", "Share of cycles device memory is busy."),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", "PCIe transmit rate (B/s)."),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", "PCIe receive rate (B/s)."),
))


def dcgm_counters_csv() -> str:
    """The counters in dcgm-exporter's collectors-file format (field, type, help)."""
    lines = ["# DCGM field, Prometheus metric type, help message"]
    lines += [f"{c.field}, {c.type}, {c.help}" for c in DCGM_COUNTERS]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ PCI ids


def pci_device_models() -> dict[str, str]:
    """NVIDIA PCI device id (vendor 10de, lower-case hex) -> the model name
    lspci's id stands for: the catalogue's accelerator ids, and the names of
    other NVIDIA GPUs a server may turn out to hold."""
    out = {dev: acc.id for acc in catalog.ACCELERATORS.values() for dev in acc.pci_device_ids}
    out.update(catalog.OTHER_GPU_PCI_IDS)
    return out


def nvswitch_device_ids() -> dict[str, str]:
    """NVSwitch PCI device id -> generation (bridges of PCI class 0680 on HGX baseboards)."""
    return dict(catalog.NVSWITCH_PCI_IDS)
