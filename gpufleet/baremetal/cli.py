"""``gpufleet baremetal``: preflight, apply and verify data-centre servers.

Exit status: 0 when everything passed; 1 when a host failed a check or a
playbook run failed; 2 for bad input (one ``where: what`` line on standard
error).
"""

from __future__ import annotations

import json
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
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="SSH connect timeout per host, seconds.")]


def _fail(where: str, what: str) -> typer.Exit:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"{where}: {what}", markup=False)
    return typer.Exit(2)


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
