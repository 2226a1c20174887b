"""What cluster-autoscaler needs from each AWS stack: the group tags and its AWS identity."""

from __future__ import annotations

import json

import pytest
from pulumi_harness import plain

from cloud.cluster import AUTOSCALER_NAMESPACE, AUTOSCALER_SERVICE_ACCOUNT
from cloud.nodepools import NodePoolArgs, autoscaler_discovery_tags, autoscaler_node_template, autoscaler_template_tags
from cloud.program import cluster_name

AWS_SITES = ["aws-euc1", "aws-use1"]
TAG = "aws:autoscaling/tag:Tag"
PREFIX = "k8s.io/cluster-autoscaler/"


def _tags_of(run, pool_resource: str) -> dict[str, str]:
    out = {}
    for r in run.of_type(TAG):
        if r["name"].startswith(f"{pool_resource}-ca-"):
            tag = plain(r["inputs"])["tag"]
            assert tag["propagateAtLaunch"] is False
            out[tag["key"]] = tag["value"]
    return out


def _args(fleet, site):
    s = fleet.site(site)
    return [NodePoolArgs.from_config(p, site, cluster_name(fleet, s), list(s.aws.network.availability_zones)) for p in s.node_pools]


@pytest.mark.parametrize("site", AWS_SITES)
def test_every_pool_group_is_discoverable_by_this_clusters_autoscaler(example_runs, example_fleet, site):
    name = cluster_name(example_fleet, example_fleet.site(site))
    for args in _args(example_fleet, site):
        tags = _tags_of(example_runs[site], f"{site}-{args.name}")
        assert tags[PREFIX + "enabled"] == "true"
        assert tags[PREFIX + name] == "owned"  # the IAM policy's condition (test below)
        assert autoscaler_discovery_tags(name).items() <= tags.items()


def test_a_pool_at_zero_describes_its_node_in_tags(example_runs, example_fleet):
    """The p5 pool starts at 0: cluster-autoscaler can only know its labels, taints,
    GPUs and EFA interfaces from the node-template tags (aws_manager.go
    buildNodeFromTemplate)."""
    args = next(a for a in _args(example_fleet, "aws-euc1") if a.name == "train-h100")
    assert args.min_size == 0
    tags = _tags_of(example_runs["aws-euc1"], "aws-euc1-train-h100")
    t = PREFIX + "node-template/"
    assert tags[t + "label/gpufleet.io/site"] == "aws-euc1"
    assert tags[t + "label/gpufleet.io/accelerator"] == "h100-80gb"
    assert tags[t + "label/k8s.amazonaws.com/accelerator"] == "h100-80gb"
    assert tags[t + "taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert tags[t + "resources/nvidia.com/gpu"] == "8"
    assert tags[t + "resources/vpc.amazonaws.com/efa"] == "32"
    assert {k: v for k, v in tags.items() if k.startswith(t)} == autoscaler_template_tags(args)


@pytest.mark.parametrize("site", AWS_SITES)
def test_the_template_is_the_node_the_pool_really_gets(example_fleet, site):
    """Labels and taints in the tags are the node group's own (what EKS puts on its nodes)."""
    for args in _args(example_fleet, site):
        template = autoscaler_node_template(args)
        assert template.labels == args.labels
        assert list(template.taints) == list(args.taints)
        if args.accelerator:
            assert template.labels["k8s.amazonaws.com/accelerator"] == args.accelerator


@pytest.mark.parametrize("site", AWS_SITES)
def test_autoscaler_assumes_its_role_through_pod_identity_and_writes_only_its_groups(example_runs, example_fleet, site):
    run = example_runs[site]
    name = cluster_name(example_fleet, example_fleet.site(site))
    assoc = run.inputs("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert (assoc["namespace"], assoc["serviceAccount"]) == (AUTOSCALER_NAMESPACE, AUTOSCALER_SERVICE_ACCOUNT) == ("kube-system", "cluster-autoscaler")
    role = run.inputs("aws:iam/role:Role", f"{site}-autoscaler")
    trust = json.loads(role["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert {"sts:AssumeRole", "sts:TagSession"} <= set(trust["Statement"][0]["Action"])
    policy = json.loads(run.inputs("aws:iam/rolePolicy:RolePolicy", f"{site}-autoscaler")["policy"])
    write = next(s for s in policy["Statement"] if "autoscaling:SetDesiredCapacity" in s["Action"])
    assert write["Condition"] == {"StringEquals": {f"aws:ResourceTag/{PREFIX}{name}": "owned"}}
    read = next(s for s in policy["Statement"] if "eks:DescribeNodegroup" in s["Action"])
    assert "Condition" not in read and not set(read["Action"]) & {"autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"}


def test_datacenter_stacks_have_no_autoscaler_identity(example_runs):
    assert not example_runs["dc-fra"].of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
