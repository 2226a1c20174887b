"""The model's reserved names agree with what the engines actually create.

``gpufleet/names.py`` lists the namespaces the add-ons install into and the
node labels gpufleet sets, without importing the engines. These tests build
what the engines build for the example fleet (every site's add-on bundles,
every AWS node pool's labels, every server's derived labels) and fail when an
engine creates a namespace a team could take, or sets a node label a pool
label could override.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet import names
from gpufleet.model import load_fleet

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet():
    return load_fleet(ROOT / "stacks" / "fleet.yaml")


def test_every_namespace_the_add_ons_create_is_reserved(fleet):
    from k8s import site_bundles

    teams = {t.namespace for t in fleet.teams}
    created: set[str] = set()
    for site in fleet.sites:
        for bundle in site_bundles(fleet, site.name):
            created |= {o["metadata"]["name"] for o in bundle.objects if o.get("kind") == "Namespace"}
            created |= {c.namespace for c in bundle.charts}
    system = created - teams
    assert system, "the add-ons created no namespace of their own"
    assert {ns for ns in system if names.reserved_namespace(ns) is None} == set()


def test_every_node_label_gpufleet_sets_is_reserved(fleet):
    from cloud.nodepools import NodePoolArgs
    from gpufleet.baremetal_vars import node_labels

    keys: set[str] = set()
    for site in fleet.sites:
        if site.aws:
            for pool in site.aws.node_pools:
                args = NodePoolArgs.from_config(pool.model_copy(update={"labels": {}}), site.name, site.name, list(site.aws.network.availability_zones))
                keys |= set(args.labels)
        for server in site.servers:
            keys |= set(node_labels(site, server))
    assert keys
    unreserved = {k for k in keys if k not in names.GPUFLEET_NODE_LABELS and not k.startswith(names.RESERVED_LABEL_PREFIXES)}
    assert unreserved == set()


@pytest.mark.parametrize(
    ("value", "ok"),
    [("a", True), ("a-b.c_d", True), ("", True), ("-a", False), ("a" * 63, True), ("a" * 64, False), ("rack 1", False), ("a/b", False)],
)
def test_label_values_follow_the_api_servers_rule(value, ok):
    assert (names.label_value(value) is None) is ok


@pytest.mark.parametrize(
    ("key", "ok"),
    [("tier", True), ("example.com/tier", True), ("a.b/c-d_e.f", True), ("Example.com/x", False), ("/x", False), ("x/", False), ("a/b/c", False), (f"{'a' * 64}", False)],
)
def test_label_keys_follow_the_api_servers_rule(key, ok):
    assert (names.label_key(key) is None) is ok
