"""Helpers for the Ansible tests (imported by name, so unique: a bare
``from conftest import`` resolves to whichever conftest pytest loaded last).

Inventories for the Ansible tests: the example data centre as ``gpufleet
render`` writes it, every host pointed at 127.0.0.1's closed discard port so
that any attempt to touch a host shows up as UNREACHABLE and no traffic
leaves the machine."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def ansible_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_HOME": str(tmp_path / "home"),
        "ANSIBLE_FACT_CACHING_CONNECTION": str(tmp_path / "facts"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def unreachable(hosts_yml: Path) -> None:
    """Point every host of an inventory file at 127.0.0.1:9 (refused at once)."""
    hosts_yml.write_text(re.sub(r"ansible_host: 10\.\d+\.\d+\.\d+", "ansible_host: 127.0.0.1, ansible_port: 9", hosts_yml.read_text()))


def rendered_inventory(out: Path, site: str = "dc-fra") -> Path:
    """``gpufleet render``'s Ansible inventory of ``site`` (the example fleet)."""
    from gpufleet.model import load_fleet
    from gpufleet.render import write_ansible

    fleet = load_fleet(ROOT / "stacks" / "fleet.yaml")
    write_ansible(fleet, site, out)
    inv = out / "inventory"
    unreachable(inv / "hosts.yml")
    return inv


