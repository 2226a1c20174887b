"""Driver branches and CUDA: the table, and the model refusing a site whose driver cannot run its images.

The pinned vLLM and PyTorch images are CUDA 13; NVIDIA's R535 branch runs CUDA
12 at most without the forward-compatibility package, so a data centre left on
R535 would start pods that fail with "CUDA driver version is insufficient".
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpufleet import drivers, eks
from gpufleet.cli import main

ROOT = Path(__file__).resolve().parents[2]
HGX = "inventory/dc-fra/group_vars/hgx_h100.yml"
L40S = "inventory/dc-fra/group_vars/l40s_4x.yml"
HGX_HOSTS = "4 hosts (fra-hgx-01, fra-hgx-02, fra-hgx-03, fra-hgx-04)"


def set_branch(fleet, rel: str, branch: str) -> None:
    fleet.write_text(rel, fleet.path(rel).read_text() + f"gpufleet_driver_branch: {branch}\n")


def test_the_table_says_what_nvidia_says():
    r535, r580 = drivers.BRANCHES["535"], drivers.BRANCHES["580"]
    assert (r535.cuda_major, r535.end_of_life, r535.designation) == (12, dt.date(2026, 6, 30), "long-term support")
    assert (r580.cuda_major, r580.end_of_life, r580.designation) == (13, dt.date(2028, 6, 30), "long-term support")
    assert {"535", "550", "570", "575", "580"} <= set(drivers.BRANCHES)
    assert drivers.BRANCHES[drivers.DEFAULT_BRANCH] is r580
    assert all(b.source for b in drivers.BRANCHES.values())


def test_the_eks_gpu_ami_has_a_branch_and_cloud_pins_the_same_ami():
    from cloud import versions

    assert versions.AMI_TYPE_GPU is eks.GPU_AMI_TYPE
    assert drivers.AMI_DRIVER_BRANCH[eks.GPU_AMI_TYPE] in drivers.BRANCHES


def test_every_gpu_workload_image_has_its_cuda_and_the_tags_agree():
    from k8s import versions

    assert set(drivers.GPU_IMAGE_CUDA) == {"VLLM_IMAGE", "PYTORCH_IMAGE"}
    for name in drivers.GPU_IMAGE_CUDA:
        assert drivers.image_cuda(name, getattr(versions, name)) == 13
    assert versions.GPU_IMAGE_CUDA is drivers.GPU_IMAGE_CUDA
    with pytest.raises(ValueError, match="names CUDA 12"):
        drivers.image_cuda("PYTORCH_IMAGE", "pytorch/pytorch:2.5.0-cuda12.4-cudnn9-runtime")


def test_servers_default_to_r580(fleet):
    f = fleet.load()
    assert {s.driver_branch for site in f.sites for s in site.servers} == {"580"}
    assert f.site("aws-euc1").ami_driver_branch == "580"
    assert f.warnings == []


def test_a_data_centre_on_r535_fails_validate_with_a_line_about_cuda(fleet):
    """Through the installed command, as a user runs it."""
    set_branch(fleet, HGX, "R535")
    exe = Path(sys.executable).parent / "gpufleet"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gpufleet.cli"]
    proc = subprocess.run([*cmd, "validate"], capture_output=True, text=True, cwd=fleet.root, timeout=120, env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"{HGX}: gpufleet_driver_branch: driver branch R535 runs CUDA 12 at most (without the forward-compatibility package), "
        "but at site dc-fra PYTORCH_IMAGE (queue clinical-train, queue research-train) and VLLM_IMAGE (model clinical-notes-8b) need CUDA 13 "
        "(k8s/versions.py, gpufleet/drivers.py): their pods would fail with 'CUDA driver version is insufficient' "
        f'on {HGX_HOSTS}; set gpufleet_driver_branch: "580" (R580, long-term support, supported until 2028-06-30)',
        "1 problem found",
    ]


def test_only_the_servers_an_image_runs_on_are_held_to_its_cuda(fleet, capsys):
    """The L40S servers serve the 70B model and train nothing: R570 there is refused for vLLM alone."""
    set_branch(fleet, L40S, "570")
    assert main(["validate"]) == 2
    (line, count) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{L40S}: gpufleet_driver_branch: driver branch R570 runs CUDA 12 at most")
    assert "VLLM_IMAGE (model llama-3-1-70b-instruct) need CUDA 13" in line and "PYTORCH_IMAGE" not in line
    assert "3 hosts (fra-l40s-01, fra-l40s-02, fra-l40s-03)" in line
    assert count == "1 problem found"


def test_a_branch_no_image_needs_is_left_alone(fleet):
    """The hub has no GPUs; a CPU server's branch is never held against an image."""
    set_branch(fleet, "inventory/fra-hub/group_vars/all.yml", "535")
    assert fleet.load().site("fra-hub").servers[0].driver_branch == "535"


def test_an_unknown_branch_is_refused(fleet, capsys):
    set_branch(fleet, HGX, "R590")
    assert main(["validate"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{HGX}: gpufleet_driver_branch: unknown NVIDIA driver branch 'R590'")
    assert "gpufleet/drivers.py knows R535, R550, R570, R575, R580, R595, R610, R620" in err[0]


def test_a_gpu_ami_with_an_old_branch_is_refused(fleet, capsys, monkeypatch):
    monkeypatch.setitem(drivers.AMI_DRIVER_BRANCH, eks.GPU_AMI_TYPE, "535")
    assert main(["validate"]) == 2
    err = capsys.readouterr().err.splitlines()
    euc1 = [line for line in err if line.startswith("stacks/Pulumi.aws-euc1.yaml: config.gpufleet:nodePools:")]
    assert euc1 == [
        "stacks/Pulumi.aws-euc1.yaml: config.gpufleet:nodePools: the GPU node AMI AL2023_x86_64_NVIDIA carries driver branch R535 (gpufleet/drivers.py), "
        "which runs CUDA 12 at most, but PYTORCH_IMAGE (queue research-train) and VLLM_IMAGE (model llama-3-1-70b-instruct) need CUDA 13: use an AMI with a newer driver"
    ]


def test_a_branch_within_six_months_of_its_end_of_life_warns_and_validate_passes(fleet):
    set_branch(fleet, HGX, "595")
    env = {**os.environ, "COLUMNS": "400", "GPUFLEET_TODAY": "2026-12-01", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "gpufleet.cli", "validate"], capture_output=True, text=True, cwd=fleet.root, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: {HGX}: gpufleet_driver_branch: driver branch R595 (production) reaches its end of life on 2027-03-31, in 120 days; "
        "plan the move to R580 (long-term support, supported until 2028-06-30) (on 4 hosts: fra-hgx-01, fra-hgx-02, fra-hgx-03, fra-hgx-04)"
    ]
    assert "is valid" in proc.stdout


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (dt.date(2026, 12, 1), []),
        (dt.date(2027, 12, 30), ["reaches its end of life on 2028-06-30, in 183 days"]),
        (dt.date(2028, 8, 1), ["reached its end of life on 2028-06-30 (32 days ago)"]),
    ],
)
def test_today_is_injectable(fleet, today, expected):
    from gpufleet.model import load_fleet

    warnings = load_fleet("stacks/fleet.yaml", today=today).warnings
    found = sorted({w.message.split("; ")[0].split(") ", 1)[1] for w in warnings})
    assert found == expected
    if expected:
        files = {w.file for w in warnings}
        # Every GPU server of dc-fra (on the default branch) and both AWS sites' GPU AMIs.
        assert files == {"inventory/dc-fra/hosts.yml", "stacks/Pulumi.aws-euc1.yaml", "stacks/Pulumi.aws-use1.yaml"}


def test_a_bad_today_is_a_usage_error(fleet):
    env = {**os.environ, "GPUFLEET_TODAY": "soon", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "gpufleet.cli", "validate"], capture_output=True, text=True, cwd=fleet.root, timeout=120, env=env)
    assert (proc.returncode, proc.stderr.strip()) == (2, "GPUFLEET_TODAY: 'soon' is not a date (YYYY-MM-DD)")
