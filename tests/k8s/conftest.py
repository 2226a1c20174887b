"""Fixtures of the add-on tests: the example fleet, its bundles, and edited copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import k8s
from gpufleet.model import load_fleet

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fleet():
    return load_fleet(REPO / "stacks" / "fleet.yaml")


@pytest.fixture(scope="session")
def site_names(fleet):
    return [s.name for s in fleet.sites]


@pytest.fixture(scope="session")
def bundles(fleet):
    """site -> {bundle name: bundle}, for every site of the example fleet."""
    return {s.name: {b.name: b for b in k8s.site_bundles(fleet, s.name)} for s in fleet.sites}


@pytest.fixture
def fleet_variant(tmp_path):
    """Load a copy of the example fleet after ``edit(fleet_yaml_dict)`` changed it."""

    def make(edit):
        for folder in ("stacks", "inventory"):
            shutil.copytree(REPO / folder, tmp_path / folder)
        path = tmp_path / "stacks" / "fleet.yaml"
        data = yaml.safe_load(path.read_text())
        edit(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load_fleet(path)

    return make
