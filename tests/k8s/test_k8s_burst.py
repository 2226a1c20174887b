"""Cloud burst: cluster-autoscaler and the EFA device plugin at AWS sites."""

from __future__ import annotations

import pytest

from cloud.nodepools import NodePoolArgs, autoscaler_node_template
from cloud.program import cluster_name
from k8s import autoscaler, efa, trainer, versions
from k8s_harness import named
from tests.schemas import assert_valid

AWS_SITES = ["aws-euc1", "aws-use1"]


def _tolerates(tolerations, taint) -> bool:
    key, value, effect = taint
    for t in tolerations:
        if t.get("effect") not in (None, effect) or t.get("key") not in (None, key):
            continue
        if t.get("operator") == "Exists" or t.get("value", "") == value:
            return True
    return False


@pytest.mark.parametrize("site", AWS_SITES)
def test_every_aws_site_runs_cluster_autoscaler_for_its_own_groups(bundles, fleet, site):
    objs = bundles[site]["autoscaler"].objects
    assert_valid(objs)
    dep = named([o for o in objs if o["kind"] == "Deployment"], "cluster-autoscaler")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == versions.CLUSTER_AUTOSCALER_IMAGE
    name = cluster_name(fleet, fleet.site(site))
    assert f"--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/{name}" in c["command"]
    assert "--cloud-provider=aws" in c["command"]
    assert {"name": "AWS_REGION", "value": fleet.site(site).region} in c["env"]  # IMDS is closed to pods
    # The ServiceAccount the pod identity association names (cloud/cluster.py).
    assert dep["metadata"]["namespace"] == "kube-system" and dep["spec"]["template"]["spec"]["serviceAccountName"] == "cluster-autoscaler"


def test_no_autoscaler_where_there_are_no_node_groups(bundles):
    assert "autoscaler" not in bundles["dc-fra"] and "autoscaler" not in bundles["fra-hub"]


def test_autoscaler_may_not_create_or_delete_nodes(bundles):
    """On AWS it changes group sizes; it never needs to write Node objects into being."""
    role = named([o for o in bundles["aws-euc1"]["autoscaler"].objects if o["kind"] == "ClusterRole"], "cluster-autoscaler")
    nodes = [r for r in role["rules"] if "nodes" in r["resources"]]
    assert nodes and all(not {"create", "delete"} & set(r["verbs"]) for r in nodes)


def test_efa_device_plugin_only_where_pools_have_efa(bundles, fleet):
    assert "efa" in bundles["aws-euc1"]
    assert "efa" not in bundles["aws-use1"]  # serving only, no EFA pools
    assert "efa" not in bundles["dc-fra"]


def test_efa_device_plugin_lands_on_every_efa_pool_and_no_other(bundles, fleet):
    site = fleet.site("aws-euc1")
    (ds,) = bundles["aws-euc1"]["efa"].objects
    assert_valid([ds])
    pod = ds["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    allowed = {e["key"]: set(e["values"]) for e in term["matchExpressions"]}
    for pool in site.node_pools:
        args = NodePoolArgs.from_config(pool, site.name, "x", list(site.aws.network.availability_zones))
        labels = autoscaler_node_template(args).labels
        selected = all(labels.get(k) in v for k, v in allowed.items())
        assert selected == pool.efa, pool.name
        if pool.efa:
            for t in args.taints:
                assert _tolerates(pod["tolerations"], (t["key"], t["value"], t["effect"]))


def test_efa_image_is_the_regions_eks_registry_at_the_pinned_version(bundles, fleet):
    (ds,) = bundles["aws-euc1"]["efa"].objects
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("602401143452.dkr.ecr.eu-central-1.amazonaws.com/eks/aws-efa-k8s-device-plugin:")
    assert versions.EFA_DEVICE_PLUGIN_VERSION in c["image"]
    if versions.EFA_DEVICE_PLUGIN_DIGEST:
        assert c["image"].endswith("@" + versions.EFA_DEVICE_PLUGIN_DIGEST)
    assert efa.image("af-south-1").startswith("877085696533.dkr.ecr.af-south-1.")


def test_training_pods_ask_for_efa_only_where_the_plugin_serves_it(bundles, fleet):
    """The EFA request comes from a LimitRange in the training namespaces, at the
    sites whose pools have EFA (the runtime's template is the same everywhere)."""
    for site in fleet.sites:
        ranges = [o for o in bundles[site.name]["trainer"].objects if o["kind"] == "LimitRange"]
        asks = any(trainer.EFA_RESOURCE in lim.get("defaultRequest", {}) for r in ranges for lim in r["spec"]["limits"])
        assert asks == ("efa" in bundles[site.name]), site.name


def test_the_training_runtime_is_the_same_at_every_site(bundles, fleet):
    """The hub computes a TrainJob's pod sets from its runtime, the worker from its
    own, and Kueue finishes the dispatched workload as out of sync when their
    containers differ (EquivalentToWorkload, comparePodTemplate): so the template
    is one, and the site's settings live in the ConfigMap and LimitRange beside it."""
    specs = {}
    for site in fleet.sites:
        rt = next(o for o in bundles[site.name]["trainer"].objects if o["kind"] == "ClusterTrainingRuntime")
        specs[site.name] = rt["spec"]
    first = next(iter(specs.values()))
    assert all(spec == first for spec in specs.values()), {k: v == first for k, v in specs.items()}
