"""Kueue at every site and MultiKueue at the hub: order, residency, quota, flavors."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

import k8s
from cloud.nodepools import NodePoolArgs
from gpufleet.baremetal_vars import node_labels, node_taints
from gpufleet.model.dispatch import DispatchError
from k8s import kueue, multikueue
from k8s_harness import named, objects_of
from tests.schemas import assert_valid


def _hub(bundles, fleet):
    return objects_of(bundles[fleet.hub])


# ------------------------------------------------------------------ dispatch order


def test_hub_multikueue_configs_list_data_centres_before_cloud_regions(bundles, fleet):
    configs = [o for o in _hub(bundles, fleet) if o["kind"] == "MultiKueueConfig"]
    assert {c["metadata"]["name"] for c in configs} == {q.name for q in fleet.queues}
    for cfg in configs:
        kinds = [fleet.site(s).kind for s in cfg["spec"]["clusters"]]
        assert kinds == sorted(kinds, key=lambda k: k != "datacenter"), cfg["spec"]["clusters"]
    assert named(configs, "research-train")["spec"]["clusters"] == ["dc-fra", "aws-euc1"]


def test_regulated_queue_dispatches_only_to_allowed_sites(bundles, fleet):
    allowed = set(fleet.allowed_sites("regulated"))
    cfg = named([o for o in _hub(bundles, fleet) if o["kind"] == "MultiKueueConfig"], "clinical-train")
    assert cfg["spec"]["clusters"] and set(cfg["spec"]["clusters"]) <= allowed


def test_cloud_listed_first_is_moved_after_the_data_centres(fleet_variant):
    def edit(data):
        data["teams"][0]["queues"][0]["sites"] = ["aws-euc1", "dc-fra"]

    variant = fleet_variant(edit)
    ref = next(r for r in variant.queues if r.name == "research-train")
    assert kueue.dispatch_order(variant, ref) == ["dc-fra", "aws-euc1"]
    step = next(p for p in multikueue.dispatch_plan(variant) if p["name"] == "research-train")
    assert step["reordered"] is True and [s["site"] for s in step["steps"]] == ["dc-fra", "aws-euc1"]


def test_within_each_kind_the_declared_order_is_kept(fleet):
    """Two data centres and two regions, declared interleaved: each group keeps its order."""
    from types import SimpleNamespace

    kinds = {"dc-b": False, "aws-1": True, "dc-a": False, "aws-2": True}
    stub = SimpleNamespace(
        hub="hub",
        allowed_sites=lambda data_class: None,
        site=lambda name: SimpleNamespace(name=name, is_aws=kinds[name]),
    )
    ref = fleet.queues[0]
    forged = type(ref)(ref.team, ref.queue.model_copy(update={"sites": ["aws-2", "dc-b", "aws-1", "dc-a"], "data_class": None}))
    assert kueue.dispatch_order(stub, forged) == ["dc-b", "dc-a", "aws-2", "aws-1"]


def test_regulated_queue_is_never_dispatched_outside_its_rule_even_if_listed(fleet):
    ref = next(r for r in fleet.queues if r.name == "clinical-train")
    forged = type(ref)(ref.team, ref.queue.model_copy(update={"sites": ["aws-euc1", "dc-fra"]}))
    assert kueue.dispatch_order(fleet, forged) == ["dc-fra"]


def test_hub_is_never_a_worker(bundles, fleet):
    hub = _hub(bundles, fleet)
    clusters = [o["metadata"]["name"] for o in hub if o["kind"] == "MultiKueueCluster"]
    assert fleet.hub not in clusters
    assert clusters == ["dc-fra", "aws-euc1"]
    ref = fleet.queues[0]
    forged = type(ref)(ref.team, ref.queue.model_copy(update={"sites": [fleet.hub]}))
    with pytest.raises(DispatchError, match="is the hub"):
        kueue.dispatch_order(fleet, forged)


def test_worker_clusters_reference_kubeconfig_secrets_by_name_only(bundles, fleet):
    for c in (o for o in _hub(bundles, fleet) if o["kind"] == "MultiKueueCluster"):
        assert c["spec"] == {"clusterSource": {"kubeConfig": {"locationType": "Secret", "location": f"multikueue-{c['metadata']['name']}"}}}


def test_each_queue_has_a_multikueue_admission_check_on_its_hub_cluster_queue(bundles, fleet):
    hub = _hub(bundles, fleet)
    for ref in fleet.queues:
        check = named([o for o in hub if o["kind"] == "AdmissionCheck"], f"{ref.name}-multikueue")
        assert check["spec"]["controllerName"] == "kueue.x-k8s.io/multikueue"
        assert check["spec"]["parameters"] == {"apiGroup": "kueue.x-k8s.io", "kind": "MultiKueueConfig", "name": ref.name}
        cq = named([o for o in hub if o["kind"] == "ClusterQueue"], ref.name)
        assert cq["spec"]["admissionChecksStrategy"]["admissionChecks"] == [{"name": check["metadata"]["name"]}]
        lq = named([o for o in hub if o["kind"] == "LocalQueue"], ref.name)
        assert lq["metadata"]["namespace"] == ref.namespace and lq["spec"]["clusterQueue"] == ref.name


def _manager_config(bundle):
    return yaml.safe_load(bundle.charts[0].values["managerConfig"]["controllerManagerConfigYaml"])


def test_hub_kueue_hands_dispatching_to_the_onprem_first_dispatcher(bundles, fleet):
    cfg = _manager_config(bundles[fleet.hub]["kueue"])
    assert cfg["apiVersion"] == "config.kueue.x-k8s.io/v1beta2"
    # An external dispatcher (any name but the two built-in ones); Kueue refuses
    # incrementalDispatcherConfig with it (pkg/config/validation.go).
    assert cfg["multiKueue"]["dispatcherName"] == "gpufleet.io/onprem-first"
    assert "incrementalDispatcherConfig" not in cfg["multiKueue"]
    for site in ("dc-fra", "aws-euc1"):
        assert "multiKueue" not in _manager_config(bundles[site]["kueue"])
    assert "trainer.kubeflow.org/trainjob" in cfg["integrations"]["frameworks"]


@pytest.mark.parametrize("site", ["fra-hub", "dc-fra", "aws-euc1", "aws-use1"])
def test_kueue_reports_cluster_queue_resource_metrics(bundles, site):
    """The queue dashboard's quota panel reads kueue_cluster_queue_resource_usage,
    which Kueue reports only with metrics.enableClusterQueueResources."""
    assert _manager_config(bundles[site]["kueue"])["metrics"]["enableClusterQueueResources"] is True


def test_workers_have_the_queues_the_hub_dispatches_to_them(bundles, fleet):
    for ref in fleet.queues:
        for site in kueue.dispatch_order(fleet, ref):
            objs = objects_of(bundles[site])
            lq = named([o for o in objs if o["kind"] == "LocalQueue"], ref.name)
            assert lq["metadata"]["namespace"] == ref.namespace
            assert named([o for o in objs if o["kind"] == "ClusterQueue"], ref.name)
    # aws-use1 serves only: no training queues there
    assert not [o for o in objects_of(bundles["aws-use1"]) if o["kind"] in ("ClusterQueue", "LocalQueue")]
    # the regulated queue exists nowhere but its allowed sites
    assert not [o for o in objects_of(bundles["aws-euc1"]) if o["metadata"]["name"] == "clinical-train"]


# --------------------------------------------------------------------------- quota


def test_nominal_quotas_never_exceed_a_sites_gpus_and_cover_each_queue(fleet):
    nominal = kueue.allocate_quota(fleet)
    per_site: dict[str, Counter] = {}
    for ref in fleet.queues:
        total = Counter()
        for site, quota in nominal[ref.name].items():
            per_site.setdefault(site, Counter()).update(quota)
            total.update(quota)
        assert total == Counter(ref.queue.quota), ref.name
    for site, used in per_site.items():
        cap = fleet.site(site).gpu_capacity()
        for acc, n in used.items():
            assert n <= cap[acc], (site, acc)


def test_higher_priority_queue_is_placed_first_on_shared_gpus(fleet):
    nominal = kueue.allocate_quota(fleet)
    cap = fleet.site("dc-fra").gpu_capacity()["h100-80gb"]
    assert nominal["clinical-train"]["dc-fra"]["h100-80gb"] == 16
    assert nominal["research-train"]["dc-fra"]["h100-80gb"] == cap - 16
    assert nominal["research-train"]["aws-euc1"]["h100-80gb"] == 40 - (cap - 16)


def test_dispatch_plan_shows_gpus_behind_each_step(fleet):
    plan = {p["name"]: p for p in multikueue.dispatch_plan(fleet)}
    assert list(plan) == ["clinical-train", "research-train"]  # priority order
    research = plan["research-train"]
    assert research["team"] == "research" and research["data_class"] is None
    assert [(s["site"], s["kind"]) for s in research["steps"]] == [("dc-fra", "datacenter"), ("aws-euc1", "aws")]
    assert research["steps"][1]["gpus"] == {"h100-80gb": 32}  # 4 x p5.48xlarge at max size
    assert research["steps"][0]["gpus"] == {"h100-80gb": fleet.site("dc-fra").gpu_capacity()["h100-80gb"]}
    assert plan["clinical-train"]["data_class"] == "regulated"
    assert [s["site"] for s in plan["clinical-train"]["steps"]] == ["dc-fra"]
    assert research["unplaced"] == {}


def test_cluster_queues_borrow_within_the_sites_cohort_with_fair_sharing(bundles, fleet):
    cfg = _manager_config(bundles["dc-fra"]["kueue"])
    assert cfg["fairSharing"]["preemptionStrategies"]
    cqs = objects_of(bundles["dc-fra"], "ClusterQueue")
    assert {cq["spec"]["cohortName"] for cq in cqs} == {fleet.name}
    research = named(cqs, "research-train")["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]
    assert research["borrowingLimit"] == 20  # 50 % of 40
    assert named(cqs, "clinical-train")["spec"]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "team-clinical"}}


def test_priority_classes_carry_queue_priority(bundles):
    wpcs = objects_of(bundles["dc-fra"], "WorkloadPriorityClass")
    assert {w["metadata"]["name"]: w["value"] for w in wpcs} == {"clinical-train-priority": 200, "research-train-priority": 100}


# ------------------------------------------------------------------------ flavors


def _tolerates(tolerations, taint) -> bool:
    key, value, effect = taint
    for t in tolerations:
        if t.get("effect") not in (None, effect) or t.get("key") not in (None, key):
            continue
        if t["operator"] == "Exists" or t.get("value", "") == value:
            return True
    return False


def test_cloud_flavors_select_and_tolerate_the_node_pools_that_carry_them(bundles, fleet):
    site = fleet.site("aws-euc1")
    flavors = objects_of(bundles["aws-euc1"], "ResourceFlavor")
    for f in flavors:
        acc = f["metadata"]["labels"]["gpufleet.io/accelerator"]
        pools = [NodePoolArgs.from_config(p, site.name, "x", list(site.aws.network.availability_zones)) for p in site.node_pools if p.accelerator == acc]
        assert pools, acc
        for pool in pools:
            assert f["spec"]["nodeLabels"].items() <= pool.labels.items()
            for t in pool.taints:
                assert _tolerates(f["spec"]["tolerations"], (t["key"], t["value"], t["effect"]))
        assert "topologyName" not in f["spec"]


def test_data_centre_flavors_match_server_labels_and_use_the_fabric_topology(bundles, fleet):
    site = fleet.site("dc-fra")
    objs = objects_of(bundles["dc-fra"])
    topo = named([o for o in objs if o["kind"] == "Topology"], kueue.TOPOLOGY)
    levels = [lvl["nodeLabel"] for lvl in topo["spec"]["levels"]]
    assert levels == ["gpufleet.io/ib-block", "gpufleet.io/rack", "kubernetes.io/hostname"]
    whole = named([o for o in objs if o["kind"] == "ResourceFlavor"], "h100-80gb")
    assert whole["spec"]["topologyName"] == kueue.TOPOLOGY
    for server in (s for s in site.servers if s.spec.accelerator == "h100-80gb"):
        labels = node_labels(site, server)
        assert whole["spec"]["nodeLabels"].items() <= labels.items()
        assert all(level in labels for level in levels[:-1]), server.name
        for text in node_taints(server):
            head, _, effect = text.rpartition(":")
            key, _, value = head.partition("=")
            assert _tolerates(whole["spec"]["tolerations"], (key, value, effect))


def test_mig_slices_are_pooled_in_the_cohort_and_borrowable(bundles, fleet):
    objs = objects_of(bundles["dc-fra"])
    cohort = named([o for o in objs if o["kind"] == "Cohort"], fleet.name)
    group = cohort["spec"]["resourceGroups"][0]
    quota = {r["name"]: r["nominalQuota"] for r in group["flavors"][0]["resources"]}
    # fra-hgx-04: GPUs 0-3 split into 3 x 2g.20gb + 1 x 1g.10gb each
    assert quota == {"nvidia.com/mig-2g.20gb": 12, "nvidia.com/mig-1g.10gb": 4}
    flavor = named([o for o in objs if o["kind"] == "ResourceFlavor"], "h100-80gb-mig")
    assert flavor["spec"]["topologyName"] == kueue.TOPOLOGY  # TAS too: see the next test


@pytest.mark.parametrize("site", ["dc-fra"])
def test_data_centre_cluster_queues_are_tas_only(bundles, site):
    """Kueue applies implicit TAS only to a ClusterQueue whose flavors are all TAS
    (isTASOnly); in a mixed queue a workload without a topology annotation is
    refused on the TAS flavor. So every flavor a data-centre queue lists is TAS."""
    objs = objects_of(bundles[site])
    flavors = {f["metadata"]["name"]: f for f in objs if f["kind"] == "ResourceFlavor"}
    topologies = {t["metadata"]["name"] for t in objs if t["kind"] == "Topology"}
    cqs = [o for o in objs if o["kind"] == "ClusterQueue"]
    assert cqs
    for cq in cqs:
        listed = [f["name"] for g in cq["spec"]["resourceGroups"] for f in g["flavors"]]
        assert listed and all(flavors[n]["spec"].get("topologyName") in topologies for n in listed), (cq["metadata"]["name"], listed)


def test_cloud_cluster_queues_are_quota_only(bundles):
    """A cloud pool at zero has no nodes for TAS to place pods on; quota-only
    admission lets the pods exist, so cluster-autoscaler can add the nodes."""
    objs = objects_of(bundles["aws-euc1"])
    assert not [o for o in objs if o["kind"] == "Topology"]
    assert all("topologyName" not in f["spec"] for f in objs if f["kind"] == "ResourceFlavor")


def test_data_centre_servers_without_fabric_labels_get_the_host_topology(fleet_variant, tmp_path):
    def edit(data):
        hosts = tmp_path / "inventory" / "dc-fra" / "hosts.yml"
        hosts.write_text(hosts.read_text().replace("gpufleet_ib_block: ib-a, ", ""))

    variant = fleet_variant(edit)
    objs = kueue.worker_objects(variant, variant.site("dc-fra"))
    whole = named([o for o in objs if o["kind"] == "ResourceFlavor"], "h100-80gb")
    assert whole["spec"]["topologyName"] == kueue.TOPOLOGY_HOSTS
    hosts_topology = named([o for o in objs if o["kind"] == "Topology"], kueue.TOPOLOGY_HOSTS)
    assert [lvl["nodeLabel"] for lvl in hosts_topology["spec"]["levels"]] == ["kubernetes.io/hostname"]
    assert not [o for o in objs if o["kind"] == "Topology" and o["metadata"]["name"] == kueue.TOPOLOGY]


def test_hub_flavors_are_tas_flavors_of_a_topology_with_the_fabric_levels(bundles, fleet):
    """The manager checks a topology request against its own flavor before it
    dispatches (checkPodSetAndFlavorMatchForTAS), so the hub needs a Topology
    with the levels a job may ask for and TAS flavors (upstream's MultiKueue +
    TAS manager setup)."""
    hub = _hub(bundles, fleet)
    topo = named([o for o in hub if o["kind"] == "Topology"], kueue.TOPOLOGY)
    assert kueue.LABEL_IB_BLOCK in [lvl["nodeLabel"] for lvl in topo["spec"]["levels"]]
    flavors = [o for o in hub if o["kind"] == "ResourceFlavor"]
    assert flavors
    for f in flavors:
        assert f["spec"]["topologyName"] == kueue.TOPOLOGY
        assert len(f["spec"]["nodeLabels"]) >= 1  # the CRD's rule for TAS flavors


def test_a_fleet_without_queues_still_renders_valid_bundles(fleet_variant):
    def edit(data):
        for team in data["teams"]:
            team["queues"] = []

    variant = fleet_variant(edit)
    for site in variant.sites:
        objs = [o for b in k8s.site_bundles(variant, site.name) for o in b.objects]
        assert not [o for o in objs if o["kind"] in ("ClusterQueue", "MultiKueueConfig")]
        assert_valid(objs)
