"""containerd: CRI with systemd cgroups, the pinned sandbox image, and the
NVIDIA runtime on GPU nodes where the toolkit is installed."""

from __future__ import annotations

import tomllib

import pytest


@pytest.fixture(scope="module")
def config(host):
    f = host.file("/etc/containerd/config.toml")
    assert f.exists, "/etc/containerd/config.toml missing"
    return tomllib.loads(host.check_output("sudo -n cat /etc/containerd/config.toml"))


def _cri(config):
    cri = config.get("plugins", {}).get("io.containerd.grpc.v1.cri")
    assert cri, "no [plugins.\"io.containerd.grpc.v1.cri\"] section in /etc/containerd/config.toml"
    assert "containerd" in cri, "no CRI containerd section in /etc/containerd/config.toml"
    return cri


def test_config_version_and_cgroups(config):
    assert config.get("version") == 2
    runc = _cri(config)["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is True


def test_sandbox_image(config, expect):
    assert _cri(config).get("sandbox_image") == expect("nvidia_container_toolkit", "nvidia_container_toolkit_sandbox_image")


def test_registry_mirrors(config, expect):
    mirrors = expect("nvidia_container_toolkit", "nvidia_container_toolkit_registry_mirrors") or {}
    got = _cri(config).get("registry", {}).get("mirrors", {})
    for registry, endpoints in mirrors.items():
        assert got[registry]["endpoint"] == list(endpoints)


def test_containerd_answers(host):
    out = host.run("sudo -n ctr --address /run/containerd/containerd.sock version")
    assert out.rc == 0, out.stderr
    assert "Server:" in out.stdout


def test_nvidia_runtime_on_gpu_nodes(host, config, expect, nvidia_pci):
    runtime_bin = host.file("/usr/bin/nvidia-container-runtime")
    runtimes = _cri(config)["containerd"]["runtimes"]
    wants_toolkit = bool(nvidia_pci["gpus"]) or bool(
        expect("nvidia_container_toolkit", "nvidia_container_toolkit_install_without_gpu")
    )
    if not wants_toolkit:
        assert "nvidia" not in runtimes, "NVIDIA runtime configured on a host without a GPU"
        pytest.skip("no NVIDIA GPU: containerd runs with runc only")
    if not expect("nvidia_container_toolkit", "nvidia_container_toolkit_repo_url"):
        pytest.skip("no package source configured for the NVIDIA Container Toolkit")
    assert runtime_bin.exists, "nvidia-container-runtime not installed"
    nvidia = runtimes["nvidia"]
    assert nvidia["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
    assert nvidia["options"]["SystemdCgroup"] is True
    if expect("nvidia_container_toolkit", "nvidia_container_toolkit_default_runtime"):
        assert _cri(config)["containerd"]["default_runtime_name"] == "nvidia"
