"""Each site's add-on bundles: what is there, and that every object is valid."""

from __future__ import annotations

import re

import pytest
import yaml

import k8s
from gpufleet.render import write_k8s
from k8s_harness import objects_of
from tests.schemas import assert_valid

SITES = ["fra-hub", "dc-fra", "aws-euc1", "aws-use1"]
CORE = ["policy", "kueue", "trainer"]


@pytest.mark.parametrize("site", SITES)
def test_every_object_of_every_add_on_validates_against_crds_and_kubernetes_schemas(bundles, site):
    objs = objects_of(bundles[site])
    assert len(objs) > 10
    assert_valid(objs)


@pytest.mark.parametrize("site", SITES)
def test_core_add_ons_at_every_site(bundles, site):
    assert set(CORE) <= set(bundles[site])


def test_gpu_operator_where_there_are_gpus_and_not_at_the_cpu_only_hub(bundles, fleet):
    assert "gpu-operator" not in bundles[fleet.hub]
    for site in fleet.sites:
        if site.name != fleet.hub:
            assert site.gpu_capacity(), site.name
            assert "gpu-operator" in bundles[site.name]


def test_multikueue_only_at_the_hub(bundles, fleet):
    for site in SITES:
        assert ("multikueue" in bundles[site]) == (site == fleet.hub)
        kinds = {o["kind"] for o in objects_of(bundles[site])}
        assert ("MultiKueueConfig" in kinds) == (site == fleet.hub)


def test_unknown_site_is_a_message_not_a_traceback(fleet):
    with pytest.raises(k8s.BundleError, match=r"site 'dc-muc': not in the fleet \(sites: fra-hub, dc-fra"):
        k8s.site_bundles(fleet, "dc-muc")


def test_optional_add_ons_are_skipped_when_absent(fleet, monkeypatch):
    monkeypatch.setattr(k8s, "OPTIONAL_ADDONS", ("k8s.not_written_yet",))
    names = [b.name for b in k8s.site_bundles(fleet, "dc-fra")]
    assert names == ["policy", "gpu-operator", "kueue", "trainer", "dispatcher"]


def test_optional_add_on_returning_garbage_is_reported(fleet, monkeypatch, tmp_path):
    pkg = tmp_path / "k8sextra_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def build(fleet, site):\n    return {'not': 'a bundle'}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(k8s, "OPTIONAL_ADDONS", ("k8sextra_demo",))
    with pytest.raises(k8s.BundleError, match="k8sextra_demo.build: returned dict, not an AddonBundle"):
        k8s.site_bundles(fleet, "dc-fra")


# ----------------------------------------------------------------- secrets


SECRETISH = re.compile(r"(password|passwd|token|secret|private[_-]?key|kubeconfig|credential)", re.I)
# A value that is only an object name (optionally namespace/name) refers to a Secret; it holds none.
REF_KEY = re.compile(r"(File|Path|Name|Ref)$")  # bearerTokenFile, secretName, ...
NAME_REF = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[a-z0-9]([-a-z0-9.]*[a-z0-9])?)?")


def _secret_values(value, path=""):
    """Paths of non-empty string values under secret-looking keys (names and references are fine)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            reference = NAME_REF.fullmatch(v) or REF_KEY.search(str(k)) if isinstance(v, str) else True
            if SECRETISH.search(str(k)) and isinstance(v, str) and v and not reference:
                out.append(here)
            out += _secret_values(v, here)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _secret_values(v, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("site", SITES)
def test_no_secret_values_in_objects_or_chart_values(bundles, site):
    for bundle in bundles[site].values():
        for obj in bundle.objects:
            assert not (obj["kind"] == "Secret" and (obj.get("data") or obj.get("stringData"))), f"{bundle.name}: Secret {obj['metadata']['name']} carries data"
            assert _secret_values(obj) == [], (bundle.name, obj["kind"], obj["metadata"]["name"])
        for chart in bundle.charts:
            assert _secret_values(chart.values) == [], (bundle.name, chart.release)


def test_secret_scan_would_catch_a_kubeconfig_value():
    assert _secret_values({"spec": {"kubeconfig": "apiVersion: v1\nclusters: []"}}) == ["spec.kubeconfig"]
    assert _secret_values({"spec": {"kubeConfig": {"location": "multikueue-dc-fra"}}}) == []
    assert _secret_values({"env": {"HF_TOKEN": "hf_AbCdEf0123456789"}}) == ["env.HF_TOKEN"]


def test_rendered_site_directory_round_trips_and_holds_no_secrets(fleet, tmp_path):
    out = tmp_path / "k8s"
    written = write_k8s(fleet, "fra-hub", out)
    assert "multikueue.yaml" in written and "policy.yaml" in written
    hub = list(yaml.safe_load_all((out / "multikueue.yaml").read_text()))
    assert_valid(hub)
    clusters = [o for o in hub if o["kind"] == "MultiKueueCluster"]
    assert {c["spec"]["clusterSource"]["kubeConfig"]["locationType"] for c in clusters} == {"Secret"}
    for path in out.rglob("*.yaml"):
        text = path.read_text()
        assert "client-key-data" not in text and "BEGIN RSA" not in text and "token:" not in text, path


def _tags(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if k in ("tag", "version") and isinstance(v, str):
                yield here, v
            yield from _tags(v, here)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _tags(v, f"{path}[{i}]")


@pytest.mark.parametrize("site", SITES)
def test_images_of_the_core_charts_are_pinned_exactly(bundles, site):
    for name in ("gpu-operator", "kueue", "trainer"):
        for chart in getattr(bundles[site].get(name), "charts", []):
            tags = dict(_tags(chart.values))
            assert tags, chart.release
            for where, tag in tags.items():
                assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[0-9a-z.-]+)?(@sha256:[0-9a-f]{64})?", tag), (chart.release, where, tag)
