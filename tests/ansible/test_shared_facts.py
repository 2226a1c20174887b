"""One source for every fact Python and Ansible share.

* The node label that selects a server's MIG configuration must name a
  configuration the GPU operator's ConfigMap holds, whichever way the
  playbooks are run: the mig role takes the model's name from what
  ``gpufleet render`` derives, and refuses to work it out again.
* What is left in ``roles/`` of the shared facts (label keys, taints, MIG
  profile names, PCI ids, DCGM counters, Kubernetes minor) agrees with the
  model; a changed copy fails the drift check.
* Every GPU server class has a bus-bandwidth threshold derived from the
  catalogue, never 0.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_kit import BIN, ROOT, ansible_env, rendered_inventory

MIG_TASKS = ROOT / "roles" / "mig" / "tasks" / "main.yml"
SELECT_TASK = "Choose the mig-parted config for this host"


def _selection_playbook(tmp_path: Path) -> Path:
    """A play that runs the mig role's own tasks up to the one choosing the
    config (include paths made absolute), then prints the choice."""
    tasks = yaml.safe_load(MIG_TASKS.read_text())
    names = [t.get("name") for t in tasks]
    assert SELECT_TASK in names, f"{MIG_TASKS}: no task named {SELECT_TASK!r}"
    head = tasks[: names.index(SELECT_TASK) + 1]
    for t in head:
        for key in ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks"):
            if key in t and not str(t[key]).startswith("/"):
                t[key] = str(MIG_TASKS.parent / t[key])
    head.append({"name": "Print the choice", "ansible.builtin.debug": {"msg": "CHOSEN={{ mig_selected_config | to_json }}"}})
    role = ROOT / "roles" / "mig"
    play = [{
        "name": "Run the mig role's selection",
        "hosts": "fra-hgx-04",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(role / "defaults" / "main.yml"), str(role / "vars" / "main.yml")],
        "tasks": head,
    }]
    book = tmp_path / "select.yml"
    book.write_text(yaml.safe_dump(play, sort_keys=False))
    return book


def _configmap_names() -> set[str]:
    from gpufleet.model import load_fleet
    from k8s.gpu_operator import mig_parted_config

    fleet = load_fleet(ROOT / "stacks" / "fleet.yaml")
    return set(mig_parted_config(fleet.site("dc-fra"))["mig-configs"])


def _run_selection(inv: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inv), str(_selection_playbook(tmp_path))],
        cwd=ROOT, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=300,
    )


def test_the_mig_label_names_a_configuration_the_operator_holds(raw_inventory: Path, tmp_path: Path) -> None:
    names = _configmap_names()
    # From the raw inventory, the role must not invent a name of its own.
    raw = _run_selection(raw_inventory, tmp_path)
    out = raw.stdout + raw.stderr
    chosen = re.findall(r'CHOSEN=\\?"([^"\\]+)', out)
    assert not chosen or chosen[0] in names, (
        f"from the raw inventory the mig role names MIG config {chosen[0]!r}, which the GPU operator's "
        f"ConfigMap does not hold (it holds {sorted(names)})"
    )
    assert raw.returncode != 0 and "gpufleet render" in out and "gpufleet_mig_config_name" in out, out[-2000:]
    # From the rendered inventory it names the model's configuration.
    rendered = _run_selection(rendered_inventory(tmp_path / "rendered"), tmp_path)
    out = rendered.stdout + rendered.stderr
    assert rendered.returncode == 0, out[-3000:]
    [name] = re.findall(r'CHOSEN=\\?"([^"\\]+)', out)
    assert name in names and name != "all-disabled", (name, names)


# ---------------------------------------------------------------- drift check


def drift(roles: Path) -> list[str]:
    """Copies of shared facts in ``roles`` that disagree with the model."""
    from gpufleet import catalog, facts, mig

    known_keys = facts.label_and_taint_keys()
    taints = {t.string for t in facts.TAINTS}
    profiles = {p for table in mig.MIG_PROFILES.values() for p in table}
    counters = {c.field for c in facts.DCGM_COUNTERS}
    pci = facts.pci_device_models()
    problems = []
    for path in sorted(roles.rglob("*")):
        if not path.is_file() or path.suffix not in (".yml", ".yaml", ".j2", ".md"):
            continue
        rel = path.relative_to(roles)
        text = path.read_text()
        for key in sorted(set(re.findall(r"(?<![\w./-])(?:gpufleet\.io|nvidia\.com)/[a-z0-9][a-z0-9.-]*[a-z0-9]", text))):
            if key not in known_keys:
                problems.append(f"{rel}: label/taint key {key} is not one the model knows")
        for taint in sorted(set(re.findall(r"(?<![\w./-])(?:gpufleet\.io|nvidia\.com)/[a-z0-9.-]+=[A-Za-z0-9._-]*:(?:NoSchedule|PreferNoSchedule|NoExecute)\b", text))):
            if taint not in taints:
                problems.append(f"{rel}: taint {taint} differs from the model's ({', '.join(sorted(taints))})")
        for prof in sorted(set(re.findall(r"\b\dg\.\d+gb(?:\+me)?\b", text))):
            if prof not in profiles:
                problems.append(f"{rel}: MIG profile {prof} does not exist in the model's MIG tables")
        for field in sorted(set(re.findall(r"\bDCGM_(?:FI|EXP)_[A-Z0-9_]+\b", text))):
            if field not in counters:
                problems.append(f"{rel}: DCGM counter {field} is not in the model's counter list")
        if path.parent.name == "vars" or path.name == "main.yml" and path.parent.name == "defaults":
            data = yaml.safe_load(text) or {}
            for key, value in _walk(data):
                if re.fullmatch(r"[0-9a-f]{4}", str(key)) and isinstance(value, str):
                    if pci.get(str(key)) != value:
                        problems.append(f"{rel}: PCI device 10de:{key} -> {value}, the catalogue says {pci.get(str(key))}")
    node = yaml.safe_load((roles / "k8s_node" / "defaults" / "main.yml").read_text())
    pin = str(node["k8s_node_kubernetes_version"])
    from gpufleet.model import load_fleet

    minors = {s.kubernetes_version for s in load_fleet(ROOT / "stacks" / "fleet.yaml").sites if not s.is_aws}
    if not all(pin.startswith(m + ".") for m in minors):
        problems.append(f"k8s_node/defaults/main.yml: k8s_node_kubernetes_version {pin} is not a patch of the data centres' Kubernetes {sorted(minors)}")
    return problems


def _walk(data):
    if isinstance(data, dict):
        for k, v in data.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(data, list):
        for v in data:
            yield from _walk(v)


def test_roles_hold_no_drifted_copy_of_a_shared_fact() -> None:
    problems = drift(ROOT / "roles")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("rel", "old", "new", "says"),
    [
        ("k8s_node/meta/argument_specs.yml", "gpufleet.io/acceptance", "gpufleet.io/acceptance-gate", "gpufleet.io/acceptance-gate"),
        ("mig/meta/argument_specs.yml", "nvidia.com/mig.config", "nvidia.com/mig-config", "nvidia.com/mig-config"),
        ("mig/meta/argument_specs.yml", "2g.20gb", "2g.24gb", "MIG profile 2g.24gb"),
        ("dcgm/meta/argument_specs.yml", "(gpufleet/facts.py:", "(DCGM_FI_DEV_XID_ERROR_COUNT, gpufleet/facts.py:", "DCGM_FI_DEV_XID_ERROR_COUNT"),
        ("k8s_node/defaults/main.yml", 'k8s_node_kubernetes_version: "1.33.5"', 'k8s_node_kubernetes_version: "1.32.9"', "1.32.9"),
    ],
    ids=["taint-key", "label-key", "mig-profile", "dcgm-counter", "kubernetes-pin"],
)
def test_a_changed_copy_fails_the_drift_check(tmp_path: Path, rel: str, old: str, new: str, says: str) -> None:
    roles = tmp_path / "roles"
    shutil.copytree(ROOT / "roles", roles)
    f = roles / rel
    text = f.read_text()
    assert old in text, f"{rel} no longer holds {old!r}: pick another copy to change"
    f.write_text(text.replace(old, new, 1))
    problems = drift(roles)
    assert any(says in p for p in problems), problems


def test_a_changed_pci_table_fails_the_drift_check(tmp_path: Path) -> None:
    roles = tmp_path / "roles"
    shutil.copytree(ROOT / "roles", roles)
    (roles / "gpu_detect" / "vars").mkdir(exist_ok=True)
    (roles / "gpu_detect" / "vars" / "main.yml").write_text('__gpu_detect_gpu_models:\n  "2330": h200-141gb\n')
    assert any("10de:2330 -> h200-141gb" in p for p in drift(roles))


# ------------------------------------------------------- acceptance thresholds


def _derived(inv: Path) -> dict:
    return yaml.safe_load((inv / "gpufleet-derived.yml").read_text())["all"]["hosts"]


def test_every_gpu_server_has_a_bus_bandwidth_threshold(tmp_path: Path) -> None:
    derived = _derived(rendered_inventory(tmp_path / "rendered"))
    gpu = {h: v for h, v in derived.items() if h.startswith(("fra-hgx", "fra-l40s"))}
    assert len(gpu) == 7
    for host, hv in gpu.items():
        acc = hv.get("gpufleet_acceptance")
        assert acc, f"{host}: no acceptance figures derived"
        assert acc["busbw_gbps"] > 0 and acc["source"], (host, acc)
    defaults = yaml.safe_load((ROOT / "roles" / "acceptance" / "defaults" / "main.yml").read_text())
    for key in ("acceptance_busbw_gbps", "acceptance_block_busbw_gbps"):
        assert not re.search(r"default\(\s*0", str(defaults[key])), f"{key} still defaults to 0: {defaults[key]}"


def test_the_threshold_follows_the_catalogue_unless_the_inventory_overrides_it(tmp_path: Path, monkeypatch) -> None:
    from gpufleet.catalog import ACCELERATORS

    fleet_dir = tmp_path / "fleet"
    shutil.copytree(ROOT / "stacks", fleet_dir / "stacks")
    shutil.copytree(ROOT / "inventory", fleet_dir / "inventory")
    gv = fleet_dir / "inventory" / "dc-fra" / "group_vars" / "hgx_h100.yml"
    gv.write_text(re.sub(r"(?m)^gpufleet_acceptance_busbw_gbps: .*$", "", gv.read_text()))
    from gpufleet.model import load_fleet
    from gpufleet.render import write_ansible

    write_ansible(load_fleet(fleet_dir / "stacks" / "fleet.yaml"), "dc-fra", tmp_path / "out")
    derived = _derived(tmp_path / "out" / "inventory")
    acc = derived["fra-hgx-01"]["gpufleet_acceptance"]
    h100 = ACCELERATORS["h100-80gb"]
    # NVLink per GPU is bidirectional in the catalogue; all_reduce's bus bandwidth is one direction.
    assert acc["busbw_gbps"] == pytest.approx(acc["efficiency"] * h100.nvlink_gbps / 2)
    assert "NVLink" in acc["source"]
    # The L40S class keeps its inventory value.
    assert derived["fra-l40s-01"]["gpufleet_acceptance"]["busbw_gbps"] == 15
    assert "gpufleet_acceptance_busbw_gbps" in derived["fra-l40s-01"]["gpufleet_acceptance"]["source"]
    # Across the servers of an InfiniBand block: the fabric's figure, with the block's members.
    block = acc["block"]
    assert block["name"] == "ib-a" and block["hosts"] == ["fra-hgx-01", "fra-hgx-02", "fra-hgx-03", "fra-hgx-04"]
    assert block["busbw_gbps"] > 0 and block["source"]


# -------------------------------------------- the engines' copies, until they import the model's


def test_the_engines_use_the_model_s_counters_and_device_plugin_labels() -> None:
    """k8s/ keeps its own copies of two facts until it imports them from
    gpufleet.facts; while it does, they must agree."""
    from gpufleet import facts
    from gpufleet.model import load_fleet
    from k8s import gpu_operator
    from k8s.monitoring import dcgm

    def rows(counters):
        return [(c.field, c.type, c.help) if hasattr(c, "field") else tuple(c) for c in counters]

    assert rows(facts.DCGM_COUNTERS) == rows(dcgm.COUNTERS)
    fleet = load_fleet(ROOT / "stacks" / "fleet.yaml")
    for site in fleet.sites:
        assert facts.device_plugin_node_labels(fleet, site) == gpu_operator.device_plugin_node_labels(fleet, site), site.name
