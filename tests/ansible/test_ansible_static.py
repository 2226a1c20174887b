"""The playbooks and roles as Ansible itself reads them: lint, syntax, and the
validation play that must stop bad variables before any server is touched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = sorted((ROOT / "baremetal").glob("*.yml"))


def ansible_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_HOME": str(tmp_path / "home"),
        "ANSIBLE_FACT_CACHING_CONNECTION": str(tmp_path / "facts"),
        "ANSIBLE_NOCOLOR": "1",
    }


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


@pytest.fixture()
def unreachable_inventory(tmp_path: Path) -> Path:
    """The example data centre, every host pointed at a closed port on 127.0.0.1:
    any attempt to touch a host shows up as UNREACHABLE."""
    inv = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventory" / "dc-fra", inv)
    hosts = inv / "hosts.yml"
    # every host on 127.0.0.1's closed discard port: refused at once, no traffic leaves the machine
    hosts.write_text(re.sub(r"ansible_host: 10\.20\.\d+\.\d+", "ansible_host: 127.0.0.1, ansible_port: 9", hosts.read_text()))
    (inv / "group_vars" / "all.yml").write_text(
        (inv / "group_vars" / "all.yml").read_text() + "gpufleet_k8s_api_endpoint: k8s-api.dc-fra.example:6443\n"
    )
    return inv


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
        pytest.param("group_vars/hgx_h100.yml", None, 'nvidia_driver_branch: "999"\n',
                     ["nvidia_driver_branch", "999"], id="bad-driver-branch"),
        pytest.param("host_vars/fra-hgx-04.yml", "2g.20gb: 3", "2g.24gb: 3",
                     ["fra-hgx-04", "2g.24gb"], id="unknown-mig-profile"),
        # `gpufleet render` writes the site's Kubernetes minor from the fleet
        # model; packages pinned to another minor must not reach a server.
        pytest.param("group_vars/all.yml", None, 'gpufleet_kubernetes_version: "1.32"\n',
                     ["runs Kubernetes 1.32", "k8s_node_kubernetes_version is 1.33.5"], id="kubernetes-pin-off-the-site"),
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


def test_kubernetes_pin_on_the_sites_version_passes(unreachable_inventory: Path, tmp_path: Path) -> None:
    _edit(unreachable_inventory, "group_vars/all.yml", None, 'gpufleet_kubernetes_version: "1.33"\n')
    r = run_site(unreachable_inventory, tmp_path)
    out = r.stdout + r.stderr
    assert "runs Kubernetes" not in out
    assert "UNREACHABLE" in out, out[-3000:]


def test_good_variables_pass_validation_and_then_reach_for_the_hosts(unreachable_inventory: Path, tmp_path: Path) -> None:
    """The counterpart: with valid variables the validation play passes and the
    next play tries to connect (and finds nobody), so the tests above fail for
    the reason they claim."""
    r = run_site(unreachable_inventory, tmp_path)
    out = r.stdout + r.stderr
    assert "UNREACHABLE" in out, out[-3000:]
