"""Fixtures for the serving tests: the example fleet, and edited copies of it."""

from __future__ import annotations

import os

# LiteLLM reads this at import: use the price map it ships, never fetch one.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.model import Fleet, load_fleet

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fleet() -> Fleet:
    return load_fleet(REPO / "stacks" / "fleet.yaml")


@pytest.fixture
def edited_fleet(tmp_path: Path) -> Callable[[Callable[[dict[str, Any]], None]], Fleet]:
    """Load a copy of the example fleet after ``edit(fleet_yaml_mapping)``."""

    def make(edit: Callable[[dict[str, Any]], None]) -> Fleet:
        shutil.copytree(REPO / "stacks", tmp_path / "stacks")
        shutil.copytree(REPO / "inventory", tmp_path / "inventory")
        path = tmp_path / "stacks" / "fleet.yaml"
        data = yaml.safe_load(path.read_text())
        edit(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load_fleet(path)

    return make


def model_entry(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in data["models"] if m["name"] == name)


@pytest.fixture
def backend():
    """A local OpenAI-compatible backend on 127.0.0.1 that counts the calls it answers."""
    from tests.serving.local_services import OpenAIBackend

    b = OpenAIBackend().start()
    yield b
    b.stop()
