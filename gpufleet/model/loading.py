"""Loading a fleet: fleet.yaml, each site's Pulumi stack, each data centre's inventory.

``load_fleet(path)`` returns a :class:`~gpufleet.model.types.Fleet` or raises
:class:`~gpufleet.errors.FleetError` with every problem found, each tied to the
file and key the user must edit. Every file goes through the bounded reader
(:mod:`gpufleet.safe_yaml`), every schema through :mod:`gpufleet.schema`, and
once all of them load cleanly the cross-checks run (:mod:`gpufleet.model.checks`).
"""

from __future__ import annotations

import datetime as dt
import gc
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gpufleet.errors import FleetError, Problem, did_you_mean
from gpufleet.model.checks import cross_check
from gpufleet.model.cuda import driver_warnings
from gpufleet.model.messages import validation_problems
from gpufleet.model.servers import load_servers
from gpufleet.model.types import DEFAULT_FLEET, Fleet, Site
from gpufleet.safe_yaml import load_yaml
from gpufleet.schema import AwsStackConfig, DatacenterStackConfig, FleetSpec, SiteSpec

_PULUMI_TOP_KEYS = {"config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment"}


def load_fleet(path: str | Path = DEFAULT_FLEET, today: dt.date | None = None) -> Fleet:
    """Load and cross-check the fleet whose fleet-wide file is ``path``.

    ``today`` is the day end-of-life warnings count from (:attr:`Fleet.warnings`); default: today.
    """
    # Loading builds hundreds of thousands of small objects and no garbage
    # cycles; the cyclic collector would rescan them all again and again (a
    # third of the time on 10,000 servers, growing faster than the fleet).
    enabled = gc.isenabled()
    gc.disable()
    try:
        fleet = _load_fleet(Path(path))
    finally:
        if enabled:
            gc.enable()
    fleet.warnings = driver_warnings(fleet, today or dt.date.today())
    return fleet


def _fleet_spec(path: Path) -> FleetSpec:
    fleet_file = str(path)
    if not path.is_file():
        raise FleetError([Problem(fleet_file, "", "file not found" if not path.exists() else "not a file")])
    problems: list[Problem] = []
    data = load_yaml(path, fleet_file, problems)
    if problems:
        raise FleetError(problems)
    if data is None:
        raise FleetError([Problem(fleet_file, "", "the file is empty; expected a mapping with name, hub and sites")])
    if not isinstance(data, dict):
        raise FleetError([Problem(fleet_file, "", f"expected a mapping with name, hub and sites, not {type(data).__name__}")])
    try:
        return FleetSpec.model_validate(data)
    except ValidationError as exc:
        raise FleetError(validation_problems(exc, fleet_file, FleetSpec)) from None


def _load_fleet(path: Path) -> Fleet:
    spec = _fleet_spec(path)
    fleet_file = str(path)
    stacks_dir = path.parent
    root = stacks_dir.parent  # inventory paths are relative to the project root
    problems: list[Problem] = []
    sites: list[Site] = []
    for i, site_spec in enumerate(spec.sites):
        site = _load_site(site_spec, i, stacks_dir, root, fleet_file, problems)
        if site:
            sites.append(site)
    _stray_stacks(stacks_dir, {s.name for s in spec.sites}, problems)
    fleet = Fleet(root=root, spec=spec, sites=sites, path=path)
    if not problems:
        problems.extend(cross_check(fleet, fleet_file))
    if problems:
        raise FleetError(sorted(set(problems), key=lambda p: (p.file, p.path, p.message)))
    return fleet


def _stray_stacks(stacks_dir: Path, names: set[str], problems: list[Problem]) -> None:
    for p in sorted(stacks_dir.glob("Pulumi.*.yaml")):
        site = p.name[len("Pulumi.") : -len(".yaml")]
        if site not in names:
            problems.append(Problem(str(p), "", f"stack for '{site}', which is not a site in fleet.yaml{did_you_mean(site, names)}"))


def _stack_config(stack_path: Path, problems: list[Problem]) -> dict[str, Any] | None:
    """The ``config`` mapping of a Pulumi stack file; None when the file is unusable."""
    stack_file = str(stack_path)
    n = len(problems)
    raw = load_yaml(stack_path, stack_file, problems)
    if len(problems) > n:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        problems.append(Problem(stack_file, "config" if isinstance(raw, dict) else "", "a Pulumi stack file needs a 'config' mapping"))
        return None
    for key in raw:
        if key not in _PULUMI_TOP_KEYS:
            problems.append(Problem(stack_file, str(key), f"unknown top-level key{did_you_mean(str(key), _PULUMI_TOP_KEYS)}"))
    return raw["config"]


def _gpufleet_keys(config: dict[str, Any], stack_file: str, problems: list[Problem]) -> dict[str, Any]:
    ours: dict[str, Any] = {}
    for key, value in config.items():
        ns, _, name = str(key).partition(":")
        if not name:
            problems.append(Problem(stack_file, f"config.{key}", "config keys are namespaced, e.g. gpufleet:site or aws:region"))
        elif ns == "gpufleet":
            ours[name] = value
    return ours


def _load_site(spec: SiteSpec, index: int, stacks_dir: Path, root: Path, fleet_file: str, problems: list[Problem]) -> Site | None:
    stack_path = stacks_dir / f"Pulumi.{spec.name}.yaml"
    stack_file = str(stack_path)
    if not stack_path.is_file():
        problems.append(Problem(fleet_file, f"sites[{index}]", f"no stack file {stack_file} for site '{spec.name}'"))
        return None
    config = _stack_config(stack_path, problems)
    if config is None:
        return None
    ours = _gpufleet_keys(config, stack_file, problems)
    model: type[BaseModel] = AwsStackConfig if spec.kind == "aws" else DatacenterStackConfig
    try:
        parsed = model.model_validate(ours)
    except ValidationError as exc:
        for p in validation_problems(exc, stack_file, model):
            problems.append(Problem(p.file, f"config.gpufleet:{p.path}" if p.path else "config", p.message))
        return None
    if parsed.site != spec.name:
        problems.append(Problem(stack_file, "config.gpufleet:site", f"'{parsed.site}' does not match the stack's site '{spec.name}'"))
    site = Site(spec=spec, stack_file=stack_file)
    if spec.kind == "aws":
        region = config.get("aws:region")
        if region is None:
            problems.append(Problem(stack_file, "config.aws:region", "required key is missing"))
        elif region != spec.region:
            problems.append(Problem(stack_file, "config.aws:region", f"'{region}' does not match the site's region '{spec.region}' in {fleet_file}"))
        site.aws = parsed  # type: ignore[assignment]
    else:
        for k in (k for k in config if str(k).startswith("aws:")):
            problems.append(Problem(stack_file, f"config.{k}", "a datacenter stack declares no AWS resources"))
        site.servers, site.inventory_files = load_servers(spec, root, problems)
    return site
