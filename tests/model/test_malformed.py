"""Malformed input: `gpufleet validate` prints one `file: key.path: message` line
per problem, exits 2 and never shows a traceback.

Each case breaks one file of a private copy of the example fleet and lists the
exact problem lines expected (the summary line "N problems found" follows them).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpufleet.cli import main

F = "stacks/fleet.yaml"
EUC1 = "stacks/Pulumi.aws-euc1.yaml"
DC = "inventory/dc-fra"
L40S = f"{DC}/group_vars/l40s_4x.yml"
HGX04 = f"{DC}/host_vars/fra-hgx-04.yml"
ACCS = "known: h100-80gb, h200-141gb, a100-40gb, a100-80gb, l40s, l4, a10g"
L40S_HOSTS = "(on 3 hosts: fra-l40s-01, fra-l40s-02, fra-l40s-03)"


def at(data: Any, path: list) -> Any:
    for p in path:
        data = data[p]
    return data


def set_(rel: str, path: list, value: Any) -> Callable:
    return lambda fc: fc.edit(rel, lambda d: at(d, path[:-1]).__setitem__(path[-1], value))


def del_(rel: str, path: list) -> Callable:
    return lambda fc: fc.edit(rel, lambda d: at(d, path[:-1]).pop(path[-1]))


def rename(rel: str, path: list, old: str, new: str) -> Callable:
    def go(fc):
        def change(d):
            m = at(d, path)
            m[new] = m.pop(old)

        fc.edit(rel, change)

    return go


def text(rel: str, body: str) -> Callable:
    return lambda fc: fc.write_text(rel, body)


def raw(rel: str, body: bytes) -> Callable:
    return lambda fc: fc.path(rel).write_bytes(body)


CASES: dict[str, tuple[Callable, list[str]]] = {
    # ---------------------------------------------------------------- fleet.yaml
    "fleet-empty": (text(F, ""), [f"{F}: the file is empty; expected a mapping with name, hub and sites"]),
    "fleet-comments-only": (text(F, "# to do\n"), [f"{F}: the file is empty; expected a mapping with name, hub and sites"]),
    "fleet-yaml-syntax": (text(F, "name: acme\nhub: [fra-hub\nsites: []\n"), [f"{F}: line 3, column 6: not valid YAML: did not find expected ',' or ']'"]),
    "fleet-tab-indent": (text(F, "name: acme\n\thub: fra-hub\n"), [f"{F}: line 2, column 1: not valid YAML: found a tab character that violates indentation"]),
    "fleet-list": (text(F, "- name: acme\n"), [f"{F}: expected a mapping with name, hub and sites, not list"]),
    "fleet-scalar": (text(F, "acme\n"), [f"{F}: expected a mapping with name, hub and sites, not str"]),
    "fleet-not-utf8": (raw(F, b"name: \xff\xfe\n"), [f"{F}: cannot read: 'utf-8' codec can't decode byte 0xff in position 6: invalid start byte"]),
    "fleet-unknown-key-hint": (
        rename(F, [], "hub", "hubb"),
        [f"{F}: hub: required key is missing", f"{F}: hubb: unknown key (did you mean 'hub'?); expected one of: hub, models, name, residency, sites, teams"],
    ),
    "fleet-missing-key": (del_(F, ["hub"]), [f"{F}: hub: required key is missing"]),
    "site-kind-not-allowed": (set_(F, ["sites", 2, "kind"], "gcp"), [f"{F}: sites[2].kind: Input should be 'aws' or 'datacenter'"]),
    "site-aws-with-inventory": (
        set_(F, ["sites", 2, "inventory"], "inventory/x"),
        [f"{F}: sites[2]: 'inventory' belongs to datacenter sites; an aws site's network is in its Pulumi stack"],
    ),
    "site-datacenter-missing-location": (del_(F, ["sites", 1, "location"]), [f"{F}: sites[1]: a datacenter site needs location"]),
    "site-name-not-dns-label": (set_(F, ["sites", 3, "name"], "AWS_use1"), [f"{F}: sites[3].name: String should match pattern '^[a-z]([a-z0-9-]{{0,38}}[a-z0-9])?$'"]),
    "kubernetes-version-float": (set_(F, ["sites", 1, "kubernetes_version"], 1.33), [f"{F}: sites[1].kubernetes_version: Input should be a valid string (got float 1.33)"]),
    "cidr-host-bits": (set_(F, ["sites", 1, "node_cidr"], "10.20.0.1/20"), [f"{F}: sites[1].node_cidr: not an IPv4 network in CIDR notation: 10.20.0.1/20 has host bits set"]),
    "sites-mapping-not-list": (set_(F, ["sites"], {"fra-hub": {"kind": "datacenter"}}), [f"{F}: sites: Input should be a valid list (got dict {{'fra-hub': {{'kind': 'datacenter'}}}})"]),
    "replicas-string": (set_(F, ["models", 0, "replicas"], "two"), [f"{F}: models[0].replicas: Input should be a valid integer (got str 'two')"]),
    "bool-as-string": (set_(F, ["models", 0, "pii"], "no"), [f"{F}: models[0].pii: Input should be a valid boolean (got str 'no')"]),
    "quota-zero": (set_(F, ["teams", 0, "queues", 0, "quota"], {"h100-80gb": 0}), [f"{F}: teams[0].queues[0].quota.h100-80gb: Input should be greater than 0"]),
    "quota-unknown-accelerator": (
        set_(F, ["teams", 0, "queues", 0, "quota"], {"h100": 8}),
        [f"{F}: teams[0].queues[0].quota.h100: unknown accelerator 'h100' (did you mean 'h100-80gb'?); {ACCS}"],
    ),
    "quantization-not-allowed": (set_(F, ["models", 0, "quantization"], "fp4"), [f"{F}: models[0].quantization: Input should be 'none', 'fp8', 'awq', 'gptq' or 'int8'"]),
    "queue-unknown-key-hint": (
        rename(F, ["teams", 0, "queues", 0], "quota", "quotas"),
        [
            f"{F}: teams[0].queues[0].quota: required key is missing",
            f"{F}: teams[0].queues[0].quotas: unknown key (did you mean 'quota'?); expected one of: borrowing_limit_percent, data_class, name, priority, quota, sites",
        ],
    ),
    "mig-placement-with-gpus": (set_(F, ["models", 2, "placement", "gpus"], 2), [f"{F}: models[2].placement: a replica on a MIG slice uses exactly one slice: leave gpus at 1"]),
    "hub-unknown-site": (set_(F, ["hub"], "fra-hb"), [f"{F}: hub: unknown site 'fra-hb' (did you mean 'fra-hub'?)"]),
    "queue-unknown-site": (
        set_(F, ["teams", 1, "queues", 0, "sites"], ["dc-fr"]),
        [
            f"{F}: teams[1].queues[0].sites[0]: queue holds 'regulated' data, which may only be at dc-fra; 'dc-fr' is not allowed",
            f"{F}: teams[1].queues[0].sites[0]: unknown site 'dc-fr' (did you mean 'dc-fra'?)",
        ],
    ),
    "model-accelerator-unknown": (
        set_(F, ["models", 0, "placement", "accelerator"], "l40"),
        [f"{F}: models[0].placement.accelerator: unknown accelerator 'l40' (did you mean 'l40s'?); {ACCS}"],
    ),
    # ------------------------------------------------------------ Pulumi stacks
    "stack-empty": (text(EUC1, ""), [f"{EUC1}: a Pulumi stack file needs a 'config' mapping"]),
    "stack-yaml-syntax": (
        text(EUC1, "config:\n  gpufleet:site: aws-euc1\n   aws:region: eu-central-1\n"),
        [f"{EUC1}: line 3, column 14: not valid YAML: mapping values are not allowed in this context"],
    ),
    "stack-config-list": (text(EUC1, "config:\n  - gpufleet:site\n"), [f"{EUC1}: config: a Pulumi stack file needs a 'config' mapping"]),
    "stack-unknown-top-key": (set_(EUC1, ["confg"], 1), [f"{EUC1}: confg: unknown top-level key (did you mean 'config'?)"]),
    "stack-key-not-namespaced": (set_(EUC1, ["config", "region"], "eu-central-1"), [f"{EUC1}: config.region: config keys are namespaced, e.g. gpufleet:site or aws:region"]),
    "stack-unknown-key-hint": (
        set_(EUC1, ["config", "gpufleet:nodepools"], []),
        [f"{EUC1}: config.gpufleet:nodepools: unknown key (did you mean 'nodePools'?); expected one of: cluster, network, nodePools, site"],
    ),
    "pool-size-string": (set_(EUC1, ["config", "gpufleet:nodePools", 1, "minSize"], "2"), [f"{EUC1}: config.gpufleet:nodePools[1].minSize: Input should be a valid integer (got str '2')"]),
    "network-unknown-key": (
        rename(EUC1, ["config", "gpufleet:network"], "vpcCidr", "vpc_cidr_block"),
        [
            f"{EUC1}: config.gpufleet:network.vpcCidr: required key is missing",
            f"{EUC1}: config.gpufleet:network.vpc_cidr_block: unknown key (did you mean 'vpcCidr'?); expected one of: availabilityZones, natGateways, vpcCidr",
        ],
    ),
    "vpc-cidr-bad-netmask": (
        set_(EUC1, ["config", "gpufleet:network", "vpcCidr"], "10.40.0.0/33"),
        [f"{EUC1}: config.gpufleet:network.vpcCidr: not an IPv4 network in CIDR notation: '33' is not a valid netmask"],
    ),
    "instance-type-unknown-hint": (
        set_(EUC1, ["config", "gpufleet:nodePools", 2, "instanceTypes"], ["p5.48xl"]),
        [f"{EUC1}: config.gpufleet:nodePools[2].instanceTypes[0]: unknown instance type 'p5.48xl' (did you mean 'p5.48xlarge'?)"],
    ),
    "cluster-version-missing": (del_(EUC1, ["config", "gpufleet:cluster", "kubernetesVersion"]), [f"{EUC1}: config.gpufleet:cluster.kubernetesVersion: required key is missing"]),
    "taint-effect-typo": (
        set_(EUC1, ["config", "gpufleet:nodePools", 1, "taints"], [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedul"}]),
        [f"{EUC1}: config.gpufleet:nodePools[1].taints[0].effect: Input should be 'NoSchedule', 'PreferNoSchedule' or 'NoExecute'"],
    ),
    "stack-missing": (lambda fc: fc.path(EUC1).unlink(), [f"{F}: sites[2]: no stack file {EUC1} for site 'aws-euc1'"]),
    # --------------------------------------------------------------- inventories
    "hosts-empty": (text(f"{DC}/hosts.yml", ""), [f"{DC}/hosts.yml: the hosts file is empty"]),
    "hosts-yaml-syntax": (text(f"{DC}/hosts.yml", "all:\n  children:\n    gpu: {hosts: {a: 1}\n"), [f"{DC}/hosts.yml: line 4, column 1: not valid YAML: did not find expected ',' or '}}'"]),
    "hosts-list": (text(f"{DC}/hosts.yml", "- fra-hgx-01\n"), [f"{DC}/hosts.yml: an inventory must be a mapping of groups, not list"]),
    "group-unknown-key": (
        rename(f"{DC}/hosts.yml", ["all", "children", "control_plane"], "hosts", "host"),
        [f"{DC}/hosts.yml: all.children.control_plane.host: unknown key in a group; expected hosts, vars or children"],
    ),
    "host-vars-not-mapping": (
        set_(f"{DC}/hosts.yml", ["all", "children", "control_plane", "hosts", "fra-cp-01"], "10.20.0.11"),
        [f"{DC}/hosts.yml: all.children.control_plane.hosts.fra-cp-01: host variables must be a mapping"],
    ),
    "bad-host-range": (
        set_(f"{DC}/hosts.yml", ["all", "children", "control_plane", "hosts", "fra-cp-[4:x]"], None),
        [f"{DC}/hosts.yml: all.children.control_plane.hosts.fra-cp-[4:x]: host range bounds must both be numbers or both single letters, not '4' and 'x'"],
    ),
    "host-range-too-large": (
        set_(f"{DC}/hosts.yml", ["all", "children", "control_plane", "hosts", "fra-cp-[1:99999999]"], None),
        [f"{DC}/hosts.yml: all.children.control_plane.hosts.fra-cp-[1:99999999]: host pattern names more than 100000 hosts; check the range bounds"],
    ),
    "inventory-folder-missing": (set_(F, ["sites", 1, "inventory"], "inventory/dc-frankfurt"), ["inventory/dc-frankfurt: inventory folder not found"]),
    "group-vars-list": (text(L40S, "- gpufleet_gpu_count: 4\n"), [f"{L40S}: a variables file must be a mapping, not list"]),
    "group-vars-syntax": (text(L40S, "gpufleet_gpu_count: 4\ngpufleet_fabric_hcas: [mlx5_0\n"), [f"{L40S}: line 3, column 1: not valid YAML: did not find expected ',' or ']'"]),
    "unknown-variable-hint": (
        rename(L40S, [], "gpufleet_gpu_count", "gpufleet_gpu_cnt"),
        [f"{L40S}: gpufleet_gpu_cnt: unknown gpufleet variable (did you mean 'gpufleet_gpu_count'?) {L40S_HOSTS}"],
    ),
    "gpu-count-string": (set_(L40S, ["gpufleet_gpu_count"], "four"), [f"{L40S}: gpufleet_gpu_count: Input should be a valid integer (got str 'four') {L40S_HOSTS}"]),
    "accelerator-unknown-hint": (
        set_(L40S, ["gpufleet_accelerator"], "l40"),
        [f"{L40S}: gpufleet_accelerator: unknown accelerator 'l40' (did you mean 'l40s'?); {ACCS} {L40S_HOSTS}"],
    ),
    "fabric-without-hcas": (del_(L40S, ["gpufleet_fabric_hcas"]), [f"{L40S}: fabric roce needs gpufleet_fabric_hcas (the HCA names NCCL uses) {L40S_HOSTS}"]),
    "rack-missing": (
        del_(f"{DC}/hosts.yml", ["all", "children", "control_plane", "hosts", "fra-cp-02", "gpufleet_rack"]),
        [f"{DC}/hosts.yml: fra-cp-02.gpufleet_rack: gpufleet_rack is not set (set it in group_vars or host_vars)"],
    ),
    "host-vars-unknown-host": (text(f"{DC}/host_vars/fra-hgx-09.yml", "gpufleet_pool: training\n"), [f"{DC}/host_vars/fra-hgx-09.yml: host_vars for unknown host 'fra-hgx-09'"]),
    "group-vars-unknown-group": (text(f"{DC}/group_vars/hgx_h200.yml", "gpufleet_gpu_count: 8\n"), [f"{DC}/group_vars/hgx_h200.yml: group_vars for unknown group 'hgx_h200'"]),
    "mig-devices-wrong-type": (
        set_(HGX04, ["gpufleet_mig_layout", 0, "devices"], "some"),
        [f"{HGX04}: fra-hgx-04.gpufleet_mig_layout[0].devices: Input should be 'all' or a valid list (got str 'some')"],
    ),
    "mig-layout-mapping": (set_(HGX04, ["gpufleet_mig_layout"], {"2g.20gb": 3}), [f"{HGX04}: fra-hgx-04.gpufleet_mig_layout: Input should be a valid list (got dict {{'2g.20gb': 3}})"]),
}


def validate(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str], str]:
    rc = main(["validate", *args])
    captured = capsys.readouterr()
    return rc, captured.err.splitlines(), captured.out


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input(fleet, capsys, case):
    breaks, expected = CASES[case]
    breaks(fleet)
    rc, err, out = validate(capsys)
    assert rc == 2
    assert "Traceback" not in "\n".join(err) + out
    n = len(expected)
    assert err == [*expected, f"{n} problem{'s' if n != 1 else ''} found"]


def test_at_least_25_cases():
    assert len(CASES) >= 25


def test_fleet_file_not_found(fleet, capsys):
    rc, err, _ = validate(capsys, "--fleet", "stacks/nope.yaml")
    assert (rc, err) == (2, ["stacks/nope.yaml: file not found", "1 problem found"])


def test_fleet_path_is_a_folder(fleet, capsys):
    rc, err, _ = validate(capsys, "--fleet", "stacks")
    assert (rc, err) == (2, ["stacks: not a file", "1 problem found"])


def test_many_problems_all_reported(fleet, capsys):
    """Problems in different files (once fleet.yaml itself parses) are all reported in one run."""
    cases = ("pool-size-string", "rack-missing", "host-vars-unknown-host", "stack-key-not-namespaced")
    for case in cases:
        CASES[case][0](fleet)
    rc, err, _ = validate(capsys)
    assert rc == 2
    assert err[-1] == "4 problems found"
    assert sorted(err[:-1]) == sorted(line for case in cases for line in CASES[case][1])


def test_installed_command_exits_2_without_traceback(fleet):
    """The real entry point, as a user runs it."""
    CASES["hosts-yaml-syntax"][0](fleet)
    exe = Path(sys.executable).parent / "gpufleet"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gpufleet.cli"]
    proc = subprocess.run([*cmd, "validate"], capture_output=True, text=True, cwd=fleet.root, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.splitlines()[0] == CASES["hosts-yaml-syntax"][1][0]
