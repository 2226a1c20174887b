"""testinfra suites for bare-metal GPU servers.

Run against servers, never against the machine running pytest:

    pytest tests/infra --hosts=ansible://gpu --ansible-inventory=inventory/dc-fra

Expected values come from the same place the playbooks take them: each role's
``defaults/main.yml`` overridden by the host's inventory variables (group_vars,
host_vars), templated with Ansible's own templar. Without ``--hosts`` every
test here is skipped.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
INFRA = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if config.getoption("hosts", None):
        return
    skip = pytest.mark.skip(reason="server suite: run with --hosts=ansible://GROUP --ansible-inventory=INVENTORY")
    for item in items:
        if INFRA in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@functools.lru_cache(maxsize=None)
def role_defaults(role: str) -> dict[str, Any]:
    path = ROLES / role / "defaults" / "main.yml"
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


@functools.lru_cache(maxsize=None)
def role_vars(role: str, name: str) -> dict[str, Any]:
    path = ROLES / role / "vars" / name
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def _trust(value: Any) -> Any:
    from ansible.template import trust_as_template

    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trust(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trust(v) for v in value]
    return value


class Expect:
    """Variables as a role sees them on one host, in Ansible's order of
    precedence: role defaults < inventory variables < the role's vars files
    (``vars/main.yml``, then the per-OS file it loads).
    ``expect("os_baseline", "os_baseline_sysctl")``."""

    def __init__(self, hostvars: dict[str, Any], facts: dict[str, str]):
        self.hostvars = hostvars
        self.facts = facts

    def role(self, role: str) -> dict[str, Any]:
        merged: dict[str, Any] = dict(role_vars(role, "main.yml"))
        # The roles load the first per-OS file found, most specific first.
        for name in (f"{self.facts['distribution']}-{self.facts['major']}.yml", f"{self.facts['os_family']}.yml"):
            if (ROLES / role / "vars" / name).exists():
                merged.update(role_vars(role, name))
                break
        return merged

    def __call__(self, role: str, name: str, default: Any = None) -> Any:
        from ansible.parsing.dataloader import DataLoader
        from ansible.template import Templar

        variables: dict[str, Any] = {}
        for other in ("nvidia_driver", "os_baseline", role):
            variables.update(role_defaults(other))
        variables.update(self.hostvars)
        variables.update(self.role(role))
        variables.setdefault("inventory_hostname", self.hostvars.get("inventory_hostname", ""))
        variables["ansible_facts"] = {
            "os_family": self.facts["os_family"],
            "distribution": self.facts["distribution"],
            "distribution_major_version": self.facts["major"],
            "kernel": self.facts["kernel"],
        }
        if name not in variables:
            return default
        templar = Templar(loader=DataLoader(), variables=_trust(variables))
        return templar.template(_trust(variables[name]))


def _os_facts(host) -> dict[str, str]:
    info = {}
    for line in host.file("/etc/os-release").content_string.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            info[k] = v.strip().strip('"')
    distro = {"debian": "Debian", "ubuntu": "Ubuntu", "rhel": "RedHat", "rocky": "Rocky", "almalinux": "AlmaLinux"}.get(
        info.get("ID", ""), info.get("ID", "").capitalize()
    )
    family = "Debian" if distro in ("Debian", "Ubuntu") else "RedHat"
    return {
        "distribution": distro,
        "os_family": family,
        "major": info.get("VERSION_ID", "").split(".")[0],
        "kernel": host.check_output("uname -r"),
    }


@pytest.fixture(scope="module")
def hostvars(host) -> dict[str, Any]:
    """The host's inventory variables (empty for a host not from an inventory)."""
    try:
        return dict(host.ansible.get_variables())
    except Exception:  # a --hosts=ssh://... target has no inventory
        return {}


@pytest.fixture(scope="module")
def facts(host) -> dict[str, str]:
    return _os_facts(host)


@pytest.fixture(scope="module")
def expect(hostvars, facts) -> Expect:
    return Expect(hostvars, facts)


_PCI_GPU_CLASSES = ("0x030000", "0x030200")


@pytest.fixture(scope="module")
def nvidia_pci(host) -> dict[str, list[str]]:
    """NVIDIA PCI functions from sysfs: {"gpus": [addr...], "nvswitches": [addr...]}."""
    out = host.run(
        "for d in /sys/bus/pci/devices/*; do "
        '[ "$(cat $d/vendor)" = 0x10de ] && echo "${d##*/} $(cat $d/class) $(cat $d/device)"; '
        "done; true"
    ).stdout
    gpus, switches = [], []
    for line in out.splitlines():
        addr, cls, _dev = line.split()
        if cls in _PCI_GPU_CLASSES:
            gpus.append(addr)
        elif cls.startswith("0x0680"):
            switches.append(addr)
    return {"gpus": gpus, "nvswitches": switches}


@pytest.fixture(scope="module")
def gpu(nvidia_pci) -> list[str]:
    """Skip the test on hosts without an NVIDIA GPU."""
    if not nvidia_pci["gpus"]:
        pytest.skip("no NVIDIA GPU (PCI vendor 10de) on this host")
    return nvidia_pci["gpus"]


@pytest.fixture(scope="module")
def driver_expected(expect, nvidia_pci) -> bool:
    """Whether the NVIDIA driver role installs the driver on this host."""
    return bool(nvidia_pci["gpus"]) or bool(expect("nvidia_driver", "nvidia_driver_install_without_gpu", False))
