"""The builder on the example fleet (stacks/fleet.yaml), through the real model."""

from __future__ import annotations

import pytest

from k8s.monitoring import build, context, rules

from . import rule_tests

from .conftest import REPO


@pytest.fixture(scope="module")
def example_fleet():
    from gpufleet.model import load_fleet

    return load_fleet(REPO / "stacks" / "fleet.yaml")


def test_every_site_builds_valid_objects(example_fleet) -> None:
    from tests.schemas import assert_valid

    for site in example_fleet.sites:
        [bundle] = build(example_fleet, site)
        assert_valid(bundle.objects)
        [chart] = bundle.charts
        labels = chart.values["prometheus"]["prometheusSpec"]["externalLabels"]
        assert labels == {"fleet": example_fleet.name, "site": site.name}
        assert ("remoteWrite" in chart.values["prometheus"]["prometheusSpec"]) == (site.name != example_fleet.hub)


def test_every_alert_is_tested_on_the_example_fleet(example_fleet) -> None:
    for site in example_fleet.sites:
        ctx = context(example_fleet, site)
        tested = {c.alert for c in rule_tests.cases(ctx) if c.expected and c.pending}
        assert {a["alert"] for a in rules.alerts(rules.rule_groups(ctx))} <= tested


def test_counters_configmap_goes_where_the_gpu_operator_runs(example_fleet) -> None:
    from k8s import gpu_operator
    from k8s.monitoring import dcgm

    for site in example_fleet.sites:
        [bundle] = build(example_fleet, site)
        shipped = any(o["metadata"]["name"] == dcgm.CONFIGMAP_NAME for o in bundle.objects)
        operator = gpu_operator.build(example_fleet, site)
        assert shipped == (operator is not None), site.name
        if operator is not None:
            [chart] = operator.charts
            assert chart.values["dcgmExporter"]["config"] == {"name": dcgm.CONFIGMAP_NAME}
            assert chart.namespace == "gpu-operator"
