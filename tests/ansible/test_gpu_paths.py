"""The GPU paths of the roles, through Ansible on this machine.

There is no GPU here, so the roles run on localhost in check mode (nothing
on this machine is changed) with the facts the gpu_detect role would have
set on an HGX H100 server, and the commands a GPU server answers
(``dcgmi diag -j``, ``nvidia-smi``, nccl-tests' ``all_reduce_perf -J``) are
replaced by programs that print output recorded in the formats upstream
writes (fixtures/, each file names its source).

* A role that finds no package source for what a GPU server needs fails and
  names the variable to set; it does not end "ok" having installed nothing.
* The acceptance gate judges ``dcgmi diag`` by its JSON and all_reduce by
  nccl-tests' JSON report, and writes the measured figures to the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from ansible_kit import BIN, ROOT, ansible_env, rendered_inventory

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# What gpu_detect finds on an HGX H100 server (8 GPUs, 4 NVSwitches).
HGX_FACTS = {
    "gpu_detect_gpu_present": True,
    "gpu_detect_gpu_count": 8,
    "gpu_detect_gpu_models": ["h100-80gb"],
    "gpu_detect_nvswitch_count": 4,
    "gpu_detect_gpus": [{"address": f"0000:{b}:00.0", "device_id": "2330", "model": "h100-80gb"}
                        for b in ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")],
}


def _play(tmp_path: Path, role: str, extra: dict | None = None, tasks_from: str | None = None, host: str = "fra-hgx-01") -> Path:
    include: dict = {"name": role}
    if tasks_from:
        include["tasks_from"] = tasks_from
    play = [{
        "name": f"The {role} role on a GPU server",
        "hosts": host,
        "connection": "local",
        "gather_facts": True,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}", **HGX_FACTS, **(extra or {})},
        "tasks": [{"name": f"Run {role}", "ansible.builtin.include_role": include}],
    }]
    book = tmp_path / f"{role}.yml"
    book.write_text(yaml.safe_dump(play, sort_keys=False))
    return book


def _run(book: Path, inv: Path, tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inv), str(book), *args],
        cwd=ROOT, capture_output=True, text=True, env={**ansible_env(tmp_path), **(env or {})}, timeout=600,
    )


@pytest.mark.parametrize(
    ("role", "extra", "says"),
    [
        ("nvidia_driver", {}, ["package_source_cuda_url", "nvidia_driver_cuda_repo_url"]),
        ("nvidia_fabricmanager", {}, ["package_source_cuda_url"]),
        ("nccl", {}, ["package_source_cuda_url"]),
        ("dcgm", {"dcgm_exporter_counters_file": "{{ playbook_dir }}/counters.csv"}, ["package_source_cuda_url"]),
        ("mig", {"mig_config_dir": "{{ playbook_dir }}/mig"}, ["mig_parted_package"]),
        ("nvidia_container_toolkit", {}, ["package_source_nvidia_container_url"]),
    ],
)
def test_a_gpu_server_without_a_package_source_fails_naming_the_variable(
    tmp_path: Path, role: str, extra: dict, says: list[str]
) -> None:
    inv = rendered_inventory(tmp_path / "rendered")
    book = _play(tmp_path, role, extra)
    r = _run(book, inv, tmp_path, "--check",
             "-e", "package_source_cuda_url=''", "-e", "package_source_nvidia_container_url=''",
             "-e", "package_source_github_url=''", "-e", "nvidia_driver_source=cuda_repo")
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"{role} ended ok on a GPU server with no package source:\n{out[-3000:]}"
    for name in says:
        assert name in out, out[-3000:]
    assert "skipped: no package source" not in out


# ------------------------------------------------------------- acceptance gate

SMI = "\n".join(f"{i}, NVIDIA H100 80GB HBM3, 580.126.09, Enabled, No" for i in range(8))


@pytest.fixture()
def gpu_tools(tmp_path: Path):
    """nvidia-smi, dcgmi and all_reduce_perf that print recorded output, in a
    folder the unprivileged nccl-tests user (here: nobody) can read."""
    import shutil
    import tempfile

    if shutil.which("sudo") is None:
        pytest.skip("sudo not installed (tests/install-system-deps.sh installs it): the role runs nccl-tests as an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="gpufleet-gpu-tools-"))
    root.chmod(0o755)
    bin_dir = root / "bin"
    tests_dir = root / "nccl-tests" / "build"
    work = root / "work"
    for d in (bin_dir, tests_dir, work):
        d.mkdir(parents=True)
    for d in (bin_dir, tests_dir.parent, tests_dir):
        d.chmod(0o755)
    work.chmod(0o1777)
    for f in FIXTURES.glob("*.json"):
        shutil.copy(f, root / f.name)
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\ncat <<'OUT'\n{SMI}\nOUT\n")
    (bin_dir / "dcgmi").write_text('#!/bin/sh\ncat "$GPUFLEET_TEST_DCGMI"\n[ -z "$GPUFLEET_TEST_DCGMI_RC" ] || exit "$GPUFLEET_TEST_DCGMI_RC"\n')
    # Writes the recorded report to the path after -J, as all_reduce_perf does, and says who ran it.
    (tests_dir / "all_reduce_perf").write_text(textwrap.dedent('''\
        #!/bin/sh
        while [ $# -gt 0 ]; do [ "$1" = -J ] && out=$2; shift; done
        id -un > "$(dirname "$out")/ran-as"
        cp "$GPUFLEET_TEST_NCCL" "$out"
        '''))
    for p in (bin_dir / "nvidia-smi", bin_dir / "dcgmi", tests_dir / "all_reduce_perf"):
        p.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _accept(tmp_path: Path, tools: Path, dcgmi: str, nccl: str, dcgmi_rc: str = "") -> tuple[subprocess.CompletedProcess[str], dict | None]:
    inv = rendered_inventory(tmp_path / "rendered")
    report_dir = tmp_path / "report"
    extra = {
        "acceptance_nccl_tests_dir": str(tools / "nccl-tests"),
        "acceptance_nccl_user": "nobody",
        "acceptance_nccl_work_dir": str(tools / "work"),
        "acceptance_report_dir": str(report_dir),
        # The unprivileged user must be able to run the module's interpreter
        # (this checkout's virtual environment lives under root's home).
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    book = _play(tmp_path, "acceptance", extra)
    play = yaml.safe_load(book.read_text())
    play[0]["environment"] = {
        "PATH": f"{tools / 'bin'}:{os.environ['PATH']}",
        "GPUFLEET_TEST_DCGMI": str(tools / dcgmi),
        "GPUFLEET_TEST_DCGMI_RC": dcgmi_rc,
        "GPUFLEET_TEST_NCCL": str(tools / nccl),
    }
    book.write_text(yaml.safe_dump(play, sort_keys=False))
    r = _run(book, inv, tmp_path)
    report = report_dir / "acceptance.json"
    return r, json.loads(report.read_text()) if report.is_file() else None


def test_a_healthy_server_passes_with_its_measured_figures(tmp_path: Path, gpu_tools: Path) -> None:
    r, report = _accept(tmp_path, gpu_tools, "dcgmi-diag-r2-pass.json", "nccl-all_reduce-h100x8.json")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert report and report["status"] == "passed" and report["failures"] == [], report
    m = report["measured"]
    assert [(t["category"], t["name"], t["status"]) for t in m["dcgm_diag"]["tests"]] == [
        ("Deployment", "software", "Pass"), ("Integration", "pcie", "Pass"), ("Hardware", "memory", "Pass")]
    assert m["dcgm_diag"]["driver"] == "580.126.09"
    assert m["all_reduce"]["busbw_avg_gbps"] == pytest.approx(364.25)
    assert m["all_reduce"]["threshold_gbps"] == 360.0 and len(m["all_reduce"]["sizes"]) == 11 and m["all_reduce"]["ranks"] == 8
    assert [g["index"] for g in m["gpus"]] == [str(i) for i in range(8)]
    # The block's all_reduce needs the other servers of ib-a in the run.
    assert "1 of 4 servers of the block passed" in m["block_all_reduce"]["skipped"]
    assert report["thresholds"]["busbw_gbps"] == 360.0 and report["thresholds"]["block_busbw_gbps"] == 320.0
    assert (gpu_tools / "work" / "ran-as").read_text().strip() == "nobody", "nccl-tests ran as root"
    assert "acceptance passed on fra-hgx-01" in out


@pytest.mark.parametrize(
    ("dcgmi", "nccl", "rc", "says"),
    [
        ("dcgmi-diag-r2-fail.json", "nccl-all_reduce-h100x8.json", "226",
         "dcgmi diag -r 2: Hardware/memory failed on GPU3: A memory mismatch was detected on GPU 3, but no error was reported by CUDA or NVML."),
        ("dcgmi-diag-runtime-error.json", "nccl-all_reduce-h100x8.json", "1",
         "dcgmi diag -r 2: dcgmi diag: Error: Diagnostic could not be run while DCGM is paused."),
        ("README.md", "nccl-all_reduce-h100x8.json", "", "dcgmi diag -r 2: dcgmi diag: no JSON in the output"),
        ("dcgmi-diag-r2-pass.json", "nccl-all_reduce-h100x8-slow.json", "", "all_reduce bus bandwidth 209.25 GB/s below 360.0 GB/s"),
        ("dcgmi-diag-r2-pass.json", "nccl-all_reduce-h100x8-wrong.json", "", "all_reduce within the server: 3 wrong values"),
    ],
    ids=["diag-memory-fails", "diag-cannot-run", "diag-text-only", "busbw-too-low", "wrong-values"],
)
def test_a_broken_server_is_rejected_for_the_reason_the_tools_give(
    tmp_path: Path, gpu_tools: Path, dcgmi: str, nccl: str, rc: str, says: str
) -> None:
    if dcgmi == "README.md":
        shutil_copy = __import__("shutil").copy
        shutil_copy(FIXTURES / "README.md", gpu_tools / "README.md")
    r, report = _accept(tmp_path, gpu_tools, dcgmi, nccl, rc)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-4000:]
    assert report and report["status"] == "failed", report
    assert says in report["failures"], report["failures"]
    assert "acceptance FAILED on fra-hgx-01" in out and "left unjoined" in out, out[-3000:]


def test_the_mig_role_writes_the_model_s_configuration(tmp_path: Path) -> None:
    """On a MIG-capable GPU server (check mode, --diff) the mig role writes
    exactly the mig-parted configuration render derived, under the model's name."""
    import yaml as _yaml

    inv = rendered_inventory(tmp_path / "rendered")
    derived = _yaml.safe_load((inv / "gpufleet-derived.yml").read_text())["all"]["hosts"]["fra-hgx-04"]
    book = _play(tmp_path, "mig", {"mig_config_dir": str(tmp_path / "mig"), "mig_parted_package_sha256": "0" * 64}, host="fra-hgx-04")
    r = _run(book, inv, tmp_path, "--check", "--diff")
    out = r.stdout + r.stderr
    assert "Write the fleet model's mig-parted config" in out, out[-3000:]
    written = out[out.index("Write the fleet model's mig-parted config"):]
    written = written[:written.index("TASK [", 10)]
    assert "changed: [fra-hgx-04]" in written, written
    body = "\n".join(line[1:] for line in written.splitlines() if line.startswith("+") and not line.startswith("+++"))
    assert _yaml.safe_load(body) == derived["gpufleet_mig_parted_config"], body
    assert derived["gpufleet_mig_config_name"] in _yaml.safe_load(body)["mig-configs"]
