"""Preflight checks over real SSH (a local sshd; see conftest.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from gpufleet.baremetal import preflight
from gpufleet.baremetal.cli import app
from gpufleet.baremetal.hosts import InputError, load_targets
from typer.testing import CliRunner


def write_inventory(tmp_path: Path, sshd: dict, hosts: dict[str, dict], group_vars: dict | None = None) -> Path:
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    body = {"all": {"children": {"gpu": {"hosts": {}}}}}
    for name, spec in hosts.items():
        scenario = spec.pop("scenario", "plain")
        body["all"]["children"]["gpu"]["hosts"][name] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": spec.pop("port", sshd["port"]),
            "ansible_ssh_private_key_file": str(sshd["keys"][scenario]),
            **spec,
        }
    (inv / "hosts.yml").write_text(yaml.safe_dump(body))
    all_vars = {
        "ansible_user": sshd["user"],
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        **(group_vars or {}),
    }
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(all_vars))
    return inv


def checks(report: preflight.HostReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_reachable_host_without_gpus(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd, {"cp-01": {}})
    [rep] = preflight.run_preflight(load_targets(inv))
    got = checks(rep)
    assert got["ssh"] == "ok"
    assert got["privilege"] == "ok"
    assert got["gpus"] == "ok"
    assert rep.gpus == []
    assert rep.os  # the PRETTY_NAME of this machine


def test_missing_gpus_are_reported(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd, {"l40s-01": {"gpufleet_gpu_count": 4, "gpufleet_accelerator": "l40s"}})
    [rep] = preflight.run_preflight(load_targets(inv))
    assert rep.status == "fail"
    [detail] = [c.detail for c in rep.checks if c.name == "gpu count"]
    assert "0 NVIDIA GPU(s)" in detail and "expects 4" in detail


def test_matching_l40s_server(tmp_path, sshd):
    inv = write_inventory(
        tmp_path, sshd,
        {"l40s-01": {"scenario": "l40s", "gpufleet_gpu_count": 4, "gpufleet_accelerator": "l40s", "gpufleet_nvswitch": False}},
    )
    [rep] = preflight.run_preflight(load_targets(inv))
    assert rep.status == "ok", rep.checks
    assert [g["model"] for g in rep.gpus] == ["l40s"] * 4
    assert rep.gpus[0]["address"] == "0000:17:00.0"


def test_wrong_model_count_and_nvswitch(tmp_path, sshd):
    inv = write_inventory(
        tmp_path, sshd,
        {
            "hgx-01": {"scenario": "hgx", "gpufleet_gpu_count": 8, "gpufleet_accelerator": "h100-80gb", "gpufleet_nvswitch": True},
            "hgx-02": {"scenario": "l40s", "gpufleet_gpu_count": 8, "gpufleet_accelerator": "h100-80gb", "gpufleet_nvswitch": True},
        },
    )
    ok, bad = preflight.run_preflight(load_targets(inv))
    assert ok.host == "hgx-01" and ok.status == "ok", ok.checks
    assert ok.nvswitches == 4
    got = checks(bad)
    assert got["gpu count"] == "fail"
    assert got["gpu model"] == "fail"
    assert got["nvswitch"] == "fail"


def test_no_passwordless_sudo(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd, {"cp-01": {"scenario": "nosudo"}})
    [rep] = preflight.run_preflight(load_targets(inv))
    assert checks(rep)["privilege"] == "fail"
    assert "sudo -n true" in next(c.detail for c in rep.checks if c.name == "privilege")


def test_refused_key_and_closed_port(tmp_path, sshd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    inv = write_inventory(tmp_path, sshd, {"a-01": {"scenario": "stranger"}, "b-01": {"port": closed}})
    a, b = preflight.run_preflight(load_targets(inv), timeout=5)
    assert checks(a) == {"ssh": "fail"}
    assert "refused" in a.checks[0].detail
    assert checks(b) == {"ssh": "fail"}
    assert "refused" in b.checks[0].detail.lower()


def test_unknown_host_key_is_refused_when_checking(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd, {"cp-01": {}}, {"ansible_ssh_common_args": ""})
    targets = load_targets(inv)
    assert targets[0].strict_host_keys
    [rep] = preflight.run_preflight(targets)
    assert checks(rep) == {"ssh": "fail"}
    assert "known_hosts" in rep.checks[0].detail


def test_limit_selects_hosts(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd, {"cp-01": {}, "cp-02": {}, "gpu-01": {}})
    assert [t.name for t in load_targets(inv, "cp-*")] == ["cp-01", "cp-02"]
    with pytest.raises(InputError) as err:
        load_targets(inv, "nothing-here")
    assert err.value.where == "--limit nothing-here"


def test_cli_preflight_json_and_exit_codes(tmp_path, sshd):
    inv = write_inventory(
        tmp_path, sshd,
        {"good": {"scenario": "l40s", "gpufleet_gpu_count": 4, "gpufleet_accelerator": "l40s"},
         "bad": {"gpufleet_gpu_count": 2, "gpufleet_accelerator": "l40s"}},
    )
    runner = CliRunner()
    res = runner.invoke(app, ["preflight", "--inventory", str(inv), "--limit", "good", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["status"] == "ok"
    res = runner.invoke(app, ["preflight", "--inventory", str(inv)])
    assert res.exit_code == 1
    assert "bad: gpu count: 0 NVIDIA GPU(s)" in res.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["preflight", "--inventory", "/nonexistent/inv"], "/nonexistent/inv: inventory not found"),
        (["apply", "--inventory", "/nonexistent/inv"], "--playbook: baremetal/site.yml: playbook not found"),
        (["verify", "--inventory", "inventory/dc-fra", "--playbook", "nope.yml"], "--playbook: nope.yml: playbook not found"),
    ],
)
def test_cli_bad_input_is_one_line(args, line, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    if line.startswith("--playbook: baremetal/site.yml") and Path("baremetal/site.yml").exists():
        assert res.stderr.strip() == "/nonexistent/inv: inventory not found"
    else:
        assert res.stderr.strip() == line
    assert "Traceback" not in res.output


def test_unsupported_os_and_sysfs_fallback():
    target = load_targets.__globals__["Target"](
        name="x", address="127.0.0.1", port=22, user="u", key_file=None, password=None,
        strict_host_keys=False, vars={"gpufleet_gpu_count": 1, "gpufleet_accelerator": "h100-80gb"},
    )
    out = "\n".join([
        "--- os-release", 'ID=centos', 'VERSION_ID="7"', 'PRETTY_NAME="CentOS Linux 7"',
        "--- id", "0", "--- sudo", "root",
        "--- lspci", "missing",
        "--- sysfs", "0000:18:00.0 0x2330 0x030200",
        "--- end",
    ])
    rep = preflight.HostReport("x", "127.0.0.1:22")
    preflight.evaluate(rep, target, out)
    got = checks(rep)
    assert got["os"] == "fail"
    assert got["gpu count"] == "ok"
    assert rep.gpus == [{"address": "0000:18:00.0", "device_id": "2330", "model": "h100-80gb"}]


def test_cut_short_probe_fails():
    rep = preflight.HostReport("x", "a:22")
    preflight.evaluate(rep, load_targets.__globals__["Target"]("x", "a", 22, None, None, None, False), "--- os-release\nID=debian\n")
    assert checks(rep) == {"probe": "fail"}
