"""The lab's moving parts, shared by ``run_lab.py`` (``make lab``) and the
pytest integration suite: build the image, boot VMs, run playbooks with a
per-task record, run the testinfra suites, and always stop the VMs again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpufleet.baremetal.testinfra import InfraResult

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LAB_DIR = Path(os.environ.get("LAB_DIR", REPO / ".lab"))
VENV_BIN = Path(sys.executable).parent
DEFAULT_VMS = ("lab-cp-01", "lab-gpu-01")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LAB_DIR"] = str(LAB_DIR)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    # Facts of lab VMs are cached apart from a real site's, and dropped at
    # every boot (a new VM under an old name must not reuse old facts).
    env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] = str(LAB_DIR / "facts")
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    return env


def log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclasses.dataclass
class Step:
    """One step of a lab run: what it was, whether it ran, and how long it took."""

    name: str
    seconds: float = 0.0
    status: str = "pending"  # ran, cached, skipped, failed
    detail: str = ""


def build_image() -> tuple[Path, Step]:
    """Build (or reuse) the base image; returns its directory."""
    step = Step("image")
    start = time.monotonic()
    proc = subprocess.run(
        [str(HERE / "build-image.sh")], env=_env(), stdout=subprocess.PIPE, text=True, check=False
    )
    step.seconds = round(time.monotonic() - start, 1)
    if proc.returncode != 0:
        step.status = "failed"
        raise LabError("image build failed (see the messages above)", step)
    image = Path(proc.stdout.strip().splitlines()[-1])
    info = json.loads((image / "image.json").read_text())
    step.status = "cached" if step.seconds < 30 and info.get("build_seconds", 0) > step.seconds else "ran"
    step.detail = f"key {info['key']}, built in {info.get('build_seconds')}s"
    return image, step


# The lab as a fleet of its own: one data-centre site, "lab", whose inventory
# is the one up.sh writes. Loading it runs the real fleet model over the lab
# inventory, and the variables the roles need are derived from it exactly as
# `gpufleet render` derives them (gpufleet.baremetal_vars).
LAB_FLEET = """\
# Written by tests/lab/lablib.py: the lab VMs as one data centre.
name: gpufleet-lab
hub: lab
sites:
  - name: lab
    kind: datacenter
    location: VM lab (qemu on 127.0.0.1)
    inventory: inventory
    kubernetes_version: "1.33"
    api_endpoint: lab-api.lab.internal
    node_cidr: 10.0.2.0/24
    pod_cidr: 10.244.0.0/16
"""


def derive(inventory: Path) -> Path:
    """Load the lab inventory as the fleet model does and write beside it the
    gpufleet-derived.yml `gpufleet render` would write. Rerun it after
    changing the inventory (make lab-full sets the GPU VM's driver branch)."""
    from gpufleet.baremetal_vars import host_variables
    from gpufleet.model import load_fleet
    from gpufleet.render import DERIVED_INVENTORY, dump_yaml

    # The lab's inventory is also where the derived file goes: one written
    # by an earlier derive() is not inventory input.
    out = inventory / DERIVED_INVENTORY
    out.unlink(missing_ok=True)
    stacks = inventory.parent / "stacks"
    stacks.mkdir(parents=True, exist_ok=True)
    (stacks / "fleet.yaml").write_text(LAB_FLEET.replace("inventory: inventory", f"inventory: {inventory.name}"))
    (stacks / "Pulumi.lab.yaml").write_text("config:\n  gpufleet:site: lab\n")
    fleet = load_fleet(stacks / "fleet.yaml")
    site = fleet.site("lab")
    hosts = {s.name: host_variables(fleet, site, s) for s in site.servers}
    out.write_text("# Derived from the lab's fleet model by tests/lab/lablib.py; do not edit.\n" + dump_yaml({"all": {"hosts": hosts}}))
    return out


def up(vms: tuple[str, ...] = DEFAULT_VMS) -> tuple[Path, Step]:
    """Boot the VMs and return the inventory directory (with the derived variables)."""
    step = Step("boot")
    shutil.rmtree(LAB_DIR / "facts", ignore_errors=True)
    start = time.monotonic()
    proc = subprocess.run(
        [str(HERE / "up.sh"), *vms], env=_env(), stdout=subprocess.PIPE, text=True, check=False
    )
    step.seconds = round(time.monotonic() - start, 1)
    if proc.returncode != 0:
        step.status = "failed"
        raise LabError("booting the VMs failed (see the messages above)", step)
    step.status = "ran"
    step.detail = f"{len(vms)} VMs: {', '.join(vms)}"
    inventory = Path(proc.stdout.strip().splitlines()[-1])
    derive(inventory)
    return inventory, step


def down() -> None:
    """Stop every lab VM (by pidfile). Never raises."""
    try:
        subprocess.run([str(HERE / "down.sh")], env=_env(), check=False, timeout=120)
    except Exception as exc:  # teardown must not mask the original failure
        log(f"teardown problem: {exc}")


class LabError(RuntimeError):
    def __init__(self, message: str, step: Step | None = None) -> None:
        super().__init__(message)
        self.step = step


@dataclasses.dataclass
class PlaybookRun:
    playbook: str
    rc: int
    seconds: float
    stats: dict[str, dict[str, int]]
    records: list[dict]
    log_file: Path

    @property
    def changed(self) -> dict[str, int]:
        return {h: s.get("changed", 0) for h, s in self.stats.items()}

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(h for h, s in self.stats.items() if s.get("failures") or s.get("unreachable"))

    def changed_tasks(self) -> list[dict]:
        return [r for r in self.records if r.get("changed") and r.get("status") == "ok"]

    def failures(self) -> list[dict]:
        return [r for r in self.records if r.get("status") in ("failed", "unreachable")]

    def skip_messages(self) -> list[tuple[str, str, str]]:
        """(host, role, message) for every ``skipped: ...`` message a role printed."""
        out = []
        seen = set()
        for r in self.records:
            msg = r.get("msg")
            if r.get("action") in ("debug", "ansible.builtin.debug") and isinstance(msg, str):
                if msg.lower().startswith("skipped"):
                    key = (r["host"], r.get("role") or "", msg)
                    if key not in seen:
                        seen.add(key)
                        out.append(key)
        return out

    def roles_run(self) -> dict[str, Counter]:
        """Per role, how many task results were ok/changed/skipped/failed."""
        counts: dict[str, Counter] = defaultdict(Counter)
        for r in self.records:
            if "status" in r:
                counts[r.get("role") or "(playbook)"][r["status"]] += 1
        return counts


def run_playbook(
    playbook: str,
    inventory: Path,
    label: str,
    extra_args: list[str] | None = None,
    timeout: int = 3600,
) -> PlaybookRun:
    """Run ``baremetal/<playbook>`` against the lab inventory, output on screen
    and in ``$LAB_DIR/runs/<label>.log``, task results in ``<label>.jsonl``."""
    runs = LAB_DIR / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    record = runs / f"{label}.jsonl"
    log_file = runs / f"{label}.log"
    record.unlink(missing_ok=True)
    env = _env()
    env.update(
        {
            "LAB_RECORD_FILE": str(record),
            "ANSIBLE_CALLBACKS_ENABLED": "lab_record",
            "ANSIBLE_CALLBACK_PLUGINS": str(HERE / "callback_plugins"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
        }
    )
    book = Path(playbook) if Path(playbook).is_absolute() else REPO / "baremetal" / playbook
    if not book.exists():
        raise LabError(f"{book.relative_to(REPO)}: playbook not found")
    # All lab VMs in one batch: the plays that may reboot run in rolling
    # batches (serial) on a real site, which only makes the lab slower.
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(book),
           "-e", "gpufleet_rolling_batch=100%", *(extra_args or [])]
    log(f"{label}: {' '.join(cmd[1:])}")
    start = time.monotonic()
    with open(log_file, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        quiet = os.environ.get("LAB_QUIET") == "1"
        try:
            for line in proc.stdout:
                fh.write(line)
                if not quiet:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            rc = proc.wait(timeout=timeout)
        except BaseException:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    seconds = round(time.monotonic() - start, 1)
    records, stats = [], {}
    if record.exists():
        for line in record.read_text().splitlines():
            item = json.loads(line)
            if "stats" in item:
                stats = item["stats"]
            else:
                records.append(item)
    return PlaybookRun(playbook, rc, seconds, stats, records, log_file)


def run_testinfra(inventory: Path, label: str = "testinfra") -> InfraResult:
    """Run tests/infra against the lab VMs with testinfra's Ansible backend
    (the same runner ``gpufleet baremetal acceptance`` uses)."""
    from gpufleet.baremetal.hosts import load_targets
    from gpufleet.baremetal.testinfra import run_suites

    runs = LAB_DIR / "runs"
    env = _env()
    env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    names = [t.name for t in load_targets(inventory / "hosts.yml")]
    log(f"{label}: pytest tests/infra on {', '.join(names)}")
    return run_suites(
        inventory, names, runs / f"{label}.xml", runs / f"{label}.log",
        workers=int(os.environ.get("LAB_INFRA_WORKERS", "2")), echo=True, env=env,
    )


def write_timings(data: dict, name: str = "timings.json") -> Path:
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    path = LAB_DIR / name
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def clean() -> None:
    """Stop the VMs and delete everything the lab keeps (image cache included)."""
    down()
    if LAB_DIR.exists():
        shutil.rmtree(LAB_DIR)


def preflight(inventory: Path) -> tuple[list, Step]:
    """``gpufleet baremetal preflight`` on the lab VMs (reported, not a gate:
    the lab's "GPU" VM has no GPU, which preflight must say)."""
    from gpufleet.baremetal.hosts import load_targets
    from gpufleet.baremetal.preflight import run_preflight

    step = Step("preflight")
    start = time.monotonic()
    reports = run_preflight(load_targets(inventory / "hosts.yml"), timeout=30)
    step.seconds = round(time.monotonic() - start, 1)
    step.status = "ran"
    step.detail = "; ".join(
        f"{r.host} {r.status}" + "".join(f" ({c.name}: {c.detail})" for c in r.checks if c.status != "ok")
        for r in reports
    )
    return reports, step
