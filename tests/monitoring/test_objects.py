"""Every emitted object validates against the upstream CRDs / Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from kubernetes_validate import validate as k8s_validate

from k8s.monitoring import build

from .conftest import FLEET, SITES, upstream_dir

CRD_FILES = {
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
}


def _strict(schema: dict) -> dict:
    """Reject fields a schema does not declare (kubectl's strict field validation)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(s) for s in schema]
    return schema


def _crd_schema(kind: str, version: str) -> dict:
    path = upstream_dir() / "crds" / CRD_FILES[kind]
    crd = yaml.safe_load(Path(path).read_text())
    [v] = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = _strict(v["schema"]["openAPIV3Schema"])
    # metadata is validated by the API server, not the CRD schema.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def _validate(obj: dict, schema: dict) -> None:
    # Not jsonschema.validate(): that checks the schema itself first, and some
    # CRD patterns use Go regexp syntax Python's re rejects (`^(?i)...`).
    jsonschema.Draft7Validator(schema).validate(obj)


@pytest.mark.parametrize("site", SITES)
def test_custom_resources_match_upstream_crds(site: str) -> None:
    [bundle] = build(FLEET, site)
    seen = set()
    for obj in bundle.objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            version = obj["apiVersion"].split("/")[1]
            _validate(obj, _crd_schema(obj["kind"], version))
            seen.add(obj["kind"])
    assert seen == {"PrometheusRule", "ServiceMonitor", "PodMonitor"}


@pytest.mark.parametrize("site", SITES)
def test_core_objects_match_kubernetes_schemas(site: str) -> None:
    [bundle] = build(FLEET, site)
    core = [o for o in bundle.objects if o["apiVersion"] == "v1"]
    assert {o["kind"] for o in core} == {"Namespace", "ConfigMap"}
    for obj in core:
        k8s_validate(obj, "1.33", strict=True)


@pytest.mark.parametrize("site", SITES)
def test_project_schema_oracle_accepts_every_object(site: str) -> None:
    from tests.schemas import assert_valid

    [bundle] = build(FLEET, site)
    assert_valid(bundle.objects)


def test_a_bad_object_is_rejected() -> None:
    """The CRD check is not vacuous."""
    [bundle] = build(FLEET, "dc-fra")
    [monitor] = [o for o in bundle.objects if o["kind"] == "PodMonitor"]
    bad = yaml.safe_load(yaml.safe_dump(monitor))
    bad["spec"]["podMetricsEndpoints"][0]["portName"] = "http"
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad, _crd_schema("PodMonitor", "v1"))


@pytest.mark.parametrize("site", SITES)
def test_chart_selects_every_monitoring_object(site: str) -> None:
    [bundle] = build(FLEET, site)
    [chart] = bundle.charts
    spec = chart.values["prometheus"]["prometheusSpec"]
    for key in ("ruleSelectorNilUsesHelmValues", "serviceMonitorSelectorNilUsesHelmValues", "podMonitorSelectorNilUsesHelmValues"):
        assert spec[key] is True
    for obj in bundle.objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            assert obj["metadata"]["labels"]["release"] == chart.release
            assert obj["metadata"]["namespace"] == chart.namespace


def test_monitors_scrape_the_right_targets() -> None:
    [bundle] = build(FLEET, "dc-fra")
    by_name = {o["metadata"]["name"]: o for o in bundle.objects if o["kind"] in ("ServiceMonitor", "PodMonitor")}
    vllm = by_name["gpufleet-vllm"]["spec"]
    assert vllm["selector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm"}
    assert vllm["podMetricsEndpoints"][0]["port"] == "http" and vllm["podMetricsEndpoints"][0]["path"] == "/metrics"
    gw = by_name["gpufleet-llm-gateway"]["spec"]
    assert gw["selector"]["matchLabels"] == {"app.kubernetes.io/name": "llm-gateway"}
    # LiteLLM serves its exporter at /metrics/, behind the gateway's metrics key
    # (tests/serving/test_gateway_live.py scrapes it with exactly this).
    assert gw["endpoints"][0]["port"] == "http" and gw["endpoints"][0]["path"] == "/metrics/"
    assert gw["endpoints"][0]["authorization"] == {"type": "Bearer", "credentials": {"name": "llm-gateway-metrics", "key": "token"}}
    kueue = by_name["gpufleet-kueue"]["spec"]
    assert kueue["namespaceSelector"] == {"matchNames": ["kueue-system"]}
    dcgm = by_name["gpufleet-dcgm-exporter"]["spec"]
    assert dcgm["endpoints"][0]["honorLabels"] is True
    relabel_targets = {r["targetLabel"] for r in dcgm["endpoints"][0]["relabelings"]}
    assert {"job", "node"} <= relabel_targets
