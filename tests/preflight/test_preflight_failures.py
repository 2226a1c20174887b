"""What the preflight says when a host or the inventory is broken.

Each case is a real failure: a TCP listener on 127.0.0.1 that accepts and
never speaks, the local sshd with a key whose login runs a command that
never ends, a key file that is not there, group_vars that are not YAML,
bad ``--timeout`` values. Each must end within its time bound with one
clear line naming the host (or option) and the file involved.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.baremetal import preflight
from gpufleet.baremetal.cli import app
from gpufleet.baremetal.hosts import load_targets

from test_preflight import write_inventory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def silent_port():
    """A listener on 127.0.0.1 that accepts connections and never sends a byte."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield server.getsockname()[1]
    stop.set()
    t.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


def _detail(report: preflight.HostReport, name: str) -> str:
    found = [c.detail for c in report.checks if c.name == name and c.status == "fail"]
    assert found, report.checks
    return found[0]


def test_host_that_accepts_tcp_and_never_speaks(tmp_path, sshd, silent_port):
    inv = write_inventory(tmp_path, sshd, {"mute-01": {"port": silent_port}})
    start = time.monotonic()
    [rep] = preflight.run_preflight(load_targets(inv), timeout=2)
    elapsed = time.monotonic() - start
    assert elapsed < 8, f"took {elapsed:.1f}s for a 2 s timeout"
    detail = _detail(rep, "ssh")
    assert f"127.0.0.1:{silent_port}" in detail
    assert "accepted the TCP connection" in detail and "no SSH banner within 2s" in detail, detail


def test_host_that_hangs_after_login(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd, {"stuck-01": {"scenario": "hang"}})
    start = time.monotonic()
    [rep] = preflight.run_preflight(load_targets(inv), timeout=2)
    elapsed = time.monotonic() - start
    assert elapsed < 15, f"took {elapsed:.1f}s for a 2 s timeout"
    assert ("ssh", "ok") in [(c.name, c.status) for c in rep.checks]
    detail = _detail(rep, "probe")
    assert "logged in" in detail and "did not finish within" in detail, detail


def test_missing_key_file(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd, {"nokey-01": {}})
    missing = tmp_path / "keys" / "id_missing"
    hosts = (inv / "hosts.yml").read_text()
    (inv / "hosts.yml").write_text(re.sub(r"ansible_ssh_private_key_file: \S+", f"ansible_ssh_private_key_file: {missing}", hosts))
    start = time.monotonic()
    [rep] = preflight.run_preflight(load_targets(inv), timeout=2)
    assert time.monotonic() - start < 3
    detail = _detail(rep, "ssh")
    assert str(missing) in detail and "not found" in detail, detail
    assert "ansible_ssh_private_key_file" in detail


def test_group_vars_that_do_not_parse(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd, {"gpu-01": {}})
    bad = inv / "group_vars" / "gpu.yml"
    bad.write_text("gpufleet_gpu_count: [8\n")
    start = time.monotonic()
    res = CliRunner().invoke(app, ["preflight", "--inventory", str(inv)])
    assert time.monotonic() - start < 30
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"{bad}: "), lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-3"])
def test_timeout_must_be_finite_and_positive(value, tmp_path, sshd):
    # 127.0.0.1's closed discard port: nothing leaves the machine even if the value were taken
    inv = write_inventory(tmp_path, sshd, {"gpu-01": {"port": 9}})
    res = CliRunner().invoke(app, ["preflight", "--inventory", str(inv), f"--timeout={value}"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().startswith("--timeout: "), res.stderr
    assert "Traceback" not in res.output


def test_no_message_suggests_turning_host_key_checking_off(tmp_path, sshd):
    """An unknown host key is refused, and the advice is to record the key,
    never to stop checking it."""
    inv = write_inventory(tmp_path, sshd, {"cp-01": {}}, {"ansible_ssh_common_args": ""})
    [rep] = preflight.run_preflight(load_targets(inv))
    detail = _detail(rep, "ssh")
    assert "known_hosts" in detail
    assert "StrictHostKeyChecking=no" not in detail
    # The messages are written here (hosts.py only reads the setting from an inventory).
    source = (ROOT / "gpufleet" / "baremetal" / "preflight.py").read_text() + (ROOT / "gpufleet" / "baremetal" / "cli.py").read_text()
    assert not re.search(r"StrictHostKeyChecking\s*=?\s*no", source, re.IGNORECASE), "the code still offers StrictHostKeyChecking=no"
