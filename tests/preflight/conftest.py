"""A real OpenSSH server on 127.0.0.1 for the preflight tests.

The server runs as the current user on a free high port. Each client key
logs in with its own PATH (``environment=`` in authorized_keys): one sees the
machine as it is, the others see small stand-in ``lspci``/``id``/``sudo``
programs that describe GPU servers and accounts this machine does not have.
SSH, login, command execution and parsing are all real.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

# lspci -nn -D -d 10de: as printed on the servers these scenarios describe.
L40S = "\n".join(
    f"0000:{bus:02x}:00.0 3D controller [0302]: NVIDIA Corporation AD102GL [L40S] [10de:26b9] (rev a1)"
    for bus in (0x17, 0x31, 0xB1, 0xCA)
)
HGX_H100 = "\n".join(
    [f"0000:{bus:02x}:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330] (rev a1)"
     for bus in (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)]
    + [f"0000:{bus:02x}:00.0 Bridge [0680]: NVIDIA Corporation Device [10de:22a3] (rev a1)"
       for bus in (0x05, 0x06, 0x07, 0x08)]
)

SCENARIOS = {
    "plain": None,
    "l40s": {"lspci": L40S},
    "hgx": {"lspci": HGX_H100},
    "nosudo": {"id": None, "sudo": None},
}

# Keys whose login runs a fixed command instead of the one asked for
# (authorized_keys ``command=``): a host that hangs after login.
FORCED_COMMANDS = {"hang": "exec sleep 30"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_bin(root: Path, name: str, spec: dict) -> Path:
    d = root / f"bin-{name}"
    d.mkdir()
    for prog, out in spec.items():
        path = d / prog
        if prog == "lspci":
            body = f"cat <<'OUT'\n{out}\nOUT\n"
        elif prog == "id":
            body = 'echo 1000\n'
        elif prog == "sudo":
            body = 'echo "sudo: a password is required" >&2\nexit 1\n'
        else:
            raise ValueError(prog)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return d


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """Start sshd; yields a dict with port, user and one key file per scenario."""
    if not Path(SSHD).exists():
        pytest.skip("sshd not installed (tests/install-system-deps.sh installs openssh-server)")
    root = tmp_path_factory.mktemp("sshd")
    root.chmod(0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host_key")], check=True)
    keys: dict[str, Path] = {}
    auth_lines = []
    base_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for name, spec in SCENARIOS.items():
        key = root / f"client_{name}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        keys[name] = key
        path = base_path if spec is None else f"{_fake_bin(root, name, spec)}:{base_path}"
        auth_lines.append(f'environment="PATH={path}" {(key.with_suffix(".pub")).read_text().strip()}')
    for name, command in FORCED_COMMANDS.items():
        key = root / f"client_{name}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        keys[name] = key
        auth_lines.append(f'command="{command}" {(key.with_suffix(".pub")).read_text().strip()}')
    stranger = root / "client_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    keys["stranger"] = stranger
    (root / "authorized_keys").write_text("\n".join(auth_lines) + "\n")
    (root / "authorized_keys").chmod(0o600)
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(textwrap.dedent(f"""\
        ListenAddress 127.0.0.1
        Port {port}
        HostKey {root / 'host_key'}
        PidFile {root / 'sshd.pid'}
        AuthorizedKeysFile {root / 'authorized_keys'}
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PubkeyAuthentication yes
        PermitRootLogin prohibit-password
        PermitUserEnvironment yes
        StrictModes no
        UsePAM no
        LogLevel ERROR
        """))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(root / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {(root / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("sshd did not start listening")
                time.sleep(0.1)
        yield {"port": port, "user": getpass.getuser(), "keys": keys, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
