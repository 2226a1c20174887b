"""Run a site's Pulumi program under Pulumi's mock engine and keep what it declared.

``run_site(fleet_path, site)`` builds the stack in this process with
:func:`cloud.program.build_site` inside a ``@pulumi.runtime.test`` function
(without the fleet's Kubernetes add-ons unless ``addons=True``: those have
their own tests under tests/k8s), and
returns a :class:`StackRun`: every resource registered (type, name, inputs with
secrets still wrapped, provider reference) and the stack's resolved outputs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import _sync_await

from cloud.preview import make_mocks, stack_config
from cloud.program import build_site
from gpufleet.model import load_fleet

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "stacks" / "fleet.yaml"


def plain(value: Any) -> Any:
    """Inputs with secret wrappers removed (to read what a secret holds)."""
    if rpc.is_rpc_secret(value):
        return plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@dataclass
class StackRun:
    site: str
    resources: list[dict[str, Any]]
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    provider: Any = None  # the site's kubernetes.Provider

    def of_type(self, typ: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] == typ]

    def one(self, typ: str, name: str | None = None) -> dict[str, Any]:
        found = [r for r in self.of_type(typ) if name is None or r["name"] == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {[r['name'] for r in found]}"
        return found[0]

    def inputs(self, typ: str, name: str | None = None) -> dict[str, Any]:
        return plain(self.one(typ, name)["inputs"])


def run_site(
    fleet_path: Path | str, site: str, config: dict[str, str] | None = None, secret_keys: list[str] | None = None, addons: bool = False
) -> StackRun:
    fleet = load_fleet(fleet_path)
    region = fleet.site(site).region or "us-east-1"
    mocks = make_mocks(region)
    pulumi.runtime.set_mocks(mocks, project="gpufleet", stack=site, preview=False)
    if config is None:
        config, secret_keys = stack_config(fleet.site(site))
    pulumi.runtime.set_all_config(config, secret_keys or [])
    run = StackRun(site, mocks.resources)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        result = build_site(fleet, site, export=False, addons=addons)
        holder["result"] = result
        keys = list(result.outputs)
        return pulumi.Output.all(*[result.outputs[k] for k in keys]).apply(lambda vals: run.outputs.update(zip(keys, vals)))

    program()
    run.provider = holder["result"].kubernetes_provider
    for key, value in holder["result"].outputs.items():
        if isinstance(value, pulumi.Output) and _sync_await(value.is_secret()):
            run.secret_outputs.add(key)
    return run


def provider_ref_matches(ref: str | None, provider: dict[str, Any]) -> bool:
    """Whether a resource's provider reference (``<urn>::<id>``) points at ``provider``."""
    if not ref:
        return False
    urn, _, pid = ref.rpartition("::")
    *_, type_chain, name = urn.split("::")
    return type_chain.split("$")[-1] == provider["type"] and name == provider["name"] and pid == f"{provider['name']}-id"


@pytest.fixture(scope="session")
def example_runs() -> dict[str, StackRun]:
    """Every stack of the example fleet, run once for the session."""
    fleet = load_fleet(EXAMPLE)
    return {s.name: run_site(EXAMPLE, s.name) for s in fleet.sites}


@pytest.fixture(scope="session")
def example_fleet():
    return load_fleet(EXAMPLE)


class FleetCopy:
    """The example fleet copied into a temporary folder, for variants of its stack files."""

    def __init__(self, root: Path):
        self.root = root
        self.fleet = root / "stacks" / "fleet.yaml"

    def stack(self, site: str) -> dict[str, Any]:
        return yaml.safe_load((self.root / "stacks" / f"Pulumi.{site}.yaml").read_text())

    def write_stack(self, site: str, data: dict[str, Any]) -> None:
        (self.root / "stacks" / f"Pulumi.{site}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    def edit_config(self, site: str, key: str, fn) -> None:
        data = self.stack(site)
        data["config"][key] = fn(data["config"].get(key))
        self.write_stack(site, data)


@pytest.fixture
def fleet_copy(tmp_path: Path) -> FleetCopy:
    shutil.copytree(REPO / "stacks", tmp_path / "stacks")
    shutil.copytree(REPO / "inventory", tmp_path / "inventory")
    return FleetCopy(tmp_path)
