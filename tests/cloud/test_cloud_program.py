"""What each site's Pulumi program declares, checked under Pulumi's mock engine."""

from __future__ import annotations

import ipaddress
import json

import pytest

from cloud import versions
from cloud.network import plan_subnets
from cloud.program import ProgramError
from gpufleet.catalog import INSTANCE_TYPES
from gpufleet.errors import FleetError
from pulumi_harness import EXAMPLE, plain, provider_ref_matches, run_site

AWS_SITES = ["aws-euc1", "aws-use1"]
DC_SITES = ["dc-fra", "fra-hub"]
NG = "aws:eks/nodeGroup:NodeGroup"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
CLUSTER = "aws:eks/cluster:Cluster"


def _pool_of(run, pool_name: str):
    ng = next(r for r in run.of_type(NG) if plain(r["inputs"])["labels"]["gpufleet.io/pool"] == pool_name)
    lt = run.inputs(LT, ng["name"].removesuffix("-ng") + "-lt")
    return plain(ng["inputs"]), lt


# ------------------------------------------------------------------- providers


@pytest.mark.parametrize("site", AWS_SITES)
def test_one_aws_provider_for_the_stack_region_used_by_every_aws_resource(example_runs, example_fleet, site):
    run = example_runs[site]
    providers = run.of_type("pulumi:providers:aws")
    assert len(providers) == 1
    provider = providers[0]
    assert provider["inputs"]["region"] == example_fleet.site(site).region
    aws_resources = [r for r in run.resources if r["type"].startswith("aws:")]
    assert len(aws_resources) > 40
    wrong = [r["name"] for r in aws_resources if not provider_ref_matches(r["provider"], provider)]
    assert wrong == []


@pytest.mark.parametrize("site", AWS_SITES)
def test_provider_tags_everything_with_fleet_and_site(example_runs, site):
    provider = example_runs[site].one("pulumi:providers:aws")
    tags = json.loads(provider["inputs"]["defaultTags"])["tags"]
    assert tags["gpufleet:fleet"] == "acme-llm"
    assert tags["gpufleet:site"] == site


@pytest.mark.parametrize("site", AWS_SITES)
def test_instances_volumes_and_interfaces_are_tagged_by_the_launch_template(example_runs, site):
    lts = example_runs[site].of_type(LT)
    assert lts
    for lt in lts:
        specs = {s["resourceType"]: s["tags"] for s in plain(lt["inputs"])["tagSpecifications"]}
        assert set(specs) == {"instance", "volume", "network-interface"}
        for tags in specs.values():
            assert tags["gpufleet:fleet"] == "acme-llm" and tags["gpufleet:site"] == site


@pytest.mark.parametrize("site", DC_SITES)
def test_datacenter_stack_declares_no_aws_resources(example_runs, site):
    run = example_runs[site]
    assert [r for r in run.resources if r["type"].startswith("aws:") or r["type"] == "pulumi:providers:aws"] == []
    k8s = run.one("pulumi:providers:kubernetes")
    # The kubeconfig comes from the stack's secret config and stays secret.
    from pulumi.runtime import rpc

    assert rpc.is_rpc_secret(k8s["inputs"]["kubeconfig"])
    assert "kind: Config" in plain(k8s["inputs"])["kubeconfig"]


def test_datacenter_stack_without_kubeconfig_says_how_to_set_it(fleet_copy):
    with pytest.raises(ProgramError) as err:
        run_site(fleet_copy.fleet, "dc-fra", config={"gpufleet:site": "dc-fra"})
    msg = str(err.value)
    assert "\n" not in msg
    assert "config.gpufleet:kubeconfig" in msg and "pulumi config set --secret gpufleet:kubeconfig -s dc-fra" in msg


# --------------------------------------------------------------------- cluster


@pytest.mark.parametrize("site", AWS_SITES)
def test_cluster_endpoint_is_private(example_runs, site):
    cluster = example_runs[site].inputs(CLUSTER)
    assert cluster["vpcConfig"]["endpointPrivateAccess"] is True
    assert cluster["vpcConfig"]["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in cluster["vpcConfig"]
    assert cluster["accessConfig"]["authenticationMode"] == "API"


def test_cluster_runs_in_the_private_subnets(example_runs):
    run = example_runs["aws-euc1"]
    private = {f"{r['name']}-id" for r in run.of_type("aws:ec2/subnet:Subnet") if r["inputs"]["tags"]["gpufleet:subnet"] == "private"}
    assert len(private) == 3
    assert set(run.inputs(CLUSTER)["vpcConfig"]["subnetIds"]) == private


@pytest.mark.parametrize("site", AWS_SITES)
def test_secrets_encrypted_with_a_rotating_kms_key(example_runs, site):
    run = example_runs[site]
    cluster = run.inputs(CLUSTER)
    key = run.one("aws:kms/key:Key")
    assert key["inputs"]["enableKeyRotation"] is True
    assert cluster["encryptionConfig"]["resources"] == ["secrets"]
    # The mock engine gives each key an ARN ending in its name: the cluster uses this key.
    assert cluster["encryptionConfig"]["provider"]["keyArn"].endswith(f":{key['name']}")


def test_control_plane_logs_follow_the_stack_config(example_runs):
    assert example_runs["aws-euc1"].inputs(CLUSTER)["enabledClusterLogTypes"] == ["api", "audit", "authenticator"]
    # aws-use1 sets no logTypes: every control-plane log is on.
    assert example_runs["aws-use1"].inputs(CLUSTER)["enabledClusterLogTypes"] == ["api", "audit", "authenticator", "controllerManager", "scheduler"]


def test_public_endpoint_and_admin_access_entries_when_configured(fleet_copy):
    admin = "arn:aws:iam::123456789012:role/platform-admins"

    def cluster(cfg):
        return {**cfg, "endpointAccess": "public-and-private", "publicAccessCidrs": ["203.0.113.0/24"], "adminPrincipalArns": [admin]}

    fleet_copy.edit_config("aws-use1", "gpufleet:cluster", cluster)
    run = run_site(fleet_copy.fleet, "aws-use1")
    vpc = run.inputs(CLUSTER)["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["endpointPrivateAccess"] is True
    assert vpc["publicAccessCidrs"] == ["203.0.113.0/24"]
    entry = run.inputs("aws:eks/accessEntry:AccessEntry")
    assoc = run.inputs("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert entry["principalArn"] == admin == assoc["principalArn"]
    assert assoc["policyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    assert assoc["accessScope"] == {"type": "cluster"}


def test_no_access_entries_without_admin_principals(example_runs):
    assert example_runs["aws-euc1"].of_type("aws:eks/accessEntry:AccessEntry") == []


def test_managed_addons_use_the_pinned_versions(example_runs):
    addons = {a["inputs"]["addonName"]: a["inputs"]["addonVersion"] for a in example_runs["aws-euc1"].of_type("aws:eks/addon:Addon")}
    assert addons == versions.EKS_ADDON_VERSIONS["1.33"]


def test_kubernetes_version_without_pinned_addons_is_refused_clearly(fleet_copy):
    fleet_copy.edit_config("aws-use1", "gpufleet:cluster", lambda c: {**c, "kubernetesVersion": "1.29"})
    # Refused by the model (so `gpufleet validate` reports it) before the program runs.
    with pytest.raises(FleetError, match=r"Pulumi\.aws-use1\.yaml: config\.gpufleet:cluster\.kubernetesVersion: Kubernetes 1\.29 has no pinned EKS add-on versions"):
        run_site(fleet_copy.fleet, "aws-use1")


# ------------------------------------------------------------------ node pools


@pytest.mark.parametrize("site", AWS_SITES)
def test_gpu_pools_are_tainted_and_labelled(example_runs, example_fleet, site):
    run = example_runs[site]
    pools = example_fleet.site(site).node_pools
    gpu_pools = [p for p in pools if p.accelerator]
    assert gpu_pools
    for pool in pools:
        ng, _ = _pool_of(run, pool.name)
        gpu_taints = [t for t in ng.get("taints", []) if t["key"] == "nvidia.com/gpu"]
        if pool.accelerator:
            assert gpu_taints == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
            assert ng["amiType"] == versions.AMI_TYPE_GPU == "AL2023_x86_64_NVIDIA"
            assert ng["labels"]["gpufleet.io/accelerator"] == pool.accelerator
        else:
            assert gpu_taints == []
            assert ng["amiType"] == versions.AMI_TYPE_CPU
            assert "gpufleet.io/accelerator" not in ng["labels"]
        assert ng["labels"]["gpufleet.io/site"] == site
        assert ng["labels"]["gpufleet.io/pool"] == pool.name
        for key, value in pool.labels.items():
            assert ng["labels"][key] == value
        assert (ng["scalingConfig"]["minSize"], ng["scalingConfig"]["maxSize"]) == (pool.min_size, pool.max_size)


def test_pool_taints_from_config_are_kept(fleet_copy):
    def pools(ps):
        ps[1]["taints"] = [{"key": "gpufleet.io/dedicated", "value": "serving", "effect": "NoExecute"}]
        return ps

    fleet_copy.edit_config("aws-use1", "gpufleet:nodePools", pools)
    ng, _ = _pool_of(run_site(fleet_copy.fleet, "aws-use1"), "serving-l40s")
    assert ng["taints"] == [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"},
        {"key": "gpufleet.io/dedicated", "value": "serving", "effect": "NO_EXECUTE"},
    ]


def test_p5_pool_has_efa_interfaces_in_one_cluster_placement_group(example_runs):
    run = example_runs["aws-euc1"]
    ng, lt = _pool_of(run, "train-h100")
    interfaces = lt["networkInterfaces"]
    assert len(interfaces) == INSTANCE_TYPES["p5.48xlarge"].efa_interfaces == 32
    assert {i["interfaceType"] for i in interfaces} == {"efa"}
    assert [i["networkCardIndex"] for i in interfaces] == list(range(32))
    assert interfaces[0]["deviceIndex"] == 0 and {i["deviceIndex"] for i in interfaces[1:]} == {1}
    pg = run.one("aws:ec2/placementGroup:PlacementGroup")
    assert pg["inputs"]["strategy"] == "cluster"
    assert lt["placement"]["groupName"] == pg["name"]  # the mock names it after the resource
    assert ng["subnetIds"] == ["aws-euc1-private-eu-central-1a-id"]  # one zone
    sg = run.inputs("aws:ec2/securityGroup:SecurityGroup")
    all_traffic_self = {"protocol": "-1", "fromPort": 0, "toPort": 0, "self": True}
    assert any(all_traffic_self.items() <= rule.items() for rule in sg["ingress"])
    assert any(all_traffic_self.items() <= rule.items() for rule in sg["egress"])
    for iface in interfaces:
        assert set(iface["securityGroups"]) == {"sg-acme-llm-aws-euc1-cluster", "aws-euc1-train-h100-efa-id"}


@pytest.mark.parametrize("site", AWS_SITES)
def test_serving_pools_have_no_efa_and_no_placement_group(example_runs, example_fleet, site):
    run = example_runs[site]
    for pool in example_fleet.site(site).node_pools:
        if pool.efa:
            continue
        _, lt = _pool_of(run, pool.name)
        assert "networkInterfaces" not in lt and "placement" not in lt
    efa_pools = sum(1 for p in example_fleet.site(site).node_pools if p.efa)
    assert len(run.of_type("aws:ec2/placementGroup:PlacementGroup")) == efa_pools


def test_efa_pool_across_two_zones_is_refused_clearly(fleet_copy):
    def pools(ps):
        ps[2]["availabilityZones"] = ["eu-central-1a", "eu-central-1b"]
        return ps

    fleet_copy.edit_config("aws-euc1", "gpufleet:nodePools", pools)
    with pytest.raises(FleetError, match=r"config\.gpufleet:nodePools\[2\]: an EFA pool .* list exactly one in availabilityZones"):
        run_site(fleet_copy.fleet, "aws-euc1")


@pytest.mark.parametrize("site", AWS_SITES)
def test_every_launch_template_requires_imdsv2_and_encrypts_its_volume(example_runs, example_fleet, site):
    run = example_runs[site]
    pools = example_fleet.site(site).node_pools
    assert len(run.of_type(LT)) == len(pools)
    for pool in pools:
        _, lt = _pool_of(run, pool.name)
        assert lt["metadataOptions"]["httpTokens"] == "required"
        assert lt["metadataOptions"]["httpPutResponseHopLimit"] == 1
        (bdm,) = lt["blockDeviceMappings"]
        assert bdm["ebs"]["encrypted"] == "true"
        assert bdm["ebs"]["volumeType"] == "gp3"
        assert bdm["ebs"]["volumeSize"] == pool.disk_gib


def test_capacity_block_pool_targets_its_reservation(example_runs):
    ng, lt = _pool_of(example_runs["aws-euc1"], "train-h100")
    assert ng["capacityType"] == "CAPACITY_BLOCK"
    assert lt["instanceMarketOptions"] == {"marketType": "capacity-block"}
    assert lt["capacityReservationSpecification"]["capacityReservationTarget"]["capacityReservationId"] == "cr-0a1b2c3d4e5f60718"
    # The reservation's instance type is named in the template, not in the node group.
    assert lt["instanceType"] == "p5.48xlarge" and "instanceTypes" not in ng


def test_reserved_pool_targets_its_reservation_on_demand(fleet_copy):
    def pools(ps):
        ps[2].update(capacityType="reserved", capacityReservationId="cr-0123456789abcdef0")
        return ps

    fleet_copy.edit_config("aws-euc1", "gpufleet:nodePools", pools)
    ng, lt = _pool_of(run_site(fleet_copy.fleet, "aws-euc1"), "train-h100")
    assert ng["capacityType"] == "ON_DEMAND"
    assert "instanceMarketOptions" not in lt
    assert lt["capacityReservationSpecification"]["capacityReservationTarget"]["capacityReservationId"] == "cr-0123456789abcdef0"


def test_spot_and_on_demand_pools(example_runs):
    run = example_runs["aws-use1"]
    ng, lt = _pool_of(run, "serving-l4")
    assert ng["capacityType"] == "SPOT"
    assert ng["instanceTypes"] == ["g6.2xlarge", "g6.4xlarge"]
    assert "capacityReservationSpecification" not in lt and "instanceType" not in lt
    ng, _ = _pool_of(run, "serving-l40s")
    assert ng["capacityType"] == "ON_DEMAND" and ng["instanceTypes"] == ["g6e.12xlarge"]


# --------------------------------------------------------------------- network


def test_network_has_private_and_public_subnets_per_zone(example_runs):
    run = example_runs["aws-euc1"]
    subnets = [r["inputs"] for r in run.of_type("aws:ec2/subnet:Subnet")]
    private = [s for s in subnets if s["tags"].get("kubernetes.io/role/internal-elb") == "1"]
    public = [s for s in subnets if s["tags"].get("kubernetes.io/role/elb") == "1"]
    assert len(private) == len(public) == 3
    assert {s["availabilityZone"] for s in private} == {"eu-central-1a", "eu-central-1b", "eu-central-1c"}
    assert all(s["mapPublicIpOnLaunch"] is False for s in subnets)
    assert len(run.of_type("aws:ec2/natGateway:NatGateway")) == 3
    routes = [rt["inputs"]["routes"][0] for rt in run.of_type("aws:ec2/routeTable:RouteTable")]
    assert sum("natGatewayId" in r for r in routes) == 3 and sum("gatewayId" in r for r in routes) == 1


def test_single_nat_gateway_when_configured(fleet_copy):
    fleet_copy.edit_config("aws-use1", "gpufleet:network", lambda n: {**n, "natGateways": "single"})
    run = run_site(fleet_copy.fleet, "aws-use1")
    (nat,) = run.of_type("aws:ec2/natGateway:NatGateway")
    private_routes = [plain(rt["inputs"])["routes"][0] for rt in run.of_type("aws:ec2/routeTable:RouteTable") if "private" in rt["name"]]
    assert len(private_routes) == 3
    assert {r["natGatewayId"] for r in private_routes} == {f"{nat['name']}-id"}


def test_subnet_plan_fits_the_vpc_without_overlap():
    vpc = ipaddress.IPv4Network("10.40.0.0/16")
    zones = [f"eu-central-1{c}" for c in "abcdef"]
    plan = plan_subnets(str(vpc), zones)
    nets = [ipaddress.IPv4Network(c) for p in plan for c in (p.private_cidr, p.public_cidr)]
    assert all(n.subnet_of(vpc) for n in nets)
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    assert plan[0].private_cidr == "10.40.0.0/19" and plan[0].public_cidr == "10.40.224.0/22"
    with pytest.raises(ValueError, match="too small"):
        plan_subnets("10.0.0.0/24", zones[:2])


# --------------------------------------------------------------------- outputs


@pytest.mark.parametrize("site", AWS_SITES)
def test_outputs_name_the_cluster_and_pools_and_keep_the_kubeconfig_secret(example_runs, example_fleet, site):
    run = example_runs[site]
    out = run.outputs
    assert out["clusterName"] == f"acme-llm-{site}"
    assert out["vpcId"] == f"{site}-vpc-id" and out["region"] == example_fleet.site(site).region
    assert out["nodePoolNames"] == [f"acme-llm-{site}-{p.name}" for p in example_fleet.site(site).node_pools]
    assert "kubeconfig" in run.secret_outputs and "clusterName" not in run.secret_outputs
    kc = json.loads(out["kubeconfig"])
    assert kc["clusters"][0]["cluster"]["server"] == out["endpoint"]
    args = kc["users"][0]["user"]["exec"]["args"]
    assert args[:2] == ["eks", "get-token"] and out["clusterName"] in args and example_fleet.site(site).region in args


@pytest.mark.parametrize("site", AWS_SITES)
def test_kubernetes_provider_uses_the_new_cluster_secretly(example_runs, site):
    from pulumi.runtime import rpc

    run = example_runs[site]
    k8s = run.one("pulumi:providers:kubernetes")
    assert rpc.is_rpc_secret(k8s["inputs"]["kubeconfig"])
    assert json.loads(plain(k8s["inputs"])["kubeconfig"])["clusters"][0]["cluster"]["server"] == run.outputs["endpoint"]


def test_addon_bundles_are_applied_to_each_site_through_its_provider(monkeypatch, example_fleet):
    """``k8s.deploy.deploy_bundles`` gets the bundles of the site being built and that site's own provider.

    A recorder stands in for ``k8s.deploy`` here (the wiring only); the next
    test runs the real add-ons.
    """
    import importlib.machinery
    import sys
    import types

    import k8s

    if getattr(k8s, "site_bundles", None) is None:
        monkeypatch.setattr(k8s, "site_bundles", lambda fleet, site: [f"bundle-of-{site}"], raising=False)
    calls = []
    recorder = types.ModuleType("k8s.deploy")
    recorder.__spec__ = importlib.machinery.ModuleSpec("k8s.deploy", None)
    recorder.deploy_bundles = lambda bundles, provider, parent=None: calls.append((list(bundles), provider)) or []
    monkeypatch.setitem(sys.modules, "k8s.deploy", recorder)
    for site in ("aws-use1", "dc-fra"):
        calls.clear()
        run = run_site(EXAMPLE, site, addons=True)
        assert len(calls) == 1
        bundles, provider = calls[0]
        assert bundles == list(k8s.site_bundles(example_fleet, site))
        assert provider is run.provider
        assert run.one("pulumi:providers:kubernetes")["name"] == f"k8s-{site}"


@pytest.mark.parametrize("site", AWS_SITES + DC_SITES)
def test_real_addons_go_through_the_sites_own_provider(site):
    import importlib.util

    import k8s

    if getattr(k8s, "site_bundles", None) is None or importlib.util.find_spec("k8s.deploy") is None:
        pytest.skip("the k8s package does not provide site_bundles and k8s.deploy yet")
    run = run_site(EXAMPLE, site, addons=True)
    provider = run.one("pulumi:providers:kubernetes")
    objects = [r for r in run.resources if r["type"].startswith("kubernetes:")]
    assert objects
    assert [r["name"] for r in objects if not provider_ref_matches(r["provider"], provider)] == []
    assert not any(r["type"].startswith("aws:") for r in objects)


def test_public_endpoint_without_cidrs_is_refused(fleet_copy):
    fleet_copy.edit_config("aws-use1", "gpufleet:cluster", lambda c: {**c, "endpointAccess": "public-and-private"})
    with pytest.raises(FleetError, match=r"config\.gpufleet:cluster: endpointAccess public-and-private needs publicAccessCidrs"):
        run_site(fleet_copy.fleet, "aws-use1")


def test_entry_point_builds_the_site_named_by_the_stack():
    """``__main__.py`` (what ``pulumi up -s <site>`` runs) builds that site and exports its outputs."""
    import runpy

    import pulumi

    from cloud.preview import make_mocks

    mocks = make_mocks("us-east-1")
    pulumi.runtime.set_mocks(mocks, project="gpufleet", stack="aws-use1", preview=False)
    pulumi.runtime.set_all_config({"gpufleet:site": "aws-use1", "aws:region": "us-east-1"}, [])

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(EXAMPLE.parent.parent / "__main__.py"))

    program()
    clusters = [r for r in mocks.resources if r["type"] == CLUSTER]
    assert [c["inputs"]["name"] for c in clusters] == ["acme-llm-aws-use1"]


def test_entry_point_reports_an_unknown_stack_in_one_line():
    import runpy

    import pulumi

    from cloud.preview import make_mocks

    pulumi.runtime.set_mocks(make_mocks(), project="gpufleet", stack="aws-usw2", preview=False)
    with pytest.raises(pulumi.RunError, match=r"^stack 'aws-usw2': no site of that name in the fleet \(sites: fra-hub, dc-fra, aws-euc1, aws-use1\)$"):
        runpy.run_path(str(EXAMPLE.parent.parent / "__main__.py"))


def test_time_sliced_pool_selects_its_device_plugin_config(example_runs):
    """aws-use1 serves a model two-to-a-GPU on L4: that pool's nodes carry the label
    that points the device plugin at the time-slicing config; other pools do not."""
    labels = {plain(g["inputs"])["labels"]["gpufleet.io/pool"]: plain(g["inputs"])["labels"] for g in example_runs["aws-use1"].of_type(NG)}
    assert labels["serving-l4"]["nvidia.com/device-plugin.config"] == "l4-time-sliced"
    assert all("nvidia.com/device-plugin.config" not in v for pool, v in labels.items() if pool != "serving-l4")
