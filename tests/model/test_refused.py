"""Input that would change the fleet silently is refused: one `file: key.path: message` line, exit 2.

One test per class, on generated inputs in every input file the class can
appear in (fleet.yaml, Pulumi stacks, hosts files, group_vars, host_vars, JSON
variable files): duplicate keys; a host in two server classes; one GPU in two
MIG groups; two hosts with one address; symbolic links that loop or leave the
inventory, and inventory sources gpufleet would not read the way Ansible does
(executable scripts, INI files, subfolders); names a cluster would reject;
API endpoints with a scheme or a port; numbers that are not finite; and YAML
that is deep or alias-heavy, at the sizes that used to crash or hang the
loader (1,000 and 50,000 nested levels, a nine-level alias bomb): each of
those is refused in its own process within a second of CPU time and with
bounded memory.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gpufleet.cli import main
from gpufleet.safe_yaml import MAX_DEPTH, MAX_NODES

F = "stacks/fleet.yaml"
EUC1 = "stacks/Pulumi.aws-euc1.yaml"
DC = "inventory/dc-fra"
HOSTS = f"{DC}/hosts.yml"
GV_ALL = f"{DC}/group_vars/all.yml"
L40S = f"{DC}/group_vars/l40s_4x.yml"
HGX = f"{DC}/group_vars/hgx_h100.yml"
HGX04 = f"{DC}/host_vars/fra-hgx-04.yml"
ROOT = Path(__file__).resolve().parents[2]


def validate(capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    rc = main(["validate"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return rc, captured.err.splitlines()


def refused(fleet, capsys, *expected: str) -> None:
    rc, err = validate(capsys)
    assert rc == 2, err
    n = len(expected)
    assert err == [*expected, f"{n} problem{'s' if n != 1 else ''} found"]


def append(fleet, rel: str, text: str) -> None:
    p = fleet.path(rel)
    p.write_text(p.read_text() + text)


# ------------------------------------------------------------------ duplicate keys


def _lines(fleet, rel: str, key: str) -> str:
    """Where ``key`` is written in ``rel``, as the duplicate-key message gives it."""
    found = [i + 1 for i, line in enumerate(fleet.path(rel).read_text().splitlines()) if re.search(rf"(^|[{{,\s]){re.escape(key)}:", line)]
    first, second = found[0], found[1] if len(found) > 1 else found[0]
    return f"line {first}" if first == second else f"lines {first} and {second}"


DUPLICATES: dict[str, tuple[str, Callable, str, str]] = {
    "fleet-top": (F, lambda fc: append(fc, F, "hub: dc-fra\n"), "hub", "hub"),
    "fleet-nested": (
        F,
        lambda fc: fc.write_text(F, fc.path(F).read_text().replace("        priority: 100\n", "        priority: 100\n        priority: 10\n")),
        "teams[0].queues[0].priority",
        "priority",
    ),
    "stack-config": (EUC1, lambda fc: append(fc, EUC1, "  aws:region: eu-west-1\n"), "config.aws:region", "aws:region"),
    "hosts-host": (
        HOSTS,
        lambda fc: fc.write_text(HOSTS, fc.path(HOSTS).read_text().replace(
            "        fra-cp-03: {", "        fra-cp-01: {ansible_host: 10.20.0.99, gpufleet_rack: a09, gpufleet_bmc_address: 10.21.0.99}\n        fra-cp-03: {")),
        "all.children.control_plane.hosts.fra-cp-01",
        "fra-cp-01",
    ),
    "group-vars": (L40S, lambda fc: append(fc, L40S, "gpufleet_gpu_count: 8\n"), "gpufleet_gpu_count", "gpufleet_gpu_count"),
    "host-vars-flow": (HGX04, lambda fc: append(fc, HGX04, "x: {a: 1, b: 2, a: 3}\n"), "x.a", "a"),
    "same-number-two-ways": (GV_ALL, lambda fc: append(fc, GV_ALL, "ports: {22: ssh, 0x16: also-ssh}\n"), "ports.0x16", "0x16"),
}


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_duplicate_keys_are_refused(fleet, capsys, case):
    rel, breaks, path, key = DUPLICATES[case]
    breaks(fleet)
    refused(fleet, capsys, f"{rel}: {path}: duplicate key '{key}' ({_lines(fleet, rel, key)}); YAML would keep only the last one: remove one")


def test_duplicate_keys_in_a_json_variables_file(fleet, capsys):
    fleet.path(L40S).unlink()
    fleet.write_text(f"{DC}/group_vars/l40s_4x.json", json.dumps({"gpufleet_server_class": "l40s-4"})[:-1] + ', "gpufleet_server_class": "l40s-8"}')
    refused(fleet, capsys, f"{DC}/group_vars/l40s_4x.json: gpufleet_server_class: duplicate key 'gpufleet_server_class'; JSON readers keep only one of them silently: remove one")


def test_merge_keys_are_not_duplicates(fleet, capsys):
    append(fleet, GV_ALL, "base: &base {a: 1, b: 2}\nderived: {<<: *base, b: 3}\n")
    assert validate(capsys)[0] == 0


# --------------------------------------------------------- servers, GPUs, addresses


def test_host_in_two_server_classes(fleet, capsys):
    fleet.write_text(HOSTS, fleet.path(HOSTS).read_text().replace(
        "            fra-l40s-03: {", "            fra-hgx-02:\n            fra-l40s-03: {"))
    refused(fleet, capsys, f"{HOSTS}: fra-hgx-02: in two server classes: group hgx_h100 sets gpufleet_server_class hgx-h100-8 ({HGX}), group l40s_4x sets l40s-4 ({L40S}); list the host in one class group")


def test_a_child_group_may_refine_its_parents_class(fleet, capsys):
    """A group below another (not beside it) overrides deliberately, as Ansible's precedence intends."""
    fleet.write_text(f"{DC}/group_vars/gpu.yml", "gpufleet_server_class: generic-gpu\n")
    assert validate(capsys)[0] == 0


@pytest.mark.parametrize(
    ("layout", "where", "message"),
    [
        ([{"devices": [0, 1], "profiles": {"1g.10gb": 7}}, {"devices": [1, 2], "profiles": {"7g.80gb": 1}}], "[1].devices", "GPU index 1 is also in gpufleet_mig_layout[0]"),
        ([{"devices": "all", "profiles": {"1g.10gb": 7}}, {"devices": [5], "profiles": {"7g.80gb": 1}}], "[1].devices", "GPU index 5 is also in gpufleet_mig_layout[0] (devices: all)"),
        ([{"devices": [3, 3], "profiles": {"1g.10gb": 7}}], "[0].devices", "GPU index 3 is listed twice"),
    ],
)
def test_one_gpu_in_two_mig_groups(fleet, capsys, layout, where, message):
    fleet.write(HGX04, {"gpufleet_mig_layout": layout})
    refused(fleet, capsys, f"{HGX04}: fra-hgx-04.gpufleet_mig_layout{where}: {message}")


def test_two_hosts_with_one_address(fleet, capsys):
    fleet.write_text(HOSTS, fleet.path(HOSTS).read_text().replace("fra-hgx-02: {ansible_host: 10.20.1.12", "fra-hgx-02: {ansible_host: 10.20.1.11"))
    refused(fleet, capsys, f"{HOSTS}: fra-hgx-02.ansible_host: 10.20.1.11 is also the address of fra-hgx-01 (ansible_host, {HOSTS})")


def test_a_host_address_that_is_another_hosts_bmc(fleet, capsys):
    fleet.write_text(HOSTS, fleet.path(HOSTS).read_text().replace("gpufleet_bmc_address: 10.21.2.13", "gpufleet_bmc_address: 10.20.0.11"))
    refused(fleet, capsys, f"{HOSTS}: fra-l40s-03.gpufleet_bmc_address: 10.20.0.11 is also the address of fra-cp-01 (ansible_host, {HOSTS})")


def test_one_address_in_two_data_centres(fleet, capsys):
    hub = "inventory/fra-hub/hosts.yml"
    text = fleet.path(hub).read_text()
    first = text.split("ansible_host: ", 1)[1].split(",")[0]
    fleet.write_text(hub, text.replace(f"ansible_host: {first}", "ansible_host: 10.20.1.13", 1))
    rc, err = validate(capsys)
    assert rc == 2
    # Sites are checked in fleet.yaml's order: the hub's host came first.
    assert err == [f"{HOSTS}: fra-hgx-03.ansible_host: 10.20.1.13 is also the address of hub-cp-01 (ansible_host, {hub})", "1 problem found"]


def test_hosts_on_one_address_with_different_ssh_ports_are_distinct(fleet, capsys):
    """The lab's VMs share 127.0.0.1 and differ by port: not one host."""
    text = fleet.path(HOSTS).read_text()
    text = text.replace("{ansible_host: 10.20.0.11,", "{ansible_host: 127.0.0.1, ansible_port: 2222,").replace("{ansible_host: 10.20.0.12,", "{ansible_host: 127.0.0.1, ansible_port: 2223,")
    fleet.write_text(HOSTS, text)
    assert validate(capsys)[0] == 0


# -------------------------------------------------------- what Ansible reads, and how


def test_symlink_loop_in_the_inventory(fleet, capsys):
    (fleet.path(f"{DC}/group_vars/hgx_h100")).symlink_to("hgx_h100")
    fleet.path(HGX).unlink()
    refused(fleet, capsys, f"{DC}/group_vars/hgx_h100: a symbolic link that loops; point it at a file inside the inventory")


def test_symlink_out_of_the_inventory(fleet, capsys, tmp_path):
    secret = tmp_path / "elsewhere.yml"
    secret.write_text("gpufleet_pool: training\n")
    fleet.path(HGX04).unlink()
    fleet.path(HGX04).symlink_to(secret)
    refused(fleet, capsys, f"{HGX04}: a symbolic link to {secret}, outside the inventory; copy the file into the inventory instead")


def test_symlinked_folder_out_of_the_inventory(fleet, capsys, tmp_path):
    (tmp_path / "shared").mkdir()
    fleet.path(f"{DC}/group_vars/gpu").symlink_to(tmp_path / "shared")
    refused(fleet, capsys, f"{DC}/group_vars/gpu: a symbolic link to {tmp_path / 'shared'}, outside the inventory; copy the file into the inventory instead")


def test_symlink_inside_the_inventory_is_fine(fleet, capsys):
    fleet.path(f"{DC}/group_vars/shared.yml").write_bytes(fleet.path(L40S).read_bytes())
    fleet.path(L40S).unlink()
    fleet.path(L40S).symlink_to("shared.yml")
    fleet.path(f"{DC}/group_vars/shared.yml").rename(fleet.path(f"{DC}/shared-l40s.txt"))
    fleet.path(L40S).unlink()
    fleet.path(L40S).symlink_to("../shared-l40s.txt")
    assert validate(capsys)[0] == 0


def test_executable_inventory_script(fleet, capsys):
    script = fleet.path(f"{DC}/cmdb.py")
    script.write_text("#!/usr/bin/env python3\nprint('{}')\n")
    script.chmod(0o755)
    refused(fleet, capsys, f"{DC}/cmdb.py: executable: Ansible would run it as an inventory script, which gpufleet does not; clear its executable bit (chmod -x) or move it out of the inventory")


def test_executable_hosts_file(fleet, capsys):
    fleet.path(HOSTS).chmod(0o755)
    refused(fleet, capsys, f"{HOSTS}: executable: Ansible would run it as an inventory script, which gpufleet does not; clear its executable bit (chmod -x) or move it out of the inventory")


@pytest.mark.parametrize(
    ("name", "is_dir", "what"),
    [
        ("extra.ini", False, "Ansible would read this file as inventory (ini, toml or a plugin's), gpufleet reads YAML hosts files only"),
        ("notes", False, "Ansible would read this file as inventory (ini, toml or a plugin's), gpufleet reads YAML hosts files only"),
        ("rack-b", True, "Ansible would read this folder's files as more inventory, gpufleet reads the hosts files at the top of the inventory only"),
    ],
)
def test_inventory_sources_gpufleet_would_not_read(fleet, capsys, name, is_dir, what):
    p = fleet.path(f"{DC}/{name}")
    if is_dir:
        p.mkdir()
        (p / "hosts.yml").write_text("all:\n  hosts:\n    fra-extra-01:\n")
    else:
        p.write_text("[gpu]\nfra-extra-01\n")
    refused(fleet, capsys, f"{DC}/{name}: {what}; rename it with an extension Ansible ignores (.txt, .md) or move it out of the inventory")


def test_files_ansible_ignores_may_sit_in_the_inventory(fleet, capsys):
    for name in ("README.md", "notes.txt", ".vault_pass", "hosts.yml.orig", "old.bak", "site.retry", "x.cfg"):
        fleet.path(f"{DC}/{name}").write_text("anything\n")
    assert validate(capsys)[0] == 0


# ---------------------------------------------------------------- cluster names


NAMES: dict[str, tuple[Callable, str]] = {
    "namespace-kube-system": (
        lambda fc: fc.edit(F, lambda d: d["teams"][0].__setitem__("namespace", "kube-system")),
        f"{F}: teams[0].namespace: namespace 'kube-system' belongs to Kubernetes; give the team a namespace of its own",
    ),
    "namespace-addon": (
        lambda fc: fc.edit(F, lambda d: d["teams"][0].__setitem__("namespace", "kueue-system")),
        f"{F}: teams[0].namespace: namespace 'kueue-system' belongs to the fleet's add-ons; give the team a namespace of its own",
    ),
    "namespace-serving-prefix": (
        lambda fc: fc.edit(F, lambda d: d["teams"][0].__setitem__("namespace", "llm-serving-regulated")),
        f"{F}: teams[0].namespace: namespace 'llm-serving-regulated' belongs to the fleet's add-ons; give the team a namespace of its own",
    ),
    "node-name": (
        lambda fc: fc.write_text(HOSTS, fc.path(HOSTS).read_text().replace("fra-cp-03:", "FRA_CP_03:")),
        f"{HOSTS}: FRA_CP_03: not a valid Kubernetes node name (a data-centre node is named after its inventory host): lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit (RFC 1123 subdomain)",
    ),
    "rack-label-value": (
        lambda fc: fc.write_text(HOSTS, fc.path(HOSTS).read_text().replace("gpufleet_rack: c02,", "gpufleet_rack: 'Hall A / c02',")),
        f"{HOSTS}: fra-l40s-03.gpufleet_rack: a label value is letters, digits, '-', '_' and '.', starting and ending with a letter or digit (got 'Hall A / c02'; it becomes a node label)",
    ),
    "ib-block-too-long": (
        lambda fc: fc.write_text(HOSTS, fc.path(HOSTS).read_text().replace("gpufleet_ib_block: ib-a, gpufleet_bmc_address: 10.21.1.14", f"gpufleet_ib_block: {'b' * 64}, gpufleet_bmc_address: 10.21.1.14")),
        f"{HOSTS}: fra-hgx-04.gpufleet_ib_block: a label value has at most 63 characters (got '{'b' * 39}; it becomes a node label)",
    ),
    "inventory-taint": (
        lambda fc: append(fc, L40S, "gpufleet_node_taints: ['dedicated=serving:NoSchedul']\n"),
        f"{L40S}: gpufleet_node_taints[0]: a taint is written key=value:Effect with Effect one of NoSchedule, PreferNoSchedule, NoExecute (on 3 hosts: fra-l40s-01, fra-l40s-02, fra-l40s-03)",
    ),
    "pool-label-key": (
        lambda fc: fc.edit(EUC1, lambda d: d["config"]["gpufleet:nodePools"][1].__setitem__("labels", {"team/serving tier": "a"})),
        f"{EUC1}: config.gpufleet:nodePools[1].labels.team/serving tier: a label key's name is at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
    ),
    "pool-label-reserved": (
        lambda fc: fc.edit(EUC1, lambda d: d["config"]["gpufleet:nodePools"][1].__setitem__("labels", {"gpufleet.io/site": "aws-use1"})),
        f"{EUC1}: config.gpufleet:nodePools[1].labels.gpufleet.io/site: the key gpufleet.io/site is reserved (gpufleet, Kubernetes and EKS set such labels); choose a key of your own, e.g. example.com/tier",
    ),
    "pool-label-value": (
        lambda fc: fc.edit(EUC1, lambda d: d["config"]["gpufleet:nodePools"][1].__setitem__("labels", {"example.com/tier": "gold tier"})),
        f"{EUC1}: config.gpufleet:nodePools[1].labels.example.com/tier: a label value is letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
    ),
    "pool-taint-key": (
        lambda fc: fc.edit(EUC1, lambda d: d["config"]["gpufleet:nodePools"][1].__setitem__("taints", [{"key": "-bad", "value": "x", "effect": "NoSchedule"}])),
        f"{EUC1}: config.gpufleet:nodePools[1].taints[0].key: a label key's name is at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
    ),
}


@pytest.mark.parametrize("case", list(NAMES))
def test_names_a_cluster_would_reject(fleet, capsys, case):
    breaks, line = NAMES[case]
    breaks(fleet)
    refused(fleet, capsys, line)


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("https://k8s-api.dc-fra.acme.internal", "has a scheme (https://); give the host name or address only (gpufleet adds :6443)"),
        ("k8s-api.dc-fra.acme.internal:6443", "has a port (:6443); give the host name or address only (gpufleet adds :6443)"),
        ("k8s-api.dc-fra.acme.internal/", "has a path; give the host name or address only (gpufleet adds :6443)"),
        ("10.20.0.10:443", "has a port (:443); give the host name or address only (gpufleet adds :6443)"),
        ("k8s api", "is not a host name or an IP address"),
    ],
)
def test_api_endpoint_with_scheme_or_port(fleet, capsys, endpoint, message):
    fleet.edit(F, lambda d: d["sites"][1].__setitem__("api_endpoint", endpoint))
    refused(fleet, capsys, f"{F}: sites[1].api_endpoint: '{endpoint}' {message}")


def test_api_endpoint_may_be_an_address(fleet, capsys):
    fleet.edit(F, lambda d: d["sites"][1].__setitem__("api_endpoint", "10.20.0.10"))
    assert validate(capsys)[0] == 0


# ------------------------------------------------------------------ non-finite


@pytest.mark.parametrize(
    ("rel", "edit", "line"),
    [
        (F, lambda t: t.replace("parameters_b: 70.6", "parameters_b: .nan"), "models[0].parameters_b: Input should be a finite number"),
        (F, lambda t: t.replace("kv_cache_gib: 40", "kv_cache_gib: .inf"), "models[0].kv_cache_gib: Input should be a finite number"),
        (HGX, lambda t: t.replace("gpufleet_acceptance_busbw_gbps: 360", "gpufleet_acceptance_busbw_gbps: .Inf"), "gpufleet_acceptance_busbw_gbps: Input should be a finite number (on 4 hosts: fra-hgx-01, fra-hgx-02, fra-hgx-03, fra-hgx-04)"),
    ],
)
def test_numbers_that_are_not_finite(fleet, capsys, rel, edit, line):
    fleet.write_text(rel, edit(fleet.path(rel).read_text()))
    refused(fleet, capsys, f"{rel}: {line}")


def test_json_nan_is_refused(fleet, capsys):
    fleet.path(L40S).unlink()
    fleet.write_text(f"{DC}/group_vars/l40s_4x.json", '{"gpufleet_acceptance_busbw_gbps": NaN}')
    refused(fleet, capsys, f"{DC}/group_vars/l40s_4x.json: NaN is not a number; give a finite number")


# ---------------------------------------------------- deep and alias-heavy YAML


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _deep(n: int, flow: bool) -> str:
    if flow:
        return "x: " + "[" * n + "]" * n + "\n"
    return "x:\n" + "".join(" " * (2 * i) + "- \n" for i in range(1, n + 1))


HOSTILE = {
    "deep-1000-flow": lambda: _deep(1000, flow=True),
    "deep-50000-flow": lambda: _deep(50_000, flow=True),
    "deep-50000-mappings": lambda: "x: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n",
    "deep-1000-block": lambda: _deep(1000, flow=False),
    "alias-bomb": _bomb,
    "alias-bomb-used": lambda: _bomb() + "gpufleet_node_taints: *a8\n",
}
HOSTILE_FILES = {"fleet": F, "stack": EUC1, "hosts": HOSTS, "group_vars": GV_ALL}

PROBE = textwrap.dedent(
    """
    import contextlib, io, json, os, resource, sys, time
    from gpufleet.cli import main
    err = io.StringIO()
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["validate"])
    print(json.dumps({"rc": rc, "err": err.getvalue(), "wall": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


def _probe(root: Path) -> dict:
    """Run `gpufleet validate` in a fresh interpreter; its own time and peak memory (imports excluded from the time)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def baseline_kib(tmp_path_factory) -> int:
    """Peak memory of validating the unchanged example, the yardstick for 'bounded'."""
    from fleet_copy import copy_example

    copy = copy_example(tmp_path_factory.mktemp("baseline"))
    return _probe(copy.root)["maxrss_kib"]


@pytest.mark.parametrize("where", list(HOSTILE_FILES))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_deep_and_alias_heavy_yaml_is_refused_fast_and_small(fleet, baseline_kib, case, where):
    rel = HOSTILE_FILES[where]
    if case == "alias-bomb-used" and where != "group_vars":
        pytest.skip("the bomb as a gpufleet variable belongs in group_vars")
    body = HOSTILE[case]()
    if where == "hosts":
        body = body.replace("x:", "extra_group:", 1)  # a group of the hosts file
    append(fleet, rel, "\n" + body)
    result = _probe(fleet.root)
    lines = result["err"].splitlines()
    assert result["rc"] == 2, lines
    assert lines[-1] == "1 problem found", lines
    (line,) = lines[:-1]
    limit = f"more than {MAX_DEPTH} deep" if case.startswith("deep") else f"more than {MAX_NODES:,} nodes"
    assert re.match(rf"{re.escape(rel)}: line \d+, column \d+: ", line), line
    assert limit in line and "gpufleet's limit" in line, line
    assert result["cpu"] < 1.0, f"{case} in {rel}: {result['cpu']:.2f} s of CPU"
    # Memory: what the unchanged example needs, plus the input itself (a 50,000-level file is 100 kB).
    assert result["maxrss_kib"] < baseline_kib + 32 * 1024, f"{case}: {result['maxrss_kib']} KiB peak, example alone {baseline_kib} KiB"


def test_recursive_alias_is_refused(fleet, capsys):
    append(fleet, GV_ALL, "loop: &r [1, *r]\n")
    refused(fleet, capsys, f"{GV_ALL}: line 3, column 14: alias *r is inside the collection it names (a structure that contains itself); gpufleet reads no such structure")


def test_a_file_too_large_is_refused(fleet, capsys):
    from gpufleet.safe_yaml import MAX_FILE_BYTES

    with fleet.path(GV_ALL).open("a") as f:
        f.write("# " + "x" * MAX_FILE_BYTES + "\n")
    refused(fleet, capsys, f"{GV_ALL}: larger than {MAX_FILE_BYTES // 2**20} MiB (gpufleet's limit for one file)")


def test_moderate_aliases_and_depth_still_load(fleet, capsys):
    """What real files do (anchors for shared settings, a few levels of nesting) is not refused."""
    append(fleet, GV_ALL, "defaults: &d {a: [1, 2, {b: [3]}]}\nmore: [*d, *d, *d]\n" + _deep(MAX_DEPTH - 2, flow=True).replace("x:", "nested:"))
    assert validate(capsys)[0] == 0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
