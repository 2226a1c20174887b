"""The ``gpufleet`` command: validate, plan and render a fleet description.

Exit status: 0 on success, 2 when the input has problems (one
``file: key.path: message`` line each on standard error), 1 when an engine
failed for another reason (its message on standard error, never a traceback).
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gpufleet.errors import FleetError
from gpufleet.model import DEFAULT_FLEET, Fleet, load_fleet

app = typer.Typer(
    help="One hybrid GPU fleet (AWS regions and data centres) from one description.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
FleetOpt = Annotated[Path, typer.Option("--fleet", "-f", help="The fleet-wide file; stacks and inventories are found relative to it.")]


class Format(str, enum.Enum):
    table = "table"
    markdown = "markdown"
    json = "json"


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _today() -> dt.date | None:
    """GPUFLEET_TODAY (YYYY-MM-DD): the day end-of-life warnings count from, instead of today."""
    value = os.environ.get("GPUFLEET_TODAY")
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        _err().print(f"GPUFLEET_TODAY: '{value}' is not a date (YYYY-MM-DD)", markup=False)
        raise typer.Exit(2) from None


def _load(path: Path) -> Fleet:
    try:
        return load_fleet(path, today=_today())
    except FleetError as exc:
        err = _err()
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        err.print(f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''} found", style="red", markup=False)
        raise typer.Exit(2) from None


@app.command()
def validate(fleet: FleetOpt = DEFAULT_FLEET) -> None:
    """Check the whole description offline: schemas and cross-checks."""
    f = _load(fleet)
    err = _err()
    for warning in f.warnings:
        err.print(f"warning: {warning}", markup=False)
    servers = sum(len(s.servers) for s in f.sites)
    gpus = sum(sum(s.gpu_capacity().values()) for s in f.sites if not s.is_aws)
    print(f"{fleet}: fleet '{f.name}' is valid: {len(f.sites)} sites, {servers} servers ({gpus} whole GPUs on-prem), {len(f.queues)} queues, {len(f.models)} models")


@app.command()
def plan(
    fleet: FleetOpt = DEFAULT_FLEET,
    fmt: Annotated[Format, typer.Option("--format", help="table for a terminal, markdown for a pull-request comment, json for tools.")] = Format.table,
    base: Annotated[str | None, typer.Option("--base", help="A git ref: add what changed since it (sites, pools, servers, queues, models, MIG layouts) and the cost difference.")] = None,
) -> None:
    """Show, per site, what each engine will do, and what it costs a month."""
    from gpufleet.plan import build_plan, changes_since, plan_cost
    from gpufleet.report import print_table, to_json, to_markdown

    f = _load(fleet)
    p = build_plan(f)
    try:
        p["cost"] = plan_cost(f)
        if base:
            p["changes"] = changes_since(f, base)
    except FleetError as exc:
        for problem in exc.problems:
            _err().print(str(problem), markup=False)
        raise typer.Exit(2) from None
    if fmt is Format.json:
        sys.stdout.write(to_json(p))
    elif fmt is Format.markdown:
        sys.stdout.write(to_markdown(p))
    else:
        print_table(p, Console(soft_wrap=False))


@app.command()
def render(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write; replaced as a whole when it holds an earlier render.")],
    fleet: FleetOpt = DEFAULT_FLEET,
) -> None:
    """Write the plan, each stack's offline Pulumi preview, Kubernetes objects and Ansible inputs."""
    from gpufleet.render import Interrupted
    from gpufleet.render import render as do_render

    f = _load(fleet)
    err = _err()
    try:
        with err.status("rendering") as status:
            summary = do_render(f, out, progress=lambda msg: status.update(msg), warn=lambda msg: err.print(f"render: {msg}", markup=False))
    except FleetError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        raise typer.Exit(2) from None
    except (RuntimeError, OSError) as exc:
        err.print(f"render: {exc}", markup=False)
        raise typer.Exit(1) from None
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else 2
        err.print(f"render: interrupted ({exc if isinstance(exc, Interrupted) else 'SIGINT'}); its preview processes were stopped and its temporary folder removed", markup=False)
        raise typer.Exit(128 + signum) from None
    for site, entry in summary.items():
        parts = []
        if "pulumi_resources" in entry:
            parts.append(f"{entry['pulumi_resources']} Pulumi resources")
        parts.append(f"{len(entry['k8s_files'])} Kubernetes files")
        if "ansible_hosts" in entry:
            parts.append(f"{entry['ansible_hosts']} Ansible hosts")
        print(f"{out}/sites/{site}: {', '.join(parts)}")
    print(f"{out}/plan.json, {out}/plan.md")


from gpufleet.economics import cli as _economics  # noqa: E402

app.command("optimize")(_economics.optimize)
app.command("calibrate")(_economics.calibrate)


from gpufleet.baremetal.cli import app as _baremetal_app  # noqa: E402

app.add_typer(_baremetal_app, name="baremetal", help="Provision and verify data-centre GPU servers (Ansible).")


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, prog_name="gpufleet")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
