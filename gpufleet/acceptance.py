"""The acceptance gate's all_reduce thresholds, derived from the catalogue.

nccl-tests' bus bandwidth "should reflect the speed of the hardware
bottleneck: NVLink, PCI, QPI, or network" (nccl-tests doc/PERFORMANCE.md,
v2.17.6), so each threshold is the bottleneck's bandwidth in one direction
times an efficiency factor:

* within one server: NVLink where the GPUs sit on an NVSwitch baseboard,
  otherwise PCIe (catalogue figures are bidirectional, halved);
* across the servers of one InfiniBand block: the smaller of that and the
  server's fabric ports (HCA count x line rate), since NCCL runs one ring
  per port across servers.

The factors say how close to the link a healthy server must get; they are
this project's choice (a gate, not a benchmark), stated here and in each
derived threshold's ``source``. An inventory's ``gpufleet_acceptance_busbw_gbps``
replaces the single-server figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpufleet.catalog import ACCELERATORS, FABRIC_PORT_GBIT, PCIE_GBPS

if TYPE_CHECKING:
    from gpufleet.model import Server, Site

EFFICIENCY = {"nvlink": 0.8, "pcie": 0.5, "fabric": 0.8}
PERFORMANCE_DOC = "bus bandwidth reflects the hardware bottleneck (nccl-tests doc/PERFORMANCE.md)"


def _within(server: Server) -> tuple[str, float] | None:
    """(bottleneck, one-direction GB/s per GPU) inside one server, or None for a single GPU."""
    acc = ACCELERATORS[str(server.spec.accelerator)]
    if server.spec.gpu_count < 2:
        return None
    if acc.nvlink_gbps and acc.nvswitch and server.spec.nvswitch:
        return "nvlink", acc.nvlink_gbps / 2
    return "pcie", PCIE_GBPS[acc.id] / 2


def server_threshold(server: Server) -> dict[str, Any] | None:
    """The all_reduce bus bandwidth (GB/s) one server's GPUs must reach together."""
    if not server.spec.accelerator:
        return None
    within = _within(server)
    if server.spec.acceptance_busbw_gbps:
        return {"busbw_gbps": float(server.spec.acceptance_busbw_gbps), "efficiency": 1.0,
                "source": "the inventory's gpufleet_acceptance_busbw_gbps"}
    if within is None:
        return None
    link, gbps = within
    eff = EFFICIENCY[link]
    name = "NVLink" if link == "nvlink" else "PCIe"
    return {
        "busbw_gbps": round(eff * gbps, 1),
        "efficiency": eff,
        "source": f"{eff} x {name} {gbps:g} GB/s per GPU and direction ({server.spec.accelerator}, gpufleet/catalog.py); {PERFORMANCE_DOC}",
    }


def blocks(site: Site) -> dict[str, list[str]]:
    """InfiniBand block -> its GPU servers, sorted. Worked out once per site
    (render asks for every server of a site in turn)."""
    cached = site.__dict__.get("_gpufleet_ib_blocks")
    if cached is None or cached[0] != len(site.servers):
        found: dict[str, list[str]] = {}
        for s in site.servers:
            if s.spec.ib_block and s.spec.accelerator:
                found.setdefault(s.spec.ib_block, []).append(s.name)
        cached = (len(site.servers), {b: sorted(h) for b, h in found.items()})
        site.__dict__["_gpufleet_ib_blocks"] = cached
    return cached[1]


def block_threshold(site: Site, server: Server) -> dict[str, Any] | None:
    """The all_reduce across every server of ``server``'s InfiniBand block, or
    None when it is in no block (or alone in it)."""
    block = server.spec.ib_block
    if not block or not server.spec.accelerator:
        return None
    hosts = blocks(site).get(block, [])
    if len(hosts) < 2:
        return None
    ports = max(1, len(server.spec.fabric_hcas))
    fabric = ports * FABRIC_PORT_GBIT[server.spec.fabric] / 8
    within = _within(server)
    link, gbps = ("fabric", fabric) if within is None or fabric <= within[1] else within
    eff = EFFICIENCY["fabric"]
    return {
        "name": block,
        "hosts": hosts,
        "busbw_gbps": round(eff * gbps, 1),
        "efficiency": eff,
        "source": (f"{eff} x min(fabric {ports} x {FABRIC_PORT_GBIT[server.spec.fabric]} Gbit/s {server.spec.fabric} = {fabric:g} GB/s, "
                   f"in-server {within[1] if within else 0:g} GB/s) per server, bottleneck {link}; {PERFORMANCE_DOC}"),
    }


def thresholds(site: Site, server: Server) -> dict[str, Any] | None:
    """``gpufleet_acceptance`` of one GPU server (None for a CPU server): the
    single-server threshold (``busbw_gbps`` null for a one-GPU server, which
    has no all_reduce to run) and ``block``, the one across its block."""
    if not server.spec.accelerator:
        return None
    within = server_threshold(server) or {"busbw_gbps": None, "efficiency": None, "source": "one GPU: no all_reduce within the server"}
    return {**within, "block": block_threshold(site, server)}
