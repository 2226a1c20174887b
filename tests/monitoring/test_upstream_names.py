"""Every metric a rule, dashboard or autoscaler reads is one the pinned upstream exports.

The upstream names come from upstream source, never from memory:

* vLLM 0.24.0, its HTTP instrumentator, Kueue v0.19.2, kube-state-metrics
  v2.20.0 and Prometheus's ``up``: ``upstream_metrics.yaml`` beside this file,
  derived once from each release's source (the file cites release and path);
* LiteLLM 1.103.0: parsed here from the installed package's own
  ``litellm/integrations/prometheus.py`` (the metric factories' names);
* dcgm-exporter: the counters CSVs in ``$GPUFLEET_UPSTREAM/nvidia`` (a field is
  exported only when gpufleet's counters file enables it, k8s/monitoring/dcgm.py).

Each family is expanded into the sample names its client library writes.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from k8s.monitoring import context, dashboards, dcgm, rules

from .conftest import FLEET, SITES, upstream_dir

HERE = Path(__file__).resolve().parent

# PromQL words that look like names: aggregation and binary operators, modifiers.
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "atan2", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals (label_replace arguments)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$[A-Za-z_]\w*", " ", s)  # Grafana variables
    out = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)", s):
        name, rest = m.group(1), s[m.end():]
        if name.lower() in PROMQL_WORDS or re.match(r"\s*\(", rest):
            continue  # a keyword, or a function / aggregation
        out.add(name)
    return out


def expand(families: dict[str, str], client: str) -> set[str]:
    names = set()
    for name, kind in families.items():
        if kind == "counter":
            names.add(name if client == "go" or name.endswith("_total") else name + "_total")
        elif kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        elif kind == "summary":
            names |= {name, name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


def litellm_families() -> dict[str, str]:
    """LiteLLM 1.103.0's Prometheus metric families, from its installed source."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")  # its source on disk; importing it would fetch a price list
    if spec is None:
        pytest.skip("litellm is not installed")
    tree = ast.parse((Path(spec.submodule_search_locations[0]) / "integrations" / "prometheus.py").read_text())
    kinds = {"_counter_factory": "counter", "_gauge_factory": "gauge", "_histogram_factory": "histogram"}
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in kinds:
            args = [a.value for a in node.args[:1] if isinstance(a, ast.Constant)]
            args += [k.value.value for k in node.keywords if k.arg == "name" and isinstance(k.value, ast.Constant)]
            if args:
                out[args[0]] = kinds[node.func.attr]
    assert len(out) > 50 and "litellm_requests_metric" in out, "the factories were not found in LiteLLM's source"
    return out


def dcgm_fields() -> set[str]:
    fields = set()
    for csv in (upstream_dir() / "nvidia").glob("dcgm-exporter-*.csv"):
        for line in csv.read_text().splitlines():
            m = re.match(r"\s*#?\s*(DCGM_[A-Z0-9_]+)\s*,", line)
            if m:
                fields.add(m.group(1))
    assert fields, "no dcgm-exporter counters CSV in $GPUFLEET_UPSTREAM/nvidia"
    return fields & {field for field, _, _ in dcgm.COUNTERS}


@pytest.fixture(scope="module")
def upstream() -> dict[str, set[str]]:
    doc = yaml.safe_load((HERE / "upstream_metrics.yaml").read_text())
    out = {name: expand(entry["metrics"], entry["client"]) for name, entry in doc.items()}
    for name, entry in doc.items():
        assert entry["source"] and entry["metrics"], name
    out["litellm"] = expand(litellm_families(), "python")
    out["dcgm-exporter"] = dcgm_fields()
    return out


def expressions(site: str) -> list[tuple[str, str]]:
    """(where, PromQL) of every rule, dashboard query and autoscaler series at ``site``."""
    ctx = context(FLEET, site)
    out = []
    for group in rules.rule_groups(ctx):
        for r in group["rules"]:
            out.append((f"rule {r.get('alert') or r.get('record')}", r["expr"]))
    for board_name, board in dashboards.dashboards(ctx).items():
        for panel in board["panels"]:
            for t in panel.get("targets") or []:
                out.append((f"dashboard {board_name} / {panel['title']}", t["expr"]))
    return out


def recorded(site: str) -> set[str]:
    return {r["record"] for g in rules.rule_groups(context(FLEET, site)) for r in g["rules"] if "record" in r}


def test_the_name_extraction_sees_what_promql_selects():
    expr = 'label_replace(sum by (site, le) (rate(vllm:x_bucket{job="v", le="2.5"}[5m])) / on (site) group_left () up{a="b"} > bool 0, "site", "s", "site", "")'
    assert metric_names(expr) == {"vllm:x_bucket", "up"}
    assert metric_names("count(count by (UUID) (DCGM_FI_DEV_GPU_TEMP{job=\"d\"})) * 6.88") == {"DCGM_FI_DEV_GPU_TEMP"}


@pytest.mark.parametrize("site", SITES)
def test_every_metric_a_rule_or_dashboard_reads_is_exported_upstream(site, upstream):
    known = set().union(*upstream.values()) | recorded(site)
    unknown = {}
    for where, expr in expressions(site):
        for name in metric_names(expr):
            if name not in known:
                unknown.setdefault(name, where)
    assert not unknown, "metrics no pinned upstream exports: " + json.dumps(unknown, indent=1)


def test_the_autoscaler_metric_is_one_vllm_exports(fleet, upstream):
    pytest.importorskip("gpufleet.model")
    from gpufleet.model import load_fleet

    from k8s import serving

    real = load_fleet(Path(__file__).resolve().parents[2] / "stacks" / "fleet.yaml")
    for site in real.sites:
        for b in serving.build(real, site):
            for chart in b.charts:
                for rule in chart.values.get("rules", {}).get("custom", []):
                    assert metric_names(rule["seriesQuery"]) <= upstream["vllm"], rule["seriesQuery"]
            for o in b.objects:
                if o["kind"] == "HorizontalPodAutoscaler":
                    for m in o["spec"]["metrics"]:
                        assert m["pods"]["metric"]["name"] in upstream["vllm"]


def test_the_lists_name_what_the_panels_were_wrong_about(upstream):
    # vLLM 0.24 has no time_per_output_token histogram, LiteLLM's miss counter is
    # defined but (for uncached answers) never incremented: neither may be read.
    assert "vllm:time_per_output_token_seconds_bucket" not in upstream["vllm"]
    assert "vllm:inter_token_latency_seconds_bucket" in upstream["vllm"]
    for site in SITES:
        names = set().union(*(metric_names(e) for _, e in expressions(site)))
        assert "vllm:time_per_output_token_seconds_bucket" not in names
        assert "litellm_cache_misses_metric_total" not in names
