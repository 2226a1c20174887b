"""The GPU operator's values: what the operator manages, MIG and time-slicing."""

from __future__ import annotations

import pytest
import yaml

from gpufleet.baremetal_vars import host_variables, node_labels
from gpufleet.mig import MIG_PROFILES
from k8s import gpu_operator, versions
from tests.schemas import assert_valid

GPU_SITES = ["dc-fra", "aws-euc1", "aws-use1"]


def _chart(bundles, site):
    (chart,) = bundles[site]["gpu-operator"].charts
    return chart


def cluster_policy(values: dict) -> dict:
    """The ClusterPolicy the chart renders from these values, for the keys it copies as they are."""
    spec = {
        "operator": {},
        "daemonsets": {k: v for k, v in values["daemonsets"].items()},
        "dcgm": {"enabled": False},
        "nodeStatusExporter": {"enabled": False},
        "mig": values["mig"],
        "driver": values["driver"],
        "toolkit": values["toolkit"],
        "gfd": values["gfd"],
        "migManager": {k: v for k, v in values["migManager"].items() if k != "config"} | {"config": {k: values["migManager"]["config"][k] for k in ("name", "default")}},
        "devicePlugin": {k: v for k, v in values["devicePlugin"].items() if k != "config"} | {"config": {k: values["devicePlugin"]["config"][k] for k in ("name", "default")}},
        "dcgmExporter": values["dcgmExporter"],
    }
    return {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": {"name": "cluster-policy"}, "spec": spec}


@pytest.mark.parametrize("site", GPU_SITES)
def test_chart_values_make_a_valid_cluster_policy(bundles, site):
    assert_valid([cluster_policy(_chart(bundles, site).values)])


@pytest.mark.parametrize("site", GPU_SITES)
def test_operator_installs_neither_driver_nor_toolkit(bundles, site):
    values = _chart(bundles, site).values
    assert values["driver"]["enabled"] is False
    assert values["toolkit"]["enabled"] is False
    assert values["mig"]["strategy"] == "mixed"


def test_chart_is_pinned(bundles):
    chart = _chart(bundles, "dc-fra")
    assert (chart.chart, chart.version, chart.repository) == ("gpu-operator", versions.GPU_OPERATOR_VERSION, "https://helm.ngc.nvidia.com/nvidia")
    for component in ("toolkit", "devicePlugin", "migManager", "gfd", "dcgmExporter"):
        # <tag>@<digest>, the digests the operator's v26.7.0 bundle pins.
        assert chart.values[component]["version"] == f"{versions.GPU_OPERATOR_IMAGES[component][2]}@{versions.GPU_OPERATOR_DIGESTS[component]}"


def _mig_configs(bundles, site):
    cfg = _chart(bundles, site).values["migManager"]["config"]
    assert cfg["create"] is True and cfg["name"] == gpu_operator.MIG_CONFIG_NAME
    return yaml.safe_load(cfg["data"]["config.yaml"])


def test_mig_manager_applies_the_layouts_the_bare_metal_role_applies(bundles, fleet):
    site = fleet.site("dc-fra")
    parted = _mig_configs(bundles, "dc-fra")
    assert parted["version"] == "v1"
    for server in (s for s in site.servers if s.spec.accelerator):
        label = node_labels(site, server)["nvidia.com/mig.config"]
        role = host_variables(fleet, site, server)["gpufleet_mig_parted_config"]["mig-configs"]
        assert parted["mig-configs"][label] == role[label], server.name
    half = parted["mig-configs"]["gpufleet-0-1-2-3_1x1g.10gb_3x2g.20gb"]
    assert half == [
        {"devices": [0, 1, 2, 3], "mig-enabled": True, "mig-devices": {"2g.20gb": 3, "1g.10gb": 1}},
        {"devices": [4, 5, 6, 7], "mig-enabled": False},
    ]


@pytest.mark.parametrize("site", GPU_SITES)
def test_mig_parted_configs_follow_the_v1_format(bundles, site):
    for name, entries in _mig_configs(bundles, site)["mig-configs"].items():
        for e in entries:
            assert e["devices"] == "all" or all(isinstance(d, int) for d in e["devices"]), name
            if e["mig-enabled"]:
                assert isinstance(e["mig-devices"], dict), name
                assert set(e["mig-devices"]) <= set(MIG_PROFILES["h100-80gb"]), name
            else:
                assert "mig-devices" not in e, name


def test_mig_manager_runs_only_where_gpus_support_mig(bundles):
    assert _chart(bundles, "dc-fra").values["migManager"]["enabled"] is True  # H100
    assert _chart(bundles, "aws-use1").values["migManager"]["enabled"] is False  # L40S and L4


def test_time_slicing_where_a_served_model_asks_for_it(bundles, fleet):
    dp = _chart(bundles, "aws-use1").values["devicePlugin"]["config"]
    assert dp["default"] == "default"
    sliced = yaml.safe_load(dp["data"]["l4-time-sliced"])
    model = next(m for m in fleet.models if m.name == "llama-3-1-8b-instruct")
    assert sliced["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": model.time_slicing}]
    assert yaml.safe_load(dp["data"]["default"]) == {"version": "v1", "flags": {"migStrategy": "mixed"}}
    assert gpu_operator.device_plugin_node_labels(fleet, fleet.site("aws-use1")) == {"l4": {"nvidia.com/device-plugin.config": "l4-time-sliced"}}
    # no model at dc-fra or aws-euc1 asks for time-slicing
    for site in ("dc-fra", "aws-euc1"):
        assert set(_chart(bundles, site).values["devicePlugin"]["config"]["data"]) == {"default"}


def test_time_slicing_takes_the_largest_ask_per_accelerator(fleet_variant):
    def edit(data):
        # l40s, at aws-euc1, aws-use1, dc-fra; two time-sliced replicas share a GPU's memory, so the KV cache shrinks
        data["models"][0].update(time_slicing=2, kv_cache_gib=8)

    variant = fleet_variant(edit)
    assert gpu_operator.time_slicing_configs(variant, variant.site("aws-use1")) == {"l4-time-sliced": 2, "l40s-time-sliced": 2}
    assert gpu_operator.time_slicing_configs(variant, variant.site("dc-fra")) == {"l40s-time-sliced": 2}


@pytest.mark.parametrize("site", GPU_SITES)
def test_operator_daemonsets_tolerate_the_gpu_taint(bundles, site):
    tolerations = _chart(bundles, site).values["daemonsets"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in tolerations


def test_dcgm_exporter_uses_the_monitoring_counters_when_that_add_on_ships_them(bundles):
    dcgm = _chart(bundles, "dc-fra").values["dcgmExporter"]
    cm = [o for o in bundles["dc-fra"].get("monitoring", type("B", (), {"objects": []})).objects if o["kind"] == "ConfigMap" and o["metadata"].get("namespace") == gpu_operator.NAMESPACE]
    if not cm:
        pytest.skip("the monitoring add-on ships no dcgm-exporter counters here")
    assert dcgm["config"]["name"] == cm[0]["metadata"]["name"]
    key = dcgm["env"][0]["value"].rsplit("/", 1)[-1]
    assert key in cm[0]["data"]
    assert dcgm["serviceMonitor"]["enabled"] is False
