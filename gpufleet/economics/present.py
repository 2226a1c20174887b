"""``gpufleet optimize``: the proposal and its baselines as JSON, a table or markdown."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .costing import as_described
from .demand import Demand
from .optimize import Options, Proposal, cloud_sites, solve
from .prices import Prices

FORMAT = 1


def optimize(fleet, demand: Demand, prices: Prices, calibration: Any = None, time_limit: float = 60.0, gap: float = 1e-4, progress=None) -> tuple[Proposal, dict[str, Any]]:  # noqa: ANN001
    """The proposal and the JSON result (with both baselines)."""
    say = progress or (lambda _m: None)
    proposal = solve(fleet, demand, prices, calibration=calibration, time_limit=time_limit, gap=gap, progress=say)
    say("baseline: the fleet as described")
    described = as_described(fleet, prices, demand, calibration)
    say("baseline: everything on cloud on-demand")
    od = solve(fleet, demand, prices, Options([], cloud_sites(fleet), allow_owned=False, capacity_types=("on-demand",), residency=False), calibration=calibration, time_limit=time_limit, gap=gap)
    result = {
        "format": FORMAT,
        "fleet": fleet.name,
        "demand": demand.path,
        "prices": {"file": prices.source, "reviewed": prices.spec.reviewed},
        "total_usd_per_month": proposal.total_usd_per_month,
        "owned_usd_per_month": proposal.owned_usd_per_month,
        "cloud_usd_per_month": proposal.cloud_usd_per_month,
        "owned_gpu_utilisation": proposal.owned_gpu_utilisation,
        "baselines": {"as_described": described["total_usd_per_month"], "cloud_on_demand": od.total_usd_per_month},
        "baseline_details": {
            "as_described": described,
            "cloud_on_demand": {
                "total_usd_per_month": od.total_usd_per_month,
                "note": "every demand entry and queue on AWS on-demand at the fleet's AWS sites, no owned GPUs; residency set aside (a price comparison, not a plan)",
                "sites": od.sites,
                "solver": od.solver,
                "unmet": od.unmet,
            },
        },
        "sites": proposal.sites,
        "serving": proposal.serving,
        "training": proposal.training,
        "mig_layouts": proposal.mig_layouts,
        "node_pools": proposal.pools,
        "placements": proposal.placements,
        "solver": {k: proposal.solver.get(k) for k in ("name", "status", "gap", "bound_usd_per_month", "owned_gap", "seconds", "cpu_seconds", "variables", "integer_variables", "constraints")},
        "unmet": proposal.unmet,
    }
    return proposal, result


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=True, default=str) + "\n"


def _usd(v: float | None) -> str:
    return "-" if v is None or v != v else f"${v:,.0f}"


def _shape(r: dict[str, Any]) -> str:
    if r.get("mig_profile"):
        return f"MIG {r['mig_profile']} of {r['accelerator']}"
    return f"{r['tensor_parallel']} x {r['accelerator']}"


def print_table(result: dict[str, Any], console) -> None:  # noqa: ANN001
    from rich.table import Table

    s = result["solver"]
    console.print(f"[bold]gpufleet optimize[/bold] for fleet [cyan]{result['fleet']}[/cyan]: {_usd(result['total_usd_per_month'])}/month "
                  f"(owned {_usd(result['owned_usd_per_month'])}, cloud {_usd(result['cloud_usd_per_month'])}), owned GPUs {result['owned_gpu_utilisation']:.0%} used")
    b = result["baselines"]
    console.print(f"baselines: as described {_usd(b['as_described'])}/month, everything on cloud on-demand {_usd(b['cloud_on_demand'])}/month")
    console.print(f"solver: {s['name']}, {s['status']}, gap {s['gap'] if s['gap'] is not None else '-'}, {s['seconds']} s")
    t = Table(title="Serving", title_justify="left")
    for c in ("model", "site", "per replica", "quant", "capacity", "replicas peak/off", "tok/s per replica", "demand tok/s", "USD/month"):
        t.add_column(c)
    for r in result["serving"]:
        t.add_row(r["model"], r["site"], _shape(r), r["quantization"], r["capacity_type"], f"{r['replicas_peak']}/{r['replicas_offpeak']}", f"{r['tokens_per_s_per_replica']:,.0f}", f"{r['demand_tokens_per_s']:,.0f}", _usd(r["usd_per_month"]))
    console.print(t)
    t = Table(title="Training", title_justify="left")
    for c in ("queue", "site", "accelerator", "capacity", "GPU-hours/month", "USD/month"):
        t.add_column(c)
    for r in result["training"]:
        t.add_row(r["queue"], r["site"], r["accelerator"], r["capacity_type"], f"{r['gpu_hours_per_month']:,.0f}", _usd(r["usd_per_month"]))
    console.print(t)
    if result["mig_layouts"]:
        t = Table(title="MIG layouts", title_justify="left")
        for c in ("site", "server class", "GPUs", "layout per GPU"):
            t.add_column(c)
        for r in result["mig_layouts"]:
            t.add_row(r["site"], r["server_class"], str(r["gpus"]), ", ".join(f"{n} x {p}" for p, n in r["profiles"].items()))
        console.print(t)
    t = Table(title="Node pools", title_justify="left")
    for c in ("site", "instance type", "capacity", "nodes peak/off", "for", "USD/month"):
        t.add_column(c)
    for p in result["node_pools"]:
        t.add_row(p["site"], p["instance_type"], p["capacity_type"], f"{p['nodes_peak']}/{p['nodes_offpeak']}", ", ".join(p["for"]), _usd(p["usd_per_month"]))
    console.print(t)
    t = Table(title="Cost per site (USD/month)", title_justify="left")
    for c in ("site", "owned (committed)", "cloud", "total"):
        t.add_column(c)
    for r in result["sites"]:
        t.add_row(r["site"], _usd(r["owned_usd_per_month"]), _usd(r["cloud_usd_per_month"]), _usd(r["usd_per_month"]))
    console.print(t)
    for u in result["unmet"]:
        console.print(f"[red]not met:[/red] {u}")


def to_markdown(result: dict[str, Any]) -> str:
    b, s = result["baselines"], result["solver"]
    out = [f"## gpufleet optimize: `{result['fleet']}`", ""]
    out += [
        f"**{_usd(result['total_usd_per_month'])} per month** (owned, committed: {_usd(result['owned_usd_per_month'])}; cloud: {_usd(result['cloud_usd_per_month'])}); owned GPUs **{result['owned_gpu_utilisation']:.0%}** used.",
        "",
        "| | USD per month |",
        "|---|---:|",
        f"| proposal | {_usd(result['total_usd_per_month'])} |",
        f"| the fleet as described | {_usd(b['as_described'])} |",
        f"| everything on cloud on-demand | {_usd(b['cloud_on_demand'])} |",
        "",
        f"Solver: {s['name']}, {s['status']}, gap {s['gap']}, {s['seconds']} s. Prices: `{result['prices']['file']}` (reviewed {result['prices']['reviewed']}).",
        "",
        "### Serving",
        "",
        "| model | site | per replica | quantization | capacity | replicas peak / off-peak | tokens/s per replica | demand tokens/s | USD/month |",
        "|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in result["serving"]:
        out.append(f"| `{r['model']}` | {r['site']} | {_shape(r)} | {r['quantization']} | {r['capacity_type']} | {r['replicas_peak']} / {r['replicas_offpeak']} | {r['tokens_per_s_per_replica']:,.0f} | {r['demand_tokens_per_s']:,.0f} | {_usd(r['usd_per_month'])} |")
    out += ["", "### Training", "", "| queue | site | accelerator | capacity | GPU-hours/month | USD/month |", "|---|---|---|---|---:|---:|"]
    for r in result["training"]:
        out.append(f"| `{r['queue']}` | {r['site']} | {r['accelerator']} | {r['capacity_type']} | {r['gpu_hours_per_month']:,.0f} | {_usd(r['usd_per_month'])} |")
    if result["mig_layouts"]:
        out += ["", "### MIG layouts", "", "| site | server class | GPUs | layout per GPU |", "|---|---|---:|---|"]
        for r in result["mig_layouts"]:
            out.append(f"| {r['site']} | {r['server_class']} | {r['gpus']} | {', '.join(f'{n} x {p}' for p, n in r['profiles'].items())} |")
    out += ["", "### Node pools", "", "| site | instance type | capacity | nodes peak / off-peak | for | USD/month |", "|---|---|---|---|---|---:|"]
    for p in result["node_pools"]:
        out.append(f"| {p['site']} | {p['instance_type']} | {p['capacity_type']} | {p['nodes_peak']} / {p['nodes_offpeak']} | {', '.join(p['for'])} | {_usd(p['usd_per_month'])} |")
    out += ["", "### Cost per site", "", "| site | owned (committed) | cloud | total |", "|---|---:|---:|---:|"]
    for r in result["sites"]:
        out.append(f"| {r['site']} | {_usd(r['owned_usd_per_month'])} | {_usd(r['cloud_usd_per_month'])} | {_usd(r['usd_per_month'])} |")
    if result["unmet"]:
        out += ["", "### Not met", ""] + [f"- {u}" for u in result["unmet"]]
    return "\n".join(out) + "\n"


def proposal_dict(p: Proposal) -> dict[str, Any]:
    return asdict(p)


def default_paths(fleet_path: Path) -> tuple[Path, Path]:
    """demand.yaml and calibration.yaml beside fleet.yaml."""
    return fleet_path.parent / "demand.yaml", fleet_path.parent / "calibration.yaml"
