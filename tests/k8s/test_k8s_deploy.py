"""Applying a site's bundles with pulumi-kubernetes, under Pulumi's mock engine."""

from __future__ import annotations

import re

import pytest

from k8s.core import AddonBundle, Chart
from k8s.deploy import DeployError
from k8s_harness import run_deploy

SITES = ["fra-hub", "dc-fra", "aws-euc1", "aws-use1"]
RELEASE = "kubernetes:helm.sh/v3:Release"
EXACT = re.compile(r"^v?\d+\.\d+\.\d+$")


@pytest.fixture(scope="module")
def runs(bundles):
    return {site: run_deploy(list(b.values()), provider_name=f"k8s-{site}") for site, b in bundles.items()}


@pytest.mark.parametrize("site", SITES)
def test_every_resource_goes_through_the_sites_provider(runs, bundles, site):
    run = runs[site]
    assert run.provider_urn.endswith(f"pulumi:providers:kubernetes::k8s-{site}")
    expected = sum(len(b.objects) + len(b.charts) for b in bundles[site].values())
    assert len(run.resources) == expected == len(run.returned)
    wrong = [r.name for r in run.resources if r.provider.split("::")[:-1] != run.provider_urn.split("::")]
    assert wrong == []


@pytest.mark.parametrize("site", SITES)
def test_every_chart_is_a_release_at_an_exact_version(runs, bundles, site):
    releases = {r.inputs["name"]: r.inputs for r in runs[site].of_type(RELEASE)}
    charts = [c for b in bundles[site].values() for c in b.charts]
    assert len(releases) == len(charts)
    for chart in charts:
        inputs = releases[chart.release]
        assert EXACT.match(inputs["version"]), (chart.release, inputs["version"])
        assert inputs["version"] == chart.version and inputs["namespace"] == chart.namespace
        if chart.repository.startswith("oci://"):
            assert inputs["chart"] == f"{chart.repository}/{chart.chart}" and "repositoryOpts" not in inputs
        else:
            assert inputs["chart"] == chart.chart and inputs["repositoryOpts"]["repo"] == chart.repository
        assert inputs.get("createNamespace") is not True


def test_site_specific_values_reach_the_release(runs):
    kueue_hub = next(r for r in runs["fra-hub"].of_type(RELEASE) if r.inputs["name"] == "kueue")
    assert "dispatcherName: gpufleet.io/onprem-first" in kueue_hub.inputs["values"]["managerConfig"]["controllerManagerConfigYaml"]
    assert not [r for r in runs["fra-hub"].of_type(RELEASE) if r.inputs["name"] == "gpu-operator"]


def test_custom_resources_keep_every_top_level_field(runs):
    wpc = next(r for r in runs["dc-fra"].resources if r.typ == "kubernetes:kueue.x-k8s.io/v1beta2:WorkloadPriorityClass")
    assert wpc.inputs["value"] in (100, 200) and wpc.inputs["apiVersion"] == "kueue.x-k8s.io/v1beta2"
    vap = next(r for r in runs["dc-fra"].resources if r.typ == "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy")
    assert vap.inputs["spec"]["failurePolicy"] == "Fail"  # camelCase reaches the provider unchanged


@pytest.mark.parametrize("site", SITES)
def test_namespaces_then_charts_then_objects(runs, site):
    run = runs[site]
    namespaces = {r.name for r in run.resources if r.typ == "kubernetes:core/v1:Namespace"}
    releases = {r.name for r in run.of_type(RELEASE)}
    assert namespaces and releases
    for r in run.resources:
        if r.name in namespaces:
            assert r.depends_on == []
        elif r.name in releases:
            assert set(r.depends_on) == namespaces
        else:
            assert set(r.depends_on) == namespaces | releases, r.name


def test_parent_and_prefix_are_applied(bundles):
    run = run_deploy(list(bundles["dc-fra"].values())[:1], prefix="dc-fra:")
    assert run.resources and all(r.name.startswith("dc-fra:") for r in run.resources)


def _bundle(**kw):
    return AddonBundle("demo", **kw)


def test_a_version_range_is_refused():
    chart = Chart("x", "x", "https://charts.example.com", "^1.2.0", "default")
    with pytest.raises(DeployError, match=r"demo.charts\[0\]: chart x version '\^1.2.0' is not an exact version"):
        run_deploy([_bundle(charts=[chart])])


def test_the_same_object_from_two_add_ons_is_refused():
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}
    with pytest.raises(DeployError, match=r"other.objects\[0\]: core:Namespace:a is also declared by the demo add-on"):
        run_deploy([_bundle(objects=[ns]), AddonBundle("other", objects=[dict(ns)])])


def test_the_pulumi_program_applies_the_sites_bundles_through_its_provider(fleet, bundles):
    from cloud.program import deploy_addons

    run = run_deploy(None, provider_name="k8s-dc-fra", call=lambda provider: deploy_addons(fleet, "dc-fra", provider))
    expected = sum(len(b.objects) + len(b.charts) for b in bundles["dc-fra"].values())
    assert len(run.resources) == expected
    assert all(r.provider.startswith(run.provider_urn) for r in run.resources)
