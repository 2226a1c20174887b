"""Playbook runs through ansible-runner, with a live per-host view.

While a playbook runs, a table shows each host's current task and its
ok/changed/skipped/failed/unreachable counts (on a terminal; elsewhere one
line per changed, failed or unreachable result). At the end a per-host
summary is printed, and the directory holding ansible-runner's artifacts
(the full output and every event as JSON) for a post-mortem.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]

COUNTS = ("ok", "changed", "skipped", "failed", "unreachable")


@dataclass
class HostProgress:
    host: str
    task: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    done: bool = False

    @property
    def state(self) -> str:
        if self.counts["unreachable"]:
            return "unreachable"
        if self.counts["failed"]:
            return "failed"
        return "done" if self.done else "running"


@dataclass
class RunResult:
    rc: int
    status: str
    hosts: dict[str, dict[str, int]]
    artifacts: Path

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not any(h["failed"] or h["unreachable"] for h in self.hosts.values())


class Progress:
    """Collects ansible-runner events per host and renders them."""

    def __init__(self, console: Console, hosts: list[str]):
        self.console = console
        self.hosts: dict[str, HostProgress] = {h: HostProgress(h) for h in hosts}
        self.play = ""
        self.stats: dict[str, dict[str, int]] | None = None
        self.lock = threading.Lock()
        self.live = console.is_terminal

    def _host(self, name: str) -> HostProgress:
        if name not in self.hosts:
            self.hosts[name] = HostProgress(name)
        return self.hosts[name]

    def handle(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host")
        with self.lock:
            if kind == "playbook_on_play_start":
                self.play = data.get("play", "")
            elif kind == "runner_on_start" and host:
                self._host(host).task = data.get("task", "")
            elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable") and host:
                hp = self._host(host)
                res = data.get("res") or {}
                if kind == "runner_on_ok":
                    hp.counts["changed" if res.get("changed") else "ok"] += 1
                    if res.get("changed"):
                        self._line(host, "changed", data.get("task", ""))
                elif kind == "runner_on_skipped":
                    hp.counts["skipped"] += 1
                elif kind == "runner_on_unreachable":
                    hp.counts["unreachable"] += 1
                    self._line(host, "unreachable", str(res.get("msg", "")).strip())
                elif data.get("ignore_errors"):
                    hp.counts["ok"] += 1
                else:
                    hp.counts["failed"] += 1
                    msg = str(res.get("msg") or res.get("stderr") or "").strip().splitlines()
                    self._line(host, "failed", f"{data.get('task', '')}: {msg[0] if msg else ''}")
            elif kind == "playbook_on_stats":
                self.stats = _stats(data)
                for hp in self.hosts.values():
                    hp.done = True
                    hp.task = ""
        return True

    def _line(self, host: str, what: str, detail: str) -> None:
        if not self.live:
            self.console.print(f"{host}: {what}: {detail}", markup=False, highlight=False)

    def table(self) -> Table:
        t = Table(title=self.play or None, expand=False)
        t.add_column("host")
        t.add_column("state")
        for c in COUNTS:
            t.add_column(c, justify="right")
        t.add_column("task", overflow="ellipsis", max_width=60)
        with self.lock:
            for hp in sorted(self.hosts.values(), key=lambda h: h.host):
                style = {"failed": "red", "unreachable": "red", "done": "green"}.get(hp.state, "")
                t.add_row(hp.host, f"[{style}]{hp.state}[/]" if style else hp.state,
                          *(str(hp.counts[c]) for c in COUNTS), hp.task)
        return t


def _stats(data: dict[str, Any]) -> dict[str, dict[str, int]]:
    names = {"ok": "ok", "changed": "changed", "skipped": "skipped", "failures": "failed",
             "dark": "unreachable", "rescued": "rescued", "ignored": "ignored"}
    hosts: dict[str, dict[str, int]] = {}
    for key, label in names.items():
        for host, n in (data.get(key) or {}).items():
            hosts.setdefault(host, {}).setdefault(label, 0)
            hosts[host][label] += int(n)
    for host in hosts.values():
        for label in set(names.values()):
            host.setdefault(label, 0)
        # ansible counts changed results inside ok; show them apart.
        host["ok"] = max(0, host["ok"] - host["changed"])
    return hosts


def summary_table(hosts: dict[str, dict[str, int]]) -> Table:
    t = Table(title="summary")
    t.add_column("host")
    for c in ("ok", "changed", "failed", "unreachable", "skipped"):
        t.add_column(c, justify="right")
    for host in sorted(hosts):
        h = hosts[host]
        bad = h["failed"] or h["unreachable"]
        t.add_row(f"[red]{host}[/]" if bad else host,
                  *(str(h[c]) for c in ("ok", "changed", "failed", "unreachable", "skipped")))
    return t


def default_artifacts_dir(playbook: Path) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(".gpufleet") / "runs" / f"{stamp}-{playbook.stem}"


def run_playbook(
    playbook: Path,
    inventory: Path,
    hosts: list[str],
    limit: str | None = None,
    artifacts: Path | None = None,
    extravars: dict[str, Any] | None = None,
    console: Console | None = None,
) -> RunResult:
    """Run ``playbook`` against ``inventory`` and return per-host counts."""
    import ansible_runner

    console = console or Console()
    artifacts = (artifacts or default_artifacts_dir(playbook)).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    bindir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": os.environ.get("ANSIBLE_CONFIG", str(REPO / "ansible.cfg")),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }
    progress = Progress(console, hosts)
    forks = max(1, min(50, len(hosts)))
    kwargs: dict[str, Any] = dict(
        private_data_dir=str(artifacts),
        project_dir=str(REPO),
        playbook=str(playbook.resolve()),
        inventory=str(inventory.resolve()),
        limit=limit,
        forks=forks,
        envvars=env,
        extravars=extravars or None,
        ident="run",
        quiet=True,
        event_handler=progress.handle,
        rotate_artifacts=0,
    )
    if progress.live:
        with Live(progress.table(), console=console, refresh_per_second=4, transient=False) as live:
            stop = threading.Event()

            def refresh() -> None:
                while not stop.wait(0.25):
                    live.update(progress.table())

            t = threading.Thread(target=refresh, daemon=True)
            t.start()
            try:
                r = ansible_runner.run(**kwargs)
            finally:
                stop.set()
                t.join()
                live.update(progress.table())
    else:
        console.print(f"running {playbook} on {len(hosts)} host(s), {forks} forks", highlight=False)
        r = ansible_runner.run(**kwargs)
    hosts_stats = progress.stats or {}
    if not hosts_stats:
        hosts_stats = {h: {c: 0 for c in ("ok", "changed", "skipped", "failed", "unreachable")} for h in hosts}
    return RunResult(rc=r.rc if r.rc is not None else 1, status=r.status, hosts=hosts_stats,
                     artifacts=artifacts / "artifacts" / "run")
