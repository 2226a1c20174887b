"""One test per check between the fleet's inputs (fleet.yaml, Pulumi stacks, inventories).

Each test breaks one thing in a private copy of the example fleet and asserts
the exact ``file: key.path: message`` line(s) the user gets.
"""

from __future__ import annotations

import shutil

import pytest

from gpufleet.model import replica_memory_gib, replica_memory_need_gib

F = "stacks/fleet.yaml"
EUC1 = "stacks/Pulumi.aws-euc1.yaml"
USE1 = "stacks/Pulumi.aws-use1.yaml"
HGX04 = "inventory/dc-fra/host_vars/fra-hgx-04.yml"


def test_example_is_valid(fleet):
    assert fleet.problems() == []
    loaded = fleet.load()
    assert [s.name for s in loaded.sites] == ["fra-hub", "dc-fra", "aws-euc1", "aws-use1"]


# ------------------------------------------------------------------- unique names


def test_duplicate_site_name(fleet):
    def dup(d):
        d["sites"].append(dict(d["sites"][3]))

    fleet.edit(F, dup)
    assert f"{F}: sites[4].name: duplicate site name 'aws-use1'" in fleet.problems()


@pytest.mark.parametrize(
    "change, line",
    [
        (lambda d: d["teams"][1].update(name="research"), "teams[1].name: duplicate team name 'research'"),
        (lambda d: d["teams"][1].update(namespace="team-research"), "teams[1].namespace: duplicate namespace 'team-research'"),
        (lambda d: d["teams"][1]["queues"][0].update(name="research-train"), "teams[1].queues[0].name: duplicate queue name 'research-train'"),
        (lambda d: d["models"][2].update(name="llama-3-1-70b-instruct"), "models[2].name: duplicate model name 'llama-3-1-70b-instruct'"),
        (lambda d: d["residency"].append(dict(d["residency"][0])), "residency[1].data_class: duplicate residency data_class 'regulated'"),
    ],
    ids=["team", "namespace", "queue", "model", "residency"],
)
def test_duplicate_names(fleet, change, line):
    fleet.edit(F, change)
    assert fleet.problems() == [f"{F}: {line}"]


# --------------------------------------------------------------------- references


def test_hub_must_exist(fleet):
    fleet.edit(F, lambda d: d.update(hub="fra-hb"))
    assert fleet.problems() == [f"{F}: hub: unknown site 'fra-hb' (did you mean 'fra-hub'?)"]


def test_hub_is_not_a_worker(fleet):
    fleet.edit(F, lambda d: d["teams"][0]["queues"][0]["sites"].append("fra-hub"))
    assert fleet.problems() == [f"{F}: teams[0].queues[0].sites[2]: 'fra-hub' is the hub: the MultiKueue manager cannot run the workloads it dispatches"]


def test_queue_unknown_site_with_hint(fleet):
    fleet.edit(F, lambda d: d["teams"][0]["queues"][0].update(sites=["dc-fra", "aws-euc2"]))
    # no quota line: the capacity behind a misspelt site is unknown
    assert fleet.problems() == [f"{F}: teams[0].queues[0].sites[1]: unknown site 'aws-euc2' (did you mean 'aws-euc1'?)"]


def test_queue_site_listed_twice(fleet):
    fleet.edit(F, lambda d: d["teams"][0]["queues"][0]["sites"].append("dc-fra"))
    assert fleet.problems() == [f"{F}: teams[0].queues[0].sites: a site is listed twice"]


def test_model_unknown_site_with_hint(fleet):
    fleet.edit(F, lambda d: d["models"][1].update(sites=["aws-use2"]))
    assert fleet.problems() == [f"{F}: models[1].sites[0]: unknown site 'aws-use2' (did you mean 'aws-use1'?)"]


def test_residency_unknown_site_without_close_match(fleet):
    fleet.edit(F, lambda d: d["residency"][0]["sites"].append("berlin"))
    assert fleet.problems() == [f"{F}: residency[0].sites[1]: unknown site 'berlin'"]


# ------------------------------------------------------------------ stack files


def test_stack_file_missing(fleet):
    fleet.path(USE1).unlink()
    assert fleet.problems() == [f"{F}: sites[3]: no stack file {USE1} for site 'aws-use1'"]


def test_stray_stack_file(fleet):
    shutil.copy(fleet.path(USE1), fleet.path("stacks/Pulumi.aws-use2.yaml"))
    assert fleet.problems() == ["stacks/Pulumi.aws-use2.yaml: stack for 'aws-use2', which is not a site in fleet.yaml (did you mean 'aws-use1'?)"]


def test_region_mismatch(fleet):
    fleet.edit(USE1, lambda d: d["config"].update({"aws:region": "us-west-2"}))
    assert fleet.problems() == [f"{USE1}: config.aws:region: 'us-west-2' does not match the site's region 'us-east-1' in {F}"]


def test_region_missing(fleet):
    fleet.edit(USE1, lambda d: d["config"].pop("aws:region"))
    assert fleet.problems() == [f"{USE1}: config.aws:region: required key is missing"]


def test_stack_site_mismatch(fleet):
    fleet.edit(USE1, lambda d: d["config"].update({"gpufleet:site": "aws-euc1"}))
    assert fleet.problems() == [f"{USE1}: config.gpufleet:site: 'aws-euc1' does not match the stack's site 'aws-use1'"]


def test_datacenter_stack_with_aws_keys(fleet):
    fleet.edit("stacks/Pulumi.dc-fra.yaml", lambda d: d["config"].update({"aws:region": "eu-central-1", "aws:profile": "x"}))
    assert fleet.problems() == [
        "stacks/Pulumi.dc-fra.yaml: config.aws:profile: a datacenter stack declares no AWS resources",
        "stacks/Pulumi.dc-fra.yaml: config.aws:region: a datacenter stack declares no AWS resources",
    ]


# -------------------------------------------------------------------- inventories


def test_inventory_missing(fleet):
    shutil.rmtree(fleet.path("inventory/fra-hub"))
    assert fleet.problems() == ["inventory/fra-hub: inventory folder not found"]


def test_inventory_without_hosts_file(fleet):
    fleet.path("inventory/fra-hub/hosts.yml").unlink()
    assert fleet.problems() == ["inventory/fra-hub: no hosts file (hosts.yml) in the inventory folder"]


def test_host_site_mismatch(fleet):
    fleet.edit(HGX04, lambda d: d.update(gpufleet_site="fra-hub"))
    assert fleet.problems() == [f"{HGX04}: fra-hgx-04.gpufleet_site: 'fra-hub' but the inventory belongs to site 'dc-fra'"]


def test_host_site_mismatch_reported_where_it_is_set(fleet):
    fleet.edit("inventory/fra-hub/group_vars/all.yml", lambda d: d.update(gpufleet_site="dc-fra"))
    # one line for the file and key to fix, naming the hosts it reaches
    assert fleet.problems() == [
        "inventory/fra-hub/group_vars/all.yml: gpufleet_site: 'dc-fra' but the inventory belongs to site 'fra-hub' (on 3 hosts: hub-cp-01, hub-cp-02, hub-cp-03)"
    ]


def test_problem_inherited_by_many_hosts_is_one_line(fleet):
    hosts = fleet.read("inventory/dc-fra/hosts.yml")
    hosts["all"]["children"]["gpu"]["children"]["l40s_4x"]["hosts"].update(
        {f"fra-l40s-{n:02d}": {"ansible_host": f"10.20.2.{n + 10}", "gpufleet_rack": "c03", "gpufleet_bmc_address": f"10.21.2.{n + 10}"} for n in range(4, 11)}
    )
    fleet.write("inventory/dc-fra/hosts.yml", hosts)
    fleet.edit("inventory/dc-fra/group_vars/l40s_4x.yml", lambda d: d.update(gpufleet_fabric="ib"))
    fleet.edit(HGX04, lambda d: d.update(gpufleet_gpu_count=17))
    assert fleet.problems() == [
        "inventory/dc-fra/group_vars/l40s_4x.yml: gpufleet_fabric: Input should be 'infiniband', 'roce', 'efa' or 'tcp' (on 10 hosts: fra-l40s-01, fra-l40s-02, fra-l40s-03 and 7 more)",
        f"{HGX04}: fra-hgx-04.gpufleet_gpu_count: Input should be less than or equal to 16",
    ]


# ---------------------------------------------------------------------------- MIG


def _layout(fleet, layout, rel=HGX04):
    data = fleet.read(rel) if fleet.path(rel).exists() else {}
    data["gpufleet_mig_layout"] = layout
    fleet.write(rel, data)


def test_mig_profile_unknown_for_gpu(fleet):
    _layout(fleet, [{"devices": [0, 1, 2, 3], "profiles": {"2g.20gb": 3, "3g.71gb": 1}}])
    (line,) = fleet.problems()
    assert line.startswith(f"{HGX04}: fra-hgx-04.gpufleet_mig_layout[0].profiles: MIG profile '3g.71gb' does not exist on h100-80gb (did you mean '3g.40gb'?); valid: ")
    assert "1g.10gb, 1g.10gb+me" in line


def test_mig_on_gpu_without_mig(fleet):
    _layout(fleet, [{"devices": "all", "profiles": {"1g.10gb": 7}}], rel="inventory/dc-fra/host_vars/fra-l40s-01.yml")
    assert fleet.problems() == ["inventory/dc-fra/host_vars/fra-l40s-01.yml: fra-l40s-01.gpufleet_mig_layout[0].profiles: l40s does not support MIG"]


def test_mig_too_many_of_a_profile(fleet):
    _layout(fleet, [{"devices": [0, 1, 2, 3], "profiles": {"3g.40gb": 3}}])
    # the example's regulated model needs 2g.20gb slices; keep it placeable
    fleet.edit(F, lambda d: d["models"].pop(2))
    assert fleet.problems() == [f"{HGX04}: fra-hgx-04.gpufleet_mig_layout[0].profiles: at most 2 x 3g.40gb fit on one h100-80gb, not 3"]


def test_mig_slices_overflow(fleet):
    _layout(fleet, [{"devices": [0, 1, 2, 3], "profiles": {"2g.20gb": 3, "1g.10gb": 2}}])
    assert fleet.problems() == [
        f"{HGX04}: fra-hgx-04.gpufleet_mig_layout[0].profiles: layout {{'2g.20gb': 3, '1g.10gb': 2}} needs 8 compute and 8 memory slices; one h100-80gb has 7 and 8"
    ]


def test_mig_memory_slices_overflow(fleet):
    # 7 compute slices, but 4 + 4 + 1 = 9 memory slices
    _layout(fleet, [{"devices": [0, 1, 2, 3], "profiles": {"3g.40gb": 2, "1g.10gb": 1}}])
    fleet.edit(F, lambda d: d["models"].pop(2))
    assert fleet.problems() == [
        f"{HGX04}: fra-hgx-04.gpufleet_mig_layout[0].profiles: layout {{'3g.40gb': 2, '1g.10gb': 1}} needs 7 compute and 9 memory slices; one h100-80gb has 7 and 8"
    ]


def test_mig_full_layout_fits(fleet):
    _layout(fleet, [{"devices": [0, 1, 2, 3], "profiles": {"2g.20gb": 2, "3g.40gb": 1}}, {"devices": [4], "profiles": {"7g.80gb": 1}}])
    assert fleet.problems() == []
    dc = fleet.load().site("dc-fra")
    assert dc.mig_capacity()[("h100-80gb", "7g.80gb")] == 1
    assert dc.gpu_capacity()["h100-80gb"] == 32 - 5


def test_mig_device_index_out_of_range(fleet):
    _layout(fleet, [{"devices": [6, 7, 8], "profiles": {"2g.20gb": 3}}])
    assert fleet.problems() == [f"{HGX04}: fra-hgx-04.gpufleet_mig_layout[0].devices: GPU index 8 does not exist on a 8-GPU server"]


def test_mig_layout_changes_capacity(fleet):
    """GPUs given to MIG leave the whole-GPU capacity that training quotas draw on."""
    loaded = fleet.load()
    dc = loaded.site("dc-fra")
    assert dc.gpu_capacity()["h100-80gb"] == 4 * 8 - 4
    assert dc.mig_capacity()[("h100-80gb", "2g.20gb")] == 3 * 4
    _layout(fleet, [{"devices": "all", "profiles": {"2g.20gb": 3}}])
    dc = fleet.load().site("dc-fra")
    assert dc.gpu_capacity()["h100-80gb"] == 3 * 8
    assert dc.mig_capacity()[("h100-80gb", "2g.20gb")] == 3 * 8


# -------------------------------------------------------------------------- quota


def test_quota_exceeds_capacity(fleet):
    fleet.edit(F, lambda d: d["teams"][1]["queues"][0]["quota"].update({"h100-80gb": 29}))
    assert fleet.problems() == [f"{F}: teams[1].queues[0].quota.h100-80gb: quota of 29 h100-80gb GPUs exceeds the 28 whole GPUs at its sites (dc-fra: 28)"]


def test_quota_fits_exactly(fleet):
    fleet.edit(F, lambda d: d["teams"][1]["queues"][0]["quota"].update({"h100-80gb": 28}))
    assert fleet.problems() == []


def test_quota_sums_over_sites_and_counts_pools_at_max_size(fleet):
    # dc-fra 28 whole H100s + aws-euc1 p5 pool at maxSize 4 x 8 = 60
    fleet.edit(F, lambda d: d["teams"][0]["queues"][0]["quota"].update({"h100-80gb": 60}))
    assert fleet.problems() == []
    fleet.edit(F, lambda d: d["teams"][0]["queues"][0]["quota"].update({"h100-80gb": 61}))
    assert fleet.problems() == [
        f"{F}: teams[0].queues[0].quota.h100-80gb: quota of 61 h100-80gb GPUs exceeds the 60 whole GPUs at its sites (dc-fra: 28, aws-euc1: 32)"
    ]


def test_quota_for_absent_accelerator(fleet):
    fleet.edit(F, lambda d: d["teams"][0]["queues"][0]["quota"].update({"a100-80gb": 8}))
    assert fleet.problems() == [
        f"{F}: teams[0].queues[0].quota.a100-80gb: quota of 8 a100-80gb GPUs exceeds the 0 whole GPUs at its sites (dc-fra: 0, aws-euc1: 0)"
    ]


# ------------------------------------------------------------------------- models


def test_model_does_not_fit_memory(fleet):
    fleet.edit(F, lambda d: d["models"][0].update(kv_cache_gib=100))
    assert fleet.problems() == [
        f"{F}: models[0].placement: does not fit: 65.8 GiB of weights (70.6B at fp8) + 100 GiB KV cache + 4 GiB runtime = 169.8 GiB, but 4 x l40s offers 162.0 GiB at 90% utilisation"
    ]


def test_model_fit_counts_kv_cache(fleet):
    """The same weights fit with a small KV allowance and not with a large one."""
    fleet.edit(F, lambda d: d["models"][2].update(placement={"accelerator": "h100-80gb", "mig_profile": "1g.10gb"}, kv_cache_gib=4))
    assert fleet.problems() == []
    fleet.edit(F, lambda d: d["models"][2].update(kv_cache_gib=8))
    assert fleet.problems() == [
        f"{F}: models[2].placement: does not fit: 3.7 GiB of weights (8B at awq) + 8 GiB KV cache + 1 GiB runtime = 12.7 GiB, but 1g.10gb offers 9.0 GiB at 90% utilisation"
    ]


def test_model_fit_depends_on_quantization(fleet):
    loaded = fleet.load()
    big = loaded.models[0]
    assert replica_memory_need_gib(big) < replica_memory_gib(big)
    fleet.edit(F, lambda d: d["models"][0].update(quantization="none"))
    (line,) = fleet.problems()
    assert line.startswith(f"{F}: models[0].placement: does not fit: 131.5 GiB of weights (70.6B at none)")


def test_model_mig_profile_unknown_for_accelerator(fleet):
    fleet.edit(F, lambda d: d["models"][2]["placement"].update(mig_profile="2g.35gb"))
    assert fleet.problems() == [
        f"{F}: models[2].placement.mig_profile: MIG profile '2g.35gb' does not exist on h100-80gb (did you mean '2g.20gb'?)",
        f"{F}: models[2].sites[0]: site 'dc-fra' has no h100-80gb GPU partitioned with MIG profile 2g.35gb",
    ]


def test_model_mig_profile_on_accelerator_without_mig(fleet):
    fleet.edit(F, lambda d: d["models"][1]["placement"].update(mig_profile="1g.10gb"))
    assert fleet.problems() == [
        f"{F}: models[1].placement.mig_profile: l4 does not support MIG",
        f"{F}: models[1].sites[0]: site 'aws-use1' has no l4 GPU partitioned with MIG profile 1g.10gb",
        f"{F}: models[1].time_slicing: time-slicing applies to whole GPUs, not MIG slices",
    ]


def test_model_placed_where_accelerator_is_absent(fleet):
    fleet.edit(F, lambda d: d["models"][1]["sites"].append("aws-euc1"))
    assert fleet.problems() == [f"{F}: models[1].sites[1]: site 'aws-euc1' has no whole l4 GPUs (it has: h100-80gb, l40s)"]


def test_model_placed_where_mig_profile_is_absent(fleet):
    fleet.edit(F, lambda d: d["models"][2]["placement"].update(mig_profile="3g.40gb"))
    assert fleet.problems() == [f"{F}: models[2].sites[0]: site 'dc-fra' has no h100-80gb GPU partitioned with MIG profile 3g.40gb"]


def test_model_on_mig_needs_partitioned_gpus(fleet):
    """Without a MIG layout the site has whole H100s but no 2g.20gb slice."""
    _layout(fleet, [])
    assert fleet.problems() == [f"{F}: models[2].sites[0]: site 'dc-fra' has no h100-80gb GPU partitioned with MIG profile 2g.20gb"]


def test_time_sliced_replicas_share_gpu_memory(fleet):
    """Two 4-bit 8B replicas fit on one L4 together; four do not."""
    assert fleet.problems() == []
    fleet.edit(F, lambda d: d["models"][1].update(time_slicing=4))
    assert fleet.problems() == [
        f"{F}: models[1].placement: does not fit: 3.7 GiB of weights (8B at awq) + 4 GiB KV cache + 1 GiB runtime = 8.7 GiB, but 1 x l4 shared by 4 time-sliced replicas offers 5.1 GiB at 90% utilisation"
    ]


def test_time_slicing_on_mig(fleet):
    fleet.edit(F, lambda d: d["models"][2].update(time_slicing=2))
    assert fleet.problems() == [f"{F}: models[2].time_slicing: time-slicing applies to whole GPUs, not MIG slices"]


def test_replicas_at_names_only_the_models_sites(fleet):
    fleet.edit(F, lambda d: d["models"][0].update(replicas_at={"dc-fra": 3, "dc-frx": 2}))
    assert fleet.problems() == [f"{F}: models[0].replicas_at.dc-frx: 'dc-frx' is not one of the model's sites (did you mean 'dc-fra'?); its sites: aws-euc1, aws-use1, dc-fra"]
    # a real site the model is not placed at is refused too: nothing would be deployed there
    fleet.edit(F, lambda d: d["models"][1].update(replicas_at={"dc-fra": 1}))
    fleet.edit(F, lambda d: d["models"][0].pop("replicas_at"))
    assert fleet.problems() == [f"{F}: models[1].replicas_at.dc-fra: 'dc-fra' is not one of the model's sites; its sites: aws-use1"]


@pytest.mark.parametrize(
    "value, message",
    [
        (0, "Input should be greater than 0"),
        (1001, "Input should be less than or equal to 1000"),
        ("2", "Input should be a valid integer (got str '2')"),
        (2.0, "Input should be a valid integer (got float 2.0)"),
    ],
    ids=["zero", "too-many", "string", "float"],
)
def test_replicas_at_counts_are_whole_numbers_from_1_to_1000(fleet, value, message):
    fleet.edit(F, lambda d: d["models"][0].update(replicas_at={"dc-fra": value}))
    assert fleet.problems() == [f"{F}: models[0].replicas_at.dc-fra: {message}"]


def test_replicas_at_sets_one_sites_count(fleet):
    fleet.edit(F, lambda d: d["models"][0].update(replicas_at={"dc-fra": 3}))
    m = fleet.load().models[0]
    assert [(s, m.replicas_for(s)) for s in m.sites] == [("aws-euc1", 2), ("aws-use1", 2), ("dc-fra", 3)]


# ---------------------------------------------------------------------- residency


def test_residency_queue_violation(fleet):
    fleet.edit(F, lambda d: d["teams"][1]["queues"][0]["sites"].append("aws-euc1"))
    assert fleet.problems() == [f"{F}: teams[1].queues[0].sites[1]: queue holds 'regulated' data, which may only be at dc-fra; 'aws-euc1' is not allowed"]


def test_residency_model_violation(fleet):
    fleet.edit(F, lambda d: d["models"][2]["sites"].insert(0, "aws-use1"))
    assert fleet.problems() == [
        f"{F}: models[2].sites[0]: model holds 'regulated' data, which may only be at dc-fra; 'aws-use1' is not allowed",
        f"{F}: models[2].sites[0]: site 'aws-use1' has no h100-80gb GPU partitioned with MIG profile 2g.20gb",
    ]


def test_a_regulated_model_loads_its_weights_from_the_object_store(fleet):
    """Its namespace reaches only DNS, itself and the site's object store, so a
    Hugging Face repository as its source would never download (the example
    had one until this check)."""
    fleet.edit(F, lambda d: d["models"][2].update(source="acme/clinical-notes-8b-awq"))
    assert fleet.problems() == [
        f"{F}: models[2].source: 'clinical-notes-8b' holds 'regulated' data, whose namespace reaches only DNS, itself and"
        " the site's object store: give the weights as an object-store path (s3://bucket/prefix), not 'acme/clinical-notes-8b-awq'"
    ]
    fleet.edit(F, lambda d: d["models"][0].update(source="s3://acme-models/llama"))  # allowed for any model
    fleet.edit(F, lambda d: d["models"][2].update(source="s3://acme-models/notes"))
    assert fleet.problems() == []


def test_missing_residency_rule(fleet):
    fleet.edit(F, lambda d: d["teams"][1]["queues"][0].update(data_class="regulatd"))
    assert fleet.problems() == [f"{F}: teams[1].queues[0].data_class: no residency rule for data class 'regulatd' (did you mean 'regulated'?)"]


def test_missing_residency_rule_for_model(fleet):
    fleet.edit(F, lambda d: d["models"][0].update(data_class="secret"))
    assert fleet.problems() == [f"{F}: models[0].data_class: no residency rule for data class 'secret'"]


def test_allowed_sites(fleet):
    loaded = fleet.load()
    assert loaded.allowed_sites("regulated") == ["dc-fra"]
    assert loaded.allowed_sites(None) is None


# -------------------------------------------------------------------------- CIDRs


def test_datacenter_cidrs_overlap(fleet):
    fleet.edit(F, lambda d: d["sites"][1].update(node_cidr="10.10.0.0/20"))
    assert fleet.problems() == [f"{F}: sites[1].node_cidr: 10.10.0.0/20 overlaps 10.10.0.0/24 (fra-hub node_cidr)"]


def test_vpc_cidrs_overlap(fleet):
    fleet.edit(USE1, lambda d: d["config"]["gpufleet:network"].update(vpcCidr="10.40.128.0/17"))
    assert fleet.problems() == [f"{USE1}: config.gpufleet:network.vpcCidr: 10.40.128.0/17 overlaps 10.40.0.0/16 (aws-euc1 vpcCidr)"]


def test_vpc_overlaps_datacenter_pod_cidr(fleet):
    fleet.edit(EUC1, lambda d: d["config"]["gpufleet:network"].update(vpcCidr="10.120.0.0/16"))
    assert fleet.problems() == [f"{EUC1}: config.gpufleet:network.vpcCidr: 10.120.0.0/16 overlaps 10.120.0.0/16 (dc-fra pod_cidr)"]


# ------------------------------------------------------------- AWS network, pools


def test_availability_zone_not_in_region(fleet):
    fleet.edit(USE1, lambda d: d["config"]["gpufleet:network"]["availabilityZones"].append("us-west-2a"))
    assert fleet.problems() == [f"{USE1}: config.gpufleet:network.availabilityZones: 'us-west-2a' is not in region us-east-1"]


def test_pool_zone_not_in_network(fleet):
    fleet.edit(EUC1, lambda d: d["config"]["gpufleet:nodePools"][2].update(availabilityZones=["eu-central-1d"]))
    assert fleet.problems() == [f"{EUC1}: config.gpufleet:nodePools[2].availabilityZones: 'eu-central-1d' is not one of the network's availabilityZones"]


def test_duplicate_pool_names(fleet):
    fleet.edit(USE1, lambda d: d["config"]["gpufleet:nodePools"][2].update(name="serving-l40s"))
    assert fleet.problems() == [f"{USE1}: config.gpufleet:nodePools: duplicate node pool name 'serving-l40s'"]


def _pool(fleet, index, **changes):
    fleet.edit(USE1, lambda d: d["config"]["gpufleet:nodePools"][index].update(changes))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"minSize": 12}, "minSize 12 is larger than maxSize 10"),
        ({"instanceTypes": ["g6.2xlarge", "g6e.2xlarge"]}, "instance types carry different accelerators (l4, l40s); use one pool per accelerator"),
        ({"instanceTypes": ["g6.2xlarge", "g6.12xlarge"]}, "instance types in one pool must carry the same number of GPUs"),
        ({"efa": True}, "efa: true, but g6.2xlarge, g6.4xlarge does not support EFA"),
        ({"capacityType": "reserved"}, "capacityType reserved needs capacityReservationId"),
        ({"capacityType": "capacity-block", "capacityReservationId": "cr-0a1b2c3d4e5f60718"}, "a reservation is for one instance type: list exactly one"),
        ({"capacityReservationId": "cr-0a1b2c3d4e5f60718"}, "capacityReservationId is only for capacityType reserved or capacity-block"),
        (
            {"instanceTypes": ["p5.48xlarge"], "efa": True, "availabilityZones": ["us-east-1a", "us-east-1b"]},
            "an EFA pool sits in one cluster placement group, in one availability zone: list exactly one in availabilityZones",
        ),
    ],
    ids=["min-gt-max", "mixed-accelerators", "mixed-gpu-counts", "efa-unsupported", "reservation-without-id", "reservation-two-types", "id-without-reservation", "efa-multi-zone"],
)
def test_node_pool_rules(fleet, changes, message):
    _pool(fleet, 2, **changes)
    assert fleet.problems() == [f"{USE1}: config.gpufleet:nodePools[2]: {message}"]


@pytest.mark.parametrize(
    "cluster, message",
    [
        ({"endpointAccess": "public-and-private"}, "endpointAccess public-and-private needs publicAccessCidrs (without them EKS opens the public endpoint to 0.0.0.0/0)"),
        ({"publicAccessCidrs": ["192.0.2.0/24"]}, "publicAccessCidrs needs endpointAccess: public-and-private"),
        ({"endpointAccess": "public-and-private", "publicAccessCidrs": ["0.0.0.0/0"]}, "publicAccessCidrs must not include 0.0.0.0/0; list your office or VPN ranges"),
    ],
    ids=["public-without-cidrs", "cidrs-without-public", "public-to-world"],
)
def test_cluster_endpoint_rules(fleet, cluster, message):
    fleet.edit(USE1, lambda d: d["config"]["gpufleet:cluster"].update(cluster))
    assert fleet.problems() == [f"{USE1}: config.gpufleet:cluster: {message}"]


def test_efa_supported_on_p5(fleet):
    loaded = fleet.load()
    pool = loaded.site("aws-euc1").node_pools[2]
    assert pool.efa and pool.efa_interfaces == 32 and pool.gpus_per_node == 8 and pool.accelerator == "h100-80gb"


def test_unknown_key_hint_ignores_case(fleet):
    fleet.edit("stacks/Pulumi.aws-use1.yaml", lambda d: d["config"]["gpufleet:network"].update(vpcCIDR="10.60.0.0/16"))
    assert fleet.problems() == [
        "stacks/Pulumi.aws-use1.yaml: config.gpufleet:network.vpcCIDR: unknown key (did you mean 'vpcCidr'?); expected one of: availabilityZones, natGateways, vpcCidr"
    ]
