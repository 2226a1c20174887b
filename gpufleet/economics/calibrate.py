"""Measured throughput: ``vllm bench serve`` result files into a reviewed calibration file.

``vllm bench serve --save-result`` (``--append-result`` for one JSON object a
line) writes one object per run. The keys read here are those vLLM's
``vllm/benchmarks/serve.py`` writes: ``main_async`` puts ``date``,
``model_id``, ``request_rate``, ``max_concurrency`` and every ``--metadata
KEY=VALUE`` pair at the top level, then merges ``benchmark()``'s result
(``completed``, ``failed``, ``total_input_tokens``, ``total_output_tokens``,
``request_throughput``, ``output_throughput``, and from ``process_one_metric``
``mean_/median_/std_`` and ``p<N>_`` for ``ttft``, ``tpot``, ``itl`` in ms, one
``p<N>`` per ``--metric-percentiles``). Run the benchmark with
``--metric-percentiles 95`` so the p95 figures the SLOs use are there; a file
with only p99 is accepted and its p99 used (stricter), and says so.

What the file does not say (the accelerator, MIG profile, quantization and
tensor-parallel size of the server it measured) comes from ``--metadata
gpufleet_accelerator=... gpufleet_tensor_parallel=... gpufleet_quantization=...
[gpufleet_mig_profile=...] gpufleet_model=<fleet model name>`` on the
benchmark's command line, or from the options of ``gpufleet calibrate``.

The calibration file (YAML) keeps every run as a point with its provenance
(file, SHA-256, date, vLLM model id); the performance model uses the best
output throughput among the points that met an SLO.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpufleet.catalog import ACCELERATORS
from gpufleet.errors import FleetError, Problem

from .perf import ReplicaShape, Workload

DEFAULT_CALIBRATION = Path("stacks/calibration.yaml")
QUANTIZATIONS = ("none", "fp8", "int8", "awq", "gptq")
_REQUIRED = ("output_throughput", "completed", "total_input_tokens", "total_output_tokens")


def _number(obj: dict, key: str, where: str, problems: list[Problem], required: bool = True) -> float | None:
    v = obj.get(key)
    if v is None:
        if required:
            problems.append(Problem(where, key, "missing (not a `vllm bench serve --save-result` file?)"))
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        problems.append(Problem(where, key, f"expected a finite number, got {v!r:.40}"))
        return None
    return float(v)


def read_results(path: Path, overrides: dict[str, Any], problems: list[Problem]) -> list[dict[str, Any]]:
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(where, "", f"cannot read: {exc.strerror}"))
        return []
    digest = hashlib.sha256(raw).hexdigest()
    text = raw.decode("utf-8", errors="replace").strip()
    objs: list[Any] = []
    try:
        objs = [json.loads(text)]
    except json.JSONDecodeError:
        for n, line in enumerate(text.splitlines(), 1):  # --append-result: one object a line
            if line.strip():
                try:
                    objs.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    problems.append(Problem(where, f"line {n}", f"not JSON: {exc.msg}"))
                    return []
    points = []
    for n, obj in enumerate(objs):
        at = where if len(objs) == 1 else f"{where} (run {n + 1})"
        if not isinstance(obj, dict):
            problems.append(Problem(at, "", "expected a JSON object"))
            continue
        before = len(problems)
        vals = {k: _number(obj, k, at, problems) for k in _REQUIRED}
        pct = None
        for p in ("95", "99"):
            t1, t2 = _number(obj, f"p{p}_ttft_ms", at, problems, False), _number(obj, f"p{p}_tpot_ms", at, problems, False)
            if t1 is not None and t2 is not None:
                pct = (p, t1, t2)
                break
        if pct is None:
            problems.append(Problem(at, "p95_ttft_ms", "no p95 (or p99) TTFT and TPOT: run vllm bench serve with --metric-percentiles 95"))
        meta = {k.removeprefix("gpufleet_"): v for k, v in obj.items() if isinstance(k, str) and k.startswith("gpufleet_")}
        meta.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("model", "accelerator", "quantization", "tensor_parallel"):
            if meta.get(key) in (None, ""):
                problems.append(Problem(at, f"gpufleet_{key}", f"unknown {key}: pass --metadata gpufleet_{key}=... to vllm bench serve, or --{key.replace('_', '-')} here"))
        if meta.get("accelerator") not in (None, "") and meta["accelerator"] not in ACCELERATORS:
            problems.append(Problem(at, "gpufleet_accelerator", f"unknown accelerator '{meta['accelerator']}'"))
        if meta.get("quantization") not in (None, "") and meta["quantization"] not in QUANTIZATIONS:
            problems.append(Problem(at, "gpufleet_quantization", f"'{meta['quantization']}' is not one of {', '.join(QUANTIZATIONS)}"))
        try:
            tp = int(meta.get("tensor_parallel") or 0)
        except (TypeError, ValueError):
            problems.append(Problem(at, "gpufleet_tensor_parallel", f"not a whole number: {meta.get('tensor_parallel')!r}"))
            tp = 0
        if len(problems) > before:
            continue
        completed = vals["completed"] or 0
        if completed <= 0:
            problems.append(Problem(at, "completed", "no request completed"))
            continue
        points.append({
            "model": str(meta["model"]),
            "accelerator": str(meta["accelerator"]),
            "mig_profile": (str(meta["mig_profile"]) if meta.get("mig_profile") else None),
            "quantization": str(meta["quantization"]),
            "tensor_parallel": tp,
            "output_tokens_per_s": round(vals["output_throughput"], 3),
            "mean_input_tokens": round(vals["total_input_tokens"] / completed, 1),
            "mean_output_tokens": round(vals["total_output_tokens"] / completed, 1),
            "ttft_p95_ms": round(pct[1], 3),
            "tpot_p95_ms": round(pct[2], 3),
            "failed": int(obj.get("failed") or 0),
            "provenance": {
                "source": "measured",
                "tool": "vllm bench serve",
                "file": path.name,
                "sha256": digest,
                "date": str(obj.get("date", "")),
                "vllm_model_id": str(obj.get("model_id", "")),
                "request_rate": obj.get("request_rate"),
                "max_concurrency": obj.get("max_concurrency"),
                "percentile": f"p{pct[0]}" + ("" if pct[0] == "95" else " (no p95 in the file; the stricter p99 stands in)"),
            },
        })
    return points


def calibrate(files: list[Path], out: Path, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Read result files and merge their points into ``out`` (same file + SHA-256 replaces)."""
    from ruamel.yaml import YAML

    problems: list[Problem] = []
    new: list[dict[str, Any]] = []
    for f in files:
        new.extend(read_results(Path(f), overrides, problems))
    if problems:
        raise FleetError(problems)
    yaml = YAML()
    existing: list[Any] = []
    if out.exists():
        cal = Calibration.load(out)
        existing = list(cal.points)
    keys = {(p["provenance"]["sha256"], p["provenance"]["date"], p["output_tokens_per_s"]) for p in new}
    kept = [p for p in existing if (p["provenance"]["sha256"], p["provenance"]["date"], p["output_tokens_per_s"]) not in keys]
    doc = {"points": kept + new}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w") as fh:
        fh.write("# Measured serving throughput, recorded by `gpufleet calibrate` from `vllm bench serve` result files.\n")
        fh.write("# Review like code: each point names the file (and its SHA-256) it came from. The performance model uses\n")
        fh.write("# the best output_tokens_per_s among the points of a model and shape whose p95 TTFT and TPOT met the SLO.\n")
        yaml.dump(doc, fh)
    tmp.replace(out)
    return new


@dataclass
class Calibration:
    points: list[dict[str, Any]]
    path: str

    @classmethod
    def load(cls, path: Path) -> Calibration:
        from gpufleet.inventory import load_yaml

        problems: list[Problem] = []
        data = load_yaml(path, str(path), problems)
        if problems:
            raise FleetError(problems)
        if not isinstance(data, dict) or not isinstance(data.get("points"), list):
            raise FleetError([Problem(str(path), "points", "expected a list of measured points")])
        for i, p in enumerate(data["points"]):
            need = ("model", "accelerator", "quantization", "tensor_parallel", "output_tokens_per_s", "ttft_p95_ms", "tpot_p95_ms", "provenance")
            if not isinstance(p, dict) or any(k not in p for k in need):
                raise FleetError([Problem(str(path), f"points[{i}]", f"needs {', '.join(need)}")])
        return cls(list(data["points"]), str(path))

    def lookup(self, model: str, shape: ReplicaShape, w: Workload) -> tuple[float, dict[str, Any]] | None:
        mine = [
            p for p in self.points
            if p["model"] == model and p["accelerator"] == shape.accelerator and (p.get("mig_profile") or None) == shape.mig_profile
            and p["quantization"] == shape.quantization and int(p["tensor_parallel"]) == shape.tensor_parallel
        ]
        if not mine:
            return None
        ok = [p for p in mine if p["ttft_p95_ms"] <= w.ttft_p95_s * 1000 and p["tpot_p95_ms"] <= w.tpot_p95_ms and not p.get("failed")]
        if not ok:
            return 0.0, {"source": "measured", "note": f"{len(mine)} measured run(s), none within the SLO", "files": sorted({p["provenance"]["file"] for p in mine})}
        best = max(ok, key=lambda p: p["output_tokens_per_s"])
        prov = dict(best["provenance"])
        prov["calibration_file"] = self.path
        prov["request_size_measured"] = f"{best['mean_input_tokens']:g} in / {best['mean_output_tokens']:g} out tokens"
        return float(best["output_tokens_per_s"]), prov


def load_calibration(path: Path | None) -> Calibration | None:
    if path is None or not Path(path).exists():
        return None
    return Calibration.load(Path(path))
