"""The prepared GPU decode check: measures on a GPU machine, skips cleanly without one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("decode_throughput.py")


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_gpu(), reason="a GPU is here: the measuring run below covers it")
def test_without_a_gpu_it_writes_a_skip_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "skipped" in json.loads(out.read_text())


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs PyTorch with an NVIDIA GPU")
def test_on_a_gpu_it_measures_every_batch_size(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert [row["batch"] for row in data["results"]] == [1, 2, 4, 8, 16, 32, 64]
    assert data["provenance"]["source"] == "measured"
