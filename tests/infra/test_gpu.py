"""GPU checks: driver version, GPU count and model against the inventory,
persistence mode, MIG mode and layout, no row-remap failures. Every test
skips on hosts without an NVIDIA GPU."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from infralib import gpu_models_by_device_id


def smi(host, query: str) -> list[list[str]]:
    out = host.run(f"nvidia-smi --query-gpu={query} --format=csv,noheader,nounits")
    assert out.rc == 0, f"nvidia-smi failed: {out.stderr.strip() or out.stdout.strip()}"
    return [[f.strip() for f in line.split(",")] for line in out.stdout.strip().splitlines()]


def test_driver_version(host, gpu, expect):
    want = expect("nvidia_driver", "nvidia_driver_version")
    versions = {row[0] for row in smi(host, "driver_version")}
    assert versions == {want}, f"driver {versions}, expected {want}"
    loaded = host.file("/sys/module/nvidia/version").content_string.strip()
    assert loaded == want, f"loaded kernel module {loaded}, expected {want}"


def test_gpu_count(host, gpu, hostvars):
    rows = smi(host, "index")
    assert len(rows) == len(gpu), f"nvidia-smi sees {len(rows)} GPUs, the PCI bus has {len(gpu)}"
    if "gpufleet_gpu_count" in hostvars:
        assert len(rows) == int(hostvars["gpufleet_gpu_count"])


def test_gpu_model(host, gpu, hostvars):
    want = hostvars.get("gpufleet_accelerator")
    if not want:
        pytest.skip("no gpufleet_accelerator in the inventory")
    table = gpu_models_by_device_id()
    found = []
    for (pci_id,) in smi(host, "pci.device_id"):
        device = pci_id.lower().removeprefix("0x")[:4]  # 0x233010DE -> 2330
        found.append(table.get(device, f"unknown-10de-{device}"))
    assert set(found) == {want}, f"GPUs {Counter(found)}, the inventory says {want}"


def test_persistence_mode(host, gpu, expect):
    if not expect("nvidia_driver", "nvidia_driver_persistenced_enabled"):
        pytest.skip("nvidia_driver_persistenced_enabled is false")
    modes = [row[1] for row in smi(host, "index,persistence_mode")]
    assert set(modes) == {"Enabled"}, modes


def _mig_expected(layout, count: int) -> dict[int, Counter]:
    per_gpu: dict[int, Counter] = {}
    for entry in layout or []:
        devices = range(count) if entry.get("devices") == "all" else entry.get("devices", [])
        for idx in devices:
            per_gpu[int(idx)] = Counter({k: int(v) for k, v in (entry.get("profiles") or {}).items()})
    return per_gpu


def test_mig_mode(host, gpu, hostvars):
    rows = smi(host, "index,mig.mode.current")
    layout = hostvars.get("gpufleet_mig_layout") or []
    if all(mode in ("[N/A]", "N/A") for _, mode in rows):
        if layout:
            pytest.fail("the inventory sets a MIG layout but these GPUs do not support MIG")
        pytest.skip("GPUs without MIG support")
    want = _mig_expected(layout, len(rows))
    for idx, mode in rows:
        expected = "Enabled" if int(idx) in want else "Disabled"
        assert mode == expected, f"GPU {idx}: MIG {mode}, expected {expected}"


_GI = re.compile(r"MIG\s+(\d+g\.\d+gb(?:\+me)?)\s+\d+\s+\d+", re.IGNORECASE)


def test_mig_layout(host, gpu, hostvars):
    want = _mig_expected(hostvars.get("gpufleet_mig_layout") or [], len(gpu))
    if not want:
        pytest.skip("no MIG layout for this host")
    for idx, profiles in want.items():
        out = host.run(f"sudo -n nvidia-smi mig -lgi -i {idx}")
        assert out.rc == 0, out.stdout + out.stderr
        got = Counter(m.lower() for m in _GI.findall(out.stdout))
        assert got == profiles, f"GPU {idx}: GPU instances {dict(got)}, expected {dict(profiles)}"


def test_mig_config_applied_at_boot(host, gpu, expect, hostvars):
    if not hostvars.get("gpufleet_mig_layout"):
        pytest.skip("no MIG layout for this host")
    conf = host.file(f"{expect('mig', 'mig_config_dir')}/{expect('mig', 'mig_config_file')}")
    assert conf.exists


def test_no_row_remap_failures(host, gpu):
    out = host.run(
        "nvidia-smi --query-remapped-rows=gpu_bus_id,remapped_rows.failure,remapped_rows.pending "
        "--format=csv,noheader"
    )
    if out.rc != 0 or "not supported" in out.stdout.lower():
        pytest.skip("row remapping not supported by these GPUs")
    bad = []
    for line in out.stdout.strip().splitlines():
        bus, failure, pending = [f.strip() for f in line.split(",")]
        if failure.lower() not in ("0", "no", "false") or pending.lower() not in ("0", "no", "false"):
            bad.append(f"{bus}: failure={failure} pending={pending}")
    assert not bad, "row remapping: " + "; ".join(bad)


def test_no_retired_pages_pending(host, gpu):
    out = host.run("nvidia-smi --query-gpu=index,retired_pages.pending --format=csv,noheader")
    if out.rc != 0:
        pytest.skip("retired pages not reported")
    pending = [l for l in out.stdout.splitlines() if l.split(",")[-1].strip() == "Yes"]
    assert not pending, pending
