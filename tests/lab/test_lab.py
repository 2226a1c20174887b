"""The lab as a pytest suite (marker ``lab``): boots Debian VMs with qemu,
runs baremetal/site.yml twice (the second run must change nothing), then the
testinfra suites against the VMs. The VMs are stopped when the module ends,
whether the tests passed or not.

Needs root (debootstrap) and qemu; skipped, with the reason, where either
is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

import lablib

pytestmark = pytest.mark.lab


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (debootstrap builds the image)"
    for tool in ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (run tests/install-system-deps.sh)"
    if not (lablib.REPO / "baremetal" / "site.yml").exists():
        return "baremetal/site.yml does not exist yet"
    return None


@pytest.fixture(scope="module")
def lab(request):
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    request.addfinalizer(lablib.down)
    lablib.log("building the image (cached) and booting the VMs")
    _, image_step = lablib.build_image()
    inventory, boot_step = lablib.up()
    state = {"inventory": inventory, "image": image_step, "boot": boot_step, "runs": {}}
    yield state
    timings = {
        "mode": "pytest",
        "image_seconds": image_step.seconds,
        "boot_seconds": boot_step.seconds,
    }
    for i, run in state["runs"].items():
        timings[f"run{i}"] = {"seconds": run.seconds, "rc": run.rc, "stats": run.stats}
    if "infra" in state:
        timings["testinfra"] = {"seconds": state["infra"].seconds, "counts": state["infra"].counts}
    if "acceptance_seconds" in state:
        timings["acceptance_seconds"] = state["acceptance_seconds"]
    path = lablib.write_timings(timings, "timings-pytest.json")
    lablib.log(f"timings in {path}")


def test_preflight_on_the_vms(lab):
    reports, _ = lablib.preflight(lab["inventory"])
    by_host = {r.host: {c.name: c for c in r.checks} for r in reports}
    assert set(by_host) == {"lab-cp-01", "lab-gpu-01"}
    for checks in by_host.values():
        assert checks["ssh"].status == "ok"
        assert checks["privilege"].status == "ok"
        assert checks["os"].status == "ok" and "Debian GNU/Linux 12" in checks["os"].detail
    assert by_host["lab-cp-01"]["gpus"].status == "ok"
    # The inventory says the "GPU" VM has one L40S; qemu gives it none.
    assert by_host["lab-gpu-01"]["gpu count"].status == "fail"
    assert "0 NVIDIA GPU(s)" in by_host["lab-gpu-01"]["gpu count"].detail


def _run(lab, i: int) -> lablib.PlaybookRun:
    if i not in lab["runs"]:
        if i == 2 and (1 not in lab["runs"] or lab["runs"][1].rc != 0):
            pytest.skip("the first run failed")
        os.environ.setdefault("LAB_QUIET", "1")
        lab["runs"][i] = lablib.run_playbook("site.yml", lab["inventory"], f"pytest-site-{i}")
    return lab["runs"][i]


def _failures(run: lablib.PlaybookRun) -> str:
    lines = [f"{r['host']}: [{r.get('role') or '-'}] {r['task']}: {str(r.get('msg') or r.get('stderr') or '')[:300]}"
             for r in run.failures()]
    return "\n".join(lines) or f"rc {run.rc}, see {run.log_file}"


def test_site_first_run(lab):
    run = _run(lab, 1)
    assert run.rc == 0 and run.stats, _failures(run)
    assert set(run.stats) == {"lab-cp-01", "lab-gpu-01"}
    skipped = run.skip_messages()
    for host, role, msg in skipped:
        lablib.log(f"skipped on {host} by {role}: {msg}")
    # The VMs have no NVIDIA device: the driver role must say why it did nothing.
    assert any(h == "lab-gpu-01" and "no NVIDIA GPU" in m for h, _, m in skipped)


def test_site_second_run_changes_nothing(lab):
    run = _run(lab, 2)
    assert run.rc == 0, _failures(run)
    changed = [f"{r['host']}: [{r.get('role') or '-'}] {r['task']}" for r in run.changed_tasks()]
    assert not changed, "tasks changed on the rerun:\n" + "\n".join(changed)
    assert all(n == 0 for n in run.changed.values()), run.changed


def test_testinfra_suites_pass(lab):
    if 1 not in lab["runs"] or lab["runs"][1].rc != 0:
        pytest.skip("site.yml did not complete")
    infra = lablib.run_testinfra(lab["inventory"])
    lab["infra"] = infra
    assert infra.rc == 0, f"testinfra failed: {infra.counts}; see {infra.log_file}"
    assert infra.counts.get("passed", 0) > 0


def _on_vm(lab, host: str, command: str) -> subprocess.CompletedProcess[str]:
    """One command as root on a lab VM, through Ansible (the lab's SSH settings)."""
    return subprocess.run(
        [str(lablib.VENV_BIN / "ansible"), host, "-i", str(lab["inventory"] / "hosts.yml"), "-b", "-o",
         "-m", "ansible.builtin.command", "-a", command],
        cwd=lablib.REPO, env=lablib._env(), capture_output=True, text=True, timeout=300,
    )


def test_acceptance_rejects_a_broken_server(lab):
    """The gate as staff run it: a GPU server whose live sysctl drifted from
    the baseline fails testinfra, so `gpufleet baremetal acceptance` rejects
    it, names the failing test, and the server's report says failed (the VM
    was never joined, so it stays unjoined)."""
    if lab.get("infra") is None or lab["infra"].rc != 0:
        pytest.skip("the testinfra suites did not pass on the unbroken VMs")
    broken = _on_vm(lab, "lab-gpu-01", "sysctl -w vm.max_map_count=65530")
    assert broken.returncode == 0, broken.stdout + broken.stderr
    try:
        art = lablib.LAB_DIR / "runs" / "acceptance"
        shutil.rmtree(art, ignore_errors=True)
        env = lablib._env()
        env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
        start = time.monotonic()
        res = subprocess.run(
            [str(lablib.VENV_BIN / "gpufleet"), "baremetal", "acceptance", "-i", str(lab["inventory"]),
             "--limit", "lab-gpu-01", "--artifacts", str(art)],
            cwd=lablib.REPO, env=env, capture_output=True, text=True, timeout=1800,
        )
        lab["acceptance_seconds"] = round(time.monotonic() - start, 1)
        assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
        assert "lab-gpu-01: testinfra: test_os_baseline::test_sysctl_values" in res.stderr
        assert res.stderr.strip().endswith("acceptance: 1 of 1 GPU server(s) rejected: lab-gpu-01")
        assert "REJECTED" in res.stdout
        report = _on_vm(lab, "lab-gpu-01", "cat /var/lib/gpufleet/acceptance.json")
        assert report.returncode == 0, report.stderr
        # one-line output: "host | CHANGED | rc=0 | (stdout) {\n  ...\n}"
        line = report.stdout
        body = json.loads(line[line.index("{"):line.rindex("}") + 1].replace("\\n", "\n"))
        assert body["status"] == "failed"
        assert "test_os_baseline::test_sysctl_values" in body["testinfra_failures"]
    finally:
        _on_vm(lab, "lab-gpu-01", "sysctl -p /etc/sysctl.d/90-gpufleet.conf")
