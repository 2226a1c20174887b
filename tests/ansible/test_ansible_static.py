"""The playbooks and roles as Ansible itself reads them: lint, syntax, and the
validation play that must stop bad variables before any server is touched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_kit import BIN, ROOT, ansible_env

PLAYBOOKS = sorted((ROOT / "baremetal").glob("*.yml"))


def test_every_role_documents_its_variables() -> None:
    roles = [p for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir()]
    assert len(roles) >= 10
    for role in roles:
        spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        options = spec["argument_specs"]["main"].get("options", {})
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) if (role / "defaults" / "main.yml").exists() else {}
        for var in defaults or {}:
            assert var in options, f"{role.name}: default {var} is not documented in meta/argument_specs.yml"
            assert var.startswith(f"{role.name}_"), f"{role.name}: {var} is not prefixed with the role's name"
        for var, opt in options.items():
            assert opt.get("description"), f"{role.name}: {var} has no description"


def test_ansible_lint_production_profile_is_clean(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--offline", "--nocolor", "baremetal/", "roles/"],
        cwd=ROOT, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=900,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_syntax(playbook: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory/dc-fra", str(playbook)],
        cwd=ROOT, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def run_site(inv: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inv), "baremetal/site.yml"],
        cwd=ROOT, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=600,
    )


def _edit(inv: Path, rel: str, old: str | None, new: str) -> None:
    """Replace ``old`` by ``new`` in an inventory file, or append ``new`` when ``old`` is None."""
    f = inv / rel
    text = f.read_text()
    assert old is None or old in text, f"{rel} no longer holds {old!r}"
    f.write_text(text + new if old is None else text.replace(old, new))


@pytest.mark.parametrize(
    ("rel", "old", "new", "says"),
    [
        # The driver's branch comes from the fleet model; the pin must be a release of it.
        pytest.param("group_vars/hgx_h100.yml", None, 'nvidia_driver_version: "575.64.05"\n',
                     ["nvidia_driver_version 575.64.05 is not a release of the driver branch 580"], id="driver-pin-off-the-branch"),
        pytest.param("group_vars/hgx_h100.yml", None, 'nvidia_driver_branch: "535"\n',
                     ["nvidia_driver_branch is set in the inventory", "gpufleet_driver_branch 580"], id="driver-branch-beside-the-model"),
        # Edited after `gpufleet render`: what render derived no longer matches.
        pytest.param("host_vars/fra-hgx-04.yml", "2g.20gb: 3", "2g.24gb: 3",
                     ["fra-hgx-04: the inventory changed since `gpufleet render`", "2g.24gb", "rerun gpufleet render"], id="layout-changed-after-render"),
        # `gpufleet render` writes the site's Kubernetes minor from the fleet
        # model; packages pinned to another minor must not reach a server.
        pytest.param("group_vars/all.yml", None, 'k8s_node_kubernetes_version: "1.32.9"\n',
                     ["runs Kubernetes 1.33", "k8s_node_kubernetes_version is 1.32.9"], id="kubernetes-pin-off-the-site"),
    ],
)
def test_bad_variables_fail_before_any_host_is_touched(
    unreachable_inventory: Path, tmp_path: Path, rel: str, old: str | None, new: str, says: list[str]
) -> None:
    _edit(unreachable_inventory, rel, old, new)
    r = run_site(unreachable_inventory, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    for text in says:
        assert text in out, out[-3000:]
    assert "UNREACHABLE" not in out, "a host was contacted before the variables were checked"


def test_the_inventory_as_written_is_refused(raw_inventory: Path, tmp_path: Path) -> None:
    """Without what `gpufleet render` derives, nothing runs: the roles do not
    work the fleet model's values out again."""
    r = run_site(raw_inventory, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "gpufleet render" in out and "gpufleet_derived_format" in out, out[-3000:]
    assert "UNREACHABLE" not in out


def test_good_variables_pass_validation_and_then_reach_for_the_hosts(unreachable_inventory: Path, tmp_path: Path) -> None:
    """The counterpart: with valid variables the validation play passes and the
    next play tries to connect (and finds nobody), so the tests above fail for
    the reason they claim."""
    r = run_site(unreachable_inventory, tmp_path)
    out = r.stdout + r.stderr
    assert "UNREACHABLE" in out, out[-3000:]
