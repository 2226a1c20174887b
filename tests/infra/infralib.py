"""Small helpers shared by the testinfra suites."""

from __future__ import annotations

import re
from typing import Any


def package_source_configured(url: Any) -> bool:
    return bool(str(url or "").strip())


def dpkg_holds(host) -> set[str]:
    return set(host.check_output("apt-mark showhold").split())


def parse_kv(text: str, sep: str = "=") -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if sep in line:
            k, v = line.split(sep, 1)
            out[k.strip()] = v.strip()
    return out


def words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def gpu_models_by_device_id() -> dict[str, str]:
    """NVIDIA PCI device id -> accelerator name, from the catalogue (the table
    gpufleet render hands the gpu_detect role)."""
    from gpufleet.facts import pci_device_models

    return pci_device_models()
