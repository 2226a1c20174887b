"""gpufleet's inventory reader resolves host variables exactly as Ansible does.

``gpufleet validate`` reads inventories without Ansible's loader (which is
slow on thousands of hosts). These tests run the real ``ansible-inventory -i
DIR --list`` and compare every host's variables (``_meta.hostvars``) and group
membership with :func:`gpufleet.inventory.load_inventory`, on the example
inventories, on a generated one, and on one built to exercise Ansible's
precedence rules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpufleet.inventory import load_inventory
from tests.scale.fleetgen import generate

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
if not ANSIBLE_INVENTORY.exists():
    ANSIBLE_INVENTORY = Path(shutil.which("ansible-inventory") or ANSIBLE_INVENTORY)

pytestmark = pytest.mark.skipif(not ANSIBLE_INVENTORY.exists(), reason="ansible-inventory (ansible-core) is not installed")


def ansible_view(inventory: Path) -> tuple[dict[str, dict], dict[str, set[str]]]:
    """Host variables and each host's groups (ancestors included) per ansible-inventory."""
    out = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(inventory), "--list"],
        capture_output=True, text=True, check=True, cwd=inventory,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(inventory / ".ansible-home")},
    )
    data = json.loads(out.stdout)
    hostvars = data.pop("_meta")["hostvars"]
    parents: dict[str, set[str]] = {}
    direct: dict[str, set[str]] = {}
    for group, body in data.items():
        for child in body.get("children", []):
            parents.setdefault(child, set()).add(group)
        for host in body.get("hosts", []):
            direct.setdefault(host, set()).add(group)
            hostvars.setdefault(host, {})

    def ancestors(group: str) -> set[str]:
        seen = {group}
        for p in parents.get(group, ()):
            seen |= ancestors(p)
        return seen

    groups = {h: set().union(*(ancestors(g) for g in gs)) | {"all"} for h, gs in direct.items()}
    return hostvars, groups


def our_view(inventory: Path) -> tuple[dict[str, dict], dict[str, set[str]]]:
    problems: list = []
    inv = load_inventory(inventory, inventory.name, problems)
    assert problems == []
    assert inv is not None
    # ansible-inventory prints JSON: compare through the same encoding (dates become strings)
    hostvars = {h: json.loads(json.dumps(r.vars, default=str)) for h, r in inv.hosts.items()}
    return hostvars, {h: set(r.groups) for h, r in inv.hosts.items()}


def assert_same(inventory: Path) -> int:
    theirs_vars, theirs_groups = ansible_view(inventory)
    ours_vars, ours_groups = our_view(inventory)
    assert sorted(ours_vars) == sorted(theirs_vars)
    diffs = [
        f"{host}.{key}: ansible {theirs_vars[host].get(key, '<unset>')!r}, gpufleet {ours_vars[host].get(key, '<unset>')!r}"
        for host in theirs_vars
        for key in sorted(set(theirs_vars[host]) | set(ours_vars[host]))
        if theirs_vars[host].get(key, "<unset>") != ours_vars[host].get(key, "<unset>")
    ]
    assert diffs == []
    assert ours_groups == theirs_groups
    return len(theirs_vars)


@pytest.mark.parametrize("dc", sorted(p.name for p in (REPO / "inventory").iterdir() if p.is_dir()))
def test_example_inventories(dc, tmp_path):
    inv = tmp_path / dc
    shutil.copytree(REPO / "inventory" / dc, inv)
    assert assert_same(inv) >= 3


def test_generated_inventory(tmp_path):
    generate(tmp_path, scale=0.02)
    dcs = sorted((tmp_path / "inventory").iterdir())
    assert len(dcs) == 3  # hub + two data centres
    # the generator's features: nested MIG group with a group_vars layout, host_vars layouts
    assert any((d / "host_vars").is_dir() for d in dcs)
    assert any((d / "group_vars" / "hgx_h100_mig.yml").is_file() for d in dcs)
    assert sum(assert_same(d) for d in dcs) == 3 + 2 * (3 + 100)


TRICKY_HOSTS = """\
all:
  vars:
    shared: all-inline
    from_all_inline: 1
  hosts:
    lonely: {x: 1}
  children:
    region:
      vars: {shared: region-inline, only_inline: region, prio_test: region}
      children:
        rack_a:
          vars: {shared: rack-a-inline, rack_inline: a}
          hosts:
            node[01:03]: {hostinline: range}
            node[08:12:2]:
        rack_b:
          hosts:
            node04: {shared: host-inline}
            gpu-[1:2]-[01:02]:
        zeta:
          hosts: {node02: {z: 1}}
        alpha:
          hosts: {node02: {z: 2}}
          vars: {prio_test: alpha}
    other:
      vars: {ansible_group_priority: 5, prio_test: other}
      children:
        other_child:
          hosts:
            node01: {last_seen: child}
      hosts:
        node01: {hostinline: other-group, last_seen: parent}
        lonely2:
    letters:
      hosts:
        web-[a:c]:
        db1.example.com:
    region_again:
      children:
        rack_a:
          vars: {shared: rack-a-second-inline}
    ports:
      hosts:
        sshp:2222: {x: 1}
        pn[1:2]:2200:
        10.1.2.3:22:
        "[fe80::1]:2022":
        fe80::2:
        plain:
        sshp: {y: 2}
    ports_again:
      hosts:
        plain:2223:
        ported: {ansible_port: 99}
"""

TRICKY_FILES = {
    "group_vars/all.yml": "shared: all-file\nfrom_all_file: yes\nnested: {a: 1, b: {c: 2}}\n",
    "group_vars/region.json": '{"shared": "region-json", "region_file": true}',
    # a folder wins over <group>.yml; files in it are read in sorted order
    "group_vars/rack_a/10-first.yml": "shared: rack-a-dir-1\nrack_dir: one\n",
    "group_vars/rack_a/20-second.yaml": "shared: rack-a-dir-2\n",
    "group_vars/rack_a/30-notes.txt": "shared: not-a-vars-file\n",
    "group_vars/rack_a.yml": "ignored_file: true\n",
    "group_vars/zeta/nested/vars.yml": "zeta_nested: deep\nshared: zeta-nested\n",
    "group_vars/zeta/a.yml": "zeta_top: yes\n",
    "group_vars/zeta/.hidden/x.yml": "hidden_nested: true\n",
    "group_vars/zeta/b.yml~": "backup: true\n",
    "group_vars/alpha": "shared: alpha-file\n",
    "group_vars/rack_b.yaml": "shared: rack-b-file\nnum: 0x1F\noct: 010\nflt: 1_000.5\nday: 2024-01-02\nflag: off\nempty:\n",
    "group_vars/other.yml": "prio_test_file: other\n",
    "host_vars/node02.yml": "shared: node02-hostvars\n",
    "host_vars/node03/a.yml": "hv: from-dir\n",
    "host_vars/node03/b.yml": "hv: from-dir-later\n",
    "host_vars/lonely": "shared: lonely-hv\n",
    "host_vars/db1.example.com": "shared: dotted-name\n",
}


def test_tricky_precedence(tmp_path):
    inv = tmp_path / "tricky"
    (inv).mkdir()
    (inv / "hosts.yml").write_text(TRICKY_HOSTS)
    for rel, text in TRICKY_FILES.items():
        (inv / rel).parent.mkdir(parents=True, exist_ok=True)
        (inv / rel).write_text(textwrap.dedent(text))
    assert assert_same(inv) == 25
    # spot checks of what the rules above mean, so a shared mistake cannot hide
    ours, groups = our_view(inv)
    assert ours["node01"]["prio_test"] == "other"  # same depth, higher ansible_group_priority wins
    assert "ansible_group_priority" not in ours["node01"]
    assert ours["node01"]["last_seen"] == "parent"  # hosts section read after the children section
    assert ours["node01"]["shared"] == "rack-a-dir-2"  # deepest group's files win over inline vars
    assert "ignored_file" not in ours["node01"]
    assert ours["node02"]["shared"] == "node02-hostvars" and ours["node02"]["z"] == 2
    assert ours["node03"]["hv"] == "from-dir-later"
    assert ours["node04"]["shared"] == "host-inline"
    assert ours["gpu-2-02"]["num"] == 31 and ours["gpu-2-02"]["flag"] is False
    assert {"node08", "node10", "node12"} <= set(ours) and "node09" not in ours
    assert {"web-a", "web-b", "web-c"} <= set(ours)
    assert "hidden_nested" not in ours["node02"] and "backup" not in ours["node02"]
    assert groups["lonely"] == {"all", "ungrouped"}
    assert ours["db1.example.com"]["shared"] == "dotted-name"
    assert ours["sshp"]["ansible_port"] == 2222 and ours["pn2"]["ansible_port"] == 2200 and ours["fe80::1"]["ansible_port"] == 2022
    assert "ansible_port" not in ours["plain"] and "ansible_port" not in ours["fe80::2"]
