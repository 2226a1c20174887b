"""A private copy of the example fleet for the fleet-model tests (a module of
its own so that tests import it by a unique name, not ``conftest``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


class FleetCopy:
    """The example fleet copied to ``root``; helpers edit its YAML files in place."""

    def __init__(self, root: Path):
        self.root = root
        self.fleet = root / "stacks" / "fleet.yaml"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> Any:
        return yaml.safe_load(self.path(rel).read_text())

    def write(self, rel: str, data: Any) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(yaml.safe_dump(data, sort_keys=False))

    def write_text(self, rel: str, text: str) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def edit(self, rel: str, change: Callable[[Any], Any]) -> None:
        """Load ``rel``, let ``change`` mutate it in place, write it back."""
        data = self.read(rel)
        change(data)
        self.write(rel, data)

    def problems(self) -> list[str]:
        """Every problem ``load_fleet`` reports, as ``file: key.path: message`` lines."""
        from gpufleet.errors import FleetError
        from gpufleet.model import load_fleet

        try:
            load_fleet("stacks/fleet.yaml")
        except FleetError as exc:
            return [str(p) for p in exc.problems]
        return []

    def load(self):
        from gpufleet.model import load_fleet

        return load_fleet("stacks/fleet.yaml")


def copy_example(dest: Path) -> FleetCopy:
    shutil.copytree(REPO / "stacks", dest / "stacks")
    shutil.copytree(REPO / "inventory", dest / "inventory")
    return FleetCopy(dest)
