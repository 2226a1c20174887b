"""Fixtures for the Ansible tests; the helpers live in ansible_kit.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_kit import ROOT, rendered_inventory, unreachable


@pytest.fixture()
def raw_inventory(tmp_path: Path) -> Path:
    """The example inventory as staff write it, without what render derives."""
    import shutil

    inv = tmp_path / "raw-inventory"
    shutil.copytree(ROOT / "inventory" / "dc-fra", inv)
    unreachable(inv / "hosts.yml")
    return inv


@pytest.fixture()
def unreachable_inventory(tmp_path: Path) -> Path:
    """The rendered example inventory (what the playbooks are meant to run on)."""
    return rendered_inventory(tmp_path / "rendered")
