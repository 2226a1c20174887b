"""Run the testinfra suites (tests/infra) against an inventory's hosts.

The suites run in a pytest subprocess with testinfra's Ansible backend, so
they reach the hosts exactly the way the playbooks do. The JUnit report is
read back into per-host failures: the acceptance gate needs to know *which*
server failed, not just that something did.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITES = REPO / "tests" / "infra"

_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


@dataclass
class InfraResult:
    rc: int
    seconds: float
    counts: dict[str, int]
    junit: Path
    log_file: Path
    # host -> names of the tests that failed (or errored) on it
    failures: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0


def failures_by_host(junit: Path, hosts: list[str]) -> dict[str, list[str]]:
    """Map the failed test cases of a JUnit report to the hosts in their ids.

    testinfra puts ``ansible://<host>`` in every test id
    (``test_swap_off[ansible://fra-hgx-01]``); the longest matching host
    name wins, so ``gpu-1`` and ``gpu-10`` are told apart. A failure that
    names no host (a broken suite) is filed under ``""``.
    """
    out: dict[str, list[str]] = {}
    if not junit.is_file():
        return out
    by_length = sorted(hosts, key=len, reverse=True)
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is None and case.find("error") is None:
            continue
        name = case.get("name", "")
        host = next((h for h in by_length if re.search(rf"ansible://{re.escape(h)}(?=[\]\-])", name)), "")
        test = name.split("[", 1)[0]
        module = case.get("classname", "").rsplit(".", 1)[-1]
        out.setdefault(host, []).append(f"{module}::{test}" if module else test)
    return out


def run_suites(
    inventory: Path,
    hosts: list[str],
    junit: Path,
    log_file: Path,
    workers: int | None = None,
    echo: bool = False,
    env: dict[str, str] | None = None,
) -> InfraResult:
    """Run tests/infra against ``hosts`` of ``inventory``.

    ``inventory`` goes to testinfra as it goes to the playbooks: a directory
    is read whole, so the variables ``gpufleet render`` adds in
    ``gpufleet-derived.yml`` are what the suites expect too.

    ``env`` replaces the process environment (the lab points Ansible at its
    own fact cache); the output goes to ``log_file`` and, with ``echo``, to
    standard output.
    """
    junit.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # One worker per host, up to 8: the hosts answer slowly, not the test code.
    n = workers or max(1, min(8, len(hosts)))
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
        "-o", "addopts=", "--strict-markers",
        str(SUITES),
        "--hosts=" + ",".join(f"ansible://{h}" for h in hosts),
        f"--ansible-inventory={inventory}",
        f"--junitxml={junit}",
    ]
    if n > 1:
        cmd += ["-n", str(n)]
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    env["ANSIBLE_INVENTORY"] = str(inventory)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log_file.write_text(proc.stdout, encoding="utf-8")
    if echo:
        sys.stdout.write(proc.stdout)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts: dict[str, int] = {}
    for num, kind in _SUMMARY.findall(last):
        counts["error" if kind.startswith("error") else kind] = int(num)
    return InfraResult(
        rc=proc.returncode,
        seconds=round(time.monotonic() - start, 1),
        counts=counts,
        junit=junit,
        log_file=log_file,
        failures=failures_by_host(junit, hosts),
    )
