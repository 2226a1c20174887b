"""The scale generator makes valid fleets of the size asked, and validation grows linearly.

A small sanity check for the default test run; the real benchmark (10,000
servers, beside ansible-inventory) is `make bench`.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from gpufleet.model import load_fleet
from tests.scale.fleetgen import generate


def _cpu_seconds(fleet_yaml: Path, runs: int = 2) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        load_fleet(fleet_yaml)
        best = min(best, time.process_time() - start)
    return best


@pytest.fixture(scope="module")
def fleets(tmp_path_factory: pytest.TempPathFactory) -> dict[float, tuple]:
    out = {}
    for scale in (0.05, 0.2):
        root = tmp_path_factory.mktemp(f"scale-{scale:g}")
        out[scale] = (root, generate(root, scale))
    return out


def test_generated_fleet_is_valid_and_as_large_as_asked(fleets):
    root, summary = fleets[0.2]
    fleet = load_fleet(root / "stacks" / "fleet.yaml")
    assert (summary.regions, summary.datacenters, summary.gpu_servers, summary.gpus) == (4, 10, 2000, 16000)
    aws = [s for s in fleet.sites if s.is_aws]
    dcs = [s for s in fleet.sites if not s.is_aws]
    assert len(aws) == 4 and len(dcs) == 10 + 1  # the hub is a small CPU-only site
    gpu_servers = [srv for s in dcs for srv in s.servers if srv.spec.gpu_count]
    assert len(gpu_servers) == 2000
    assert sum(srv.spec.gpu_count for srv in gpu_servers) == 16000
    classes = Counter(srv.spec.server_class for srv in gpu_servers)
    assert set(classes) == {"hgx-h100-8", "hgx-h200-8", "hgx-a100-8", "l40s-8"}
    # MIG from a nested group's group_vars and from host_vars, on several GPU models
    mig = Counter(srv.spec.accelerator for srv in gpu_servers if srv.spec.mig_layout)
    assert mig["h100-80gb"] > 0 and mig["h200-141gb"] + mig["a100-80gb"] > 0
    assert fleet.queues and fleet.models and fleet.residency
    assert any(q.queue.data_class == "regulated" for q in fleet.queues)
    assert all(len({srv.name for srv in s.servers}) == len(s.servers) for s in dcs)


def test_generation_is_reproducible(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, 0.02)
    generate(b, 0.02)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_validation_grows_linearly(fleets):
    """4x the servers costs at most ~4x the CPU time (6x allowed for noise), never quadratic."""
    small = _cpu_seconds(fleets[0.05][0] / "stacks" / "fleet.yaml")
    large = _cpu_seconds(fleets[0.2][0] / "stacks" / "fleet.yaml")
    assert large < 6 * small, f"500 servers: {small:.2f} s CPU, 2000 servers: {large:.2f} s CPU"
    # 2,000 servers take about 0.3 s of CPU here; 3 s means something went quadratic
    assert large < 3.0
