"""Filters the acceptance role judges GPU tools' output with.

``dcgm_diag_verdict`` reads the JSON ``dcgmi diag -r N -j`` prints, in the
format of DCGM 4 (NVIDIA/DCGM v4.5.2, dcgmi/Diag.cpp: HelperJsonBuildOutput,
HelperJsonAddResult, HelperDisplayDiagResult; testing/python3/
dcgm_diag_schema.json):

    {"DCGM Diagnostic": {"test_categories": [{"category": ..., "tests": [
        {"name": ..., "results": [{"entity_group": "GPU", "entity_id": 0,
          "status": "Pass"|"Fail"|"Skip", "warnings": [{"warning": ...}]}],
         "test_summary": {"status": ...}}]}],
     "runtime_error": ...}, "entity_groups": [...], "metadata": {...}}

A warning is printed as "Fail" in JSON (HelperDisplayDiagResult without
DDR_DISPLAY_WARN), tests that did not run are left out.

``nccl_tests_report`` reads the report ``all_reduce_perf -J FILE`` writes
(NVIDIA/nccl-tests v2.17.6, src/util.cu: writeBenchmarkLinePreamble,
writeBenchmarkLineBody, writeResultFooter; the keys "average_bus_bandwidith"
and "bandwidith" are spelled as upstream writes them).
"""

from __future__ import annotations

import json
from typing import Any


def _json_object(text: Any) -> tuple[dict | None, str]:
    text = str(text or "")
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None, "no JSON in the output"
    try:
        data = json.loads(text[start:end + 1])
    except ValueError as exc:
        return None, f"output is not JSON ({exc})"
    if not isinstance(data, dict):
        return None, "output is not a JSON object"
    return data, ""


def _entity(result: dict) -> str:
    if "entity_id" in result:
        return f"{result.get('entity_group', 'GPU')}{result['entity_id']}"
    return "all"


def dcgm_diag_verdict(text: Any) -> dict[str, Any]:
    """{"status": "passed"|"failed", "failures": [...], "tests": [...], "version", "driver"}."""
    data, why = _json_object(text)
    if data is None:
        return {"status": "failed", "failures": [f"dcgmi diag: {why}"], "tests": []}
    root = data.get("DCGM Diagnostic")
    meta = data.get("metadata") or {}
    out: dict[str, Any] = {"status": "passed", "failures": [], "tests": [],
                           "version": meta.get("version") or (root or {}).get("version"),
                           "driver": meta.get("Driver Version Detected")}
    if not isinstance(root, dict):
        out.update(status="failed", failures=["dcgmi diag: no 'DCGM Diagnostic' object (not DCGM 4's JSON format)"])
        return out
    if root.get("runtime_error"):
        out.update(status="failed", failures=[f"dcgmi diag: {root['runtime_error']}"])
        return out
    for category in root.get("test_categories") or []:
        for test in category.get("tests") or []:
            results = test.get("results") or []
            entities = {_entity(r): r.get("status", "") for r in results}
            summary = (test.get("test_summary") or {}).get("status")
            status = summary or ("Fail" if "Fail" in entities.values() else "Pass" if entities else "")
            entry = {"category": category.get("category", ""), "name": test.get("name", ""), "status": status, "entities": entities}
            out["tests"].append(entry)
            if status == "Fail" or "Fail" in entities.values():
                bad = [e for e, s in entities.items() if s == "Fail"] or ["all"]
                warnings = [w.get("warning", "") for r in results + [test.get("test_summary") or {}]
                            for w in (r.get("warnings") or []) if isinstance(w, dict)]
                reason = "; ".join(dict.fromkeys(w.strip() for w in warnings if w.strip()))
                out["failures"].append(f"{entry['category']}/{entry['name']} failed on {', '.join(bad)}" + (f": {reason}" if reason else ""))
    if not out["tests"]:
        out["failures"].append("dcgmi diag ran no test")
    if out["failures"]:
        out["status"] = "failed"
    return out


def nccl_tests_report(text: Any) -> dict[str, Any]:
    """The figures of one nccl-tests run: average bus bandwidth, out-of-bounds
    values, and per message size the bus bandwidth out of place and in place."""
    data, why = _json_object(text)
    if data is None:
        return {"error": f"nccl-tests report: {why}"}
    avg = data.get("average_bus_bandwidith") or {}
    oob = data.get("out_of_bounds") or {}
    sizes = []
    for row in data.get("results") or []:
        sizes.append({
            "bytes": row.get("size"),
            "busbw_out_of_place_gbps": (row.get("out_of_place") or {}).get("bus_bw"),
            "busbw_in_place_gbps": (row.get("in_place") or {}).get("bus_bw"),
            "wrong": [(row.get(k) or {}).get("nwrong") for k in ("out_of_place", "in_place")],
        })
    if "bandwidith" not in avg:
        return {"error": "nccl-tests report has no average bus bandwidth (the run did not finish)", "sizes": sizes}
    return {
        "busbw_avg_gbps": float(avg["bandwidith"]),
        "out_of_bounds": int(oob.get("count", 0) or 0),
        "sizes": sizes,
        "ranks": len((data.get("config") or {}).get("devices") or []),
        "nccl_version": data.get("nccl_version"),
        "errors": [e for e in data.get("errors") or [] if e],
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"dcgm_diag_verdict": dcgm_diag_verdict, "nccl_tests_report": nccl_tests_report}
