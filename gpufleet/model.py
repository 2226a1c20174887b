"""The fleet model: loads fleet.yaml, the Pulumi stack files and the inventories,
validates each against its schema and cross-checks them against each other.

``load_fleet(path)`` returns a :class:`Fleet` or raises :class:`FleetError`
with every problem found, each tied to the file and key the user must edit.
"""

from __future__ import annotations

import gc
import ipaddress
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gpufleet import mig, names
from gpufleet.catalog import ACCELERATORS, INSTANCE_TYPES
from gpufleet.errors import FleetError, Problem, did_you_mean, key_path
from gpufleet.inventory import ResolvedHost, VaultValue, load_inventory, load_yaml
from gpufleet.schema import (
    AwsStackConfig,
    DatacenterStackConfig,
    FleetSpec,
    NodePool,
    Queue,
    ServedModel,
    ServerVars,
    SiteSpec,
    Team,
)

DEFAULT_FLEET = Path("stacks/fleet.yaml")
GPU_MEMORY_UTILIZATION = 0.9  # share of GPU memory vLLM may use (its default)
RUNTIME_OVERHEAD_GIB = 1.0  # per GPU: CUDA context, activations, CUDA graphs
BYTES_PER_PARAM = {"none": 2.0, "fp8": 1.0, "int8": 1.0, "awq": 0.5, "gptq": 0.5}
_PULUMI_TOP_KEYS = {"config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment"}
_SERVER_PREFIX = "gpufleet_"


# ----------------------------------------------------------------- resolved model


@dataclass
class Server:
    name: str
    site: str
    groups: list[str]
    ansible_host: str | None
    spec: ServerVars
    ansible_port: int | None = None
    file: str = ""  # the hosts file that lists it
    origin: dict[str, str] = field(default_factory=dict)  # ansible_host and gpufleet_bmc_address -> the file that sets it

    @property
    def mig_gpus(self) -> int:
        n = 0
        for group in self.spec.mig_layout:
            n += self.spec.gpu_count if group.devices == "all" else len(set(group.devices))
        return min(n, self.spec.gpu_count)

    @property
    def whole_gpus(self) -> int:
        return self.spec.gpu_count - self.mig_gpus

    @property
    def mig_slices(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for group in self.spec.mig_layout:
            gpus = self.spec.gpu_count if group.devices == "all" else len(set(group.devices))
            for prof, count in group.profiles.items():
                out[prof] += count * gpus
        return out

    @property
    def mig_config(self) -> str:
        return mig.config_name([g.model_dump() for g in self.spec.mig_layout])


@dataclass
class Site:
    spec: SiteSpec
    stack_file: str
    aws: AwsStackConfig | None = None
    servers: list[Server] = field(default_factory=list)
    inventory_files: list[str] = field(default_factory=list)  # what the inventory reader read, relative to it

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def is_aws(self) -> bool:
        return self.spec.kind == "aws"

    @property
    def region(self) -> str | None:
        return self.spec.region

    @property
    def kubernetes_version(self) -> str:
        return self.aws.cluster.kubernetes_version if self.aws else str(self.spec.kubernetes_version)

    @property
    def node_pools(self) -> list[NodePool]:
        return list(self.aws.node_pools) if self.aws else []

    @property
    def fabric(self) -> str:
        """The GPU-to-GPU fabric NCCL uses across nodes at this site."""
        if self.aws:
            return "efa" if any(p.efa for p in self.aws.node_pools) else "tcp"
        fabrics = {s.spec.fabric for s in self.servers if s.spec.gpu_count}
        for f in ("infiniband", "roce", "efa"):
            if f in fabrics:
                return f
        return "tcp"

    def gpu_capacity(self) -> Counter[str]:
        """Whole GPUs per accelerator: servers' non-MIG GPUs, or pools at max size."""
        out: Counter[str] = Counter()
        if self.aws:
            for pool in self.aws.node_pools:
                if pool.accelerator:
                    out[pool.accelerator] += pool.max_size * pool.gpus_per_node
        for s in self.servers:
            if s.spec.accelerator and s.whole_gpus:
                out[s.spec.accelerator] += s.whole_gpus
        return out

    def mig_capacity(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for s in self.servers:
            for prof, count in s.mig_slices.items():
                out[(str(s.spec.accelerator), prof)] += count
        return out

    def accelerators(self) -> set[str]:
        return set(self.gpu_capacity()) | {a for a, _ in self.mig_capacity()}


@dataclass
class QueueRef:
    team: Team
    queue: Queue

    @property
    def name(self) -> str:
        return self.queue.name

    @property
    def namespace(self) -> str:
        return self.team.namespace


@dataclass
class Fleet:
    root: Path
    spec: FleetSpec
    sites: list[Site]
    path: Path = DEFAULT_FLEET  # the fleet.yaml this fleet was loaded from

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hub(self) -> str:
        return self.spec.hub

    @property
    def teams(self) -> list[Team]:
        return list(self.spec.teams)

    @property
    def queues(self) -> list[QueueRef]:
        return [QueueRef(t, q) for t in self.spec.teams for q in t.queues]

    @property
    def models(self) -> list[ServedModel]:
        return list(self.spec.models)

    @property
    def residency(self):
        return list(self.spec.residency)

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def allowed_sites(self, data_class: str | None) -> list[str] | None:
        """Sites allowed to hold ``data_class``; None when unrestricted."""
        if data_class is None:
            return None
        for rule in self.spec.residency:
            if rule.data_class == data_class:
                return list(rule.sites)
        return []

    def worker_sites(self) -> list[str]:
        return [s.name for s in self.sites if s.name != self.hub]


# ------------------------------------------------------------------------ helpers


def model_weights_gib(model: ServedModel) -> float:
    return model.parameters_b * 1e9 * BYTES_PER_PARAM[model.quantization] / 2**30


def replica_memory_need_gib(model: ServedModel) -> float:
    gpus = model.placement.gpus
    return model_weights_gib(model) + model.kv_cache_gib + RUNTIME_OVERHEAD_GIB * gpus


def replica_memory_gib(model: ServedModel) -> float:
    """Memory a replica's placement offers to vLLM."""
    p = model.placement
    if p.mig_profile:
        prof = mig.MIG_PROFILES.get(p.accelerator, {}).get(p.mig_profile)
        return (float(prof.memory_gib) if prof else 0.0) * GPU_MEMORY_UTILIZATION
    # Replicas time-sliced onto one GPU share its memory as well as its cores.
    return ACCELERATORS[p.accelerator].memory_gib * p.gpus * GPU_MEMORY_UTILIZATION / (model.time_slicing or 1)


_TYPE_ERRORS = ("string_type", "int_type", "int_parsing", "float_type", "float_parsing", "bool_type", "bool_parsing", "list_type", "dict_type")
_UNION_TAG = re.compile(r"^[a-z][a-z-]*\[.*\]$")  # pydantic's name for a union member, e.g. list[constrained-int]


def _user_loc(loc: Iterable[Any]) -> list[Any]:
    """A pydantic error location as the user wrote it: no union-member or dict-key markers."""
    return [p for p in loc if not (isinstance(p, str) and (p == "[key]" or _UNION_TAG.match(p)))]


VAULTED = "is vaulted (!vault), but gpufleet needs its value to check the fleet: keep it in plain text (vault only secrets gpufleet does not read)"


def _vaulted(value: Any) -> bool:
    """Whether an Ansible Vault value is anywhere in ``value``."""
    if not isinstance(value, (dict, list, VaultValue)):
        return False
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, VaultValue):
            return True
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _got(err: Any) -> str:
    if err["type"] in _TYPE_ERRORS and "input" in err:
        return f" (got {type(err['input']).__name__} {err['input']!r:.40})"
    return ""


def _merge_alternatives(problems: list[Problem]) -> list[Problem]:
    """One line per location: the members of a union that all failed become 'a or b'."""
    merged: dict[tuple[str, str], Problem] = {}
    for p in problems:
        key = (p.file, p.path)
        prev = merged.get(key)
        if prev is None:
            merged[key] = p
        elif prev.message.startswith("Input should be ") and p.message.startswith("Input should be "):
            merged[key] = Problem(p.file, p.path, f"{prev.message} or {p.message.removeprefix('Input should be ')}")
        else:
            merged[(p.file, f"{p.path}\0{len(merged)}")] = p
    return list(merged.values())


def _validation_problems(exc: ValidationError, file: str, model: type[BaseModel], prefix: Iterable[Any] = ()) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = _user_loc([*prefix, *err["loc"]])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _field_names_at(model, list(err["loc"])[:-1])
            msg = f"unknown key{did_you_mean(str(err['loc'][-1]), parent)}"
            if parent:
                msg += f"; expected one of: {', '.join(sorted(parent))}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif msg.startswith("Assertion failed, "):
            msg = msg[len("Assertion failed, ") :]
        if isinstance(err.get("input"), VaultValue):
            msg = VAULTED
        else:
            msg += _got(err)
        out.append(Problem(file, key_path(loc), msg))
    return _merge_alternatives(out)


def _field_names_at(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """Names of the keys a model accepts at a location, for 'did you mean'."""
    import typing

    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        fields = current.model_fields
        name = next((n for n, f in fields.items() if part in (n, f.alias)), None)
        if name is None:
            return []
        ann = fields[name].annotation
        current = _inner_model(ann, typing)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _inner_model(ann: Any, typing: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _inner_model(arg, typing)
        if found is not None:
            return found
    return None


# ------------------------------------------------------------------------ loading


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def load_fleet(path: str | Path = DEFAULT_FLEET) -> Fleet:
    """Load and cross-check the fleet whose fleet-wide file is ``path``."""
    # Loading builds hundreds of thousands of small objects and no garbage
    # cycles; the cyclic collector would rescan them all again and again (a
    # third of the time on 10,000 servers, growing faster than the fleet).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_fleet(Path(path))
    finally:
        if enabled:
            gc.enable()


def _load_fleet(path: Path) -> Fleet:
    problems: list[Problem] = []
    fleet_file = str(path)
    if not path.is_file():
        raise FleetError([Problem(fleet_file, "", "file not found" if not path.exists() else "not a file")])
    stacks_dir = path.parent
    root = stacks_dir.parent  # inventory paths are relative to the project root
    data = load_yaml(path, fleet_file, problems)
    if problems:
        raise FleetError(problems)
    if data is None:
        raise FleetError([Problem(fleet_file, "", "the file is empty; expected a mapping with name, hub and sites")])
    if not isinstance(data, dict):
        raise FleetError([Problem(fleet_file, "", f"expected a mapping with name, hub and sites, not {type(data).__name__}")])
    try:
        spec = FleetSpec.model_validate(data)
    except ValidationError as exc:
        raise FleetError(_validation_problems(exc, fleet_file, FleetSpec)) from None

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


def _load_site(spec: SiteSpec, index: int, stacks_dir: Path, root: Path, fleet_file: str, problems: list[Problem]) -> Site | None:
    stack_path = stacks_dir / f"Pulumi.{spec.name}.yaml"
    stack_file = str(stack_path)
    if not stack_path.is_file():
        problems.append(Problem(fleet_file, f"sites[{index}]", f"no stack file {stack_file} for site '{spec.name}'"))
        return None
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
    config = raw["config"]
    ours: dict[str, Any] = {}
    for key, value in config.items():
        ns, _, name = str(key).partition(":")
        if not name:
            problems.append(Problem(stack_file, f"config.{key}", "config keys are namespaced, e.g. gpufleet:site or aws:region"))
        elif ns == "gpufleet":
            ours[name] = value
    site = Site(spec=spec, stack_file=stack_file)
    model: type[BaseModel] = AwsStackConfig if spec.kind == "aws" else DatacenterStackConfig
    try:
        parsed = model.model_validate(ours)
    except ValidationError as exc:
        for p in _validation_problems(exc, stack_file, model):
            problems.append(Problem(p.file, f"config.gpufleet:{p.path}" if p.path else "config", p.message))
        return None
    if parsed.site != spec.name:
        problems.append(Problem(stack_file, "config.gpufleet:site", f"'{parsed.site}' does not match the stack's site '{spec.name}'"))
    if spec.kind == "aws":
        region = config.get("aws:region")
        if region is None:
            problems.append(Problem(stack_file, "config.aws:region", "required key is missing"))
        elif region != spec.region:
            problems.append(Problem(stack_file, "config.aws:region", f"'{region}' does not match the site's region '{spec.region}' in {fleet_file}"))
        site.aws = parsed  # type: ignore[assignment]
    else:
        aws_keys = [k for k in config if str(k).startswith("aws:")]
        for k in aws_keys:
            problems.append(Problem(stack_file, f"config.{k}", "a datacenter stack declares no AWS resources"))
        site.servers, site.inventory_files = _load_servers(spec, root, problems)
    return site


def _load_servers(spec: SiteSpec, root: Path, problems: list[Problem]) -> tuple[list[Server], list[str]]:
    inv_rel = str(spec.inventory)
    inv = load_inventory(root / inv_rel, inv_rel, problems, single_owner=("gpufleet_server_class",))
    if inv is None:
        return [], []
    if not inv.hosts:
        problems.append(Problem(inv_rel, "", "the inventory has no hosts"))
    servers = []
    found: list[tuple[str, Problem]] = []
    for c in inv.conflicts:
        found.append((c.host, Problem(c.file, c.host, (
            f"in two server classes: group {c.first.group} sets {c.var} {c.first.value} ({c.first.file}), "
            f"group {c.second.group} sets {c.second.value} ({c.second.file}); list the host in one class group"))))
    for host in inv.hosts.values():
        mine: list[Problem] = []
        reason = names.node_name(host.name)
        if reason:
            mine.append(Problem(host.file, host.name, f"not a valid Kubernetes node name (a data-centre node is named after its inventory host): {reason}"))
        server = _server(host, spec, mine)
        found.extend((host.name, p) for p in mine)
        if server:
            servers.append(server)
    problems.extend(_collapse_hosts(found))
    return servers, inv.files


def _collapse_hosts(found: list[tuple[str, Problem]]) -> list[Problem]:
    """One line for a problem that many hosts inherit from the same file and key.

    A mistake in ``group_vars/<class>.yml`` is reported once, with the hosts it
    reaches, instead of once per host (thousands of lines in a large fleet).
    """
    groups: dict[tuple[str, str, str], list[str]] = {}
    first: dict[tuple[str, str, str], Problem] = {}
    for host, p in found:
        rest = p.path[len(host) + 1 :] if p.path.startswith(f"{host}.") else ("" if p.path == host else p.path)
        key = (p.file, rest, p.message)
        groups.setdefault(key, []).append(host)
        first.setdefault(key, p)
    out = []
    for key, hosts in groups.items():
        if len(hosts) == 1:
            out.append(first[key])
            continue
        file, rest, message = key
        shown = ", ".join(hosts) if len(hosts) <= 4 else f"{', '.join(hosts[:3])} and {len(hosts) - 3} more"
        out.append(Problem(file, rest, f"{message} (on {len(hosts)} hosts: {shown})"))
    return out


_SERVER_KEYS = {f"{_SERVER_PREFIX}{n}" for n in ServerVars.model_fields}


def _server(host: ResolvedHost, spec: SiteSpec, problems: list[Problem]) -> Server | None:
    ours: dict[str, Any] = {}
    unknown = False
    for key, value in host.vars.items():
        if key.startswith(_SERVER_PREFIX):
            if key not in _SERVER_KEYS:
                problems.append(Problem(host.origin[key], f"{host.name}.{key}", f"unknown gpufleet variable{did_you_mean(key, _SERVER_KEYS)}"))
                unknown = True
                continue
            if _vaulted(value):
                problems.append(Problem(host.origin[key], f"{host.name}.{key}", f"{key} {VAULTED}"))
                unknown = True
                continue
            ours[key[len(_SERVER_PREFIX) :]] = value
    if unknown:
        return None  # a misspelt variable would otherwise show up again as a missing one
    try:
        sv = ServerVars.model_validate(ours)
    except ValidationError as exc:
        found = []
        for err in exc.errors():
            loc = _user_loc(err["loc"])
            var = f"{_SERVER_PREFIX}{loc[0]}" if loc else ""
            if err["type"] == "missing":
                msg = f"{var} is not set (set it in group_vars or host_vars)"
            else:
                msg = err["msg"].removeprefix("Value error, ") + _got(err)
            file = host.origin.get(var) if var else None
            if file is None:
                # A rule across variables: report it where the first variable it names is set.
                named = [*re.findall(r"gpufleet_\w+", msg), *(f"{_SERVER_PREFIX}{w}" for w in re.findall(r"[a-z_]+", msg))]
                file = next((host.origin[v] for v in named if v in host.origin), None) or host.origin.get("ansible_host") or str(spec.inventory)
            path = key_path([host.name, var, *loc[1:]]) if var else host.name
            found.append(Problem(str(file), path, msg))
        problems.extend(_merge_alternatives(found))
        return None
    if sv.site != spec.name:
        problems.append(Problem(host.origin.get("gpufleet_site", str(spec.inventory)), f"{host.name}.gpufleet_site", f"'{sv.site}' but the inventory belongs to site '{spec.name}'"))
    for gi, group in enumerate(sv.mig_layout):
        if sv.accelerator is None:
            break
        where = f"{host.name}.gpufleet_mig_layout[{gi}]"
        file = host.origin.get("gpufleet_mig_layout", str(spec.inventory))
        for msg in mig.layout_problems(sv.accelerator, group.profiles):
            problems.append(Problem(file, f"{where}.profiles", msg))
        if group.devices != "all":
            bad = [d for d in group.devices if d >= sv.gpu_count]
            if bad:
                problems.append(Problem(file, f"{where}.devices", f"GPU index {bad[0]} does not exist on a {sv.gpu_count}-GPU server"))
    problems.extend(_mig_overlaps(host, sv, host.origin.get("gpufleet_mig_layout", str(spec.inventory))))
    return Server(
        name=host.name, site=spec.name, groups=host.groups, ansible_host=_plain(host.vars.get("ansible_host")), spec=sv,
        ansible_port=_port(host.vars.get("ansible_port")), file=host.file,
        origin={k: host.origin[k] for k in ("ansible_host", "gpufleet_bmc_address") if k in host.origin},
    )


def _plain(value: Any) -> str | None:
    return None if value is None or isinstance(value, VaultValue) else str(value)


def _port(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, VaultValue) else None
    except (TypeError, ValueError):
        return None


def _mig_overlaps(host: ResolvedHost, sv: ServerVars, file: str) -> list[Problem]:
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


# ------------------------------------------------------------------- cross-checks


def cross_check(fleet: Fleet, fleet_file: str) -> list[Problem]:
    """Checks between the inputs; each returns problems against fleet.yaml or a stack."""
    problems: list[Problem] = []
    spec = fleet.spec
    site_names = [s.name for s in spec.sites]
    known = set(site_names)

    def dupes(values: list[str], what: str, path_of) -> None:
        seen: set[str] = set()
        for i, v in enumerate(values):
            if v in seen:
                problems.append(Problem(fleet_file, path_of(i), f"duplicate {what} '{v}'"))
            seen.add(v)

    dupes(site_names, "site name", lambda i: f"sites[{i}].name")
    dupes([t.name for t in spec.teams], "team name", lambda i: f"teams[{i}].name")
    dupes([t.namespace for t in spec.teams], "namespace", lambda i: f"teams[{i}].namespace")
    qpaths = [(f"teams[{ti}].queues[{qi}]", q) for ti, t in enumerate(spec.teams) for qi, q in enumerate(t.queues)]
    dupes([q.name for _, q in qpaths], "queue name", lambda i: f"{qpaths[i][0]}.name")
    dupes([m.name for m in spec.models], "model name", lambda i: f"models[{i}].name")
    dupes([r.data_class for r in spec.residency], "residency data_class", lambda i: f"residency[{i}].data_class")

    def site_ref(name: str, path: str) -> bool:
        if name not in known:
            problems.append(Problem(fleet_file, path, f"unknown site '{name}'{did_you_mean(name, known)}"))
            return False
        return True

    if spec.hub not in known:
        problems.append(Problem(fleet_file, "hub", f"unknown site '{spec.hub}'{did_you_mean(spec.hub, known)}"))
    for ri, rule in enumerate(spec.residency):
        for si, s in enumerate(rule.sites):
            site_ref(s, f"residency[{ri}].sites[{si}]")
    classes = {r.data_class for r in spec.residency}
    sites = {s.name: s for s in fleet.sites}
    # Each site's capacity walks all its servers: compute it once, not per reference.
    gpu_cap = {s.name: s.gpu_capacity() for s in fleet.sites}
    mig_cap = {s.name: s.mig_capacity() for s in fleet.sites}

    for path, q in qpaths:
        for si, s in enumerate(q.sites):
            if site_ref(s, f"{path}.sites[{si}]") and s == spec.hub:
                problems.append(Problem(fleet_file, f"{path}.sites[{si}]", f"'{s}' is the hub: the MultiKueue manager cannot run the workloads it dispatches"))
        if len(set(q.sites)) != len(q.sites):
            problems.append(Problem(fleet_file, f"{path}.sites", "a site is listed twice"))
        _residency(fleet, q.data_class, q.sites, classes, f"{path}", "queue", problems, fleet_file)
        if not all(s in sites for s in q.sites):
            continue  # capacity behind a misspelt site is unknown; its own problem says so
        for acc, want in q.quota.items():
            have = sum(gpu_cap[s][acc] for s in q.sites if s in sites)
            if want > have:
                detail = ", ".join(f"{s}: {gpu_cap[s][acc]}" for s in q.sites if s in sites)
                problems.append(Problem(fleet_file, f"{path}.quota.{acc}", f"quota of {want} {acc} GPUs exceeds the {have} whole GPUs at its sites ({detail})"))

    for mi, m in enumerate(spec.models):
        path = f"models[{mi}]"
        for si, s in enumerate(m.sites):
            site_ref(s, f"{path}.sites[{si}]")
        _residency(fleet, m.data_class, m.sites, classes, path, "model", problems, fleet_file)
        _model_fit(m, path, problems, fleet_file)
        p = m.placement
        if p.mig_profile and m.time_slicing:
            problems.append(Problem(fleet_file, f"{path}.time_slicing", "time-slicing applies to whole GPUs, not MIG slices"))
        for si, s in enumerate(m.sites):
            site = sites.get(s)
            if site is None:
                continue
            if p.mig_profile:
                if mig_cap[s][(p.accelerator, p.mig_profile)] == 0:
                    problems.append(Problem(fleet_file, f"{path}.sites[{si}]", f"site '{s}' has no {p.accelerator} GPU partitioned with MIG profile {p.mig_profile}"))
            elif gpu_cap[s][p.accelerator] == 0:
                have = ", ".join(sorted(set(gpu_cap[s]) | {a for a, _ in mig_cap[s]})) or "none"
                problems.append(Problem(fleet_file, f"{path}.sites[{si}]", f"site '{s}' has no whole {p.accelerator} GPUs (it has: {have})"))

    problems.extend(_cidr_overlaps(fleet, fleet_file))
    problems.extend(_shared_addresses(fleet))
    from cloud.versions import EKS_ADDON_VERSIONS

    for site in fleet.sites:
        if site.aws:
            version = site.aws.cluster.kubernetes_version
            if version not in EKS_ADDON_VERSIONS:
                problems.append(
                    Problem(site.stack_file, "config.gpufleet:cluster.kubernetesVersion", f"Kubernetes {version} has no pinned EKS add-on versions (pinned: {', '.join(sorted(EKS_ADDON_VERSIONS))}; see cloud/versions.py)")
                )
            azs = set(site.aws.network.availability_zones)
            for pi, pool in enumerate(site.aws.node_pools):
                for z in pool.availability_zones or []:
                    if z not in azs:
                        problems.append(Problem(site.stack_file, f"config.gpufleet:nodePools[{pi}].availabilityZones", f"'{z}' is not one of the network's availabilityZones"))
            for z in azs:
                if not z.startswith(str(site.region)):
                    problems.append(Problem(site.stack_file, "config.gpufleet:network.availabilityZones", f"'{z}' is not in region {site.region}"))
            dupes_pools = Counter(p.name for p in site.aws.node_pools)
            for name, n in dupes_pools.items():
                if n > 1:
                    problems.append(Problem(site.stack_file, "config.gpufleet:nodePools", f"duplicate node pool name '{name}'"))
    return problems


def _residency(fleet: Fleet, data_class: str | None, sites: list[str], classes: set[str], path: str, what: str, problems: list[Problem], fleet_file: str) -> None:
    if data_class is None:
        return
    if data_class not in classes:
        problems.append(Problem(fleet_file, f"{path}.data_class", f"no residency rule for data class '{data_class}'{did_you_mean(data_class, classes)}"))
        return
    allowed = fleet.allowed_sites(data_class) or []
    for si, s in enumerate(sites):
        if s not in allowed:
            problems.append(Problem(fleet_file, f"{path}.sites[{si}]", f"{what} holds '{data_class}' data, which may only be at {', '.join(allowed)}; '{s}' is not allowed"))


def _model_fit(m: ServedModel, path: str, problems: list[Problem], fleet_file: str) -> None:
    p = m.placement
    if p.mig_profile:
        table = mig.MIG_PROFILES.get(p.accelerator)
        if table is None:
            problems.append(Problem(fleet_file, f"{path}.placement.mig_profile", f"{p.accelerator} does not support MIG"))
            return
        if p.mig_profile not in table:
            problems.append(Problem(fleet_file, f"{path}.placement.mig_profile", f"MIG profile '{p.mig_profile}' does not exist on {p.accelerator}{did_you_mean(p.mig_profile, table)}"))
            return
    need, have = replica_memory_need_gib(m), replica_memory_gib(m)
    if need > have:
        where = p.mig_profile or f"{p.gpus} x {p.accelerator}"
        if m.time_slicing and m.time_slicing > 1 and not p.mig_profile:
            where += f" shared by {m.time_slicing} time-sliced replicas"
        problems.append(
            Problem(
                fleet_file,
                f"{path}.placement",
                f"does not fit: {model_weights_gib(m):.1f} GiB of weights ({m.parameters_b:g}B at {m.quantization}) + {m.kv_cache_gib:g} GiB KV cache"
                f" + {RUNTIME_OVERHEAD_GIB * p.gpus:g} GiB runtime = {need:.1f} GiB, but {where} offers {have:.1f} GiB at {GPU_MEMORY_UTILIZATION:.0%} utilisation",
            )
        )


def _cidr_overlaps(fleet: Fleet, fleet_file: str) -> list[Problem]:
    nets: list[tuple[str, str, str, ipaddress.IPv4Network]] = []
    for i, s in enumerate(fleet.spec.sites):
        if s.node_cidr:
            nets.append((fleet_file, f"sites[{i}].node_cidr", s.name, ipaddress.IPv4Network(s.node_cidr)))
        if s.pod_cidr:
            nets.append((fleet_file, f"sites[{i}].pod_cidr", s.name, ipaddress.IPv4Network(s.pod_cidr)))
    for site in fleet.sites:
        if site.aws:
            nets.append((site.stack_file, "config.gpufleet:network.vpcCidr", site.name, ipaddress.IPv4Network(site.aws.network.vpc_cidr)))
    out = []
    for i, (f1, p1, s1, n1) in enumerate(nets):
        for f2, p2, s2, n2 in nets[i + 1 :]:
            if n1.overlaps(n2):
                out.append(Problem(f2, p2, f"{n2} overlaps {n1} ({s1} {p1.rsplit('.', 1)[-1]})"))
    return out


_PLAIN_IPV4 = re.compile(r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$")


def _address(value: str) -> str:
    """One spelling per address: IP addresses in canonical form, host names in lower case."""
    if _PLAIN_IPV4.match(value):
        return value  # already canonical (no leading zeros)
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        return value.strip().lower().rstrip(".")


def _shared_addresses(fleet: Fleet) -> list[Problem]:
    """Two hosts with one address: SSH (address and port) or a BMC; across every data centre."""
    ssh: dict[tuple[str, int], tuple[str, str, str]] = {}
    anyone: dict[str, tuple[str, str, str]] = {}  # address -> first (host, variable, file) using it
    bmcs: dict[str, tuple[str, str, str]] = {}
    out = []
    for site in fleet.sites:
        for server in site.servers:
            for var, value in (("ansible_host", server.ansible_host), ("gpufleet_bmc_address", server.spec.bmc_address)):
                if value is None:
                    continue
                addr = _address(value)
                me = (server.name, var, server.origin.get(var, server.file))
                if var == "ansible_host":
                    first = ssh.get((addr, server.ansible_port or 22)) or bmcs.get(addr)
                    ssh.setdefault((addr, server.ansible_port or 22), me)
                else:
                    first = anyone.get(addr)
                    bmcs.setdefault(addr, me)
                anyone.setdefault(addr, me)
                if first is not None and first[0] != server.name:
                    out.append(Problem(me[2], f"{server.name}.{var}", f"{value} is also the address of {first[0]} ({first[1]}, {first[2]})"))
    return out


def gpus_by_accelerator(servers: Iterable[Server]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for s in servers:
        if s.spec.accelerator:
            out[s.spec.accelerator] += s.spec.gpu_count
    return dict(out)


__all__ = ["Fleet", "Site", "Server", "QueueRef", "load_fleet", "FleetError", "Problem", "INSTANCE_TYPES"]
