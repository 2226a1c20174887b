"""Nothing unverified runs as root: every download the roles make is checked
against a pinned checksum or a pinned signing-key fingerprint, no package
source is trusted without a signature, and the Makefile's bootstrap of uv
is pinned by hash.

The scan reads every task file of every role the way Ansible does (YAML,
blocks included) and looks at each task that fetches something.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"

# Task modules that fetch files or keys, and what each must carry.
FETCHING = {
    "get_url", "unarchive", "apt_key", "deb822_repository", "rpm_key",
    "yum_repository", "apt", "dnf", "package", "command", "shell",
}


def _module(task: dict[str, Any]) -> tuple[str, Any] | None:
    for key, value in task.items():
        name = key.removeprefix("ansible.builtin.").removeprefix("ansible.legacy.")
        if name in FETCHING:
            return name, value
    return None


def _tasks(items: list[Any] | None) -> Iterator[dict[str, Any]]:
    for item in items or []:
        if not isinstance(item, dict):
            continue
        yield item
        for key in ("block", "rescue", "always"):
            yield from _tasks(item.get(key))


def task_lists() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for path in sorted(ROLES.glob("*/tasks/*.yml")) + sorted(ROLES.glob("*/handlers/*.yml")):
        yield str(path.relative_to(ROOT)), list(_tasks(yaml.safe_load(path.read_text())))


def _args(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"_raw": value}


def _verified_dests(tasks: list[dict[str, Any]]) -> set[str]:
    """``dest`` of every get_url in the list that is verified: a checksum, or
    a later task that checks that file's signing-key fingerprint."""
    out = set()
    for i, task in enumerate(tasks):
        mod = _module(task)
        if not mod or mod[0] != "get_url":
            continue
        args = _args(mod[1])
        dest = str(args.get("dest", ""))
        if args.get("checksum"):
            out.add(dest)
            continue
        later = yaml.safe_dump(tasks[i + 1:])
        if dest and dest in later and "fingerprint" in later.lower():
            out.add(dest)
    return out


def supply_chain_problems() -> list[str]:
    problems = []
    for rel, tasks in task_lists():
        verified = _verified_dests(tasks)
        for task in tasks:
            mod = _module(task)
            if not mod:
                continue
            name, value = mod
            args = _args(value)
            where = f"{rel}: {task.get('name', '(unnamed)')}"
            if name == "get_url" and str(args.get("dest", "")) not in verified:
                problems.append(f"{where}: get_url without a checksum or a fingerprint check of {args.get('dest')}")
            elif name == "unarchive":
                src = str(args.get("src", ""))
                if "://" in src or src not in verified:
                    problems.append(f"{where}: unarchive of {src}, which is not a verified download (get_url with checksum)")
            elif name == "apt_key":
                problems.append(f"{where}: apt_key trusts a key without checking its fingerprint (and is deprecated)")
            elif name == "deb822_repository" and "://" in str(args.get("signed_by", "")):
                problems.append(f"{where}: deb822_repository fetches its key from a URL without a fingerprint check")
            elif name == "rpm_key" and not args.get("fingerprint"):
                problems.append(f"{where}: rpm_key without a pinned fingerprint")
            elif name == "yum_repository" and str(args.get("gpgcheck", "")).strip().lower() in ("", "false", "no", "0"):
                problems.append(f"{where}: yum_repository without gpgcheck")
            elif name == "yum_repository" and "fingerprint" not in yaml.safe_dump(tasks).lower():
                problems.append(f"{where}: yum_repository whose key no task checks by fingerprint")
            elif name in ("apt",) and args.get("deb") and str(args["deb"]) not in verified:
                problems.append(f"{where}: apt deb={args['deb']} is not a verified download")
            elif name in ("command", "shell"):
                text = str(args.get("cmd", args.get("argv", args.get("_raw", ""))))
                if re.search(r"\b(curl|wget)\b", text):
                    problems.append(f"{where}: {name} downloads with curl/wget, unverified")
    return problems


def test_every_download_is_verified() -> None:
    problems = supply_chain_problems()
    assert not problems, "\n".join(problems)


def test_no_package_source_is_trusted_without_a_signature() -> None:
    found = []
    for path in sorted(ROLES.rglob("*")):
        if path.is_file() and path.suffix in (".j2", ".yml", ".yaml"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"trusted\s*[:=]\s*yes", line, re.IGNORECASE):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "package sources trusted without a signature:\n" + "\n".join(found)


def _pins(data, where="", inside=False):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _pins(v, f"{where}.{k}", inside or str(k).endswith("fingerprints"))
    elif isinstance(data, list) and inside and all(isinstance(v, str) for v in data):
        yield where, data


def test_every_pinned_fingerprint_is_a_full_v4_fingerprint() -> None:
    """Short key ids (8 or 16 hex digits) collide; a pin is 40 hex digits."""
    seen = 0
    for path in sorted(ROLES.glob("*/defaults/main.yml")):
        for where, value in _pins(yaml.safe_load(path.read_text()) or {}):
            for fpr in value:
                seen += 1
                assert re.fullmatch(r"[0-9A-F]{40}", str(fpr)), f"{path.relative_to(ROOT)}: {where}: {fpr!r}"
    assert seen >= 4


# ------------------------------------------------------------------ Makefile


def _bootstrap_recipe() -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("$(UV):"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def _requirements_file() -> Path:
    recipe = " ".join(_bootstrap_recipe())
    assert "--require-hashes" in recipe, f"the uv bootstrap does not require hashes: {recipe}"
    m = re.search(r"-r\s+(\S+)", recipe)
    assert m, f"the uv bootstrap names no requirements file: {recipe}"
    return ROOT / m.group(1)


# Linux wheels of uv the bootstrap must cover (x86_64 and aarch64, glibc and musl).
PLATFORMS = ["manylinux2014_x86_64", "musllinux_1_1_x86_64", "manylinux2014_aarch64", "manylinux_2_28_aarch64"]


def test_uv_bootstrap_is_pinned_by_hash() -> None:
    req = _requirements_file()
    text = req.read_text()
    assert re.search(r"^uv==\d+\.\d+\.\d+", text, re.MULTILINE), text
    hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", text)
    assert len(hashes) >= 4, f"{req}: {len(hashes)} sha256 hashes, expected one per Linux x86_64/aarch64 wheel"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_uv_bootstrap_hashes_are_pypis(platform: str, tmp_path: Path) -> None:
    """pip itself checks each pinned hash against the wheel PyPI serves for
    that platform; a changed hash is refused."""
    req = _requirements_file()
    # The pip that installs uv: the Makefile's bootstrap environment (the test
    # environment itself, made by uv, has no pip).
    pip = ROOT / ".tools" / "bin" / "pip"
    assert pip.exists(), f"{pip}: missing; `make env-dev` creates it"
    cmd = [str(pip), "download", "--quiet", "--no-deps", "--only-binary", ":all:",
           "--platform", platform, "--require-hashes", "-r", str(req), "-d", str(tmp_path / "wheels")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list((tmp_path / "wheels").glob("uv-*.whl"))
    if platform == PLATFORMS[0]:
        bad = tmp_path / "bad.txt"
        bad.write_text(re.sub(r"sha256:[0-9a-f]", "sha256:0", req.read_text()))
        r = subprocess.run([*cmd[:cmd.index("-r") + 1], str(bad), "-d", str(tmp_path / "bad")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and "DO NOT MATCH THE HASHES" in (r.stdout + r.stderr), r.stdout + r.stderr


# ------------------------------------------------------ signing-key fingerprint


def _gpg_key(home: Path, name: str) -> tuple[Path, str]:
    """A fresh signing key (armored public key file, fingerprint), made by gpg."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.invalid>", "ed25519", "sign", "never"],
                   check=True, capture_output=True, env=env, timeout=120)
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys", name], check=True, capture_output=True, text=True, env=env).stdout
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    key = home / f"{name}.asc"
    key.write_text(subprocess.run(["gpg", "--batch", "--armor", "--export", name], check=True, capture_output=True, text=True, env=env).stdout)
    # gpg started an agent for this home; stop it rather than leave it running.
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=True, capture_output=True, env=env, timeout=30)
    return key, fpr


def _check_key(tmp_path: Path, key: Path, pinned: list[str]) -> subprocess.CompletedProcess[str]:
    from ansible_kit import BIN, ansible_env

    play = [{
        "name": "Check a signing key the way package_source does",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": True,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "package_source_name": "test", "package_source_staging_dir": str(tmp_path / "staging"),
                 "__package_source_resolved_key": f"file://{key}", "__package_source_fingerprints": pinned},
        "tasks": [{"name": "Run the key check", "ansible.builtin.include_role": {"name": "package_source", "tasks_from": "key.yml"}}],
    }]
    book = tmp_path / "key.yml"
    book.write_text(yaml.safe_dump(play))
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(book)], cwd=ROOT, capture_output=True,
                          text=True, env=ansible_env(tmp_path), timeout=300)


def test_a_key_with_the_pinned_fingerprint_is_accepted_and_any_other_refused(tmp_path: Path) -> None:
    key, fpr = _gpg_key(tmp_path / "gnupg", "gpufleet-test")
    r = _check_key(tmp_path, key, [fpr])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    # The pin of NVIDIA's CUDA key does not accept another key.
    cuda = yaml.safe_load((ROLES / "package_source" / "defaults" / "main.yml").read_text())["package_source_upstreams"]["cuda"]["fingerprints"]["Debian"]
    r = _check_key(tmp_path, key, cuda)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and f"has fingerprint(s) {fpr}" in out and "refusing to trust it" in out, out[-3000:]
    # A key file that holds the pinned key and another one is refused too.
    other, other_fpr = _gpg_key(tmp_path / "gnupg2", "gpufleet-other")
    both = tmp_path / "both.asc"
    both.write_text(key.read_text() + other.read_text())
    r = _check_key(tmp_path, both, [fpr])
    assert r.returncode != 0 and other_fpr in (r.stdout + r.stderr), (r.stdout + r.stderr)[-3000:]
