"""gpufleet calibrate on vllm bench serve result files; gpufleet plan's cost and --base on a real git repository."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

from gpufleet import mig
from tests.economics.conftest import run


def _result(**over) -> dict:
    # The keys vllm/benchmarks/serve.py writes (main_async + benchmark()), with --metric-percentiles 95
    # and --metadata gpufleet_...=... on the command line.
    r = {
        "date": "20261214-101500", "endpoint_type": "openai", "backend": "openai", "label": None, "model_id": "meta-llama/Llama-3.1-70B-Instruct",
        "tokenizer_id": "meta-llama/Llama-3.1-70B-Instruct", "num_prompts": 500, "request_rate": 4.0, "burstiness": 1.0, "max_concurrency": None,
        "gpufleet_model": "llama-3-1-70b-instruct", "gpufleet_accelerator": "l40s", "gpufleet_quantization": "fp8", "gpufleet_tensor_parallel": "4",
        "duration": 120.0, "completed": 500, "failed": 0, "total_input_tokens": 750000, "total_output_tokens": 175000,
        "request_throughput": 4.1, "request_goodput": None, "output_throughput": 1450.0, "total_token_throughput": 7700.0,
        "mean_ttft_ms": 480.0, "median_ttft_ms": 420.0, "std_ttft_ms": 90.0, "p95_ttft_ms": 900.0,
        "mean_tpot_ms": 41.0, "median_tpot_ms": 40.0, "std_tpot_ms": 3.0, "p95_tpot_ms": 52.0,
        "mean_itl_ms": 41.0, "median_itl_ms": 39.0, "std_itl_ms": 8.0, "p95_itl_ms": 60.0,
    }
    r.update(over)
    return r


def test_calibrate_records_measured_points_and_optimize_uses_them(fleet_copy: Path) -> None:
    res = fleet_copy / "bench-l40s.json"
    res.write_text(json.dumps(_result()))
    slow = fleet_copy / "bench-l40s-fast-rate.jsonl"  # --append-result: one run a line; this one misses the TPOT SLO
    slow.write_text(json.dumps(_result(request_rate=8.0, output_throughput=2400.0, p95_tpot_ms=95.0)) + "\n")
    out = fleet_copy / "stacks" / "calibration.yaml"
    r = run("calibrate", str(res), str(slow), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "1,450.0 output tokens/s" in r.stdout
    text = out.read_text()
    assert "sha256:" in text and "bench-l40s.json" in text
    o = run("optimize", "--fleet", str(fleet_copy / "stacks" / "fleet.yaml"), "--format", "json")
    assert o.returncode == 0, o.stderr
    rows = [s for s in json.loads(o.stdout)["serving"] if s["model"] == "llama-3-1-70b-instruct" and s["accelerator"] == "l40s" and s["tensor_parallel"] == 4]
    assert rows, "the 70B model stays on 4 x L40S"
    for s in rows:
        assert s["tokens_per_s_per_replica"] == 1450.0  # the measured run within the SLO, not the roofline, not the faster run that broke it
        assert s["perf_provenance"]["source"] == "measured"
        assert s["perf_provenance"]["file"] == "bench-l40s.json"


def test_calibrate_refuses_incomplete_results(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    res = _result()
    for k in ("p95_ttft_ms", "gpufleet_accelerator"):
        del res[k]
    res["output_throughput"] = "fast"
    bad.write_text(json.dumps(res))
    r = run("calibrate", str(bad), "--out", str(tmp_path / "cal.yaml"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert f"{bad}: output_throughput: expected a finite number, got 'fast'" in lines
    assert any(line.startswith(f"{bad}: p95_ttft_ms: no p95 (or p99) TTFT and TPOT") for line in lines)
    assert any(line.startswith(f"{bad}: gpufleet_accelerator: unknown accelerator: pass --metadata gpufleet_accelerator=") for line in lines)
    assert not (tmp_path / "cal.yaml").exists()


def test_plan_shows_cost_per_site_and_utilisation() -> None:
    r = run("plan", "--format", "json")
    assert r.returncode == 0, r.stderr
    cost = json.loads(r.stdout)["cost"]
    assert {s["site"] for s in cost["sites"]} == {"dc-fra", "aws-euc1", "aws-use1"}
    assert 0 < cost["owned_gpu_utilisation"] <= 1
    md = run("plan", "--format", "markdown").stdout
    assert "### Cost per month" in md and "Owned GPUs used:" in md


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", *args], check=True, capture_output=True)


def test_plan_base_shows_changes_and_cost_difference(fleet_copy: Path) -> None:
    _git(fleet_copy, "init", "-q")
    _git(fleet_copy, "add", "stacks", "inventory")
    _git(fleet_copy, "commit", "-q", "-m", "base")
    fleet = fleet_copy / "stacks" / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("    sites: [aws-euc1, aws-use1, dc-fra]\n    replicas: 2\n", "    sites: [aws-euc1, aws-use1, dc-fra]\n    replicas: 3\n"))
    use1 = fleet_copy / "stacks" / "Pulumi.aws-use1.yaml"
    use1.write_text(use1.read_text().replace("      minSize: 2\n      maxSize: 6\n      diskGib: 500\n", "      minSize: 3\n      maxSize: 6\n      diskGib: 500\n"))
    _git(fleet_copy, "commit", "-q", "-am", "more 70B replicas")
    r = run("plan", "--fleet", str(fleet), "--base", "HEAD~1", "--format", "markdown")
    assert r.returncode == 0, r.stderr
    md = r.stdout
    assert "### Changes since `HEAD~1`" in md
    assert "| models | `llama-3-1-70b-instruct` | changed | 4 x l40s, fp8, 2 replicas at aws-euc1, aws-use1, dc-fra | 4 x l40s, fp8, 3 replicas at aws-euc1, aws-use1, dc-fra |" in md
    assert "| pools | `aws-use1/serving-l40s` | changed | g6e.12xlarge on-demand 2-6 | g6e.12xlarge on-demand 3-6 |" in md
    line = next(l for l in md.splitlines() if l.startswith("Cost: "))
    assert "(**+$" in line, line  # more replicas cost more
    bad = run("plan", "--fleet", str(fleet), "--base", "no-such-ref")
    assert bad.returncode == 2 and "--base no-such-ref: no such commit" in bad.stderr


def test_mig_placement_rules_agree_with_the_slice_count_check() -> None:
    for acc, table in mig.MIG_PROFILES.items():
        names = sorted(table)
        for counts in itertools.product(*(range(table[n].max_per_gpu + 2) for n in names)):
            layout = {n: k for n, k in zip(names, counts) if k}
            if not layout:
                continue
            placed = mig.placement(acc, layout)
            assert (placed is not None) == (not mig.layout_problems(acc, layout)), (acc, layout)
            if placed:
                used = [s + i for p, starts in placed.items() for s in starts for i in range(table[p].memory_slices)]
                assert len(used) == len(set(used)) and max(used) < 8
    assert mig.placement("h100-80gb", {"2g.20gb": 3, "1g.10gb": 1}) == {"2g.20gb": [0, 2, 4], "1g.10gb": [6]}
    assert len(mig.gpu_layouts("h100-80gb")) == 44
