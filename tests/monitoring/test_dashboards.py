"""Grafana dashboards: structure, and every query is valid PromQL (promtool)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from k8s.monitoring import build, context, dashboards

from .conftest import FLEET, SITES

PROMTOOL = shutil.which("promtool")


def _boards(site: str) -> dict[str, dict]:
    [bundle] = build(FLEET, site)
    out = {}
    for cm in bundle.objects:
        if cm["kind"] == "ConfigMap" and cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
            [(key, text)] = cm["data"].items()
            assert key.endswith(".json")
            out[key] = json.loads(text)
    return out


def _panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def _queries(board: dict) -> list[str]:
    return [t["expr"] for p in _panels(board) for t in p.get("targets") or []]


@pytest.mark.parametrize("site", SITES)
def test_four_dashboards_with_unique_uids_and_panel_ids(site: str) -> None:
    boards = _boards(site)
    titles = {b["title"] for b in boards.values()}
    assert titles == {
        "GPU fleet: occupancy by site",
        "GPU fleet: serving per model",
        "GPU fleet: queue backlog and cloud burst",
        "GPU fleet: cost per site",
    }
    assert len({b["uid"] for b in boards.values()}) == 4
    assert all("null" not in json.dumps(b) for b in boards.values())
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in _panels(board):
            if panel["type"] == "text":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)) and all(refs)


def test_queries_group_by_site_and_fill_local_series() -> None:
    for name, board in _boards("dc-fra").items():
        for expr in _queries(board):
            assert 'label_replace(' in expr and '"site", "dc-fra", "site", ""' in expr, (name, expr)


def test_serving_dashboard_covers_latency_throughput_and_cache_per_model() -> None:
    board = next(b for b in _boards("fra-hub").values() if b["uid"] == "gpufleet-serving")
    text = "\n".join(_queries(board))
    for metric in ("vllm:time_to_first_token_seconds_bucket", "vllm:generation_tokens_total", "vllm:prefix_cache_hits_total", "litellm_cache_hits_metric_total"):
        assert metric in text
    assert "by (site, model" in text


def test_model_variable_lists_the_models_served() -> None:
    def options(site: str) -> str:
        board = next(b for b in _boards(site).values() if b["uid"] == "gpufleet-serving")
        [var] = [v for v in board["templating"]["list"] if v["name"] == "model"]
        return var["query"]

    assert options("dc-fra") == "llama-3-1-70b-instruct,clinical-notes-8b"
    assert options("aws-use1") == "llama-3-1-70b-instruct,llama-3-1-8b-instruct"
    assert options(FLEET.hub) == ",".join(m.name for m in FLEET.models)


def test_cloud_burst_panels_name_the_aws_sites() -> None:
    board = next(b for b in _boards("fra-hub").values() if b["uid"] == "gpufleet-queues")
    text = "\n".join(_queries(board))
    assert '"site", "aws-euc1"' in text and '"site", "aws-use1"' in text
    [share] = [q for q in _queries(board) if "\n/\n" in q]
    numerator, denominator = share.split("\n/\n")
    assert '"site", "dc-fra", "", ""' not in numerator and '"site", "dc-fra", "", ""' in denominator
    assert f'"site", "{FLEET.hub}", "", ""' not in share


def test_cost_dashboard_shows_the_price_table() -> None:
    ctx = context(FLEET, "fra-hub")
    board = dashboards.cost(ctx)
    [text] = [p for p in board["panels"] if p["type"] == "text"]
    for accel in ctx.cfg["gpu_prices_usd_per_hour"]:
        assert f"| {accel} |" in text["options"]["content"]
    assert any("gpufleet:gpu_cost_usd_per_hour:sum" in q for q in _queries(board))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`)")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for name, board in _boards("fra-hub").items():
        for i, expr in enumerate(_queries(board)):
            expr = expr.replace("$__range_s", "86400").replace("$__range", "1d").replace("$model", ".*")
            rules.append({"record": f"dashboard:{name.split('.')[0].replace('-', '_')}:q{i}", "expr": expr})
    assert len(rules) > 20
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", "queries.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
