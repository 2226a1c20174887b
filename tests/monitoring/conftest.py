"""A small stand-in fleet with the attributes the monitoring builder reads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Site:
    name: str
    kind: str


@dataclass
class Model:
    name: str
    sites: list[str] = field(default_factory=list)


@dataclass
class Fleet:
    name: str
    hub: str
    sites: list[Site]
    models: list[Model]


FLEET = Fleet(
    name="acme-llm",
    hub="fra-hub",
    sites=[
        Site("fra-hub", "datacenter"),
        Site("dc-fra", "datacenter"),
        Site("aws-euc1", "aws"),
        Site("aws-use1", "aws"),
    ],
    models=[
        Model("llama-3-1-70b-instruct", ["aws-euc1", "aws-use1", "dc-fra"]),
        Model("llama-3-1-8b-instruct", ["aws-use1"]),
        Model("clinical-notes-8b", ["dc-fra"]),
    ],
)

SITES = [s.name for s in FLEET.sites]


def upstream_dir() -> Path:
    return Path(os.environ.get("GPUFLEET_UPSTREAM") or REPO.parent / "shared" / "upstream")


@pytest.fixture
def fleet() -> Fleet:
    return FLEET
