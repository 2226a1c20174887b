from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPUFLEET = [sys.executable, "-m", "gpufleet.cli"]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*GPUFLEET, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture()
def fleet_copy(tmp_path: Path) -> Path:
    for part in ("stacks", "inventory"):
        shutil.copytree(ROOT / part, tmp_path / part)
    return tmp_path
