"""A data centre's servers, from its inventory: each host's ``gpufleet_*`` variables, checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gpufleet import mig, names
from gpufleet.errors import Problem, did_you_mean
from gpufleet.inventory import Inventory, ResolvedHost, load_inventory
from gpufleet.model.messages import SERVER_PREFIX, VAULTED, collapse_hosts, server_var_problems, vaulted
from gpufleet.model.types import Server
from gpufleet.safe_yaml import VaultValue
from gpufleet.schema import ServerVars, SiteSpec

SERVER_KEYS = {f"{SERVER_PREFIX}{n}" for n in ServerVars.model_fields}
# Variables a host takes from one group only: two unrelated groups setting them differently is a mistake.
SINGLE_OWNER = ("gpufleet_server_class",)
_ORIGINS = ("ansible_host", "gpufleet_bmc_address", "gpufleet_driver_branch")


def load_servers(spec: SiteSpec, root: Path, problems: list[Problem]) -> tuple[list[Server], list[str]]:
    """The servers of a data centre's inventory, and the files the inventory reader read."""
    inv_rel = str(spec.inventory)
    inv = load_inventory(root / inv_rel, inv_rel, problems, single_owner=SINGLE_OWNER)
    if inv is None:
        return [], []
    if not inv.hosts:
        problems.append(Problem(inv_rel, "", "the inventory has no hosts"))
    servers = []
    found = class_conflicts(inv)
    for host in inv.hosts.values():
        mine: list[Problem] = []
        reason = names.node_name(host.name)
        if reason:
            mine.append(Problem(host.file, host.name, f"not a valid Kubernetes node name (a data-centre node is named after its inventory host): {reason}"))
        server = server_of(host, spec, mine)
        found.extend((host.name, p) for p in mine)
        if server:
            servers.append(server)
    problems.extend(collapse_hosts(found))
    return servers, inv.files


def class_conflicts(inv: Inventory) -> list[tuple[str, Problem]]:
    """A host in two server classes: two unrelated groups set its class differently."""
    return [
        (c.host, Problem(c.file, c.host, (
            f"in two server classes: group {c.first.group} sets {c.var} {c.first.value} ({c.first.file}), "
            f"group {c.second.group} sets {c.second.value} ({c.second.file}); list the host in one class group")))
        for c in inv.conflicts
    ]


def _ours(host: ResolvedHost, problems: list[Problem]) -> dict[str, Any] | None:
    """The host's gpufleet_* variables, prefix removed; None when one is unknown or vaulted."""
    ours: dict[str, Any] = {}
    usable = True
    for key, value in host.vars.items():
        if not key.startswith(SERVER_PREFIX):
            continue
        if key not in SERVER_KEYS:
            problems.append(Problem(host.origin[key], f"{host.name}.{key}", f"unknown gpufleet variable{did_you_mean(key, SERVER_KEYS)}"))
            usable = False
        elif vaulted(value):
            problems.append(Problem(host.origin[key], f"{host.name}.{key}", f"{key} {VAULTED}"))
            usable = False
        else:
            ours[key[len(SERVER_PREFIX) :]] = value
    return ours if usable else None  # a misspelt variable would otherwise show up again as a missing one


def server_of(host: ResolvedHost, spec: SiteSpec, problems: list[Problem]) -> Server | None:
    """The host as a :class:`Server`, or None with its problems appended."""
    ours = _ours(host, problems)
    if ours is None:
        return None
    try:
        sv = ServerVars.model_validate(ours)
    except ValidationError as exc:
        problems.extend(server_var_problems(exc, host, str(spec.inventory)))
        return None
    if sv.site != spec.name:
        problems.append(Problem(host.origin.get("gpufleet_site", str(spec.inventory)), f"{host.name}.gpufleet_site", f"'{sv.site}' but the inventory belongs to site '{spec.name}'"))
    problems.extend(mig_problems(host, sv, host.origin.get("gpufleet_mig_layout", str(spec.inventory))))
    return Server(
        name=host.name, site=spec.name, groups=host.groups, ansible_host=_plain(host.vars.get("ansible_host")), spec=sv,
        ansible_port=_port(host.vars.get("ansible_port")), file=host.file,
        origin={k: host.origin[k] for k in _ORIGINS if k in host.origin},
    )


def _plain(value: Any) -> str | None:
    return None if value is None or isinstance(value, VaultValue) else str(value)


def _port(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, VaultValue) else None
    except (TypeError, ValueError):
        return None


def mig_problems(host: ResolvedHost, sv: ServerVars, file: str) -> list[Problem]:
    """The MIG layout against the GPU's profiles and the server's GPUs."""
    out: list[Problem] = []
    if sv.accelerator is None:
        return out
    for gi, group in enumerate(sv.mig_layout):
        where = f"{host.name}.gpufleet_mig_layout[{gi}]"
        out.extend(Problem(file, f"{where}.profiles", msg) for msg in mig.layout_problems(sv.accelerator, group.profiles))
        if group.devices != "all":
            bad = [d for d in group.devices if d >= sv.gpu_count]
            if bad:
                out.append(Problem(file, f"{where}.devices", f"GPU index {bad[0]} does not exist on a {sv.gpu_count}-GPU server"))
    return out + mig_overlaps(host, sv, file)


def mig_overlaps(host: ResolvedHost, sv: ServerVars, file: str) -> list[Problem]:
    """One GPU in two MIG groups (or twice in one): mig-parted would apply one of them, silently."""
    out: list[Problem] = []
    owner: dict[int, int] = {}
    for gi, group in enumerate(sv.mig_layout):
        where = f"{host.name}.gpufleet_mig_layout[{gi}].devices"
        devices = list(range(sv.gpu_count)) if group.devices == "all" else list(group.devices)
        twice = sorted({d for d in devices if devices.count(d) > 1})
        if twice:
            out.append(Problem(file, where, f"GPU index {twice[0]} is listed twice"))
        for d in devices:
            if d in owner and owner[d] != gi:
                first = sv.mig_layout[owner[d]]
                note = " (devices: all)" if first.devices == "all" else ""
                out.append(Problem(file, where, f"GPU index {d} is also in gpufleet_mig_layout[{owner[d]}]{note}"))
                break
            owner.setdefault(d, gi)
    return out
