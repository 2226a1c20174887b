"""kube-prometheus-stack values: pinned chart, external labels, remote write to the hub."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
import yaml

from k8s.monitoring import build

from .conftest import FLEET, SITES, upstream_dir


def _chart(site: str):
    [bundle] = build(FLEET, site)
    [chart] = bundle.charts
    return chart


def test_chart_is_pinned_to_the_release_the_crds_come_from() -> None:
    chart = _chart("dc-fra")
    assert chart.chart == "kube-prometheus-stack"
    assert chart.repository == "https://prometheus-community.github.io/helm-charts"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart.version)
    assert chart.version == "88.5.3"
    readme = (upstream_dir() / "README.md").read_text()
    assert f"kube-prometheus-stack {chart.version}" in readme


@pytest.mark.parametrize("site", SITES)
def test_external_labels_name_fleet_and_site(site: str) -> None:
    spec = _chart(site).values["prometheus"]["prometheusSpec"]
    assert spec["externalLabels"] == {"fleet": FLEET.name, "site": site}


def test_sites_remote_write_to_the_hub_receiver() -> None:
    hub = _chart(FLEET.hub).values["prometheus"]
    assert hub["prometheusSpec"]["enableRemoteWriteReceiver"] is True
    assert "remoteWrite" not in hub["prometheusSpec"]
    assert hub["ingress"]["enabled"] is True
    [host] = hub["ingress"]["hosts"]
    for site in SITES:
        if site == FLEET.hub:
            continue
        spec = _chart(site).values["prometheus"]["prometheusSpec"]
        assert "enableRemoteWriteReceiver" not in spec
        [rw] = spec["remoteWrite"]
        url = urlparse(rw["url"])
        assert url.scheme == "https" and url.hostname == host
        assert url.path == "/api/v1/write" and url.path in hub["ingress"]["paths"]
        assert rw["basicAuth"]["password"]["name"] == rw["basicAuth"]["username"]["name"]


def test_hub_keeps_longer_history() -> None:
    def days(site: str) -> int:
        return int(_chart(site).values["prometheus"]["prometheusSpec"]["retention"].rstrip("d"))

    assert days(FLEET.hub) > days("dc-fra")


def test_grafana_sidecar_loads_the_dashboard_configmaps() -> None:
    [bundle] = build(FLEET, "dc-fra")
    sidecar = bundle.charts[0].values["grafana"]["sidecar"]["dashboards"]
    dashboards = [o for o in bundle.objects if o["kind"] == "ConfigMap" and sidecar["label"] in o["metadata"].get("labels", {})]
    assert len(dashboards) == 4
    for cm in dashboards:
        assert cm["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"] == "1"
        assert sidecar["folderAnnotation"] in cm["metadata"]["annotations"]


def test_config_override_and_unknown_site() -> None:
    chart = _chart("dc-fra")
    [bundle] = build(FLEET, "dc-fra", config={"gpu": {"temperature_celsius": 80}, "retention": {"site": "7d"}})
    assert bundle.charts[0].values["prometheus"]["prometheusSpec"]["retention"] == "7d"
    assert chart.values["prometheus"]["prometheusSpec"]["retention"] == "15d"
    rules = yaml.safe_dump([o for o in bundle.objects if o["kind"] == "PrometheusRule"])
    assert "DCGM_FI_DEV_GPU_TEMP{job=\"nvidia-dcgm-exporter\"} > 80" in rules
    with pytest.raises(ValueError, match="not one of the fleet's sites"):
        build(FLEET, "nowhere")


def test_prices_are_the_economics_price_file() -> None:
    from gpufleet.catalog import ACCELERATORS
    from gpufleet.economics.prices import default_prices

    from k8s.monitoring import CONFIG

    prices = CONFIG["gpu_prices_usd_per_hour"]
    assert set(prices) == set(ACCELERATORS)
    p = default_prices()
    for accel, entry in prices.items():
        assert entry["aws"] == round(p.reference_gpu_usd_per_hour(accel), 2), accel
        assert entry["datacenter"] == round(p.owned_usd_per_gpu_hour(accel), 2), accel
        assert 0 < entry["datacenter"] < entry["aws"], accel


def test_price_regexes_pick_one_accelerator_per_gpu_model() -> None:
    import re

    from k8s.monitoring import CONFIG

    names = {  # modelName as dcgm-exporter reports it
        "NVIDIA H100 80GB HBM3": "h100-80gb",
        "NVIDIA H200": "h200-141gb",
        "NVIDIA A100-SXM4-40GB": "a100-40gb",
        "NVIDIA A100-SXM4-80GB": "a100-80gb",
        "NVIDIA L40S": "l40s",
        "NVIDIA L4": "l4",
        "NVIDIA A10G": "a10g",
    }
    prices = CONFIG["gpu_prices_usd_per_hour"]
    for model_name, accel in names.items():
        hits = [a for a, e in prices.items() if re.fullmatch(e["model_regex"], model_name)]
        assert hits == [accel], (model_name, hits)
