"""The tightened program against the plain one, and against the old single weighted objective.

The default program drops dominated replica shapes, writes the serving rows per
shape (with replica-count bounds), and solves cost first, then owned GPU-hours.
The plain program keeps every shape and the rows as first written
(``strengthen=False, prune_dominated=False``); with ``lexicographic=False`` it
is the old program: one objective, owned GPU-hours weighted ``TIE_BREAK``. On
random small demands on the example fleet all of them must agree: the same
monthly cost and, between the two ordered solves, the same owned GPU-hours; the
old objective may trade at most ``TIE_BREAK`` times the owned GPU-hours for cost.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpufleet.economics.demand import DemandSpec, _cross_check
from gpufleet.economics.formulation import TIE_BREAK, FleetProgram
from gpufleet.economics.optimize import Options, cloud_sites, owned_classes, solve
from gpufleet.economics.perf import ReplicaShape
from gpufleet.economics.prices import default_prices
from gpufleet.model import load_fleet
from tests.economics.conftest import ROOT
from tests.economics.test_optimizer import _check_invariants, _committed_gpu_hours

FLEET = load_fleet(ROOT / "stacks" / "fleet.yaml")
PRICES = default_prices()
SITES = ["dc-fra", "aws-euc1", "aws-use1"]
NEW_MODELS = {"tiny-1b": 1.0, "small-3b": 3.0, "mid-13b": 13.0}


@st.composite
def serving_entry(draw, model: str) -> dict:
    regulated = model == "clinical-notes-8b"
    sites = ["dc-fra"] if regulated else draw(st.lists(st.sampled_from(SITES), min_size=1, max_size=3, unique=True))
    peak = draw(st.floats(min_value=0.1, max_value=6.0))
    entry = {
        "model": model, "sites": sites,
        "requests_per_s": {"peak": round(peak, 3), "offpeak": round(peak * draw(st.floats(min_value=0.0, max_value=1.0)), 3)},
        "input_tokens": draw(st.sampled_from([300, 1000, 2000])), "output_tokens": draw(st.sampled_from([100, 300])),
        "slo": {"ttft_p95_s": 2.0, "tpot_p95_ms": draw(st.sampled_from([40, 60, 80]))},
        "quantizations": ["awq"] if regulated else draw(st.lists(st.sampled_from(["none", "fp8", "awq"]), min_size=1, max_size=3, unique=True)),
        "interruptible": draw(st.booleans()),
    }
    if model in NEW_MODELS:
        entry.update(parameters_b=NEW_MODELS[model], source=f"acme/{model}", context_length=8192)
    return entry


@st.composite
def demands(draw):
    models = draw(st.lists(st.sampled_from(["llama-3-1-70b-instruct", "llama-3-1-8b-instruct", "clinical-notes-8b", *NEW_MODELS]), min_size=1, max_size=3, unique=True))
    serving = [draw(serving_entry(m)) for m in models]
    training = []
    if draw(st.booleans()):
        training.append({"queue": "research-train", "gpu_hours_per_month": float(draw(st.integers(500, 15000))), "accelerators": ["h100-80gb", "h200-141gb"],
                         "interconnect": "nvswitch", "job_gpus": draw(st.sampled_from([8, 16])), "interruptible": draw(st.booleans())})
    if draw(st.booleans()):
        training.append({"queue": "clinical-train", "gpu_hours_per_month": float(draw(st.integers(500, 8000))), "accelerators": ["h100-80gb"], "job_gpus": 8})
    spec = DemandSpec.model_validate({"peak_hours_per_day": draw(st.sampled_from([8, 12, 16])), "serving": serving, "training": training})
    return _cross_check(spec, "demand.yaml", FLEET)


def _fixed(serving: list[dict], training: list[dict] | None = None):
    return _cross_check(DemandSpec.model_validate({"peak_hours_per_day": 12, "serving": serving, "training": training or []}), "demand.yaml", FLEET)


def _chat(model: str, sites: list[str], peak: float, off: float, quants: list[str], interruptible: bool) -> dict:
    return {"model": model, "sites": sites, "requests_per_s": {"peak": peak, "offpeak": off}, "input_tokens": 1000, "output_tokens": 300,
            "slo": {"ttft_p95_s": 2.0, "tpot_p95_ms": 60}, "quantizations": quants, "interruptible": interruptible}


def _solve(demand, **kw):
    return solve(FLEET, demand, PRICES, Options(owned_classes(FLEET), cloud_sites(FLEET), **kw), gap=0.0)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(demand=demands())
# interruptible traffic where owned, on-demand and Spot replicas (at a lower rate) all may serve it
@example(demand=_fixed([_chat("llama-3-1-8b-instruct", ["dc-fra", "aws-use1"], 5.0, 1.0, ["awq"], True)]))
@example(demand=_fixed([_chat("llama-3-1-70b-instruct", ["dc-fra", "aws-euc1"], 4.5, 1.2, ["fp8"], True),
                        _chat("llama-3-1-8b-instruct", ["aws-use1"], 9.0, 3.0, ["awq", "fp8"], True)],
                       [{"queue": "research-train", "gpu_hours_per_month": 12000.0, "accelerators": ["h100-80gb"], "interconnect": "nvswitch", "job_gpus": 8, "interruptible": True}]))
def test_tight_program_equals_plain_and_old(demand) -> None:  # noqa: ANN001
    tight = _solve(demand)
    plain = _solve(demand, strengthen=False, prune_dominated=False)
    old = _solve(demand, strengthen=False, prune_dominated=False, lexicographic=False)
    feasible = [p.solver["status"] != "infeasible" for p in (tight, plain, old)]
    assert feasible[0] == feasible[1] == feasible[2], [p.solver["status"] for p in (tight, plain, old)]
    if not feasible[0]:
        return
    for p in (tight, plain):
        assert p.solver["status"] == "optimal" and p.solver["gap"] <= 1e-6 and p.solver["owned_gap"] <= 1e-6, p.solver
    assert tight.total_usd_per_month == pytest.approx(plain.total_usd_per_month, rel=1e-7, abs=0.02)
    assert tight.solver["owned_objective"] == pytest.approx(plain.solver["owned_objective"], rel=1e-6, abs=0.01)
    assert tight.solver["bound_usd_per_month"] <= tight.total_usd_per_month + 0.02
    # the old objective: cost + TIE_BREAK x owned GPU-hours, so its cost is at most that much above
    assert old.total_usd_per_month >= tight.total_usd_per_month - 0.02
    assert old.total_usd_per_month <= tight.total_usd_per_month + TIE_BREAK * tight.solver["owned_objective"] + 0.02
    _check_invariants(demand, tight)
    for key, (paid, used) in _committed_gpu_hours(demand, tight).items():
        assert used <= paid + 1e-6, key


def test_dominated_shapes_are_dropped_with_a_reason() -> None:
    """70B at fp8 or none on L40S: where none never beats fp8 at the same TP size,
    the none shapes go; every shape dropped has one kept that dominates it."""
    demand = _cross_check(DemandSpec.model_validate({"peak_hours_per_day": 12, "serving": [{
        "model": "llama-3-1-70b-instruct", "sites": ["dc-fra", "aws-euc1"], "requests_per_s": {"peak": 2.0, "offpeak": 0.5},
        "input_tokens": 1500, "output_tokens": 350, "slo": {"ttft_p95_s": 2.0, "tpot_p95_ms": 60}, "quantizations": ["fp8", "none"]}]}), "demand.yaml", FLEET)
    full = FleetProgram(FLEET, demand, PRICES, Options(owned_classes(FLEET), cloud_sites(FLEET), prune_dominated=False)).build()
    kept = FleetProgram(FLEET, demand, PRICES, Options(owned_classes(FLEET), cloud_sites(FLEET))).build()
    all_shapes = {k for (_m, k) in full.pick}
    kept_shapes = {k for (_m, k) in kept.pick}
    assert kept_shapes < all_shapes
    for a in all_shapes - kept_shapes:
        ea = full.estimates[(0, a)]
        assert any(
            b.accelerator == a.accelerator and b.mig_profile == a.mig_profile and a.tensor_parallel % b.tensor_parallel == 0
            and (a.tensor_parallel // b.tensor_parallel) * full.estimates[(0, b)].tokens_per_s >= ea.tokens_per_s
            for b in kept_shapes
        ), a
    assert ReplicaShape("l40s", None, "fp8", 4) in kept_shapes
