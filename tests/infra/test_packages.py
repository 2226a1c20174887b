"""Packages and holds: what the roles install is installed, at the pinned
version, and held so an unattended upgrade cannot move it."""

from __future__ import annotations

import fnmatch

import pytest


@pytest.fixture(scope="module")
def holds(host, facts):
    if facts["os_family"] != "Debian":
        pytest.skip("package holds are checked through dpkg on Debian and Ubuntu")
    return set(host.check_output("apt-mark showhold").split())


def test_base_packages(host, expect):
    for pkg in list(expect("os_baseline", "__os_baseline_packages") or []) + list(
        expect("os_baseline", "os_baseline_packages_extra") or []
    ):
        assert host.package(pkg).is_installed, f"{pkg} not installed"


def test_containerd_pinned_and_held(host, expect, holds):
    name = expect("nvidia_container_toolkit", "__nvidia_container_toolkit_containerd_package")
    # empty: the role's per-OS pin
    version = expect("nvidia_container_toolkit", "nvidia_container_toolkit_containerd_version") or expect(
        "nvidia_container_toolkit", "__nvidia_container_toolkit_containerd_version"
    )
    pkg = host.package(name)
    assert pkg.is_installed
    assert fnmatch.fnmatch(pkg.version, version), f"{name} {pkg.version} does not match {version}"
    if expect("nvidia_container_toolkit", "nvidia_container_toolkit_containerd_hold"):
        assert name in holds


def test_nvidia_driver_packages(host, expect, holds, driver_expected):
    if not driver_expected:
        pytest.skip("no NVIDIA GPU and nvidia_driver_install_without_gpu is false: no driver expected")
    source = expect("nvidia_driver", "nvidia_driver_source")
    flavour = expect("nvidia_driver", "nvidia_driver_kernel_module")
    packages = (expect("nvidia_driver", "__nvidia_driver_packages") or {}).get(source, {}).get(flavour, [])
    version = expect("nvidia_driver", "nvidia_driver_version")
    version_pkg = (expect("nvidia_driver", "__nvidia_driver_version_package") or {}).get(source)
    assert packages, f"no driver packages for {source}/{flavour}"
    for name in packages:
        assert host.package(name).is_installed, f"{name} not installed"
        if expect("nvidia_driver", "nvidia_driver_hold_packages"):
            assert name in holds, f"{name} not held"
    if version_pkg:
        assert host.package(version_pkg).version.startswith(f"{version}-"), (
            f"{version_pkg} {host.package(version_pkg).version}, expected {version}"
        )


def test_nvidia_driver_absent_without_gpu(host, driver_expected):
    if driver_expected:
        pytest.skip("the driver is expected on this host")
    for name in ("nvidia-driver", "nvidia-kernel-dkms", "cuda-drivers"):
        assert not host.package(name).is_installed, f"{name} installed on a host without an NVIDIA GPU"


def test_no_pending_broken_packages(host, facts):
    if facts["os_family"] != "Debian":
        pytest.skip("dpkg only")
    audit = host.run("dpkg --audit")
    assert audit.stdout.strip() == "", audit.stdout
