"""Supply chain of the gateway: pinned images, a hash-locked Python package, no compromised release."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from k8s import versions

REPO = Path(__file__).resolve().parents[2]


def lock_packages() -> dict[str, list[dict]]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    out: dict[str, list[dict]] = {}
    for pkg in lock["package"]:
        out.setdefault(pkg["name"], []).append(pkg)
    return out


def dev_requirement(name: str) -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in project["dependency-groups"]["dev"]]
    matches = [r for r in reqs if r.name == name]
    assert len(matches) == 1, f"{name} should be declared once in the dev group"
    return matches[0]


def test_lock_never_resolves_litellm_to_a_compromised_release():
    entries = lock_packages()["litellm"]
    assert len(entries) == 1
    locked = entries[0]["version"]
    assert locked not in versions.LITELLM_COMPROMISED
    assert Version(locked) >= Version("1.83.0")


def test_dependency_spec_excludes_the_compromised_releases_explicitly():
    req = dev_requirement("litellm")
    for bad in versions.LITELLM_COMPROMISED:
        assert f"!={bad}" in str(req.specifier), f"{bad} is not excluded explicitly"
        assert not req.specifier.contains(bad)
    assert [s.operator for s in req.specifier if s.operator == "=="], "litellm must be pinned exactly"


def test_litellm_is_locked_by_hash_for_every_artifact():
    pkg = lock_packages()["litellm"][0]
    artifacts = ([pkg["sdist"]] if "sdist" in pkg else []) + pkg.get("wheels", [])
    assert artifacts
    for art in artifacts:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", art["hash"]), art


def test_tests_run_the_version_the_gateway_image_carries():
    locked = lock_packages()["litellm"][0]["version"]
    assert importlib.metadata.version("litellm") == locked == versions.LITELLM_VERSION
    assert f":v{versions.LITELLM_VERSION}@sha256:" in versions.LITELLM_IMAGE


def test_no_startup_hook_file_from_litellm_is_installed():
    # 1.82.8 persisted through a .pth file that Python runs at every start.
    dist = importlib.metadata.distribution("litellm")
    pth = [str(f) for f in dist.files or [] if str(f).endswith(".pth")]
    assert pth == []
    for path in map(Path, sys.path):
        if path.is_dir() and path.name == "site-packages":
            assert not list(path.glob("litellm*.pth"))
