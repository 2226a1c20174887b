"""Bad demand input: one clear `file: key.path: message` line per problem, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.economics.conftest import run


def _write(root: Path, text: str) -> Path:
    path = root / "stacks" / "demand.yaml"
    path.write_text(text)
    return path


def test_example_demand_loads() -> None:
    from gpufleet.economics.demand import load_demand
    from gpufleet.model import load_fleet

    fleet = load_fleet("stacks/fleet.yaml")
    d = load_demand("stacks/demand.yaml", fleet)
    assert [e.model for e in d.spec.serving] == ["llama-3-1-70b-instruct", "llama-3-1-70b-instruct", "llama-3-1-8b-instruct", "clinical-notes-8b"]
    assert d.serving_sites[3] == ["dc-fra"]  # regulated
    assert d.training_sites[1] == ["dc-fra"]


BAD = """\
peak_hours_per_day: 12
serving:
  - model: llama-3-1-70b-instruct
    sites: [dc-fra, aws-euc2]
    requests_per_s: {peak: 1.0, offpeak: 2.0}
    input_tokens: 1500
    output_tokens: 350
    slo: {ttft_p95_s: 2.0, tpot_p95_ms: 60}
    quantizations: [fp8]
    quantisation: fp8
  - model: clinical-notes-8b
    sites: [aws-use1]
    requests_per_s: {peak: 1.0, offpeak: 0.5}
    input_tokens: 2000
    output_tokens: 300
    slo: {ttft_p95_s: .inf, tpot_p95_ms: 80}
    quantizations: [awq]
training:
  - queue: research-trian
    gpu_hours_per_month: 100
    job_gpus: 8
    accelerators: [h100-80gb]
"""


def test_bad_demand_one_line_per_problem(fleet_copy: Path) -> None:
    path = _write(fleet_copy, BAD)
    r = run("optimize", "--fleet", str(fleet_copy / "stacks" / "fleet.yaml"), "--demand", str(path))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    # the schema's problems come first, all of them
    assert f"{path}: serving[0].quantisation: unknown key (did you mean 'quantizations'?); expected one of: " in lines[0] + lines[1] + lines[2] or any(
        line.startswith(f"{path}: serving[0].quantisation: unknown key (did you mean 'quantizations'?)") for line in lines
    )
    assert any(line.startswith(f"{path}: serving[0].requests_per_s: offpeak (2) is above peak (1)") for line in lines), lines
    assert any(line.startswith(f"{path}: serving[1].slo.ttft_p95_s: ") and "finite" in line for line in lines), lines
    assert lines[-1].endswith("problems found")
    assert all(line.startswith(str(path)) for line in lines[:-1])


def test_cross_check_problems(fleet_copy: Path) -> None:
    text = BAD.replace("    quantisation: fp8\n", "").replace("offpeak: 2.0", "offpeak: 0.5").replace(".inf", "3.0")
    path = _write(fleet_copy, text)
    r = run("optimize", "--fleet", str(fleet_copy / "stacks" / "fleet.yaml"), "--demand", str(path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert f"{path}: serving[0].sites[1]: unknown site 'aws-euc2' (did you mean 'aws-euc1'?)" in lines
    assert f"{path}: serving[1].sites[0]: model holds 'regulated' data, which may only be at dc-fra; 'aws-use1' is not allowed" in lines
    assert f"{path}: training[0].queue: unknown queue 'research-trian' (did you mean 'research-train'?)" in lines
    assert lines[-1] == "3 problems found"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "expected a mapping"),
        ("peak_hours_per_day: [\n", "not valid YAML"),
        ("- 1\n", "expected a mapping"),
        ("peak_hours_per_day: 25\n", "peak_hours_per_day: Input should be less than or equal to 24"),
    ],
)
def test_malformed_files(fleet_copy: Path, text: str, expected: str) -> None:
    path = _write(fleet_copy, text)
    r = run("optimize", "--fleet", str(fleet_copy / "stacks" / "fleet.yaml"), "--demand", str(path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert expected in r.stderr
