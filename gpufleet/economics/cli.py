"""The ``optimize`` and ``calibrate`` commands (registered on the ``gpufleet`` app)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


class Format(str, enum.Enum):
    table = "table"
    markdown = "markdown"
    json = "json"


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(problems) -> None:  # noqa: ANN001
    err = _err()
    for p in problems:
        err.print(str(p), markup=False)
    err.print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", style="red", markup=False)
    raise typer.Exit(2)


def optimize(
    fleet: Annotated[Path, typer.Option("--fleet", "-f", help="The fleet-wide file; stacks and inventories are found relative to it.")] = Path("stacks/fleet.yaml"),
    demand: Annotated[Path | None, typer.Option("--demand", "-d", help="The demand file (default: demand.yaml beside the fleet file).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table for a terminal, markdown for a pull-request comment, json for tools.")] = Format.table,
    write: Annotated[bool, typer.Option("--write", help="Change fleet.yaml, the Pulumi stacks' pools and the inventory's MIG layouts to the proposal.")] = False,
    time_limit: Annotated[float, typer.Option("--time-limit", min=1, help="Seconds the solver may take.")] = 60.0,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="Measured throughput (default: calibration.yaml beside the fleet file, when there).")] = None,
) -> None:
    """Propose the cheapest fleet that meets the demand, owned GPUs first (a MIP solved with HiGHS)."""
    from gpufleet.cli import _load
    from gpufleet.errors import FleetError

    from .calibrate import load_calibration
    from .demand import load_demand
    from .prices import default_prices
    from .present import default_paths
    from .present import optimize as run
    from .present import print_table, to_json, to_markdown

    f = _load(fleet)
    dflt_demand, dflt_cal = default_paths(fleet)
    err = _err()
    try:
        d = load_demand(demand or dflt_demand, f)
        prices = default_prices()
        cal = load_calibration(calibration or dflt_cal)
    except FleetError as exc:
        _fail(exc.problems)
    with err.status("optimizing") as status:
        proposal, result = run(f, d, prices, cal, time_limit=time_limit, progress=lambda msg: status.update(msg))
    if proposal.solver.get("status") not in ("optimal",) and result["serving"] == [] and result["training"] == []:
        err.print(f"optimize: no plan: {'; '.join(proposal.unmet) or proposal.solver.get('status')}", markup=False)
        raise typer.Exit(1)
    if fmt is Format.json:
        sys.stdout.write(to_json(result))
    elif fmt is Format.markdown:
        sys.stdout.write(to_markdown(result))
    else:
        print_table(result, Console(soft_wrap=False))
    if write:
        from .write import apply

        if proposal.unmet:
            err.print("optimize --write: the proposal leaves demand unmet; nothing written", markup=False)
            raise typer.Exit(1)
        try:
            files = apply(f, proposal)
        except FleetError as exc:
            _fail(exc.problems)
        for path in files:
            err.print(f"wrote {path}", markup=False)


def calibrate(
    files: Annotated[list[Path], typer.Argument(help="Result files of `vllm bench serve --save-result` (JSON; one object a line with --append-result).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The calibration file to add the measured points to.")] = Path("stacks/calibration.yaml"),
    model: Annotated[str | None, typer.Option("--model", help="The fleet model measured (else the file's gpufleet_model metadata).")] = None,
    accelerator: Annotated[str | None, typer.Option("--accelerator", help="e.g. h100-80gb (else gpufleet_accelerator metadata).")] = None,
    quantization: Annotated[str | None, typer.Option("--quantization", help="none, fp8, int8, awq or gptq (else gpufleet_quantization metadata).")] = None,
    tensor_parallel: Annotated[int | None, typer.Option("--tensor-parallel", min=1, max=64, help="GPUs per replica (else gpufleet_tensor_parallel metadata).")] = None,
    mig_profile: Annotated[str | None, typer.Option("--mig-profile", help="MIG profile of the measured replica, if any.")] = None,
) -> None:
    """Record measured serving throughput (vllm bench serve results) for the performance model."""
    from gpufleet.errors import FleetError

    from .calibrate import calibrate as run

    try:
        points = run(files, out, {"model": model, "accelerator": accelerator, "quantization": quantization, "tensor_parallel": tensor_parallel, "mig_profile": mig_profile})
    except FleetError as exc:
        _fail(exc.problems)
    for p in points:
        where = f"MIG {p['mig_profile']} of {p['accelerator']}" if p["mig_profile"] else f"{p['tensor_parallel']} x {p['accelerator']}"
        print(f"{out}: {p['model']} on {where} ({p['quantization']}): {p['output_tokens_per_s']:,.1f} output tokens/s at p95 TTFT {p['ttft_p95_ms']:,.0f} ms, TPOT {p['tpot_p95_ms']:,.1f} ms ({p['provenance']['file']})")
