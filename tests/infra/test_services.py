"""Services that must be enabled and running after site.yml."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("unit", ["ssh", "containerd"])
def test_core_services(host, unit, facts):
    name = "sshd" if unit == "ssh" and facts["os_family"] == "RedHat" else unit
    svc = host.service(name)
    assert svc.is_enabled, f"{name} not enabled"
    assert svc.is_running, f"{name} not running"


# Units that cannot run on a host without an NVIDIA GPU even though the driver
# was installed there on purpose (nvidia_driver_install_without_gpu: image
# builds): the persistence daemon exits at once when it finds no device.
NEEDS_A_GPU = {"nvidia-persistenced.service"}


def test_no_failed_units(host, driver_expected, nvidia_pci):
    out = host.check_output("systemctl list-units --state=failed --no-legend --plain")
    failed = {line.split()[0] for line in out.splitlines() if line.strip()}
    if driver_expected and not nvidia_pci["gpus"]:
        failed -= NEEDS_A_GPU
    assert not failed, f"failed units:\n{out}"


def test_persistence_daemon(host, expect, driver_expected, nvidia_pci):
    if not driver_expected:
        pytest.skip("no NVIDIA driver expected on this host")
    if not expect("nvidia_driver", "nvidia_driver_persistenced_enabled"):
        pytest.skip("nvidia_driver_persistenced_enabled is false")
    svc = host.service("nvidia-persistenced")
    assert svc.is_enabled
    if nvidia_pci["gpus"]:
        assert svc.is_running


def test_fabric_manager(host, expect, gpu, nvidia_pci):
    nvswitch = bool(nvidia_pci["nvswitches"]) or bool(expect("nvidia_fabricmanager", "nvidia_fabricmanager_nvswitch"))
    if not nvswitch:
        pytest.skip("not an NVSwitch system")
    svc = host.service("nvidia-fabricmanager")
    assert svc.is_enabled
    assert svc.is_running


def test_dcgm_services(host, gpu, hostvars):
    for unit in ("nvidia-dcgm", "dcgm-exporter"):
        svc = host.service(unit)
        if not host.file(f"/etc/systemd/system/{unit}.service").exists and not host.file(
            f"/lib/systemd/system/{unit}.service"
        ).exists and not host.file(f"/usr/lib/systemd/system/{unit}.service").exists:
            pytest.skip(f"{unit} not installed (no package source configured)")
        assert svc.is_enabled, f"{unit} not enabled"
        assert svc.is_running, f"{unit} not running"
