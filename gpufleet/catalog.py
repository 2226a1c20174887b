"""The accelerator and instance catalogue: what each GPU and AWS instance carries.

Figures and where they come from:

* GPU memory is the total that ``nvidia-smi --query-gpu=memory.total`` reports,
  in MiB, as published in NVIDIA's product datasheets (H100 SXM5, H200 SXM,
  A100 40/80 GB, L40S, L4) and AWS's G5 page for the A10G. Memory arithmetic
  uses GiB (MiB / 1024).
* NVLink bandwidth per GPU and NVSwitch presence: NVIDIA datasheets (HGX
  baseboards carry NVSwitch; PCIe cards L40S, L4 and A10G have no NVLink).
* MIG profiles per GPU: :mod:`gpufleet.mig`, checked in the tests against the
  GPU operator's default mig-parted configuration.
* Memory bandwidth and dense tensor throughput (no sparsity), per GPU: the
  NVIDIA datasheets of H100 SXM5 (3.35 TB/s; FP16/BF16 989, FP8 1,979, INT8
  1,979 TFLOPS/TOPS; Hopper has no INT4 tensor path), H200 SXM (4.8 TB/s, the
  same compute as H100 SXM), A100 40 GB SXM4 (1,555 GB/s) and 80 GB SXM4
  (2,039 GB/s; FP16 312, INT8 624, INT4 1,248; no FP8), L40S (864 GB/s; FP16
  362, FP8 733, INT8 733, INT4 733), L4 (300 GB/s; FP16 121, FP8 242, INT8
  242) and A10 (600 GB/s; FP16 125, INT8 250, INT4 500; AWS's A10G is the A10
  part, its clocks may differ). The datasheets print sparse figures first;
  these are the dense ones (half). 0 means the GPU has no tensor path at that
  precision. The performance model (gpufleet/economics/perf.py) reads them.
* Prices are not here: owned and cloud prices, with their sources and dates,
  are in gpufleet/economics/prices.yaml.
* Instance types: the "Accelerated computing" and "General purpose"
  specifications pages of the Amazon EC2 User Guide (GPUs, vCPUs, memory,
  maximum EFA interfaces). Only the types listed here are accepted in a node
  pool, so a typo fails validation instead of failing at ``pulumi up``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    id: str
    product: str
    memory_mib: int
    nvlink_gbps: int  # per GPU, bidirectional GB/s; 0 when the card has none
    nvswitch: bool  # on the baseboards it ships on (HGX)
    fp8: bool  # hardware FP8 tensor cores (Hopper, Ada)
    mig: bool
    pci_device_ids: tuple[str, ...]  # vendor 10de, as lspci -nn shows them
    hbm_gbps: float = 0.0  # memory bandwidth, GB/s (10^9 bytes)
    tflops: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # dense FP16, FP8, INT8, INT4 tensor TFLOPS/TOPS

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    def dense_tflops(self, precision: str) -> float:
        """Dense tensor throughput at ``fp16``, ``fp8``, ``int8`` or ``int4`` (0 when unsupported)."""
        return self.tflops[("fp16", "fp8", "int8", "int4").index(precision)]

ACCELERATORS: dict[str, Accelerator] = {
    a.id: a
    for a in (
        Accelerator("h100-80gb", "NVIDIA H100 SXM5 80GB", 81559, 900, True, True, True, ("2330", "2331"), 3350, (989, 1979, 1979, 0)),
        Accelerator("h200-141gb", "NVIDIA H200 SXM 141GB", 143771, 900, True, True, True, ("2335", "233b"), 4800, (989, 1979, 1979, 0)),
        Accelerator("a100-40gb", "NVIDIA A100 SXM4 40GB", 40960, 600, True, False, True, ("20b0", "20b1", "20f1"), 1555, (312, 0, 624, 1248)),
        Accelerator("a100-80gb", "NVIDIA A100 SXM4 80GB", 81920, 600, True, False, True, ("20b2", "20b3", "20b5"), 2039, (312, 0, 624, 1248)),
        Accelerator("l40s", "NVIDIA L40S 48GB", 46068, 0, False, True, False, ("26b9",), 864, (362, 733, 733, 733)),
        Accelerator("l4", "NVIDIA L4 24GB", 23034, 0, False, True, False, ("27b8",), 300, (121, 242, 242, 0)),
        Accelerator("a10g", "NVIDIA A10G 24GB", 23028, 0, False, False, False, ("2237",), 600, (125, 0, 250, 500)),
    )
}

# NVIDIA GPUs lspci may find that are not accelerators of the catalogue: named
# so that a mismatch says what was found. The form-factor variants of a
# catalogue accelerator (H100 PCIe 2331, H200 NVL 233b, A100 PCIe 20b1/20f1/
# 20b5, A100 SXM4 20b3) are listed in its row.
OTHER_GPU_PCI_IDS = {"2321": "h100-nvl", "26b5": "l40"}
# NVSwitch bridges (PCI class 0680) on HGX baseboards.
NVSWITCH_PCI_IDS = {"1af1": "nvswitch-gen2", "22a3": "nvswitch-gen3"}  # HGX A100; HGX H100/H200

# Interconnect figures the acceptance thresholds derive from
# (gpufleet/acceptance.py), per GPU, GB/s:
#
# * NVLink: ``Accelerator.nvlink_gbps`` above, the datasheets' bidirectional
#   figure (H100/H200 SXM 900, A100 SXM4 600).
# * PCIe, bidirectional, as the datasheets print it: Gen5 x16 128 GB/s (H100
#   SXM5, H200 SXM), Gen4 x16 64 GB/s (A100 SXM4, L40S, L4, A10G).
PCIE_GBPS = {"h100-80gb": 128, "h200-141gb": 128, "a100-40gb": 64, "a100-80gb": 64, "l40s": 64, "l4": 64, "a10g": 64}
# Line rate of one fabric port (one HCA or NIC), Gbit/s: InfiniBand NDR
# (ConnectX-7), 100 GbE for RoCE and TCP. A site whose ports are faster or
# slower sets the block threshold itself (acceptance_block_busbw_gbps).
FABRIC_PORT_GBIT = {"infiniband": 400, "roce": 100, "tcp": 100, "efa": 100}


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: int
    accelerator: str | None = None
    gpus: int = 0
    efa_interfaces: int = 0  # 0: EFA not supported

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0


def _family(prefix: str, acc: str | None, rows: list[tuple[str, int, int, int, int]]) -> list[InstanceType]:
    return [InstanceType(f"{prefix}.{size}", vcpu, mem, acc if gpus else None, gpus, efa) for size, vcpu, mem, gpus, efa in rows]


_CPU_SIZES = [("large", 2), ("xlarge", 4), ("2xlarge", 8), ("4xlarge", 16), ("8xlarge", 32), ("12xlarge", 48), ("16xlarge", 64)]

INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in [
        # size, vCPUs, memory GiB, GPUs, max EFA interfaces
        *_family("p5", "h100-80gb", [("48xlarge", 192, 2048, 8, 32)]),
        *_family("p5e", "h200-141gb", [("48xlarge", 192, 2048, 8, 32)]),
        *_family("p5en", "h200-141gb", [("48xlarge", 192, 2048, 8, 16)]),
        *_family("p4d", "a100-40gb", [("24xlarge", 96, 1152, 8, 4)]),
        *_family("p4de", "a100-80gb", [("24xlarge", 96, 1152, 8, 4)]),
        *_family("g6e", "l40s", [
            ("xlarge", 4, 32, 1, 0), ("2xlarge", 8, 64, 1, 0), ("4xlarge", 16, 128, 1, 0),
            ("8xlarge", 32, 256, 1, 1), ("12xlarge", 48, 384, 4, 1), ("16xlarge", 64, 512, 1, 1),
            ("24xlarge", 96, 768, 4, 2), ("48xlarge", 192, 1536, 8, 4),
        ]),
        *_family("g6", "l4", [
            ("xlarge", 4, 16, 1, 0), ("2xlarge", 8, 32, 1, 0), ("4xlarge", 16, 64, 1, 0),
            ("8xlarge", 32, 128, 1, 1), ("12xlarge", 48, 192, 4, 1), ("16xlarge", 64, 256, 1, 1),
            ("24xlarge", 96, 384, 4, 1), ("48xlarge", 192, 768, 8, 1),
        ]),
        *_family("g5", "a10g", [
            ("xlarge", 4, 16, 1, 0), ("2xlarge", 8, 32, 1, 0), ("4xlarge", 16, 64, 1, 0),
            ("8xlarge", 32, 128, 1, 1), ("12xlarge", 48, 192, 4, 1), ("16xlarge", 64, 256, 1, 1),
            ("24xlarge", 96, 384, 4, 1), ("48xlarge", 192, 768, 8, 1),
        ]),
        *(InstanceType(f"{fam}.{size}", vcpu, vcpu * ratio) for fam, ratio in (("m7i", 4), ("m6i", 4), ("c7i", 2), ("r7i", 8)) for size, vcpu in _CPU_SIZES),
    ]
}


def accelerator_by_pci_id(device_id: str) -> Accelerator | None:
    device_id = device_id.lower()
    for acc in ACCELERATORS.values():
        if device_id in acc.pci_device_ids:
            return acc
    return None
