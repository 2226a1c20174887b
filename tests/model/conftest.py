"""Fixtures for the fleet-model tests: a private copy of the example fleet.

Each test gets its own copy of ``stacks/`` and ``inventory/`` in a temporary
folder and runs from there, so problems are reported with the same relative
paths a user sees (``stacks/fleet.yaml``, ``inventory/dc-fra/hosts.yml``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_copy import FleetCopy, copy_example


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FleetCopy:
    copy = copy_example(tmp_path)
    monkeypatch.chdir(tmp_path)
    return copy
