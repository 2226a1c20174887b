"""NCCL: /etc/nccl.conf for the fabric, and nccl-tests where they were built."""

from __future__ import annotations

import pytest

from infralib import parse_kv


@pytest.fixture(scope="module")
def nccl_conf(host, hostvars):
    if "gpu" not in hostvars.get("group_names", ["gpu"]):
        pytest.skip("NCCL is configured on GPU servers only")
    f = host.file("/etc/nccl.conf")
    assert f.exists, "/etc/nccl.conf missing"
    assert f.mode == 0o644
    return parse_kv(f.content_string)


def test_socket_interface(nccl_conf, expect):
    ifname = expect("nccl", "nccl_socket_ifname")
    if ifname:
        assert nccl_conf.get("NCCL_SOCKET_IFNAME") == ifname


def test_interface_exists(host, nccl_conf):
    ifname = nccl_conf.get("NCCL_SOCKET_IFNAME", "")
    if not ifname or ifname.startswith(("^", "=")) or "," in ifname:
        pytest.skip("no single interface named")
    assert host.interface(ifname).exists, f"NCCL_SOCKET_IFNAME={ifname} but no such interface"


def test_fabric_settings(nccl_conf, expect):
    fabric = expect("nccl", "nccl_fabric")
    hcas = expect("nccl", "nccl_ib_hcas") or []
    if fabric in ("infiniband", "roce") and hcas:
        assert nccl_conf.get("NCCL_IB_HCA") == "=" + ",".join(hcas)
    elif fabric == "tcp":
        assert "NCCL_IB_HCA" not in nccl_conf
    settings = dict((expect("nccl", "__nccl_fabric_settings") or {}).get(fabric, {}))
    settings.update(expect("nccl", "nccl_conf_extra") or {})
    for key, value in settings.items():
        assert nccl_conf.get(key) == str(value), key


def test_nccl_library(host, gpu, expect):
    if not expect("nccl", "nccl_cuda_repo_url"):
        pytest.skip("no package source configured for NCCL")
    out = host.run("ldconfig -p | grep -c libnccl.so")
    assert out.stdout.strip() not in ("", "0"), "libnccl not in the linker cache"


def test_nccl_tests_built(host, gpu, expect):
    if not expect("nccl", "nccl_tests_source") or not expect("nccl", "nccl_cuda_repo_url"):
        pytest.skip("no source configured for nccl-tests or NCCL")
    binary = host.file(f"{expect('nccl', 'nccl_tests_dir')}/build/all_reduce_perf")
    assert binary.exists and binary.mode & 0o111


def test_peermem(host, gpu, expect):
    if not (expect("nccl", "nccl_gpudirect_rdma") and expect("nccl", "nccl_fabric") in ("infiniband", "roce")):
        pytest.skip("GPUDirect RDMA not used on this fabric")
    assert host.file("/sys/module/nvidia_peermem").exists, "nvidia-peermem not loaded"
