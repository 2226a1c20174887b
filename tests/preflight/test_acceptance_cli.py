"""``gpufleet baremetal acceptance``: testinfra failures are filed under the
server they happened on, and a server that fails any check is rejected.

The whole gate on real machines (a broken VM rejected with the failing test
named) runs in the lab (tests/lab/test_lab.py)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from gpufleet.baremetal.cli import app
from gpufleet.baremetal.testinfra import failures_by_host

ROOT = Path(__file__).resolve().parents[2]

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="6" failures="3" errors="1">
  <testcase classname="tests.infra.test_os_baseline" name="test_swap_off[ansible://gpu-1]"/>
  <testcase classname="tests.infra.test_os_baseline" name="test_swap_off[ansible://gpu-10]"><failure message="swap on"/></testcase>
  <testcase classname="tests.infra.test_os_baseline" name="test_sysctl[ansible://gpu-1-vm.max_map_count]"><failure message="65530"/></testcase>
  <testcase classname="tests.infra.test_gpu" name="test_gpu_count[ansible://gpu-1]"><skipped message="no GPU"/></testcase>
  <testcase classname="tests.infra.test_services" name="test_no_failed_units[ansible://gpu-10]"><error message="ssh"/></testcase>
  <testcase classname="tests.infra.conftest" name="test_collect"><failure message="broken suite"/></testcase>
</testsuite></testsuites>
"""


def test_failures_are_filed_under_their_host(tmp_path: Path) -> None:
    junit = tmp_path / "r.xml"
    junit.write_text(JUNIT)
    got = failures_by_host(junit, ["gpu-1", "gpu-10"])
    assert got == {
        "gpu-10": ["test_os_baseline::test_swap_off", "test_services::test_no_failed_units"],
        "gpu-1": ["test_os_baseline::test_sysctl"],
        "": ["conftest::test_collect"],
    }
    assert failures_by_host(tmp_path / "missing.xml", ["gpu-1"]) == {}


def _unreachable_inventory(tmp_path: Path) -> Path:
    """The example data centre as `gpufleet render` writes it, every host on
    127.0.0.1's closed discard port: refused at once, no traffic leaves the machine."""
    from gpufleet.model import load_fleet
    from gpufleet.render import write_ansible

    write_ansible(load_fleet(ROOT / "stacks" / "fleet.yaml"), "dc-fra", tmp_path / "rendered")
    inv = tmp_path / "rendered" / "inventory"
    hosts = inv / "hosts.yml"
    hosts.write_text(re.sub(r"ansible_host: 10\.20\.\d+\.\d+", "ansible_host: 127.0.0.1, ansible_port: 9", hosts.read_text()))
    return inv


def test_an_unreachable_server_is_rejected(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    inv = _unreachable_inventory(tmp_path)
    art = tmp_path / "art"
    res = CliRunner().invoke(app, ["acceptance", "-i", str(inv), "--limit", "fra-l40s-01", "--artifacts", str(art)])
    assert res.exit_code == 1, res.output
    assert "REJECTED" in res.stdout and "accepted" not in res.stdout
    assert "fra-l40s-01: testinfra: test_" in res.stderr
    assert res.stderr.strip().endswith("acceptance: 1 of 1 GPU server(s) rejected: fra-l40s-01")
    assert (art / "testinfra.xml").is_file() and (art / "testinfra.log").is_file()
    # the variables passed validation; the playbook then found the server unreachable
    stdout = (art / "artifacts" / "run" / "stdout").read_text()
    assert "UNREACHABLE" in stdout and "fra-l40s-01" in stdout
    assert "unreachable" in res.stdout


def test_no_gpu_server_to_accept_is_bad_input(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(app, ["acceptance", "-i", "inventory/dc-fra", "--limit", "control_plane"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "--limit control_plane: no host of the gpu group to accept"
