"""A fast reader for Ansible YAML inventories (hosts file + group_vars + host_vars).

It resolves every host's variables in the order Ansible's VariableManager does
with the default ``hash_behaviour = replace``:

1. inline vars of ``all``, then ``group_vars/all``;
2. inline vars of the host's other groups, sorted by (depth, ansible_group_priority, name);
3. ``group_vars/<group>`` of those groups, in the same order;
4. the host's inline vars, then ``host_vars/<host>``.

Like Ansible, it reads a hosts file's keys in document order, expands host
ranges (``node[01:10]``, ``node[0:8:2]``, ``web-[a:c]``), and takes the first of
``group_vars/<name>``, ``<name>.yml``, ``<name>.yaml``, ``<name>.json``; a folder
is read recursively in sorted order, skipping hidden files and backups (``~``).

The tests compare the result with ``ansible-inventory --list`` on the example and
on generated inventories. Reading the files directly keeps ``gpufleet validate``
fast on inventories of thousands of servers, where Ansible's loader is slow.
Each resolved variable remembers the file it came from, so a problem is
reported against the file the user must edit.

What Ansible would read differently is refused before anything is read
(:func:`check_tree`): an executable file Ansible would run as an inventory
script, a file or folder at the top that Ansible would parse as more inventory
(INI, TOML, subfolders) but this reader does not, and symbolic links that
loop or lead out of the inventory. A variable that should have one owner
(``gpufleet_server_class``) set to different values by two groups neither of
which is below the other is reported as a conflict (:attr:`Inventory.conflicts`):
Ansible would pick one by group name, silently.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpufleet.errors import Problem
from gpufleet.safe_yaml import VaultValue, load_yaml

__all__ = ["Group", "Host", "Inventory", "ResolvedHost", "VaultValue", "load_inventory", "load_yaml"]

_VAR_EXTENSIONS = ("", ".yml", ".yaml", ".json")  # Ansible's lookup order; the first found wins
_VAR_SUFFIXES = (".yml", ".yaml", ".json")
_SOURCE_SUFFIXES = (".yml", ".yaml", ".json")  # what Ansible's yaml inventory plugin reads (yaml_extensions)
# What Ansible skips in an inventory folder: ansible/inventory/manager.py's
# IGNORED (IGNORED_ALWAYS and the default INVENTORY_IGNORE_EXTS, ansible-core 2.19).
_ANSIBLE_SKIPS = re.compile(r"^\.|^host_vars$|^group_vars$|^vars_plugins$|(\.pyc|\.pyo|\.swp|\.bak|~|\.rpm|\.md|\.txt|\.rst|\.orig|\.cfg|\.retry)$")


@dataclass
class Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    parents: set[str] = field(default_factory=set)
    children: set[str] = field(default_factory=set)
    depth: int = 0
    priority: int = 1  # ansible_group_priority, set inline in the hosts file


@dataclass
class Host:
    name: str
    groups: set[str] = field(default_factory=set)  # direct groups
    vars: dict[str, Any] = field(default_factory=dict)  # inline vars from the hosts file
    file: str = ""  # the hosts file that lists it first


@dataclass
class ResolvedHost:
    name: str
    groups: list[str]  # every group, ancestors included, 'all' first
    vars: dict[str, Any]
    origin: dict[str, str]  # variable -> file it was resolved from
    file: str = ""  # the hosts file that lists it first


@dataclass
class Inventory:
    root: Path
    hosts: dict[str, ResolvedHost]
    groups: dict[str, Group]
    files: list[str] = field(default_factory=list)  # every file read, relative to root, in reading order
    conflicts: list[Conflict] = field(default_factory=list)


@dataclass(frozen=True)
class Setter:
    group: str
    file: str
    value: Any


@dataclass(frozen=True)
class Conflict:
    """Two groups of one host, neither below the other, set a single-owner variable differently."""

    host: str
    file: str  # the hosts file listing the host
    var: str
    first: Setter
    second: Setter


MAX_RANGE_HOSTS = 100_000  # one host pattern; more is a typo in the bounds, not a data centre


def _expand(pattern: str, limit: int = MAX_RANGE_HOSTS) -> list[str]:
    """Expand Ansible host ranges: ``[beg:end]`` or ``[beg:end:step]``, numeric or letters.

    Raises ValueError with Ansible's reason when a range is malformed, or when
    the pattern would name more than MAX_RANGE_HOSTS hosts.
    """
    if "[" not in pattern:
        return [pattern]
    parts = pattern.replace("[", "|", 1).replace("]", "|", 1).split("|")
    if len(parts) != 3:
        raise ValueError("host range must be written [begin:end] or [begin:end:step]")
    head, nrange, tail = parts
    bounds = nrange.split(":")
    if len(bounds) not in (2, 3) or not bounds[1]:
        raise ValueError("host range must be written [begin:end] or [begin:end:step]")
    beg, end = bounds[0] or "0", bounds[1]
    step = bounds[2] if len(bounds) == 3 else "1"
    if not step.isdigit() or int(step) < 1:
        raise ValueError(f"host range step must be a positive number, not '{step}'")
    width = len(beg) if beg[0] == "0" and len(beg) > 1 else 0
    if width and len(end) != width:
        raise ValueError("host range must specify equal-length begin and end formats")
    letters = string.ascii_letters
    if beg in letters and end in letters and len(beg) == len(end) == 1:
        if letters.index(beg) > letters.index(end):
            raise ValueError("host range must have begin <= end")
        seq: list[str] = list(letters[letters.index(beg) : letters.index(end) + 1 : int(step)])
    elif beg.isdigit() and end.isdigit():
        numbers = range(int(beg), int(end) + 1, int(step))
        if len(numbers) > limit:
            raise ValueError(f"host pattern names more than {MAX_RANGE_HOSTS} hosts; check the range bounds")
        seq = [str(i).zfill(width) for i in numbers]
    else:
        raise ValueError(f"host range bounds must both be numbers or both single letters, not '{beg}' and '{end}'")
    if not seq:
        return []
    inner = limit // len(seq)
    return [h for item in seq for h in _expand(f"{head}{item}{tail}", inner)]


_BRACKETED = re.compile(r"\[[^\]]*\]")
_IPV6_PORT = re.compile(r"\[([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)\](?::(\d+))?")
_PORT = re.compile(r"(.+):(\d+)")


def _split_port(pattern: str) -> tuple[str, int | None]:
    """``host:2222``, ``node[1:4]:2222`` and ``[fe80::1]:2222`` name a host and its SSH port."""
    m = _IPV6_PORT.fullmatch(pattern)
    if m:
        return m.group(1), int(m.group(2)) if m.group(2) else None
    m = _PORT.fullmatch(pattern)
    if m and ":" not in _BRACKETED.sub("", m.group(1)):
        return m.group(1), int(m.group(2))
    return pattern, None


def _dir_files(folder: Path) -> list[Path]:
    """Variable files under a group_vars/host_vars folder, in the order Ansible reads them."""
    out: list[Path] = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        name = path.name
        if name.startswith(".") or name.endswith("~"):
            continue
        suffix = path.suffix
        if path.is_dir() and not suffix:
            out.extend(_dir_files(path))
        elif path.is_file() and (not suffix or suffix in _VAR_SUFFIXES):
            out.append(path)
    return out


def _entries(folder: Path) -> dict[str, Path]:
    """Group or host name -> its file or folder in group_vars/ or host_vars/ (``a.b.com`` keeps its dots)."""
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or path.name.endswith("~"):
            continue
        if path.is_file() and path.suffix in _VAR_SUFFIXES:
            out.setdefault(path.stem, path)
        else:
            out.setdefault(path.name, path)
    return out


class _Reader:
    def __init__(self, root: Path, rel: str, problems: list[Problem]):
        self.root = root
        self.rel = rel
        self.problems = problems
        self.groups: dict[str, Group] = {"all": Group("all"), "ungrouped": Group("ungrouped")}
        self.groups["all"].children.add("ungrouped")
        self.groups["ungrouped"].parents.add("all")
        self.hosts: dict[str, Host] = {}
        self.broken = False  # a file could not be read: later problems would only echo it
        self.files: list[Path] = []  # every file read: what Ansible reads as this inventory

    def display(self, path: Path) -> str:
        try:
            return str(Path(self.rel) / path.relative_to(self.root))
        except ValueError:
            return str(path)

    def group(self, name: str) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name)
        return self.groups[name]

    def read_group(self, name: str, body: Any, file: str, where: str) -> None:
        group = self.group(name)
        if body is None:
            return
        if not isinstance(body, dict):
            self.problems.append(Problem(file, where, f"a group must be a mapping with hosts, vars or children, not {type(body).__name__}"))
            return
        # Sections in document order, as Ansible reads them: a host listed in
        # both a group and its child keeps the inline vars read last.
        for key, section in body.items():
            if key == "hosts":
                self._hosts(name, section, file, where)
            elif key == "vars":
                self._group_vars(group, section, file, where)
            elif key == "children":
                self._children(name, group, section, file, where)
            else:
                self.problems.append(Problem(file, f"{where}.{key}", "unknown key in a group; expected hosts, vars or children"))

    def _hosts(self, name: str, hosts: Any, file: str, where: str) -> None:
        if isinstance(hosts, str):
            hosts = {hosts: None}
        hosts = hosts or {}
        if not isinstance(hosts, dict):
            self.problems.append(Problem(file, f"{where}.hosts", "must be a mapping of host name to variables"))
            return
        for pattern, hvars in hosts.items():
            if hvars is not None and not isinstance(hvars, dict):
                self.problems.append(Problem(file, f"{where}.hosts.{pattern}", "host variables must be a mapping"))
                continue
            if hvars:
                hvars = self._text_keys(hvars, file, f"{where}.hosts.{pattern}")
            host_pattern, port = _split_port(str(pattern))
            try:
                names = _expand(host_pattern)
            except ValueError as exc:
                self.problems.append(Problem(file, f"{where}.hosts.{pattern}", str(exc)))
                continue
            for hname in names:
                host = self.hosts.get(hname)
                if host is None:
                    host = self.hosts[hname] = Host(hname, file=file)
                    if port is not None:  # like Ansible: a port counts where the host is first listed
                        host.vars["ansible_port"] = port
                host.groups.add(name)
                if hvars:
                    host.vars.update(hvars)

    def _group_vars(self, group: Group, gvars: Any, file: str, where: str) -> None:
        gvars = gvars or {}
        if not isinstance(gvars, dict):
            self.problems.append(Problem(file, f"{where}.vars", "must be a mapping"))
            return
        for key, value in self._text_keys(gvars, file, f"{where}.vars").items():
            if key == "ansible_group_priority":
                try:
                    group.priority = int(value)
                except (TypeError, ValueError):
                    self.problems.append(Problem(file, f"{where}.vars.{key}", f"must be a whole number, not {value!r}"))
            else:
                group.vars[key] = value

    def _children(self, name: str, group: Group, children: Any, file: str, where: str) -> None:
        if isinstance(children, str):
            children = {children: None}
        children = children or {}
        if not isinstance(children, dict):
            self.problems.append(Problem(file, f"{where}.children", "must be a mapping of group names"))
            return
        for child_name, child_body in children.items():
            child_name = str(child_name)
            if child_name == name or self._is_ancestor(child_name, name):
                self.problems.append(Problem(file, f"{where}.children.{child_name}", "group cycle"))
                continue
            self.group(child_name).parents.add(name)
            group.children.add(child_name)
            self.read_group(child_name, child_body, file, f"{where}.children.{child_name}")

    def _is_ancestor(self, maybe: str, of: str) -> bool:
        stack, seen = [of], set()
        while stack:
            g = stack.pop()
            if g == maybe:
                return True
            if g in seen or g not in self.groups:
                continue
            seen.add(g)
            stack.extend(self.groups[g].parents)
        return False

    def vars_file(self, folder: Path, name: str) -> list[tuple[str, dict]]:
        """The first of group_vars/<name> (file or folder), <name>.yml, .yaml, .json, as Ansible picks it."""
        for ext in _VAR_EXTENSIONS:
            path = folder / f"{name}{ext}"
            if path.is_dir():
                return [(self.display(p), self._vars(p)) for p in _dir_files(path)]
            if path.is_file():
                return [(self.display(path), self._vars(path))]
        return []

    def _vars(self, path: Path) -> dict:
        display = self.display(path)
        self.files.append(path)
        n = len(self.problems)
        data = load_yaml(path, display, self.problems)
        if data is None:
            self.broken = self.broken or len(self.problems) > n
            return {}
        if not isinstance(data, dict):
            self.problems.append(Problem(display, "", f"a variables file must be a mapping, not {type(data).__name__}"))
            self.broken = True
            return {}
        return self._text_keys(data, display, "")

    def _text_keys(self, data: dict, file: str, where: str) -> dict:
        """Variables named by anything but text (``1: x``, ``[a]: x``) are refused, as Ansible does."""
        if all(isinstance(k, str) for k in data):
            return data
        for k in data:
            if not isinstance(k, str):
                self.problems.append(Problem(file, f"{where}.{k}" if where else str(k), f"a variable name must be text, not {type(k).__name__}"))
        return {k: v for k, v in data.items() if isinstance(k, str)}


def _depths(groups: dict[str, Group]) -> None:
    order = ["all"]
    seen = set()
    while order:
        name = order.pop()
        g = groups[name]
        for child in g.children:
            c = groups[child]
            if g.depth + 1 > c.depth or child not in seen:
                c.depth = max(c.depth, g.depth + 1)
                seen.add(child)
                order.append(child)


def _link_problem(path: Path, real_root: Path) -> str | None:
    """Why the symbolic link ``path`` may not be followed; None when it stays inside the inventory."""
    try:
        target = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            return "a symbolic link that loops; point it at a file inside the inventory"
        return f"a symbolic link to {os.readlink(path)}, which does not exist"
    if target != real_root and real_root not in target.parents:
        return f"a symbolic link to {target}, outside the inventory; copy the file into the inventory instead"
    if target.is_dir() and (target == path.parent.resolve() or target in path.parent.resolve().parents):
        return "a symbolic link to a folder that contains it (a loop); point it at a file inside the inventory"
    return None


def _vars_tree_problems(folder: Path, real_root: Path, display) -> list[Problem]:  # noqa: ANN001
    """Symbolic links under group_vars/ or host_vars/ that loop or leave the inventory."""
    out: list[Problem] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        for path in sorted(current.iterdir(), key=lambda p: p.name):
            if path.name.startswith(".") or path.name.endswith("~"):
                continue
            if path.is_symlink():
                reason = _link_problem(path, real_root)
                if reason:
                    out.append(Problem(display(path), "", reason))
                    continue
            if path.is_dir():
                stack.append(path)
    return out


def check_tree(root: Path, display) -> list[Problem]:  # noqa: ANN001 - display: Path -> the name a user reads
    """What in the inventory folder Ansible would read differently from this reader, one problem each."""
    real_root = root.resolve()
    out: list[Problem] = []
    keep = "rename it with an extension Ansible ignores (.txt, .md) or move it out of the inventory"
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        name = path.name
        if path.is_symlink() and not name.startswith("."):
            reason = _link_problem(path, real_root)
            if reason:
                out.append(Problem(display(path), "", reason))
                continue
        if name in ("group_vars", "host_vars") and path.is_dir():
            out.extend(_vars_tree_problems(path, real_root, display))
            continue
        if _ANSIBLE_SKIPS.search(name):
            continue
        if path.is_dir():
            out.append(Problem(display(path), "", f"Ansible would read this folder's files as more inventory, gpufleet reads the hosts files at the top of the inventory only; {keep}"))
        elif os.access(path, os.X_OK):
            out.append(Problem(display(path), "", "executable: Ansible would run it as an inventory script, which gpufleet does not; clear its executable bit (chmod -x) or move it out of the inventory"))
        elif path.suffix not in _SOURCE_SUFFIXES:
            out.append(Problem(display(path), "", f"Ansible would read this file as inventory (ini, toml or a plugin's), gpufleet reads YAML hosts files only; {keep}"))
    return out


def _setters(groups: dict[str, Group], ordered: list[str], group_files: dict[str, list[tuple[str, dict]]], var: str, hosts_file: str) -> list[Setter]:
    out = []
    for name in ordered:
        found = None
        if var in groups[name].vars:
            found = Setter(name, hosts_file, groups[name].vars[var])
        for file, data in group_files.get(name, []):
            if var in data:
                found = Setter(name, file, data[var])
        if found is not None:
            out.append(found)
    return out


def _ancestors(groups: dict[str, Group], name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(groups[name].parents)
    while stack:
        g = stack.pop()
        if g not in seen:
            seen.add(g)
            stack.extend(groups[g].parents)
    return seen


def _conflict(groups: dict[str, Group], setters: list[Setter]) -> tuple[Setter, Setter] | None:
    """Two setters with different values, neither group an ancestor of the other."""
    for i, a in enumerate(setters):
        for b in setters[i + 1 :]:
            if a.value != b.value and a.group not in _ancestors(groups, b.group) and b.group not in _ancestors(groups, a.group):
                return a, b
    return None


def load_inventory(root: Path, rel: str, problems: list[Problem], single_owner: tuple[str, ...] = ()) -> Inventory | None:
    """Read the inventory folder ``root`` (shown to the user as ``rel``).

    ``single_owner`` names variables that two unrelated groups of one host may
    not set differently (:attr:`Inventory.conflicts`).
    """
    if not root.is_dir():
        problems.append(Problem(rel, "", "inventory folder not found"))
        return None
    reader = _Reader(root, rel, problems)
    tree = check_tree(root, reader.display)
    if tree:
        problems.extend(tree)
        return None
    sources = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in _SOURCE_SUFFIXES and not p.name.startswith("."))
    if not sources:
        problems.append(Problem(rel, "", "no hosts file (hosts.yml) in the inventory folder"))
        return None
    for src in sources:
        display = reader.display(src)
        reader.files.append(src)
        n = len(problems)
        data = load_yaml(src, display, problems)
        if data is None:
            if len(problems) == n:
                problems.append(Problem(display, "", "the hosts file is empty"))
            reader.broken = True
            continue
        if not isinstance(data, dict):
            problems.append(Problem(display, "", f"an inventory must be a mapping of groups, not {type(data).__name__}"))
            reader.broken = True
            continue
        for gname, body in data.items():
            reader.read_group(str(gname), body, display, str(gname))
            if gname != "all":
                reader.group(str(gname)).parents.add("all")
                reader.groups["all"].children.add(str(gname))

    if reader.broken:
        return None  # the hosts file's own problem says it all; unknown-group echoes would not help
    groups = reader.groups
    for host in reader.hosts.values():
        if not host.groups or host.groups == {"all"}:
            host.groups.add("ungrouped")
    _depths(groups)

    gv_dir, hv_dir = root / "group_vars", root / "host_vars"
    group_files: dict[str, list[tuple[str, dict]]] = {}
    if gv_dir.is_dir():
        for name in groups:
            files = reader.vars_file(gv_dir, name)
            if files:
                group_files[name] = files
        known = set(groups)
        for name, p in _entries(gv_dir).items():
            if name not in known:
                problems.append(Problem(reader.display(p), "", f"group_vars for unknown group '{name}'"))
    host_entries = _entries(hv_dir) if hv_dir.is_dir() else {}
    hosts_dir_names = set(host_entries)
    for stray in sorted(hosts_dir_names - set(reader.hosts)):
        problems.append(Problem(reader.display(host_entries[stray]), "", f"host_vars for unknown host '{stray}'"))

    # The sorted ancestor list of each set of direct groups is shared by many hosts.
    ancestors_cache: dict[frozenset[str], list[str]] = {}
    group_vars_cache: dict[frozenset[str], tuple[dict, dict]] = {}
    resolved: dict[str, ResolvedHost] = {}
    conflicts: list[Conflict] = []
    conflict_cache: dict[frozenset[str], list[tuple[str, tuple[Setter, Setter]]]] = {}
    all_group = groups["all"]
    for host in reader.hosts.values():
        key = frozenset(host.groups)
        if key not in ancestors_cache:
            found: set[str] = set()
            stack = list(host.groups)
            while stack:
                g = stack.pop()
                if g in found:
                    continue
                found.add(g)
                stack.extend(groups[g].parents)
            found.discard("all")
            ancestors_cache[key] = sorted(found, key=lambda n: (groups[n].depth, groups[n].priority, n))
        ordered = ancestors_cache[key]
        if key not in group_vars_cache:
            values: dict[str, Any] = {}
            origin: dict[str, str] = {}
            hosts_file = sources[0].name
            for name, val in all_group.vars.items():
                values[name] = val
                origin[name] = f"{rel}/{hosts_file}"
            for file, data in group_files.get("all", []):
                values.update(data)
                origin.update(dict.fromkeys(data, file))
            for gname in ordered:
                values.update(groups[gname].vars)
                origin.update(dict.fromkeys(groups[gname].vars, f"{rel}/{hosts_file}"))
            for gname in ordered:
                for file, data in group_files.get(gname, []):
                    values.update(data)
                    origin.update(dict.fromkeys(data, file))
            group_vars_cache[key] = (values, origin)
            found = [(var, _conflict(groups, _setters(groups, ordered, group_files, var, f"{rel}/{hosts_file}"))) for var in single_owner]
            conflict_cache[key] = [(var, c) for var, c in found if c]
        base, base_origin = group_vars_cache[key]
        values = dict(base)
        origin = dict(base_origin)
        values.update(host.vars)
        origin.update(dict.fromkeys(host.vars, host.file))
        own: set[str] = set(host.vars)
        if host.name in hosts_dir_names:
            for file, data in reader.vars_file(hv_dir, host.name):
                values.update(data)
                origin.update(dict.fromkeys(data, file))
                own.update(data)
        # A host's own variables settle a conflict between its groups deliberately.
        conflicts.extend(Conflict(host.name, host.file, var, a, b) for var, (a, b) in conflict_cache[key] if var not in own)
        resolved[host.name] = ResolvedHost(host.name, ["all", *ordered], values, origin, host.file)
    if reader.broken:
        return None  # hosts missing variables from an unreadable file would only echo its problem
    return Inventory(root, resolved, groups, [p.relative_to(root).as_posix() for p in reader.files], conflicts)
