"""Formatters for a plan: a terminal view (rich), a pull-request comment
(markdown with a mermaid diagram) and stable JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table



def _replicas_text(m: dict, sites: bool = True) -> str:
    """"dc-fra, aws-euc1 x 2" or, where sites differ (replicas_at), "dc-fra x 3, aws-euc1 x 2"."""
    at = m.get("replicas_at") or {s: m["replicas_per_site"] for s in m["sites"]}
    if len(set(at.values())) <= 1:
        n = next(iter(at.values()), m["replicas_per_site"])
        return f"{', '.join(m['sites'])} x {n}" if sites else str(n)
    return ", ".join(f"{s} x {n}" for s, n in at.items())

def _gpus(d: dict[str, int]) -> str:
    return ", ".join(f"{n} x {a}" for a, n in d.items() if n) or "-"


def _mig(slices: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s['count']} x {s['profile']} ({s['accelerator']})" for s in slices) or "-"


def to_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2, sort_keys=True) + "\n"


def print_table(plan: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]gpufleet plan[/bold] for fleet [cyan]{plan['fleet']}[/cyan] (hub: [cyan]{plan['hub']}[/cyan])")
    sites = Table(title="Sites", title_justify="left", show_lines=True)
    for col in ("site", "kind", "where", "GPUs (whole)", "MIG slices", "pools / server classes", "models"):
        sites.add_column(col)
    for s in plan["sites"]:
        where = s.get("region") or s.get("location", "")
        if "node_pools" in s:
            pools = "\n".join(
                f"{p['name']}: {'/'.join(p['instance_types'])} {p['capacity_type']} {p['min_size']}-{p['max_size']}" + (f" EFA x{p['efa_interfaces']}" if p["efa_interfaces"] else "")
                for p in s["node_pools"]
            )
        else:
            pools = "\n".join(f"{c['class']}: {c['servers']} servers" + (f", {c['gpus_per_server']} x {c['accelerator']}" if c["accelerator"] else "") for c in s["server_classes"])
        kind = s["kind"] + (" (hub)" if s["role"] == "hub" else "")
        sites.add_row(s["name"], kind, where, _gpus(s["whole_gpus"]), _mig(s["mig_slices"]), pools, "\n".join(s["models"]) or "-")
    console.print(sites)

    queues = Table(title="Training queues (MultiKueue dispatch order: on-prem first, cloud burst after)", title_justify="left", show_lines=True)
    for col in ("queue", "team", "priority", "data class", "quota", "dispatch order (GPUs behind each step)"):
        queues.add_column(col)
    for q in plan["queues"]:
        order = " -> ".join(f"{d['order']}. {d['site']} (quota {_gpus(d['quota'])} of {_gpus(d['gpus'])})" for d in q["dispatch"])
        queues.add_row(q["name"], q["team"], str(q["priority"]), q["data_class"] or "-", _gpus(q["quota"]), order)
    console.print(queues)
    for rule in sorted({q["dispatch_rule"] for q in plan["queues"]}):
        console.print(f"Dispatch: {rule}.")

    models = Table(title="Served models", title_justify="left", show_lines=True)
    for col in ("model", "params", "quant", "placement (per replica)", "memory need / offered", "sites x replicas", "data class"):
        models.add_column(col)
    for m in plan["models"]:
        p = m["placement"]
        place = f"{p['mig_profile']} MIG slice of {p['accelerator']}" if p["mig_profile"] else f"{p['gpus']} x {p['accelerator']} (TP={m['tensor_parallel_size']})"
        mem = m["memory_gib"]
        models.add_row(m["name"], f"{m['parameters_b']:g}B", m["quantization"], place, f"{mem['needed']} / {mem['offered']} GiB", _replicas_text(m), m["data_class"] or "-")
    console.print(models)

    stacks = [f"[bold]{s['name']}[/bold] ({s['stack']['engine']})\n" + "\n".join(f"  - {d}" for d in s["stack"]["declares"]) for s in plan["sites"]]
    console.print(Panel(Group(*stacks), title="What each stack declares", title_align="left"))
    for r in plan["residency"]:
        console.print(f"Residency: [bold]{r['data_class']}[/bold] data only at {', '.join(r['sites'])}")
    if plan.get("cost"):
        c = plan["cost"]
        cost = Table(title="Cost per month (prices: gpufleet/economics/prices.yaml)", title_justify="left")
        for col in ("site", "owned (committed)", "cloud", "total"):
            cost.add_column(col)
        for s in c["sites"]:
            cost.add_row(s["site"], _usd(s["owned_usd_per_month"]), _usd(s["cloud_usd_per_month"]), _usd(s["usd_per_month"]))
        cost.add_row("all", _usd(c["owned_usd_per_month"]), _usd(c["cloud_usd_per_month"]), _usd(c["total_usd_per_month"]))
        console.print(cost)
        console.print(f"Owned GPUs used: {c['owned_gpu_utilisation']:.0%}" + (f" (demand: {c['demand']})" if c.get("demand") else " (no demand file: serving only)"))
        for u in c.get("unmet") or []:
            console.print(f"[red]demand not met:[/red] {u}")
    if plan.get("changes"):
        for line in _changes_lines(plan["changes"]):
            console.print(line, markup=False)


def _usd(v: float) -> str:
    return f"${v:,.0f}"


def _signed(v: float) -> str:
    return f"{'+' if v > 0 else '-' if v < 0 else '±'}${abs(v):,.0f}"


def _changes_lines(ch: dict[str, Any]) -> list[str]:
    c = ch["cost_usd_per_month"]
    out = [f"Since {ch['ref']} ({ch['commit'][:12]}): cost {_usd(c['base'])} -> {_usd(c['head'])} per month ({_signed(c['difference'])})"]
    for kind, rows in ch["diff"].items():
        for r in rows:
            out.append(f"  {kind}: {r['change']} {r['name']}" + (f": {r['before']} -> {r['after']}" if r["change"] == "changed" else f": {r['after'] or r['before']}"))
    return out


def _mermaid_id(name: str) -> str:
    return name.replace("-", "_")


def to_markdown(plan: dict[str, Any]) -> str:
    out = [f"## gpufleet plan: `{plan['fleet']}`", ""]
    out += ["```mermaid", "flowchart LR"]
    hub = plan["hub"]
    out.append(f'  {_mermaid_id(hub)}(["{hub}<br/>hub: MultiKueue manager"])')
    for group, title in (("datacenter", "Data centres"), ("aws", "AWS regions")):
        members = [s for s in plan["sites"] if s["kind"] == group and s["name"] != hub]
        if not members:
            continue
        out.append(f'  subgraph {group}["{title}"]')
        for s in members:
            where = s.get("region") or s.get("location", "")
            out.append(f'    {_mermaid_id(s["name"])}["{s["name"]}<br/>{where}<br/>{_gpus(s["whole_gpus"])}"]')
        out.append("  end")
    for q in plan["queues"]:
        for d in q["dispatch"]:
            out.append(f'  {_mermaid_id(hub)} -- "{q["name"]} #{d["order"]}" --> {_mermaid_id(d["site"])}')
    out += ["```", ""]

    out += ["### Sites", "", "| site | kind | where | whole GPUs | MIG slices | pools / server classes | models |", "|---|---|---|---|---|---|---|"]
    for s in plan["sites"]:
        if "node_pools" in s:
            pools = "<br>".join(f"`{p['name']}` {'/'.join(p['instance_types'])} {p['capacity_type']} {p['min_size']}-{p['max_size']}" for p in s["node_pools"])
        else:
            pools = "<br>".join(f"`{c['class']}` x {c['servers']}" for c in s["server_classes"])
        kind = s["kind"] + (" (hub)" if s["role"] == "hub" else "")
        out.append(f"| `{s['name']}` | {kind} | {s.get('region') or s.get('location', '')} | {_gpus(s['whole_gpus'])} | {_mig(s['mig_slices'])} | {pools} | {', '.join(s['models']) or '-'} |")
    out += ["", "### Training queues", "", "| queue | team | priority | data class | quota | dispatch order |", "|---|---|---|---|---|---|"]
    for q in plan["queues"]:
        order = " → ".join(f"{d['site']} (quota {_gpus(d['quota'])} of {_gpus(d['gpus'])})" for d in q["dispatch"])
        out.append(f"| `{q['name']}` | {q['team']} | {q['priority']} | {q['data_class'] or '-'} | {_gpus(q['quota'])} | {order} |")
    out += ["", *[f"Dispatch (`{d}`): {r}." for d, r in sorted({(q["dispatcher"], q["dispatch_rule"]) for q in plan["queues"]})]]
    out += ["", "### Served models", "", "| model | quantization | placement per replica | memory need / offered (GiB) | sites | replicas per site |", "|---|---|---|---|---|---|"]
    for m in plan["models"]:
        p = m["placement"]
        place = f"MIG {p['mig_profile']} on {p['accelerator']}" if p["mig_profile"] else f"{p['gpus']} x {p['accelerator']}"
        out.append(f"| `{m['name']}` ({m['parameters_b']:g}B) | {m['quantization']} | {place} | {m['memory_gib']['needed']} / {m['memory_gib']['offered']} | {', '.join(m['sites'])} | {_replicas_text(m, sites=False)} |")
    out += ["", "### What each stack declares", ""]
    for s in plan["sites"]:
        out.append(f"- **{s['name']}** ({s['stack']['engine']})")
        out += [f"  - {d}" for d in s["stack"]["declares"]]
    if plan.get("cost"):
        c = plan["cost"]
        out += ["", "### Cost per month", "", "| site | owned (committed) | cloud | total |", "|---|---:|---:|---:|"]
        out += [f"| `{s['site']}` | {_usd(s['owned_usd_per_month'])} | {_usd(s['cloud_usd_per_month'])} | {_usd(s['usd_per_month'])} |" for s in c["sites"]]
        out.append(f"| **all** | {_usd(c['owned_usd_per_month'])} | {_usd(c['cloud_usd_per_month'])} | **{_usd(c['total_usd_per_month'])}** |")
        out += ["", f"Owned GPUs used: **{c['owned_gpu_utilisation']:.0%}**" + (f" against `{c['demand']}`." if c.get("demand") else " (no demand file: serving only).")]
        out += [f"- demand not met: {u}" for u in c.get("unmet") or []]
    if plan.get("changes"):
        ch = plan["changes"]
        c = ch["cost_usd_per_month"]
        out += ["", f"### Changes since `{ch['ref']}` (`{ch['commit'][:12]}`)", ""]
        out += [f"Cost: {_usd(c['base'])} → {_usd(c['head'])} per month (**{_signed(c['difference'])}**); owned GPUs used: {ch['owned_gpu_utilisation']['base']:.0%} → {ch['owned_gpu_utilisation']['head']:.0%}.", ""]
        moved = [s for s in ch["sites"] if s["difference"]]
        if moved:
            out += ["| site | before | after | difference |", "|---|---:|---:|---:|"]
            out += [f"| `{s['site']}` | {_usd(s['base'])} | {_usd(s['head'])} | {_signed(s['difference'])} |" for s in moved]
        any_rows = False
        for kind, rows in ch["diff"].items():
            if not rows:
                continue
            if not any_rows:
                out += ["", "| what | name | change | before | after |", "|---|---|---|---|---|"]
                any_rows = True
            out += [f"| {kind.replace('_', ' ')} | `{r['name']}` | {r['change']} | {r['before'] or '-'} | {r['after'] or '-'} |" for r in rows]
        if not any_rows:
            out += ["", "No change to sites, pools, servers, queues, models or MIG layouts."]
    if plan["residency"]:
        out += ["", "### Data residency", ""]
        out += [f"- `{r['data_class']}` only at {', '.join(f'`{x}`' for x in r['sites'])}" + (f": {r['description']}" if r["description"] else "") for r in plan["residency"]]
    return "\n".join(out) + "\n"
