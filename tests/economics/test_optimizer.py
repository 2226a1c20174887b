"""The optimizer against brute force, its invariants, and the example fleet."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.catalog import INSTANCE_TYPES
from gpufleet.economics.demand import DemandSpec, _cross_check
from gpufleet.economics.optimize import Options, cloud_sites, gpu_instance_types, owned_classes, solve
from gpufleet.economics.perf import ReplicaShape, estimate
from gpufleet.economics.prices import default_prices
from gpufleet.model import load_fleet
from tests.economics.conftest import ROOT, run

FLEET = load_fleet(ROOT / "stacks" / "fleet.yaml")
PRICES = default_prices()


def _demand(serving: list[dict], training: list[dict] | None = None, peak_hours: float = 12):
    spec = DemandSpec.model_validate({"peak_hours_per_day": peak_hours, "serving": serving, "training": training or []})
    return _cross_check(spec, "demand.yaml", FLEET)


def _entry(model: str, sites: list[str], peak: float, off: float, quants: list[str], **kw) -> dict:
    return {"model": model, "sites": sites, "requests_per_s": {"peak": peak, "offpeak": off}, "input_tokens": 1000, "output_tokens": 300,
            "slo": {"ttft_p95_s": 2.0, "tpot_p95_ms": 60}, "quantizations": quants, **kw}


# ------------------------------------------------------------------ brute force


def _brute_cloud(demand, site: str) -> float:
    """Cheapest on-demand fleet at one AWS site for one model, by enumeration:
    every shape, every count of every instance type (up to a bound), each period."""
    cs = next(c for c in cloud_sites(FLEET) if c.site == site)
    H = PRICES.hours
    hours = {"peak": H * demand.peak_fraction, "offpeak": H * (1 - demand.peak_fraction)}
    d = demand.spec.serving[0]
    best = math.inf
    types = gpu_instance_types(PRICES)
    for acc in sorted({INSTANCE_TYPES[t].accelerator for t in types}):
        for tp in (1, 2, 4, 8):
            for q in d.quantizations:
                shape = ReplicaShape(acc, None, q, tp)
                e = estimate(shape, demand.workload(0))
                if not e.feasible:
                    continue
                mine = [t for t in types if INSTANCE_TYPES[t].accelerator == acc and INSTANCE_TYPES[t].gpus >= tp]
                if not mine:
                    continue
                total = 0.0
                for per, rps in (("peak", d.requests_per_s.peak), ("offpeak", d.requests_per_s.offpeak)):
                    replicas = math.ceil(rps * d.output_tokens / e.tokens_per_s - 1e-9)
                    cheapest = math.inf
                    for counts in itertools.product(*(range(replicas * tp // INSTANCE_TYPES[t].gpus + 2) for t in mine)):
                        slots = sum(n * (INSTANCE_TYPES[t].gpus // tp) for n, t in zip(counts, mine))
                        if slots >= replicas:
                            cheapest = min(cheapest, sum(n * PRICES.instance_usd_per_hour(t, cs.region, "on-demand") for n, t in zip(counts, mine)))
                    total += cheapest * hours[per]
                best = min(best, total)
    return best


@pytest.mark.parametrize("peak, off", [(0.5, 0.1), (2.0, 1.0), (5.0, 0.5)])
def test_cloud_only_optimum_equals_brute_force(peak: float, off: float) -> None:
    demand = _demand([_entry("llama-3-1-8b-instruct", ["aws-use1"], peak, off, ["awq", "none"])])
    opts = Options([], [c for c in cloud_sites(FLEET) if c.site == "aws-use1"], allow_owned=False, capacity_types=("on-demand",))
    p = solve(FLEET, demand, PRICES, opts, gap=0.0)
    assert p.solver["status"] == "optimal"
    assert p.total_usd_per_month == pytest.approx(_brute_cloud(demand, "aws-use1"), abs=0.05)


def test_owned_first_optimum_equals_brute_force() -> None:
    """70B at dc-fra (12 owned L40S: 3 replicas of TP 4 at most) or aws-euc1 on-demand:
    owned capacity costs nothing more, so the cloud takes only what it cannot."""
    demand = _demand([_entry("llama-3-1-70b-instruct", ["dc-fra", "aws-euc1"], 4.0, 1.0, ["fp8"])])
    owned = [c for c in owned_classes(FLEET) if c.accelerator == "l40s"]
    opts = Options(owned, [c for c in cloud_sites(FLEET) if c.site == "aws-euc1"], capacity_types=("on-demand",))
    p = solve(FLEET, demand, PRICES, opts, gap=0.0)
    shape = ReplicaShape(p.placements["llama-3-1-70b-instruct"]["accelerator"], None, "fp8", p.placements["llama-3-1-70b-instruct"]["tensor_parallel"])
    # brute force over every shape: owned replicas first (free), the rest on the cheapest instances
    H = PRICES.hours
    best = math.inf
    d = demand.spec.serving[0]
    for acc, tp in itertools.product(("l40s", "h100-80gb", "h200-141gb", "a100-80gb", "a100-40gb", "l4", "a10g"), (1, 2, 4, 8)):
        e = estimate(ReplicaShape(acc, None, "fp8", tp), demand.workload(0))
        types = [t for t in gpu_instance_types(PRICES) if INSTANCE_TYPES[t].accelerator == acc and INSTANCE_TYPES[t].gpus >= tp]
        if not e.feasible:
            continue
        owned_slots = 12 // tp if acc == "l40s" and tp <= 4 else 0
        total = 0.0
        for rps, hours in ((d.requests_per_s.peak, H / 2), (d.requests_per_s.offpeak, H / 2)):
            need = max(0, math.ceil(rps * d.output_tokens / e.tokens_per_s - 1e-9) - owned_slots)
            if need and not types:
                total = math.inf
                break
            cheapest = min((math.ceil(need / (INSTANCE_TYPES[t].gpus // tp)) * PRICES.instance_usd_per_hour(t, "eu-central-1", "on-demand") for t in types), default=0.0)
            total += cheapest * hours
        best = min(best, total)
    owned_cost = sum(c.gpus for c in owned) * H * PRICES.owned_usd_per_gpu_hour("l40s")
    assert p.solver["status"] == "optimal"
    assert p.total_usd_per_month == pytest.approx(owned_cost + best, abs=0.05)
    assert shape.accelerator in ("l40s", "h100-80gb", "h200-141gb", "a100-80gb")


# ------------------------------------------------------------------ properties


def _check_invariants(demand, p) -> None:
    assert p.solver["status"] == "optimal", p.solver
    cover: dict[tuple[int, str], float] = {}
    for r in p.serving:
        i = r["demand_entry"]
        d = demand.spec.serving[i]
        assert r["site"] in demand.serving_sites[i], f"residency: {r['model']} at {r['site']}"
        assert r["weights_gib"] + r["kv_cache_gib"] + 1.0 * (1 if r["mig_profile"] else r["tensor_parallel"]) <= r["memory_offered_gib"] + 0.1, r
        assert r["tpot_p95_ms"] <= d.slo.tpot_p95_ms + 1e-6 and r["ttft_p95_s"] <= d.slo.ttft_p95_s + 1e-6, r
        rate = r["tokens_per_s_per_replica"] / (1.25 if r["capacity_type"] == "spot" else 1.0)
        cover[(i, "peak")] = cover.get((i, "peak"), 0.0) + rate * r["replicas_peak"]
        cover[(i, "offpeak")] = cover.get((i, "offpeak"), 0.0) + rate * r["replicas_offpeak"]
    for i, d in enumerate(demand.spec.serving):
        assert cover.get((i, "peak"), 0.0) >= d.requests_per_s.peak * d.output_tokens * 0.999 - 0.5
        assert cover.get((i, "offpeak"), 0.0) >= d.requests_per_s.offpeak * d.output_tokens * 0.999 - 0.5
    for r in p.training:
        qi = [t.queue for t in demand.spec.training].index(r["queue"])
        assert r["site"] in demand.training_sites[qi], f"residency: {r['queue']} at {r['site']}"


scales = st.floats(min_value=0.2, max_value=3.0, allow_nan=False)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=scales, b=scales, train=st.floats(min_value=0.0, max_value=1.5))
def test_no_proposal_breaks_residency_memory_or_slo_and_more_demand_costs_more(a: float, b: float, train: float) -> None:
    lo, hi = sorted((a, b))

    def demand(k: float):
        serving = [
            _entry("llama-3-1-70b-instruct", ["dc-fra", "aws-euc1"], round(3 * k, 3), round(0.8 * k, 3), ["fp8", "none"]),
            _entry("llama-3-1-8b-instruct", ["aws-use1"], round(6 * k, 3), round(2 * k, 3), ["awq"], interruptible=True),
            _entry("clinical-notes-8b", ["dc-fra"], round(1 * k, 3), round(0.2 * k, 3), ["awq"]),
        ]
        # regulated training runs only on dc-fra's 32 H100s (23,360 GPU-hours a month) beside the clinical model
        training = [{"queue": "clinical-train", "gpu_hours_per_month": 1000 + 4000 * train * k, "accelerators": ["h100-80gb"], "job_gpus": 8}] if train else []
        return _demand(serving, training)

    d_lo, d_hi = demand(lo), demand(hi)
    p_lo = solve(FLEET, d_lo, PRICES, gap=0.0)
    p_hi = solve(FLEET, d_hi, PRICES, gap=0.0)
    _check_invariants(d_lo, p_lo)
    _check_invariants(d_hi, p_hi)
    assert p_hi.total_usd_per_month >= p_lo.total_usd_per_month - 1e-6 * p_lo.total_usd_per_month


# ------------------------------------------------------------- the example


@pytest.fixture(scope="module")
def example() -> dict:
    r = run("optimize", "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_example_is_optimal_and_below_both_baselines(example: dict) -> None:
    for key in ("total_usd_per_month", "owned_gpu_utilisation", "baselines", "serving", "training", "solver"):
        assert key in example
    assert set(example["baselines"]) >= {"as_described", "cloud_on_demand"}
    assert example["solver"]["status"] == "optimal"
    assert example["solver"]["gap"] <= 1e-4
    # the gap is against HiGHS's dual bound of the whole program: a lower bound of every plan's monthly cost
    assert example["solver"]["bound_usd_per_month"] <= example["total_usd_per_month"] + 0.01
    assert example["total_usd_per_month"] - example["solver"]["bound_usd_per_month"] <= 1e-4 * example["cloud_usd_per_month"] + 0.01
    assert example["solver"]["owned_gap"] is not None and example["solver"]["owned_gap"] <= 1e-4
    assert example["total_usd_per_month"] < example["baselines"]["as_described"]
    assert example["total_usd_per_month"] < example["baselines"]["cloud_on_demand"]
    assert 0 <= example["owned_gpu_utilisation"] <= 1
    for r in example["serving"]:
        assert set(r) >= {"model", "site", "accelerator", "mig_profile", "quantization", "tensor_parallel", "replicas_peak", "replicas_offpeak", "capacity_type", "tokens_per_s_per_replica", "demand_tokens_per_s", "usd_per_month"}
        assert r["weights_gib"] + r["kv_cache_gib"] <= r["memory_offered_gib"]
        if r["model"] == "clinical-notes-8b":
            assert r["site"] == "dc-fra"
    for r in example["training"]:
        assert set(r) >= {"queue", "site", "accelerator", "capacity_type", "gpu_hours_per_month", "usd_per_month"}
        if r["queue"] == "clinical-train":
            assert r["site"] == "dc-fra"
    assert sum(r["gpu_hours_per_month"] for r in example["training"] if r["queue"] == "research-train") == pytest.approx(20000, rel=1e-6)


def test_example_write_gives_a_fleet_validate_accepts(fleet_copy: Path) -> None:
    fleet = fleet_copy / "stacks" / "fleet.yaml"
    before = fleet.read_text()
    r = run("optimize", "--fleet", str(fleet), "--format", "json", "--write")
    assert r.returncode == 0, r.stderr
    assert "wrote stacks/fleet.yaml" in r.stderr
    after = fleet.read_text()
    assert after != before
    assert "# Dispatch order: committed on-prem GPUs first, cloud burst after." in after  # comments kept
    assert after.index("name: acme-llm") < after.index("hub: fra-hub") < after.index("sites:")  # key order kept
    v = run("validate", "--fleet", str(fleet))
    assert v.returncode == 0, v.stderr
    # the written fleet, priced as described, costs no more than the original
    p_new = run("plan", "--fleet", str(fleet), "--format", "json")
    p_old = run("plan", "--format", "json")
    assert json.loads(p_new.stdout)["cost"]["total_usd_per_month"] < json.loads(p_old.stdout)["cost"]["total_usd_per_month"]


# ------------------------------------------------------------- committed nodes


def _committed_gpu_hours(demand, p) -> dict[tuple[str, str, str], tuple[float, float]]:
    """Per (site, accelerator, committed capacity type): GPU-hours paid (nodes at peak,
    every hour) and GPU-hours used (serving replicas in each period plus training)."""
    H = PRICES.hours
    hours = {"peak": H * demand.peak_fraction, "offpeak": H * (1 - demand.peak_fraction)}
    paid: dict[tuple[str, str, str], float] = {}
    used: dict[tuple[str, str, str], float] = {}
    for pool in p.pools:
        if pool["capacity_type"] in ("savings-plan", "capacity-block", "reserved"):
            it = INSTANCE_TYPES[pool["instance_type"]]
            key = (pool["site"], it.accelerator, pool["capacity_type"])
            paid[key] = paid.get(key, 0.0) + pool["nodes_peak"] * it.gpus * H
    for r in p.serving:
        key = (r["site"], r["accelerator"], r["capacity_type"])
        if key[2] in ("savings-plan", "capacity-block", "reserved"):
            used[key] = used.get(key, 0.0) + r["tensor_parallel"] * (r["replicas_peak"] * hours["peak"] + r["replicas_offpeak"] * hours["offpeak"])
    for r in p.training:
        key = (r["site"], r["accelerator"], r["capacity_type"])
        if key[2] in ("savings-plan", "capacity-block", "reserved"):
            used[key] = used.get(key, 0.0) + r["gpu_hours_per_month"]
    return {k: (paid.get(k, 0.0), used.get(k, 0.0)) for k in set(paid) | set(used)}


def test_committed_nodes_carry_serving_and_training_once() -> None:
    """A savings-plan node is paid for every hour; its GPUs serve or train, not both at once.

    70B serving at aws-use1 on savings-plan H100 nodes, and a queue of 5,000 H100
    GPU-hours that may run there too: the nodes must hold the serving replicas'
    GPU-hours and the training's together."""
    demand = _demand(
        [_entry("llama-3-1-70b-instruct", ["aws-use1"], 2.0, 2.0, ["fp8"])],
        [{"queue": "research-train", "gpu_hours_per_month": 5000, "accelerators": ["h100-80gb"], "job_gpus": 8, "sites": ["aws-use1"]}],
    )
    opts = Options([], [c for c in cloud_sites(FLEET) if c.site == "aws-use1"], allow_owned=False, capacity_types=("savings-plan",))
    p = solve(FLEET, demand, PRICES, opts, gap=0.0)
    assert p.solver["status"] == "optimal", p.solver
    assert any(r["capacity_type"] == "savings-plan" for r in p.training)
    for key, (paid, used) in _committed_gpu_hours(demand, p).items():
        assert used <= paid + 1e-6, f"{key}: {used:,.0f} GPU-hours used on {paid:,.0f} paid"
