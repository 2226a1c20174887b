"""Reading an Ansible inventory the way ``ansible-playbook`` reads it.

Ansible's own inventory manager does the work, so host patterns given to
``--limit`` and the variables of ``group_vars/``/``host_vars/`` mean exactly
what they mean to a playbook run.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class InputError(Exception):
    """Bad input from the user, reported as one ``where: what`` line."""

    def __init__(self, where: str, what: str):
        self.where = where
        self.what = what
        super().__init__(f"{where}: {what}")


@dataclass
class Target:
    """One inventory host and how to reach it."""

    name: str
    address: str
    port: int
    user: str | None
    key_file: str | None
    password: str | None
    strict_host_keys: bool
    groups: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)


def inventory_path(path: Path) -> Path:
    """The file or directory to hand to Ansible, or an InputError."""
    if not path.exists():
        raise InputError(str(path), "inventory not found")
    if path.is_dir() and not any(path.iterdir()):
        raise InputError(str(path), "inventory directory is empty")
    return path


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _strict(hostvars: dict[str, Any]) -> bool:
    args = " ".join(
        str(hostvars.get(k, "")) for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")
    )
    words = shlex.split(args.replace("=", " = ")) if args else []
    joined = " ".join(words).lower()
    if "stricthostkeychecking = no" in joined:
        return False
    if "ansible_host_key_checking" in hostvars:
        return _bool(hostvars["ansible_host_key_checking"])
    env = os.environ.get("ANSIBLE_HOST_KEY_CHECKING")
    if env is not None:
        return _bool(env)
    return True


def _origin(exc: BaseException, inventory: Path) -> tuple[str, str]:
    """(file[:line], message) of an Ansible error raised while reading variables."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    seen: BaseException | None = exc
    while seen is not None:
        origin = getattr(seen, "obj", None)
        path = getattr(origin, "path", None)
        if path:
            line = getattr(origin, "line_num", None)
            return str(path), f"{message} (line {line})" if line else message
        seen = seen.__cause__ or seen.__context__
    return str(inventory), message


def load_targets(inventory: Path, limit: str | None = None) -> list[Target]:
    """Hosts of ``inventory`` (optionally narrowed by an Ansible ``limit``
    pattern) with their connection settings and variables."""
    # An unmatched --limit is reported by us, as one line.
    os.environ.setdefault("ANSIBLE_HOST_PATTERN_MISMATCH", "ignore")
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    inventory = inventory_path(inventory)
    loader = DataLoader()
    try:
        manager = InventoryManager(loader=loader, sources=[str(inventory)])
    except AnsibleError as exc:
        raise InputError(str(inventory), str(exc).splitlines()[0]) from None
    variables = VariableManager(loader=loader, inventory=manager)
    if limit:
        manager.subset(limit)
    hosts = manager.get_hosts()
    if not hosts:
        where = f"--limit {limit}" if limit else str(inventory)
        raise InputError(where, "matches no host in the inventory")
    targets = []
    for host in hosts:
        try:
            hv = variables.get_vars(host=host, include_hostvars=False)
        except AnsibleError as exc:
            # group_vars/host_vars are read here, lazily: a file that is not
            # YAML names itself in the error's origin.
            raise InputError(*_origin(exc, inventory)) from None
        try:
            port = int(hv.get("ansible_port") or hv.get("ansible_ssh_port") or 22)
        except (TypeError, ValueError):
            raise InputError(f"{inventory}: {host.name}.ansible_port", f"not a port number: {hv.get('ansible_port')!r}") from None
        key = hv.get("ansible_ssh_private_key_file") or hv.get("ansible_private_key_file")
        targets.append(
            Target(
                name=host.name,
                address=str(hv.get("ansible_host") or host.name),
                port=port,
                user=hv.get("ansible_user") or hv.get("ansible_ssh_user"),
                key_file=str(Path(str(key)).expanduser()) if key else None,
                password=hv.get("ansible_password") or hv.get("ansible_ssh_pass"),
                strict_host_keys=_strict(hv),
                groups=sorted(g.name for g in host.get_groups() if g.name not in ("all", "ungrouped")),
                vars={k: v for k, v in hv.items() if not k.startswith("ansible_")},
            )
        )
    return sorted(targets, key=lambda t: t.name)
