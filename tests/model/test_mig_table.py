"""gpufleet.mig.MIG_PROFILES against the GPU operator's default mig-parted config.

The upstream ConfigMap holds one ``all-<profile>`` config per MIG profile (``+``
written as ``.``), each giving the most instances of that profile one GPU
takes. Where the count differs between GPU families, entries carry a
``device-filter`` of PCI ids (``0x<device><vendor 10DE>``); the ``all-balanced``
config has one entry per family, so it also tells which 1g/2g/3g profiles
belong to which family.

The file is found through GPUFLEET_UPSTREAM (default: ../shared/upstream beside
the repository).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from gpufleet.catalog import ACCELERATORS
from gpufleet.mig import COMPUTE_SLICES, MEMORY_SLICES, MIG_PROFILES, layout_problems, mig_parted_config

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = Path(os.environ.get("GPUFLEET_UPSTREAM", REPO.parent / "shared" / "upstream"))
CONFIG = UPSTREAM / "nvidia" / "gpu-operator-default-mig-parted-config.yaml"

pytestmark = pytest.mark.skipif(not CONFIG.is_file(), reason=f"upstream mig-parted config not found at {CONFIG} (set GPUFLEET_UPSTREAM)")


def _upstream() -> dict[str, list[dict]]:
    configmap = yaml.safe_load(CONFIG.read_text())
    return yaml.safe_load(configmap["data"]["config.yaml"])["mig-configs"]


def _device_ids(accelerator: str) -> set[str]:
    return {f"0x{d.upper()}10DE" for d in ACCELERATORS[accelerator].pci_device_ids}


def _entry_for(entries: list[dict], accelerator: str) -> tuple[dict | None, bool]:
    """The entry of a config that applies to this GPU, and whether a device-filter named it."""
    ids = _device_ids(accelerator)
    generic = None
    for entry in entries:
        flt = entry.get("device-filter")
        if flt is None:
            generic = entry
            continue
        flt = [flt] if isinstance(flt, str) else flt
        if ids & {f.upper().replace("0X", "0x") for f in flt}:
            return entry, True
    return generic, False


def _memory_per_slice(accelerator: str, configs: dict) -> float:
    """GB per memory slice for this GPU family, from its all-balanced 2g profile."""
    entry, named = _entry_for(configs["all-balanced"], accelerator)
    assert named, f"all-balanced has no entry for {accelerator}'s PCI ids {_device_ids(accelerator)}"
    two_g = [p for p in entry["mig-devices"] if p.startswith("2g.")]
    assert len(two_g) == 1
    return int(re.fullmatch(r"2g\.(\d+)gb", two_g[0]).group(1)) / 2


CASES = [(acc, name) for acc, table in MIG_PROFILES.items() for name in table]


@pytest.mark.parametrize("accelerator, profile", CASES, ids=[f"{a}-{p}" for a, p in CASES])
def test_profile_matches_upstream(accelerator, profile):
    configs = _upstream()
    ours = MIG_PROFILES[accelerator][profile]
    config_name = "all-" + profile.replace("+", ".")
    assert config_name in configs, f"upstream has no {config_name} config"
    entry, named = _entry_for(configs[config_name], accelerator)
    assert entry is not None, f"{config_name} has entries for other GPUs only"
    assert list(entry["mig-devices"]) == [profile]
    assert entry["mig-devices"][profile] == ours.max_per_gpu, f"upstream allows {entry['mig-devices'][profile]} x {profile} per GPU, we say {ours.max_per_gpu}"
    if not named:
        # A config shared by several families: the profile's memory must match
        # this family's slice size (e.g. 1g.12gb belongs to H100 NVL, not H100 80GB).
        per_slice = _memory_per_slice(accelerator, configs)
        assert abs(ours.memory_slices * per_slice - ours.memory_gib) <= 0.03 * ours.memory_gib + 0.5, (
            f"{profile} ({ours.memory_gib} GB) is not {ours.memory_slices} slices of {per_slice} GB on {accelerator}"
        )


@pytest.mark.parametrize("accelerator", list(MIG_PROFILES))
def test_balanced_layout_uses_our_profiles_and_fits(accelerator):
    """Upstream's all-balanced layout for each GPU is valid under our table."""
    entry, named = _entry_for(_upstream()["all-balanced"], accelerator)
    assert named
    assert layout_problems(accelerator, entry["mig-devices"]) == []


@pytest.mark.parametrize("accelerator", list(MIG_PROFILES))
def test_every_single_profile_layout_fills_at_most_one_gpu(accelerator):
    for prof in MIG_PROFILES[accelerator].values():
        assert prof.compute * prof.max_per_gpu <= COMPUTE_SLICES
        assert prof.memory_slices * prof.max_per_gpu <= MEMORY_SLICES
        assert layout_problems(accelerator, {prof.name: prof.max_per_gpu}) == []
        assert layout_problems(accelerator, {prof.name: prof.max_per_gpu + 1}) != []


def test_only_mig_capable_accelerators_have_profiles():
    assert set(MIG_PROFILES) == {a.id for a in ACCELERATORS.values() if a.mig}


def test_mig_parted_config_shape_matches_upstream():
    """Our generated config uses upstream's schema: version v1, devices, mig-enabled, mig-devices."""
    ours = mig_parted_config({"half": [{"devices": [0, 1], "profiles": {"2g.20gb": 3}}]}, gpu_count=4)
    upstream = _upstream()
    assert ours["mig-configs"]["all-disabled"] == upstream["all-disabled"]
    assert ours["mig-configs"]["half"] == [
        {"devices": [0, 1], "mig-enabled": True, "mig-devices": {"2g.20gb": 3}},
        {"devices": [2, 3], "mig-enabled": False},
    ]
    keys = {k for entries in upstream.values() for e in entries for k in e}
    assert {k for e in ours["mig-configs"]["half"] for k in e} <= keys
