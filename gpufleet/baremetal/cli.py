"""``gpufleet baremetal``: preflight, apply, verify and accept data-centre servers.

Exit status: 0 when everything passed; 1 when a host failed a check or a
playbook run failed; 2 for bad input (one ``where: what`` line on standard
error).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from gpufleet.baremetal.hosts import InputError, Target, load_targets

REPO = Path(__file__).resolve().parents[2]

app = typer.Typer(
    help="Provision and verify data-centre GPU servers (Ansible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

InventoryOpt = Annotated[Path, typer.Option("--inventory", "-i", help="Inventory directory (hosts.yml, group_vars/, host_vars/) or file.")]
LimitOpt = Annotated[Optional[str], typer.Option("--limit", "-l", help="Ansible host pattern: only these hosts.")]
def _fail(where: str, what: str) -> typer.Exit:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"{where}: {what}", markup=False)
    return typer.Exit(2)


def _timeout(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise _fail("--timeout", f"must be a finite number of seconds greater than 0, not {value:g}")
    return value


TimeoutOpt = Annotated[float, typer.Option("--timeout", callback=_timeout, help="SSH connect timeout per host, seconds (the probe may take three times as long).")]


def _targets(inventory: Path, limit: str | None) -> list[Target]:
    try:
        return load_targets(inventory, limit)
    except InputError as exc:
        raise _fail(exc.where, exc.what) from None


def _playbook(value: str | None, default: str) -> Path:
    name = value or default
    for candidate in (Path(name), REPO / name, REPO / "baremetal" / name):
        if candidate.is_file():
            return candidate
    raise _fail("--playbook", f"{name}: playbook not found")


def _preflight(targets: list[Target], timeout: float, console: Console) -> bool:
    from gpufleet.baremetal.preflight import FAIL, WARN, run_preflight

    reports = run_preflight(targets, timeout=timeout)
    table = Table(title="preflight")
    table.add_column("host")
    table.add_column("result")
    table.add_column("os")
    table.add_column("gpus", justify="right")
    table.add_column("problems")
    for rep in reports:
        problems = "; ".join(f"{c.name}: {c.detail}" for c in rep.checks if c.status in (FAIL, WARN))
        colour = {"fail": "red", "warn": "yellow"}.get(rep.status, "green")
        table.add_row(rep.host, f"[{colour}]{rep.status}[/]", rep.os, str(len(rep.gpus)), problems)
    console.print(table)
    failed = [r for r in reports if r.status == FAIL]
    if failed:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        for rep in failed:
            for c in rep.checks:
                if c.status == FAIL:
                    err.print(f"{rep.host}: {c.name}: {c.detail}", markup=False)
    return not failed


@app.command()
def preflight(
    inventory: InventoryOpt,
    limit: LimitOpt = None,
    timeout: TimeoutOpt = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on standard output.")] = False,
) -> None:
    """Check SSH, privilege, OS release and the GPUs on each host against the inventory (read-only)."""
    from gpufleet.baremetal.preflight import FAIL, run_preflight

    targets = _targets(inventory, limit)
    if as_json:
        reports = run_preflight(targets, timeout=timeout)
        print(json.dumps([r.as_dict() for r in reports], indent=2))
        raise typer.Exit(1 if any(r.status == FAIL for r in reports) else 0)
    if not _preflight(targets, timeout, Console()):
        raise typer.Exit(1)


def _run(inventory: Path, limit: str | None, playbook: Path, artifacts: Path | None) -> None:
    from gpufleet.baremetal.runner import run_playbook, summary_table

    targets = _targets(inventory, limit)
    console = Console()
    result = run_playbook(playbook, inventory, [t.name for t in targets], limit=limit, artifacts=artifacts, console=console)
    console.print(summary_table(result.hosts))
    console.print(f"artifacts: {result.artifacts}", highlight=False)
    if not result.ok:
        Console(stderr=True, highlight=False).print(
            f"{playbook}: run {result.status} (rc {result.rc})", markup=False
        )
        raise typer.Exit(1)


ArtifactsOpt = Annotated[Optional[Path], typer.Option("--artifacts", help="Directory for ansible-runner's artifacts (default .gpufleet/runs/<time>-<playbook>).")]


@app.command()
def apply(
    inventory: InventoryOpt,
    limit: LimitOpt = None,
    playbook: Annotated[Optional[str], typer.Option("--playbook", "-p", help="Playbook (default baremetal/site.yml).")] = None,
    artifacts: ArtifactsOpt = None,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="Do not run the preflight checks first.")] = False,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Run the playbook (site.yml) after the preflight checks passed."""
    book = _playbook(playbook, "baremetal/site.yml")
    if not skip_preflight:
        targets = _targets(inventory, limit)
        if not _preflight(targets, timeout, Console()):
            Console(stderr=True, highlight=False).print("preflight: problems found, nothing was changed", markup=False)
            raise typer.Exit(1)
    _run(inventory, limit, book, artifacts)


@app.command()
def verify(
    inventory: InventoryOpt,
    limit: LimitOpt = None,
    playbook: Annotated[Optional[str], typer.Option("--playbook", "-p", help="Playbook (default baremetal/verify.yml).")] = None,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Run the verification playbook (verify.yml); changes nothing on the hosts."""
    _run(inventory, limit, _playbook(playbook, "baremetal/verify.yml"), artifacts)


@app.command()
def acceptance(
    inventory: InventoryOpt,
    limit: LimitOpt = None,
    artifacts: ArtifactsOpt = None,
    testinfra: Annotated[bool, typer.Option("--testinfra/--no-testinfra", help="Run the tests/infra suites first (default on).")] = True,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Parallel testinfra workers (default: one per host, at most 8).")] = None,
) -> None:
    """The burn-in gate on the GPU servers: the testinfra suites, then
    acceptance.yml (dcgmi diag, nccl-tests bus bandwidth). A server that fails
    any check is reported and left cordoned or unjoined, never admitted."""
    from gpufleet.baremetal.runner import default_artifacts_dir, run_playbook, summary_table
    from gpufleet.baremetal.testinfra import SUITES, run_suites

    book = _playbook(None, "baremetal/acceptance.yml")
    if testinfra and not SUITES.is_dir():
        raise _fail(str(SUITES), "testinfra suites not found (run gpufleet from a checkout, or pass --no-testinfra)")
    hosts = [t.name for t in _targets(inventory, limit) if "gpu" in t.groups]
    if not hosts:
        raise _fail(f"--limit {limit}" if limit else str(inventory), "no host of the gpu group to accept")
    console = Console()
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    art = (artifacts or default_artifacts_dir(book)).resolve()
    art.mkdir(parents=True, exist_ok=True)

    infra_failures: dict[str, list[str]] = {}
    if testinfra:
        with console.status(f"testinfra: tests/infra on {len(hosts)} GPU server(s)"):
            infra = run_suites(inventory, hosts, art / "testinfra.xml", art / "testinfra.log", workers=workers)
        counts = ", ".join(f"{n} {k}" for k, n in infra.counts.items()) or "no summary"
        console.print(f"testinfra: {counts} in {infra.seconds}s (log {infra.log_file})", highlight=False)
        unattributed = infra.failures.get("")
        if infra.rc not in (0, 1) or unattributed or (infra.rc == 1 and not infra.failures):
            detail = f"; failed outside any host: {', '.join(unattributed)}" if unattributed else ""
            err.print(f"tests/infra: pytest exited {infra.rc}{detail}; nothing was judged, see {infra.log_file}", markup=False)
            raise typer.Exit(1)
        infra_failures = infra.failures

    result = run_playbook(
        book, inventory, hosts, limit=limit, artifacts=art,
        extravars={"acceptance_testinfra_failures": infra_failures}, console=console,
    )
    console.print(summary_table(result.hosts))
    verdicts = Table(title="acceptance")
    verdicts.add_column("GPU server")
    verdicts.add_column("testinfra")
    verdicts.add_column("acceptance.yml")
    verdicts.add_column("verdict")
    failed: list[str] = []
    for host in hosts:
        stats = result.hosts.get(host, {})
        ran = any(stats.values())
        play_bad = not ran or stats.get("failed", 0) or stats.get("unreachable", 0)
        bad = play_bad or host in infra_failures
        if bad:
            failed.append(host)
        infra_cell = ("not run" if not testinfra
                      else f"[red]{len(infra_failures[host])} failed[/]" if host in infra_failures else "passed")
        play_cell = ("not run" if not ran else "[red]unreachable[/]" if stats.get("unreachable", 0)
                     else "[red]failed[/]" if stats.get("failed", 0) else "passed")
        verdicts.add_row(host, infra_cell, play_cell, "[red]REJECTED[/]" if bad else "[green]accepted[/]")
    console.print(verdicts)
    console.print(f"artifacts: {art}", highlight=False)
    for host in failed:
        tests = infra_failures.get(host, [])
        for test in tests[:10]:
            err.print(f"{host}: testinfra: {test}", markup=False)
        if len(tests) > 10:
            err.print(f"{host}: testinfra: ... and {len(tests) - 10} more (see {art / 'testinfra.log'})", markup=False)
    if not result.ok:
        err.print(f"{book}: run {result.status} (rc {result.rc}); see {result.artifacts / 'stdout'}", markup=False)
    if failed or not result.ok:
        err.print(f"acceptance: {len(failed)} of {len(hosts)} GPU server(s) rejected: {', '.join(failed) or '-'}", markup=False)
        raise typer.Exit(1)
