"""``preview_site``: the offline preview ``gpufleet render`` writes for each stack."""

from __future__ import annotations

import json
import shutil

import pytest
from pulumi_harness import EXAMPLE, REPO

from cloud.preview import MASK, PLACEHOLDER_KUBECONFIG, mask, mask_inputs, preview_site

SITES = ["aws-euc1", "aws-use1", "dc-fra", "fra-hub"]


@pytest.fixture(scope="module")
def previews() -> dict[str, list[dict]]:
    return {site: preview_site(str(EXAMPLE), site) for site in SITES}


@pytest.mark.parametrize("site", SITES)
def test_preview_is_a_sorted_list_of_type_name_inputs(previews, site):
    rows = previews[site]
    assert rows and all(set(r) == {"type", "name", "inputs"} for r in rows)
    assert all(isinstance(r["inputs"], dict) for r in rows)
    keys = [(r["type"], r["name"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    json.dumps(rows)  # plain JSON all the way down


def test_preview_is_the_same_from_run_to_run(previews):
    assert preview_site(str(EXAMPLE), "aws-use1") == previews["aws-use1"]


def _find(rows, typ, name_suffix=""):
    found = [r for r in rows if r["type"] == typ and r["name"].endswith(name_suffix)]
    assert found, f"no {typ} *{name_suffix}"
    return found


def test_aws_preview_shows_private_cluster_and_tainted_gpu_pool(previews):
    rows = previews["aws-euc1"]
    (cluster,) = _find(rows, "aws:eks/cluster:Cluster")
    assert cluster["inputs"]["vpcConfig"]["endpointPublicAccess"] is False
    assert cluster["inputs"]["vpcConfig"]["endpointPrivateAccess"] is True
    (ng,) = _find(rows, "aws:eks/nodeGroup:NodeGroup", "train-h100-ng")
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in ng["inputs"]["taints"]
    assert ng["inputs"]["scalingConfig"] == {"minSize": 0, "maxSize": 4, "desiredSize": 0}  # numbers stay integers
    (lt,) = _find(rows, "aws:ec2/launchTemplate:LaunchTemplate", "train-h100-lt")
    assert lt["inputs"]["metadataOptions"]["httpTokens"] == "required"  # not mistaken for a secret
    (provider,) = _find(rows, "pulumi:providers:aws")
    assert provider["inputs"]["region"] == "eu-central-1"


@pytest.mark.parametrize("site", SITES)
def test_kubeconfig_is_masked(previews, site):
    rows = previews[site]
    (k8s,) = _find(rows, "pulumi:providers:kubernetes")
    assert k8s["inputs"]["kubeconfig"] == MASK
    text = json.dumps(rows)
    # Neither the cluster's kubeconfig (AWS) nor the placeholder secret (data centres) leaks anywhere.
    assert "get-token" not in text and "certificate-authority-data" not in text
    assert PLACEHOLDER_KUBECONFIG.splitlines()[-1] not in text


@pytest.mark.parametrize("site", ["dc-fra", "fra-hub"])
def test_datacenter_preview_has_no_aws_resources(previews, site):
    types = {r["type"] for r in previews[site]}
    assert not any(t.startswith("aws:") or t == "pulumi:providers:aws" for t in types)
    assert "pulumi:providers:kubernetes" in types


def test_mask_hides_secret_values_and_secret_looking_keys():
    from pulumi.runtime import rpc

    secret = {rpc._special_sig_key: rpc._special_secret_sig, "value": "hunter2"}
    data = {
        "kubeconfig": "apiVersion: v1",
        "adminPassword": "pw",
        "apiToken": "t",
        "nested": [{"value": secret}],
        "httpTokens": "required",
        "resources": ["secrets"],
        "count": 2.0,
        "password": None,
    }
    assert mask(data) == {
        "kubeconfig": MASK,
        "adminPassword": MASK,
        "apiToken": MASK,
        "nested": [{"value": MASK}],
        "httpTokens": "required",
        "resources": ["secrets"],
        "count": 2,
        "password": None,
    }


def test_kubernetes_secret_values_are_masked_but_their_keys_shown():
    inputs = {"metadata": {"name": "hf-token", "namespace": "serving"}, "stringData": {"HF_TOKEN": "hf_abc"}, "data": {"ca.crt": "LS0t"}, "type": "Opaque"}
    shown = mask_inputs("kubernetes:core/v1:Secret", inputs)
    assert shown == {"metadata": {"name": "hf-token", "namespace": "serving"}, "stringData": {"HF_TOKEN": MASK}, "data": {"ca.crt": MASK}, "type": "Opaque"}
    assert mask_inputs("kubernetes:core/v1:ConfigMap", {"data": {"a": "b"}}) == {"data": {"a": "b"}}


def test_broken_fleet_comes_back_as_one_line(tmp_path):
    shutil.copytree(REPO / "stacks", tmp_path / "stacks")
    shutil.copytree(REPO / "inventory", tmp_path / "inventory")
    stack = tmp_path / "stacks" / "Pulumi.aws-use1.yaml"
    stack.write_text(stack.read_text().replace("minSize: 1", "minSize: 11"))
    with pytest.raises(RuntimeError) as err:
        preview_site(str(tmp_path / "stacks" / "fleet.yaml"), "aws-use1")
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert "Pulumi.aws-use1.yaml: config.gpufleet:nodePools[2]: minSize 11 is larger than maxSize 10" in msg


def test_program_error_comes_back_as_one_line(tmp_path):
    shutil.copytree(REPO / "stacks", tmp_path / "stacks")
    shutil.copytree(REPO / "inventory", tmp_path / "inventory")
    stack = tmp_path / "stacks" / "Pulumi.aws-use1.yaml"
    stack.write_text(stack.read_text().replace('kubernetesVersion: "1.33"', 'kubernetesVersion: "1.30"'))
    with pytest.raises(RuntimeError, match=r"^aws-use1: offline Pulumi preview failed: .*Pulumi\.aws-use1\.yaml: config\.gpufleet:cluster\.kubernetesVersion: Kubernetes 1\.30 has no pinned EKS add-on versions"):
        preview_site(str(tmp_path / "stacks" / "fleet.yaml"), "aws-use1")


def test_unknown_site_is_named():
    with pytest.raises(RuntimeError, match=r"no site 'aws-usw2'.*sites: fra-hub, dc-fra, aws-euc1, aws-use1"):
        preview_site(str(EXAMPLE), "aws-usw2")
