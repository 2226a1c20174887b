"""Per-site replica counts (`replicas_at`): `optimize --write` deploys the proposal's replicas at every site, and the cost and plan read them."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from gpufleet.economics.costing import as_described
from gpufleet.economics.demand import load_demand
from gpufleet.economics.prices import default_prices
from gpufleet.economics.write import _write_replicas
from gpufleet.model import load_fleet
from gpufleet.plan import build_plan, diff_fleets
from k8s.serving import build
from k8s.serving.vllm import workload_name
from tests.economics.conftest import ROOT, run

WORKLOADS = ("Deployment", "LeaderWorkerSet")


def _deployed(fleet) -> dict[tuple[str, str], int]:  # noqa: ANN001
    """(model, site) -> the replicas the render's vLLM workload asks for."""
    names = {workload_name(m): m.name for m in fleet.models}
    out: dict[tuple[str, str], int] = {}
    for site in fleet.sites:
        for bundle in build(fleet, site.name):
            for o in bundle.objects:
                if o["kind"] in WORKLOADS and o["metadata"]["name"] in names:
                    key = (names[o["metadata"]["name"]], site.name)
                    assert key not in out, f"two workloads for {key}"
                    out[key] = o["spec"]["replicas"]
    return out


def test_write_deploys_the_proposals_peak_replicas_per_model_and_site(fleet_copy: Path) -> None:
    fleet_file = fleet_copy / "stacks" / "fleet.yaml"
    r = run("optimize", "--fleet", str(fleet_file), "--format", "json", "--write")
    assert r.returncode == 0, r.stderr
    proposal = json.loads(r.stdout)
    want: dict[tuple[str, str], int] = defaultdict(int)
    for row in proposal["serving"]:
        want[(row["model"], row["site"])] += row["replicas_peak"]
    want = {k: v for k, v in want.items() if v > 0}
    # the example's proposal differs between sites: a single count per model cannot carry it
    per_model: dict[str, set[int]] = defaultdict(set)
    for (model, _), n in want.items():
        per_model[model].add(n)
    assert any(len(v) > 1 for v in per_model.values()), want

    v = run("validate", "--fleet", str(fleet_file))
    assert v.returncode == 0, v.stderr
    assert _deployed(load_fleet(fleet_file)) == want

    # replicas is the most common count; replicas_at lists only the sites that differ
    doc = YAML().load(fleet_file.read_text())
    for m in doc["models"]:
        counts = {s: n for (model, s), n in want.items() if model == m["name"]}
        if not counts:
            continue
        at = dict(m.get("replicas_at") or {})
        assert all(counts[s] != m["replicas"] for s in at), (m["name"], m["replicas"], at)
        assert {s: counts[s] for s in counts if counts[s] != m["replicas"]} == at


def _edit_models(fleet_copy: Path, **replicas_at: dict[str, int]):  # noqa: ANN202 - a Fleet
    """The example fleet with ``replicas_at`` set on the named models (model name with '_' for '-')."""
    path = fleet_copy / "stacks" / "fleet.yaml"
    y = YAML()
    doc = y.load(path.read_text())
    for m in doc["models"]:
        at = replicas_at.get(m["name"].replace("-", "_"))
        if at:
            m["replicas_at"] = at
    with path.open("w") as f:
        y.dump(doc, f)
    return load_fleet(path)


def test_the_fleet_as_described_costs_each_sites_replicas(fleet_copy: Path) -> None:
    """The as-described baseline sizes each site's pools and counts owned GPUs
    from that site's count: 70B x 4 at aws-euc1 needs 4 g6e.12xlarge (4 L40S
    each), 70B x 3 at dc-fra fills its 12 L40S, 8B x 8 time-sliced in pairs at
    aws-use1 needs 4 g6.2xlarge; the other sites keep ``replicas``."""
    prices = default_prices()
    base = as_described(load_fleet(ROOT / "stacks" / "fleet.yaml"), prices)
    f = _edit_models(fleet_copy, llama_3_1_70b_instruct={"aws-euc1": 4, "dc-fra": 3}, llama_3_1_8b_instruct={"aws-use1": 8})
    cost = as_described(f, prices)
    nodes = {(p["site"], p["pool"]): p["nodes"] for p in cost["pools"]}
    old = {(p["site"], p["pool"]): p["nodes"] for p in base["pools"]}
    assert old[("aws-euc1", "serving-l40s")] == 2 and nodes[("aws-euc1", "serving-l40s")] == 4
    assert old[("aws-use1", "serving-l40s")] == 2 == nodes[("aws-use1", "serving-l40s")]
    assert old[("aws-use1", "serving-l4")] == 2 and nodes[("aws-use1", "serving-l4")] == 4
    # 4 more of dc-fra's 44 owned GPUs busy all month
    assert cost["owned_gpu_utilisation"] == pytest.approx(base["owned_gpu_utilisation"] + 4 / 44, abs=1e-4)
    # the demand check counts the replicas at the entry's sites
    with_demand = as_described(f, prices, load_demand(fleet_copy / "stacks" / "demand.yaml", f))
    assert any("(llama-3-1-8b-instruct at aws-use1)" in u and "with 4 replicas of 1 x l4, awq" in u for u in with_demand["unmet"]), with_demand["unmet"]


def test_plan_shows_each_sites_replicas(fleet_copy: Path) -> None:
    f = _edit_models(fleet_copy, llama_3_1_70b_instruct={"dc-fra": 3})
    plan = build_plan(f)
    m = next(m for m in plan["models"] if m["name"] == "llama-3-1-70b-instruct")
    assert m["replicas_per_site"] == 2
    assert m["replicas_at"] == {"aws-euc1": 2, "aws-use1": 2, "dc-fra": 3}
    assert diff_fleets(load_fleet(ROOT / "stacks" / "fleet.yaml"), f)["models"] == [{
        "name": "llama-3-1-70b-instruct", "change": "changed",
        "before": "4 x l40s, fp8, 2 replicas at aws-euc1, aws-use1, dc-fra",
        "after": "4 x l40s, fp8, 2 replicas at aws-euc1, aws-use1; 3 at dc-fra",
    }]
    # The table and the pull-request comment show each site's count too.
    from gpufleet.report import to_markdown

    row = next(line for line in to_markdown(plan).splitlines() if line.startswith("| `llama-3-1-70b-instruct`"))
    assert "aws-euc1 x 2, aws-use1 x 2, dc-fra x 3" in row, row


def _map(text: str):  # noqa: ANN202 - a ruamel CommentedMap
    return YAML().load(text)


def _text(doc) -> str:  # noqa: ANN001
    import io

    buf = io.StringIO()
    YAML().dump(doc, buf)
    return buf.getvalue()


def test_write_replicas_keeps_the_most_common_count_and_the_comments() -> None:
    m = _map("name: m\nsites: [a, b, c]\nreplicas: 1\n# the next key\ndata_class: x\n")
    assert _write_replicas(m, {"a": 3, "b": 2, "c": 3}) == "replicas_at"
    assert _text(m) == "name: m\nsites: [a, b, c]\nreplicas: 3\nreplicas_at: {b: 2}\n# the next key\ndata_class: x\n"
    # a tie: the smallest count is the default
    assert _write_replicas(m, {"a": 2, "b": 3}) == "replicas_at"
    assert _text(m) == "name: m\nsites: [a, b, c]\nreplicas: 2\nreplicas_at: {b: 3}\n# the next key\ndata_class: x\n"
    # every site the same: replicas_at goes, the comment stays before the next key
    assert _write_replicas(m, {"a": 2, "b": 2}) == "replicas"
    assert _text(m) == "name: m\nsites: [a, b, c]\nreplicas: 2\n# the next key\ndata_class: x\n"
