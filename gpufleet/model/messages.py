"""Problems as the user reads them: pydantic's errors become one ``file: key.path: message`` line each.

:func:`validation_problems` is the formatting every loader of a user file uses
(the fleet model's and the economics' files); :func:`server_var_problems` does
the same for a host's ``gpufleet_*`` variables, naming the file each variable
came from; :func:`collapse_hosts` reports a mistake many hosts inherit once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from gpufleet.errors import Problem, did_you_mean, key_path
from gpufleet.inventory import ResolvedHost
from gpufleet.safe_yaml import VaultValue

SERVER_PREFIX = "gpufleet_"
VAULTED = "is vaulted (!vault), but gpufleet needs its value to check the fleet: keep it in plain text (vault only secrets gpufleet does not read)"
_TYPE_ERRORS = ("string_type", "int_type", "int_parsing", "float_type", "float_parsing", "bool_type", "bool_parsing", "list_type", "dict_type")
_UNION_TAG = re.compile(r"^[a-z][a-z-]*\[.*\]$")  # pydantic's name for a union member, e.g. list[constrained-int]


def user_loc(loc: Iterable[Any]) -> list[Any]:
    """A pydantic error location as the user wrote it: no union-member or dict-key markers."""
    return [p for p in loc if not (isinstance(p, str) and (p == "[key]" or _UNION_TAG.match(p)))]


def vaulted(value: Any) -> bool:
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


def got(err: Any) -> str:
    if err["type"] in _TYPE_ERRORS and "input" in err:
        return f" (got {type(err['input']).__name__} {err['input']!r:.40})"
    return ""


def merge_alternatives(problems: list[Problem]) -> list[Problem]:
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


def _message(err: Any, model: type[BaseModel]) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        parent = field_names_at(model, list(err["loc"])[:-1])
        msg = f"unknown key{did_you_mean(str(err['loc'][-1]), parent)}"
        if parent:
            msg += f"; expected one of: {', '.join(sorted(parent))}"
    elif err["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if isinstance(err.get("input"), VaultValue):
        return VAULTED
    return msg + got(err)


def validation_problems(exc: ValidationError, file: str, model: type[BaseModel], prefix: Iterable[Any] = ()) -> list[Problem]:
    """Every error of ``exc`` (validating ``model`` from ``file``) as a Problem."""
    out = [Problem(file, key_path(user_loc([*prefix, *err["loc"]])), _message(err, model)) for err in exc.errors()]
    return merge_alternatives(out)


def field_names_at(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """Names of the keys a model accepts at a location, for 'did you mean'."""
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
        current = _inner_model(fields[name].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _inner_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def server_var_problems(exc: ValidationError, host: ResolvedHost, inventory: str) -> list[Problem]:
    """A host's ``gpufleet_*`` errors, each against the file that set the variable."""
    found = []
    for err in exc.errors():
        loc = user_loc(err["loc"])
        var = f"{SERVER_PREFIX}{loc[0]}" if loc else ""
        if err["type"] == "missing":
            msg = f"{var} is not set (set it in group_vars or host_vars)"
        else:
            msg = err["msg"].removeprefix("Value error, ") + got(err)
        file = host.origin.get(var) if var else None
        if file is None:
            # A rule across variables: report it where the first variable it names is set.
            named = [*re.findall(r"gpufleet_\w+", msg), *(f"{SERVER_PREFIX}{w}" for w in re.findall(r"[a-z_]+", msg))]
            file = next((host.origin[v] for v in named if v in host.origin), None) or host.origin.get("ansible_host") or inventory
        path = key_path([host.name, var, *loc[1:]]) if var else host.name
        found.append(Problem(str(file), path, msg))
    return merge_alternatives(found)


def collapse_hosts(found: list[tuple[str, Problem]]) -> list[Problem]:
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
        out.append(Problem(file, rest, f"{message} (on {len(hosts)} hosts: {hosts_shown(hosts)})"))
    return out


def hosts_shown(hosts: list[str]) -> str:
    return ", ".join(hosts) if len(hosts) <= 4 else f"{', '.join(hosts[:3])} and {len(hosts) - 3} more"
