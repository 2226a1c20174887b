"""The schema oracle itself: it must reject what an API server would reject."""

from __future__ import annotations

import copy

import pytest

from tests.schemas import assert_valid, validate_object

FLAVOR = {
    "apiVersion": "kueue.x-k8s.io/v1beta2",
    "kind": "ResourceFlavor",
    "metadata": {"name": "h100-80gb"},
    "spec": {"nodeLabels": {"gpufleet.io/accelerator": "h100-80gb"}},
}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x"}, "data": {"k": "v"}}


def test_valid_custom_and_core_objects_pass():
    assert validate_object(FLAVOR) == []
    assert validate_object(NAMESPACE) == []
    assert validate_object(CONFIGMAP) == []
    assert_valid([FLAVOR, NAMESPACE, CONFIGMAP])


def test_unknown_field_in_custom_resource_is_rejected():
    bad = copy.deepcopy(FLAVOR)
    bad["spec"]["nodeLabel"] = {"a": "b"}
    errors = validate_object(bad)
    assert any("nodeLabel" in e for e in errors), errors


def test_wrong_type_in_custom_resource_is_rejected():
    bad = copy.deepcopy(FLAVOR)
    bad["spec"]["nodeLabels"] = ["gpufleet.io/accelerator"]
    assert any(e.startswith("spec.nodeLabels") for e in validate_object(bad))


def test_unserved_or_unknown_version_is_rejected():
    bad = dict(FLAVOR, apiVersion="kueue.x-k8s.io/v1")
    assert "has no version v1" in validate_object(bad)[0]


def test_crd_cel_rule_is_evaluated():
    # Kueue: "at least one nodeLabel is required when topology is set"
    bad = copy.deepcopy(FLAVOR)
    bad["spec"] = {"topologyName": "fabric"}
    assert any("at least one nodeLabel" in e for e in validate_object(bad))
    good = copy.deepcopy(FLAVOR)
    good["spec"]["topologyName"] = "fabric"
    assert validate_object(good) == []


def test_namespace_scope_is_enforced():
    lq = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "q"}, "spec": {"clusterQueue": "q"}}
    assert any("namespaced" in e for e in validate_object(lq))
    lq["metadata"]["namespace"] = "team-a"
    assert validate_object(lq) == []
    cluster_scoped = copy.deepcopy(FLAVOR)
    cluster_scoped["metadata"]["namespace"] = "x"
    assert any("cluster-scoped" in e for e in validate_object(cluster_scoped))
    ns = copy.deepcopy(NAMESPACE)
    ns["metadata"]["namespace"] = "x"
    assert any("cluster-scoped" in e for e in validate_object(ns))


def test_core_object_unknown_field_and_bad_label_are_rejected():
    bad = copy.deepcopy(CONFIGMAP)
    bad["spec"] = {}
    assert any("spec" in e for e in validate_object(bad))
    bad = copy.deepcopy(NAMESPACE)
    bad["metadata"]["labels"]["gpufleet.io/site"] = "not a label value!"
    assert any("valid label value" in e for e in validate_object(bad))


def test_unknown_kind_is_a_problem():
    errors = validate_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert errors and "no schema" in errors[0]


def test_assert_valid_reports_every_object():
    bad1 = dict(FLAVOR, apiVersion="kueue.x-k8s.io/v9")
    bad2 = dict(CONFIGMAP, data={"k": 1})
    with pytest.raises(AssertionError) as exc:
        assert_valid([bad1, FLAVOR, bad2])
    text = str(exc.value)
    assert "2 schema problem(s)" in text and "ResourceFlavor h100-80gb" in text and "ConfigMap x/c" in text
    with pytest.raises(AssertionError):
        assert_valid([])
