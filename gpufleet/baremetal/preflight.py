"""Preflight: what each server looks like before a playbook touches it.

For every inventory host, over SSH (paramiko) and read-only:

- reachability: the SSH connection and login work;
- privilege: the login user is root or has passwordless sudo (``sudo -n true``);
- OS release: ``/etc/os-release`` names an OS the roles support;
- GPUs: the NVIDIA devices on the PCI bus (``lspci``, or sysfs when lspci is
  not installed yet), compared with the inventory's ``gpufleet_gpu_count``,
  ``gpufleet_accelerator`` and ``gpufleet_nvswitch``.

Every mismatch is reported; nothing on a host is changed.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from gpufleet import facts
from gpufleet.baremetal.hosts import Target

# paramiko logs a traceback for every failed handshake; the report says it once.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


# OS releases the roles support: (ID, VERSION_ID prefix).
SUPPORTED_OS = {
    ("debian", "12"): "Debian 12",
    ("ubuntu", "22.04"): "Ubuntu 22.04",
    ("ubuntu", "24.04"): "Ubuntu 24.04",
    ("rhel", "9"): "RHEL 9",
    ("rocky", "9"): "Rocky Linux 9",
    ("almalinux", "9"): "AlmaLinux 9",
}

OK, WARN, FAIL = "ok", "warn", "fail"

# One command, one round trip: the OS release, privilege and PCI devices.
PROBE = r"""
echo '--- os-release'
cat /etc/os-release 2>/dev/null
echo '--- id'
id -u
echo '--- sudo'
if [ "$(id -u)" = 0 ]; then echo root; elif sudo -n true 2>/dev/null; then echo yes; else echo no; fi
echo '--- lspci'
if command -v lspci >/dev/null 2>&1; then lspci -nn -D -d 10de: ; echo "rc=$?"; else echo missing; fi
echo '--- sysfs'
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] || continue
  echo "${d##*/} $(cat "$d/device") $(cat "$d/class")"
done
echo '--- end'
"""


@dataclass
class Check:
    name: str
    status: str
    detail: str


@dataclass
class HostReport:
    host: str
    address: str
    checks: list[Check] = field(default_factory=list)
    gpus: list[dict[str, str]] = field(default_factory=list)
    nvswitches: int = 0
    os: str = ""

    @property
    def status(self) -> str:
        states = {c.status for c in self.checks}
        return FAIL if FAIL in states else WARN if WARN in states else OK

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "status": self.status,
            "os": self.os,
            "gpus": self.gpus,
            "nvswitches": self.nvswitches,
            "checks": [c.__dict__ for c in self.checks],
        }


def pci_tables() -> tuple[dict[str, str], dict[str, str]]:
    """(GPU device id -> accelerator name, NVSwitch device id -> name): the
    catalogue's, the same tables gpufleet render hands the gpu_detect role."""
    return facts.pci_device_models(), facts.nvswitch_device_ids()


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("--- "):
            current = line[4:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def parse_os_release(lines: list[str]) -> dict[str, str]:
    info = {}
    for line in lines:
        if "=" in line:
            k, v = line.split("=", 1)
            info[k.strip()] = v.strip().strip('"').strip("'")
    return info


_LSPCI = re.compile(r"^(\S+)\s.*\[(0[0-9a-f]{3})\]:.*\[10de:([0-9a-f]{4})\]", re.IGNORECASE)


def parse_pci(sections: dict[str, list[str]]) -> tuple[str, list[tuple[str, str, str]]]:
    """(source, [(address, class, device id)]) of the NVIDIA PCI functions."""
    lspci = sections.get("lspci", [])
    devices: list[tuple[str, str, str]] = []
    if lspci and lspci[0] != "missing" and lspci[-1] == "rc=0":
        for line in lspci[:-1]:
            m = _LSPCI.match(line)
            if m:
                devices.append((m.group(1), m.group(2).lower(), m.group(3).lower()))
        return "lspci", devices
    for line in sections.get("sysfs", []):
        parts = line.split()
        if len(parts) == 3:
            addr, dev, cls = parts
            devices.append((addr, cls.lower().removeprefix("0x")[:4], dev.lower().removeprefix("0x")))
    return "sysfs", devices


def evaluate(report: HostReport, target: Target, output: str) -> None:
    """Fill ``report`` from the probe's output and the inventory's expectations."""
    sections = _sections(output)
    if "end" not in sections:
        report.add("probe", FAIL, "the probe did not finish (output cut short)")
        return

    sudo = (sections.get("sudo") or ["no"])[0].strip()
    if sudo == "root":
        report.add("privilege", OK, "logged in as root")
    elif sudo == "yes":
        report.add("privilege", OK, "passwordless sudo")
    else:
        report.add("privilege", FAIL, f"user {target.user or '(default)'} has no passwordless sudo (sudo -n true failed)")

    osr = parse_os_release(sections.get("os-release", []))
    os_id, version = osr.get("ID", ""), osr.get("VERSION_ID", "")
    report.os = osr.get("PRETTY_NAME") or f"{os_id} {version}".strip() or "unknown"
    supported = next(
        (name for (i, v), name in SUPPORTED_OS.items() if i == os_id and (version == v or version.startswith(v + "."))),
        None,
    )
    if supported:
        report.add("os", OK, report.os)
    elif not os_id:
        report.add("os", FAIL, "no /etc/os-release")
    else:
        report.add("os", FAIL, f"{report.os} is not supported (supported: {', '.join(SUPPORTED_OS.values())})")

    source, devices = parse_pci(sections)
    gpu_ids, switch_ids = pci_tables()
    for addr, cls, dev in devices:
        if cls in ("0300", "0302"):
            report.gpus.append({"address": addr, "device_id": dev, "model": gpu_ids.get(dev, f"unknown-10de-{dev}")})
        elif cls == "0680" and dev in switch_ids:
            report.nvswitches += 1

    expected_count = target.vars.get("gpufleet_gpu_count")
    expected_model = target.vars.get("gpufleet_accelerator")
    expected_switch = target.vars.get("gpufleet_nvswitch")
    found = len(report.gpus)
    models = sorted({g["model"] for g in report.gpus})
    seen = f"{found} NVIDIA GPU(s) by {source}" + (f": {', '.join(models)}" if models else "")
    if expected_count is None:
        if found:
            report.add("gpus", WARN, f"{seen}; the inventory expects none (no gpufleet_gpu_count)")
        else:
            report.add("gpus", OK, f"no NVIDIA GPU, none expected")
    else:
        try:
            expected = int(expected_count)
        except (TypeError, ValueError):
            report.add("gpus", FAIL, f"gpufleet_gpu_count is not a number: {expected_count!r}")
            expected = None
        if expected is not None:
            if found == expected:
                report.add("gpu count", OK, f"{seen} (expected {expected})")
            else:
                report.add("gpu count", FAIL, f"{seen}, the inventory expects {expected}")
    if expected_model and found:
        wrong = [m for m in models if m != str(expected_model)]
        if wrong:
            report.add("gpu model", FAIL, f"found {', '.join(models)}, the inventory expects {expected_model}")
        else:
            report.add("gpu model", OK, str(expected_model))
    if expected_switch is not None and found:
        want = str(expected_switch).lower() in ("true", "1", "yes")
        if want and not report.nvswitches:
            report.add("nvswitch", FAIL, "no NVSwitch on the PCI bus, the inventory expects gpufleet_nvswitch: true")
        elif not want and report.nvswitches:
            report.add("nvswitch", FAIL, f"{report.nvswitches} NVSwitch(es) found, the inventory says gpufleet_nvswitch: false")
        else:
            report.add("nvswitch", OK, f"{report.nvswitches} NVSwitch(es)")


class Unanswered(Exception):
    """The host accepted TCP but did not speak SSH; the message says how."""


def _open(target: Target, timeout: float) -> socket.socket:
    """A TCP connection whose peer has sent an SSH banner (read without consuming it)."""
    sock = socket.create_connection((target.address, target.port), timeout=timeout)
    where = f"{target.address}:{target.port}"
    try:
        sock.settimeout(timeout)
        try:
            first = sock.recv(256, socket.MSG_PEEK)
        except (socket.timeout, TimeoutError):
            raise Unanswered(f"{where} accepted the TCP connection but sent no SSH banner within {timeout:g}s "
                             "(something else listens there, or sshd is stuck)") from None
        if not first:
            raise Unanswered(f"{where} accepted the TCP connection and closed it without an SSH banner (sshd refusing connections?)")
        if not first.startswith(b"SSH-"):
            shown = first[:40].decode("ascii", "replace").strip()
            raise Unanswered(f"{where} answered, but not with SSH: {shown!r}")
    except BaseException:
        sock.close()
        raise
    return sock


def _client(target: Target, timeout: float) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_system_host_keys()
    known = Path("~/.ssh/known_hosts").expanduser()
    if known.exists():
        try:
            client.load_host_keys(str(known))
        except (OSError, paramiko.SSHException):
            pass
    client.set_missing_host_key_policy(
        paramiko.RejectPolicy() if target.strict_host_keys else paramiko.AutoAddPolicy()
    )
    sock = _open(target, timeout)
    try:
        client.connect(
            hostname=target.address,
            port=target.port,
            username=target.user,
            key_filename=target.key_file,
            password=target.password,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=target.key_file is None,
            look_for_keys=target.key_file is None,
            sock=sock,
        )
    except BaseException:
        client.close()
        sock.close()
        raise
    return client


def _probe(client: paramiko.SSHClient, timeout: float) -> str:
    """Run PROBE through ``/bin/sh -s`` and return its output, within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session(timeout=timeout)
    try:
        chan.settimeout(timeout)
        chan.exec_command("/bin/sh -s")
        chan.sendall(PROBE.encode())
        chan.shutdown_write()
        out = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            chan.settimeout(left)
            data = chan.recv(65536)
            if not data:
                break
            out += data
        return out.decode(errors="replace")
    finally:
        chan.close()


def check_host(target: Target, timeout: float = 10.0) -> HostReport:
    report = HostReport(target.name, f"{target.address}:{target.port}")
    where = f"{target.address}:{target.port}"
    if target.key_file and not Path(target.key_file).is_file():
        report.add("ssh", FAIL, f"key file {target.key_file} not found (ansible_ssh_private_key_file of {target.name})")
        return report
    try:
        client = _client(target, timeout)
    except Unanswered as exc:
        report.add("ssh", FAIL, str(exc))
        return report
    except paramiko.AuthenticationException as exc:
        report.add("ssh", FAIL, f"login as {target.user or '(default user)'} at {where} refused: {exc}")
        return report
    except paramiko.BadHostKeyException:
        report.add("ssh", FAIL, f"the host key of {where} differs from the one in known_hosts (a reinstalled host, or not the host you mean)")
        return report
    except paramiko.SSHException as exc:
        msg = str(exc)
        if "not found in known_hosts" in msg:
            msg = (f"host key of {where} is not in known_hosts: check it and add it "
                   f"(ssh-keyscan -p {target.port} {target.address} >> ~/.ssh/known_hosts)")
        report.add("ssh", FAIL, msg)
        return report
    except (socket.timeout, TimeoutError):
        report.add("ssh", FAIL, f"no answer from {where} within {timeout:g}s")
        return report
    except OSError as exc:
        report.add("ssh", FAIL, f"cannot connect to {where}: {exc.strerror or exc}")
        return report
    probe_timeout = timeout * 3
    try:
        report.add("ssh", OK, f"logged in as {target.user or '(default user)'}")
        output = _probe(client, probe_timeout)
        evaluate(report, target, output)
    except (socket.timeout, TimeoutError):
        report.add("probe", FAIL, f"logged in at {where}, but the read-only probe did not finish within {probe_timeout:g}s "
                                  "(a login shell or forced command that hangs, or a host too loaded to answer)")
    except (paramiko.SSHException, OSError) as exc:
        report.add("probe", FAIL, f"logged in at {where}, but the probe failed: {exc or type(exc).__name__}")
    finally:
        client.close()
    return report


def run_preflight(targets: list[Target], timeout: float = 10.0, workers: int = 32) -> list[HostReport]:
    """Probe every target in parallel; reports in inventory-name order."""
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return list(pool.map(lambda t: check_host(t, timeout), targets))
