"""The alert rules: promtool check/test on the rendered PrometheusRule, and coverage."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.monitoring import RULES_FILE, build, context, dcgm, rules

from . import rule_tests

RULE_TESTS_FILE = "gpufleet-rules.test.yaml"

from .conftest import FLEET, REPO, SITES

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package `prometheus`; tests/install-system-deps.sh installs it)",
)
# One site of each role: a cloud region (AWS prices), and the hub (a data
# centre: its prices; rules restricted to its own series).
ROLES = ["aws-euc1", "fra-hub"]


def _rule_object(site: str) -> dict[str, Any]:
    [bundle] = build(FLEET, site)
    [rule] = [o for o in bundle.objects if o["kind"] == "PrometheusRule"]
    return rule


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _write(tmp_path: Path, spec: dict[str, Any], tests: dict[str, Any]) -> None:
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp_path / RULE_TESTS_FILE).write_text(yaml.safe_dump(tests, sort_keys=False))


@needs_promtool
@pytest.mark.parametrize("site", ROLES)
def test_promtool_check_and_test_rules(tmp_path: Path, site: str) -> None:
    rule = _rule_object(site)
    [bundle] = build(FLEET, site)
    # The review copy in the bundle is the same rule groups.
    assert yaml.safe_load(bundle.files[RULES_FILE]) == rule["spec"]
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    (tmp_path / RULE_TESTS_FILE).write_text(yaml.safe_dump(rule_tests.promtool_tests(context(FLEET, site), RULES_FILE), sort_keys=False))

    check = _promtool("check", "rules", RULES_FILE, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    test = _promtool("test", "rules", RULE_TESTS_FILE, cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


@pytest.mark.parametrize("site", SITES)
def test_every_alert_has_a_promtool_test(site: str) -> None:
    """Silent when healthy, pending (silent) before `for:`, firing after."""
    ctx = context(FLEET, site)
    names = [a["alert"] for a in rules.alerts(rules.rule_groups(ctx))]
    assert len(names) == len(set(names)), "alert names must be unique"
    tests = rule_tests.promtool_tests(ctx, RULES_FILE)["tests"]
    missing = []
    for name in names:
        checks = [c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == name]
        pending = [
            p
            for t in tests
            for p in t.get("promql_expr_test", [])
            if p["expr"] == f'ALERTS{{alertname="{name}", alertstate="pending"}}' and p["exp_samples"]
        ]
        silent = [c for c in checks if not c["exp_alerts"]]
        firing = [c for c in checks if c["exp_alerts"]]
        # Silent at the pending times too, and some silent time before them.
        pending_times = {p["eval_time"] for p in pending}
        healthy = [c for c in silent if c["eval_time"] not in pending_times]
        if not (healthy and pending and firing and pending_times <= {c["eval_time"] for c in silent}):
            missing.append(name)
    assert not missing, f"alerts without a healthy/pending/firing promtool test: {missing}"


def test_alert_metadata_and_runbooks() -> None:
    for site in SITES:
        for alert in rules.alerts(_rule_object(site)["spec"]["groups"]):
            name = alert["alert"]
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", name)
            assert alert["labels"]["severity"] in {"critical", "warning", "info"}
            assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}
            assert alert["annotations"]["runbook_url"].endswith(f"/docs/runbooks/{name}.md")
            assert (REPO / "docs" / "runbooks" / f"{name}.md").is_file(), name
            assert re.fullmatch(r"\d+[smh]", alert["for"]) and alert["for"] not in {"0s", "0m"}


def test_the_expected_alerts_exist() -> None:
    names = {a["alert"] for a in rules.alerts(_rule_object("dc-fra")["spec"]["groups"])}
    assert names == {
        "GpuXidFallenOffBus",
        "GpuXidMemoryError",
        "GpuRowRemapFailure",
        "GpuTemperatureHigh",
        "DcgmExporterAbsent",
        "VllmTimeToFirstTokenBudgetBurn",
        "VllmErrorBudgetBurn",
        "VllmKvCacheSaturated",
        "KueueWorkloadsPendingTooLong",
        "KueueWorkloadsInadmissible",
    }


def test_burn_rate_alerts_use_both_windows_and_recorded_ratios() -> None:
    ctx = context(FLEET, "dc-fra")
    groups = rules.rule_groups(ctx)
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    by_name = {a["alert"]: a for a in rules.alerts(groups)}
    for name, objective in [
        ("VllmTimeToFirstTokenBudgetBurn", ctx.cfg["slo"]["ttft_objective"]),
        ("VllmErrorBudgetBurn", ctx.cfg["slo"]["error_objective"]),
    ]:
        expr = by_name[name]["expr"]
        for ref in re.findall(r"namespace_model:[a-z_]+:ratio_rate\w+", expr):
            assert ref in recorded, ref
        budget = f"{1 - objective:.6g}"
        for w in ctx.cfg["slo"]["burn_windows"]:
            assert f"ratio_rate{w['long']} > ({w['factor']} * {budget})" in expr
            assert f"ratio_rate{w['short']} > ({w['factor']} * {budget})" in expr
    assert ctx.cfg["slo"]["burn_windows"] == [
        {"factor": 14.4, "long": "1h", "short": "5m"},
        {"factor": 6, "long": "6h", "short": "30m"},
    ]


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b(DCGM_FI_[A-Z0-9_]+|vllm:[a-z0-9_:]+|kueue_[a-z0-9_]+)", text))


def test_metric_names_are_the_real_ones() -> None:
    [bundle] = build(FLEET, "dc-fra")
    text = yaml.safe_dump(bundle.objects)
    names = _metric_names(text)
    # Every DCGM field a rule or dashboard reads is enabled in our counters file.
    enabled = {f for f, _, _ in dcgm.COUNTERS}
    assert {n for n in names if n.startswith("DCGM_FI_")} <= enabled
    # vLLM's renamed gauge, and counters with their _total suffix.
    assert "vllm:gpu_cache_usage_perc" not in text
    assert "vllm:kv_cache_usage_perc" in names
    for counter in ("request_success", "generation_tokens", "prompt_tokens", "prefix_cache_hits", "prefix_cache_queries"):
        assert f"vllm:{counter}_total" in names
        assert f"vllm:{counter}" not in {n.removesuffix("_total") for n in names if not n.endswith("_total")}
    assert {"kueue_pending_workloads", "kueue_admitted_workloads_total"} <= names


def _selectors(groups: list[dict[str, Any]]) -> list[str]:
    return [m for g in groups for r in g["rules"] for m in re.findall(r"\{[^{}]*\}", r["expr"])]


def test_hub_rules_ignore_remote_written_series() -> None:
    hub = _selectors(_rule_object("fra-hub")["spec"]["groups"])
    site = _selectors(_rule_object("dc-fra")["spec"]["groups"])
    assert hub and all('site=""' in m for m in hub if "job=" in m), hub
    assert not [m for m in site if "site=" in m]


# --- the promtool tests must be able to fail -----------------------------------


def _only(tests: dict[str, Any], alert: str, pending_only: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(tests)
    out["tests"] = [
        t for t in out["tests"] if t["name"].startswith(f"{alert}:") and (t.get("promql_expr_test") or not pending_only)
    ]
    return out


@needs_promtool
def test_promtool_tests_catch_a_missing_for(tmp_path: Path) -> None:
    """With `for: 0s` each alert fires at its pending times, and its test fails."""
    ctx = context(FLEET, "dc-fra")
    spec = _rule_object("dc-fra")["spec"]
    tests = rule_tests.promtool_tests(ctx, RULES_FILE)
    survived = []
    for alert in rules.alerts(spec["groups"]):
        mutated = copy.deepcopy(spec)
        for rule in rules.alerts(mutated["groups"]):
            if rule["alert"] == alert["alert"]:
                rule["for"] = "0s"
        _write(tmp_path, mutated, _only(tests, alert["alert"], pending_only=True))
        if _promtool("test", "rules", RULE_TESTS_FILE, cwd=tmp_path).returncode == 0:
            survived.append(alert["alert"])
    assert not survived, f"tests that pass even without for: {survived}"


@needs_promtool
def test_promtool_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    ctx = context(FLEET, "dc-fra")
    spec = _rule_object("dc-fra")["spec"]
    tests = rule_tests.promtool_tests(ctx, RULES_FILE)
    mutated = copy.deepcopy(spec)
    for rule in rules.alerts(mutated["groups"]):
        if rule["alert"] == "GpuXidFallenOffBus":
            rule["expr"] = rule["expr"].replace("== 79", "== 78")
    _write(tmp_path, mutated, _only(tests, "GpuXidFallenOffBus"))
    result = _promtool("test", "rules", RULE_TESTS_FILE, cwd=tmp_path)
    assert result.returncode != 0
    assert "GpuXidFallenOffBus" in result.stdout + result.stderr


@needs_promtool
def test_hub_test_catches_rules_that_read_remote_series(tmp_path: Path) -> None:
    ctx = context(FLEET, "fra-hub")
    spec = _rule_object("fra-hub")["spec"]
    mutated = copy.deepcopy(spec)
    for group in mutated["groups"]:
        for rule in group["rules"]:
            rule["expr"] = rule["expr"].replace(', site=""', "")
    assert 'site=""' not in yaml.safe_dump(mutated)
    _write(tmp_path, mutated, _only(rule_tests.promtool_tests(ctx, RULES_FILE), "GpuTemperatureHigh"))
    result = _promtool("test", "rules", RULE_TESTS_FILE, cwd=tmp_path)
    assert result.returncode != 0
    assert "remote site" in result.stdout + result.stderr
