"""The command line as a user runs it, on the bundled example fleet."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GPUFLEET = [sys.executable, "-m", "gpufleet.cli"]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*GPUFLEET, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture()
def fleet_copy(tmp_path: Path) -> Path:
    for part in ("stacks", "inventory"):
        shutil.copytree(ROOT / part, tmp_path / part)
    return tmp_path


def test_validate_example() -> None:
    r = run("validate")
    assert r.returncode == 0, r.stderr
    assert "fleet 'acme-llm' is valid: 4 sites, 13 servers" in r.stdout


def test_validate_reports_every_problem_as_one_line(fleet_copy: Path) -> None:
    fleet = fleet_copy / "stacks" / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("sites: [dc-fra, aws-euc1]", "sites: [dc-fra, aws-euc2]").replace("h100-80gb: 16", "h100-80gb: 900"))
    r = run("validate", "--fleet", str(fleet))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert f"{fleet}: teams[0].queues[0].sites[1]: unknown site 'aws-euc2' (did you mean 'aws-euc1'?)" in lines
    assert any(line.startswith(f"{fleet}: teams[1].queues[0].quota.h100-80gb: quota of 900 h100-80gb GPUs exceeds the 28 whole GPUs") for line in lines)
    # The misspelt site is the one problem with research-train: no quota line piles on top of it.
    assert not any("teams[0].queues[0].quota" in line for line in lines)
    assert lines[-1] == "2 problems found"
    assert len(lines) == 3


def test_plan_table_shows_sites_queues_models() -> None:
    r = run("plan")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for text in ("dc-fra", "aws-euc1", "aws-use1", "fra-hub", "research-train", "clinical-train", "clinical-notes-8b", "2g.20gb", "p5.48xlarge"):
        assert text in out
    assert "1. dc-fra (quota 16 x h100-80gb of 28 x h100-80gb)" in out


def test_plan_json_is_stable_and_complete() -> None:
    first, second = run("plan", "--format", "json"), run("plan", "--format", "json")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    plan = json.loads(first.stdout)
    assert plan["hub"] == "fra-hub"
    sites = {s["name"]: s for s in plan["sites"]}
    assert sites["dc-fra"]["whole_gpus"] == {"h100-80gb": 28, "l40s": 12}
    assert {"accelerator": "h100-80gb", "profile": "2g.20gb", "count": 12} in sites["dc-fra"]["mig_slices"]
    assert [p["name"] for p in sites["aws-euc1"]["node_pools"]] == ["system", "serving-l40s", "train-h100"]
    queues = {q["name"]: q for q in plan["queues"]}
    assert [d["site"] for d in queues["research-train"]["dispatch"]] == ["dc-fra", "aws-euc1"]
    # Each step gets the share of the quota its GPUs can hold: the higher-priority clinical queue
    # takes 16 of dc-fra's 28 H100s, research gets the other 12 there and bursts the rest to the cloud.
    assert [d["quota"] for d in queues["research-train"]["dispatch"]] == [{"h100-80gb": 12}, {"h100-80gb": 28}]
    assert queues["research-train"]["unplaced"] == {}
    assert [d["site"] for d in queues["clinical-train"]["dispatch"]] == ["dc-fra"]
    models = {m["name"]: m for m in plan["models"]}
    assert models["clinical-notes-8b"]["placement"]["mig_profile"] == "2g.20gb"
    assert models["llama-3-1-70b-instruct"]["tensor_parallel_size"] == 4


def test_plan_markdown_is_a_pull_request_comment() -> None:
    r = run("plan", "--format", "markdown")
    assert r.returncode == 0, r.stderr
    md = r.stdout
    assert md.startswith("## gpufleet plan: `acme-llm`")
    assert "```mermaid\nflowchart LR" in md
    assert 'fra_hub -- "research-train #1" --> dc_fra' in md
    assert 'fra_hub -- "research-train #2" --> aws_euc1' in md
    assert "| `research-train` | research | 100 | - | 40 x h100-80gb | dc-fra (quota 12 x h100-80gb of 28 x h100-80gb) → aws-euc1 (quota 28 x h100-80gb of 32 x h100-80gb) |" in md


def test_bad_format_is_a_usage_error() -> None:
    r = run("plan", "--format", "yaml")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_missing_fleet_file(tmp_path: Path) -> None:
    r = run("validate", "--fleet", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == f"{tmp_path / 'nope.yaml'}: file not found"


def test_render_writes_every_engine_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run("render", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "plan.json").read_text())["fleet"] == "acme-llm"
    assert (out / "plan.md").read_text().startswith("## gpufleet plan")
    for site in ("fra-hub", "dc-fra", "aws-euc1", "aws-use1"):
        preview = json.loads((out / "sites" / site / "pulumi-preview.json").read_text())
        assert preview["stack"] == site
        types = [r["type"] for r in preview["resources"]]
        if site.startswith("aws-"):
            clusters = [r for r in preview["resources"] if r["type"] == "aws:eks/cluster:Cluster"]
            assert len(clusters) == 1
            vpc = clusters[0]["inputs"]["vpcConfig"]
            assert vpc["endpointPrivateAccess"] is True and vpc["endpointPublicAccess"] is False
            gpu_groups = [r for r in preview["resources"] if r["type"] == "aws:eks/nodeGroup:NodeGroup" and any(t.get("key") == "nvidia.com/gpu" for t in r["inputs"].get("taints", []))]
            assert gpu_groups, "no GPU node group tainted nvidia.com/gpu"
            assert all(t["effect"] == "NO_SCHEDULE" for g in gpu_groups for t in g["inputs"]["taints"] if t["key"] == "nvidia.com/gpu")
        else:
            assert not [t for t in types if t.startswith("aws:")], f"{site} declares AWS resources"
        k8s = out / "sites" / site / "k8s"
        assert any(k8s.glob("*.yaml")), f"no Kubernetes objects for {site}"
    inv = out / "sites" / "dc-fra" / "ansible" / "inventory"
    hv = yaml.safe_load((inv / "gpufleet-derived.yml").read_text())["all"]["hosts"]["fra-hgx-04"]
    assert hv["gpufleet_node_labels"]["nvidia.com/mig.config"] == hv["gpufleet_mig_config_name"]
    assert {"gpufleet.io/server-class": "hgx-h100-8", "gpufleet.io/ib-block": "ib-a"}.items() <= hv["gpufleet_node_labels"].items()
    assert hv["gpufleet_k8s_api_endpoint"] == "k8s-api.dc-fra.acme.internal:6443"
    cfg = hv["gpufleet_mig_parted_config"]["mig-configs"][hv["gpufleet_mig_config_name"]]
    assert cfg[0] == {"devices": [0, 1, 2, 3], "mig-enabled": True, "mig-devices": {"2g.20gb": 3, "1g.10gb": 1}}
    assert cfg[1] == {"devices": [4, 5, 6, 7], "mig-enabled": False}
    assert "nvidia.com/gpu=true:NoSchedule" in hv["gpufleet_node_taints"]
    assert (inv / "hosts.yml").is_file() and (inv / "host_vars" / "fra-hgx-04.yml").is_file()


def test_rendered_inventory_is_what_ansible_sees(tmp_path: Path) -> None:
    """Ansible itself reads the rendered inventory: the copied inventory and the derived variables together."""
    out = tmp_path / "out"
    assert run("render", "--out", str(out)).returncode == 0
    inv = out / "sites" / "dc-fra" / "ansible" / "inventory"
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inv), "--host", "fra-hgx-04"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    host = json.loads(r.stdout)
    assert host["gpufleet_accelerator"] == "h100-80gb"  # from group_vars
    assert host["gpufleet_mig_layout"][0]["profiles"] == {"2g.20gb": 3, "1g.10gb": 1}  # from host_vars
    assert host["k8s_control_plane_pod_subnet"] == "10.120.0.0/16"  # derived from fleet.yaml
    assert host["gpufleet_kubernetes_version"] == "1.33"  # checked against the kubelet pin by validate.yml
    assert not (out / "sites" / "aws-euc1" / "ansible").exists()


# What render may replace, and how: tests/cli/test_render_safety.py.
