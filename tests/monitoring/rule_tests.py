"""promtool unit tests for the rules in :mod:`k8s.monitoring.rules`, as data (test code, not product).

Each :class:`AlertCase` describes input series and three kinds of evaluation
times: ``healthy`` (the condition is false), ``pending`` (the condition is true
but ``for:`` has not elapsed) and ``firing`` (the alert fires with exactly the
expected labels and annotations). The times are derived from the rule's
``for:`` in the config block, so the tests follow when a threshold changes.

:func:`promtool_tests` renders them as a promtool test file; the expected
annotations are the rule's own templates expanded with the expected labels and
value, so the file also checks that every template renders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from k8s.monitoring.context import SiteContext
from k8s.monitoring.rules import _seconds, alerts, rule_groups


@dataclass
class Expected:
    labels: dict[str, str]
    value: float


@dataclass
class AlertCase:
    alert: str
    name: str
    series: list[tuple[str, str]]
    healthy: list[int]  # minutes
    pending: list[int]
    firing: int
    expected: list[Expected]
    extra_silent: list[int] = field(default_factory=list)


def _m(duration: str) -> int:
    return _seconds(duration) // 60


def _series(metric: str, **labels: str) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


def _gpu(ctx: SiteContext, gpu: str, uuid: str, host: str = "gpu-node-1", model: str = "NVIDIA H100 80GB HBM3") -> dict[str, str]:
    return {
        "job": ctx.cfg["targets"]["dcgm"]["job"],
        "gpu": gpu,
        "UUID": uuid,
        "Hostname": host,
        "node": host,
        "modelName": model,
    }


def cases(ctx: SiteContext) -> list[AlertCase]:
    cfg = ctx.cfg
    gpu = cfg["gpu"]
    t = cfg["targets"]
    out: list[AlertCase] = []

    # --- GPU XID 79 ------------------------------------------------------------
    onset = 10
    f = _m(gpu["xid_for"])
    g0 = _gpu(ctx, "0", "GPU-0000")
    g1 = _gpu(ctx, "1", "GPU-0001")
    out.append(
        AlertCase(
            "GpuXidFallenOffBus",
            "XID 79 on one GPU fires; another XID on another GPU does not",
            [
                (_series("DCGM_FI_DEV_XID_ERRORS", **g0), f"0x{onset - 1} 79x60"),
                (_series("DCGM_FI_DEV_XID_ERRORS", **g1), f"0x{onset - 1} 13x60"),
            ],
            healthy=[onset - 1],
            pending=[onset + f - 1],
            firing=onset + f + 1,
            expected=[Expected(g0, 79)],
        )
    )

    # --- GPU XID memory errors -------------------------------------------------
    codes = gpu["xid_memory_errors"]
    gpus = [_gpu(ctx, str(i), f"GPU-000{i}") for i in range(len(codes) + 2)]
    series = [
        (_series("DCGM_FI_DEV_XID_ERRORS", **g), f"0x{onset - 1} {code}x60")
        for g, code in zip(gpus, codes)
    ]
    # Other XIDs (13: graphics engine exception; 79: its own alert) stay silent here.
    series.append((_series("DCGM_FI_DEV_XID_ERRORS", **gpus[len(codes)]), f"0x{onset - 1} 13x60"))
    series.append((_series("DCGM_FI_DEV_XID_ERRORS", **gpus[len(codes) + 1]), f"0x{onset - 1} 79x60"))
    out.append(
        AlertCase(
            "GpuXidMemoryError",
            "each memory-error XID fires; other XIDs do not",
            series,
            healthy=[onset - 1],
            pending=[onset + f - 1],
            firing=onset + f + 1,
            expected=[Expected(g, code) for g, code in zip(gpus, codes)],
        )
    )

    # --- row remap failure -----------------------------------------------------
    f = _m(gpu["row_remap_failure_for"])
    out.append(
        AlertCase(
            "GpuRowRemapFailure",
            "a failed row remap fires after its for:",
            [
                (_series("DCGM_FI_DEV_ROW_REMAP_FAILURE", **g0), f"0x{onset - 1} 1x120"),
                (_series("DCGM_FI_DEV_ROW_REMAP_FAILURE", **g1), "0x130"),
            ],
            healthy=[onset - 1],
            pending=[onset + f - 1],
            firing=onset + f + 1,
            expected=[Expected(g0, 1)],
        )
    )

    # --- temperature -----------------------------------------------------------
    f = _m(gpu["temperature_for"])
    hot = gpu["temperature_celsius"] + 5
    warm = gpu["temperature_celsius"] - 5
    out.append(
        AlertCase(
            "GpuTemperatureHigh",
            "a GPU above the threshold fires; one just below does not",
            [
                (_series("DCGM_FI_DEV_GPU_TEMP", **g0), f"60x{onset - 1} {hot}x120"),
                (_series("DCGM_FI_DEV_GPU_TEMP", **g1), f"60x{onset - 1} {warm}x120"),
            ],
            healthy=[onset - 1],
            pending=[onset + f - 1],
            firing=onset + f + 1,
            expected=[Expected(g0, hot)],
        )
    )

    # --- dcgm-exporter absent --------------------------------------------------
    f = _m(gpu["exporter_absent_for"])
    ksm = t["kube_state_metrics"]["job"]
    dcgm_job = t["dcgm"]["job"]
    series = [
        # GPU node with a healthy exporter: silent.
        (_series("kube_node_status_capacity", job=ksm, node="gpu-a", resource="nvidia_com_gpu", unit="integer"), "8x200"),
        (_series("up", job=dcgm_job, node="gpu-a", namespace="gpu-operator", pod="dcgm-a"), "1x200"),
        # MIG node whose exporter goes down: fires.
        (_series("kube_node_status_capacity", job=ksm, node="gpu-b", resource="nvidia_com_mig_2g_20gb", unit="integer"), "3x200"),
        (_series("up", job=dcgm_job, node="gpu-b", namespace="gpu-operator", pod="dcgm-b"), f"1x{onset - 1} 0x200"),
        # GPU node that joins without any exporter target: fires.
        (_series("kube_node_status_capacity", job=ksm, node="gpu-c", resource="nvidia_com_gpu", unit="integer"), f"_x{onset} 8x200"),
        # GPU node that is not Ready (its own alert covers it): silent.
        (_series("kube_node_status_capacity", job=ksm, node="gpu-d", resource="nvidia_com_gpu", unit="integer"), "8x200"),
        (_series("kube_node_status_condition", job=ksm, node="gpu-d", condition="Ready", status="true"), "0x200"),
        (_series("kube_node_status_condition", job=ksm, node="gpu-a", condition="Ready", status="true"), "1x200"),
        # CPU node, and a node whose GPU count is zero: silent.
        (_series("kube_node_status_capacity", job=ksm, node="cpu-a", resource="cpu", unit="core"), "64x200"),
        (_series("kube_node_status_capacity", job=ksm, node="cpu-b", resource="nvidia_com_gpu", unit="integer"), "0x200"),
    ]
    out.append(
        AlertCase(
            "DcgmExporterAbsent",
            "Ready GPU nodes without a healthy exporter fire; others do not",
            series,
            healthy=[onset - 1],
            pending=[onset + f - 1],
            firing=onset + f + 1,
            expected=[Expected({"node": "gpu-b"}, 3), Expected({"node": "gpu-c"}, 8)],
        )
    )

    # --- vLLM SLO burn ---------------------------------------------------------
    slo = cfg["slo"]
    vllm = {"job": t["vllm"]["job"], "namespace": "serving", "model": "llama-3-1-8b-instruct"}
    other = {**vllm, "model": "clinical-notes-8b"}
    f = _m(slo["burn_for"])
    fast = slo["burn_windows"][0]
    slow = slo["burn_windows"][-1]
    # Healthy traffic fills the longest window first, so that only the
    # fast-burn pair can turn true soon after the change.
    start = max(_m(w["long"]) for w in slo["burn_windows"])
    end = start + 2 * _m(fast["long"])

    def counter(per_min_before: int, per_min_after: int, switch: int, total: int) -> str:
        # promtool's "a+bxn" expands to n+1 samples, one a minute.
        after_start = per_min_before * switch + per_min_after
        return f"0+{per_min_before}x{switch} {after_start}+{per_min_after}x{total - switch - 1}"

    # Every request slow from `start`: the fast-burn pair turns true once the
    # long window's slow share passes factor x budget.
    budget = 1 - slo["ttft_objective"]
    onset_ttft = start + int(fast["factor"] * budget * _m(fast["long"])) + 1
    bucket = slo["ttft_bucket"]
    out.append(
        AlertCase(
            "VllmTimeToFirstTokenBudgetBurn",
            "all requests slow: the fast-burn windows fire; a healthy model does not",
            [
                (_series("vllm:time_to_first_token_seconds_bucket", **vllm, le=bucket), counter(100, 0, start, end)),
                (_series("vllm:time_to_first_token_seconds_count", **vllm), counter(100, 100, start, end)),
                (_series("vllm:time_to_first_token_seconds_bucket", **other, le=bucket), counter(100, 100, start, end)),
                (_series("vllm:time_to_first_token_seconds_count", **other), counter(100, 100, start, end)),
            ],
            healthy=[start - 1],
            pending=[onset_ttft + f - 1],
            firing=start + _m(fast["long"]) + 1,
            expected=[Expected({"namespace": "serving", "model": vllm["model"]}, 1.0)],
        )
    )
    # One request in ten slow: below the fast-burn rate, above the slow-burn
    # rate. From the first sample, every window holds the same share.
    slow_share = 0.1
    threshold = slow["factor"] * budget
    assert fast["factor"] * budget > slow_share > threshold, "adjust slow_share to the burn windows"
    ok = int(100 * (1 - slow_share))
    span = _m(slow["short"]) + 30
    out.append(
        AlertCase(
            "VllmTimeToFirstTokenBudgetBurn",
            "a tenth of requests slow: only the slow-burn windows fire",
            [
                (_series("vllm:time_to_first_token_seconds_bucket", **vllm, le=bucket), f"0+{ok}x{span}"),
                (_series("vllm:time_to_first_token_seconds_count", **vllm), f"0+100x{span}"),
            ],
            healthy=[],
            pending=[],
            firing=_m(slow["short"]) + 10,
            expected=[Expected({"namespace": "serving", "model": vllm["model"]}, slow_share)],
        )
    )
    # The same share after an hour of healthy traffic: the long window keeps
    # the slow-burn pair quiet until the share over it passes the threshold.
    prefix = _m(fast["long"])
    crossing = threshold * prefix / (slow_share - threshold)  # minutes after the change
    quiet = prefix + int(crossing * 2 / 3)
    out.append(
        AlertCase(
            "VllmTimeToFirstTokenBudgetBurn",
            "a tenth of requests slow after healthy traffic: quiet while the long window dilutes it",
            [
                (_series("vllm:time_to_first_token_seconds_bucket", **vllm, le=bucket), counter(100, ok, prefix, quiet + 10)),
                (_series("vllm:time_to_first_token_seconds_count", **vllm), counter(100, 100, prefix, quiet + 10)),
            ],
            healthy=[prefix - 1, quiet],
            pending=[],
            firing=quiet,
            expected=[],
        )
    )

    err_budget = 1 - slo["error_objective"]
    handler = "/v1/chat/completions"
    # Half of the requests fail from `start`.
    onset_err = start + int(fast["factor"] * err_budget * _m(fast["long"]) * 2) + 1
    out.append(
        AlertCase(
            "VllmErrorBudgetBurn",
            "half the API requests fail: fires; health-check errors do not count",
            [
                (_series("http_requests_total", **vllm, handler=handler, method="POST", status="2xx"), counter(100, 50, start, end)),
                (_series("http_requests_total", **vllm, handler=handler, method="POST", status="5xx"), counter(0, 50, start, end)),
                (_series("http_requests_total", **other, handler=handler, method="POST", status="2xx"), counter(100, 100, start, end)),
                (_series("http_requests_total", **other, handler="/health", method="GET", status="5xx"), counter(0, 100, start, end)),
            ],
            healthy=[start - 1],
            pending=[onset_err + f - 1],
            firing=start + _m(fast["long"]) + 1,
            expected=[Expected({"namespace": "serving", "model": vllm["model"]}, 0.5)],
        )
    )

    # --- KV cache --------------------------------------------------------------
    serving = cfg["serving"]
    f = _m(serving["kv_cache_for"])
    pod = {**vllm, "pod": "llama-0", "model_name": "meta-llama/Llama-3.1-8B-Instruct", "engine": "0"}
    busy_idle = {**pod, "pod": "llama-1"}
    full = min(0.99, serving["kv_cache_usage_ratio"] + 0.02)
    out.append(
        AlertCase(
            "VllmKvCacheSaturated",
            "a full cache with waiting requests fires; a full cache with an empty queue does not",
            [
                (_series("vllm:kv_cache_usage_perc", **pod), f"0.5x{onset - 1} {full}x120"),
                (_series("vllm:num_requests_waiting", **pod), f"0x{onset - 1} 4x120"),
                (_series("vllm:kv_cache_usage_perc", **busy_idle), f"{full}x130"),
                (_series("vllm:num_requests_waiting", **busy_idle), "0x130"),
            ],
            healthy=[onset - 1],
            pending=[onset + f - 1],
            firing=onset + f + 1,
            expected=[
                Expected({"namespace": "serving", "model": vllm["model"], "pod": "llama-0"}, full)
            ],
        )
    )

    # --- Kueue -----------------------------------------------------------------
    q = cfg["queues"]
    kueue = t["kueue"]["job"]
    f = _m(q["pending_for"])
    horizon = onset + f + 30
    out.append(
        AlertCase(
            "KueueWorkloadsPendingTooLong",
            "stuck queues fire (with and without past admissions); a flowing queue does not",
            [
                (_series("kueue_pending_workloads", job=kueue, cluster_queue="research-train", status="active"), f"0x{onset - 1} 3x{horizon}"),
                (_series("kueue_admitted_workloads_total", job=kueue, cluster_queue="research-train"), f"5x{horizon + onset}"),
                (_series("kueue_pending_workloads", job=kueue, cluster_queue="clinical-train", status="active"), f"_x{onset} 2x{horizon}"),
                (_series("kueue_pending_workloads", job=kueue, cluster_queue="flowing", status="active"), f"4x{horizon + onset}"),
                (_series("kueue_admitted_workloads_total", job=kueue, cluster_queue="flowing"), f"0+1x{horizon + onset}"),
                (_series("kueue_pending_workloads", job=kueue, cluster_queue="flowing", status="inadmissible"), f"0x{horizon + onset}"),
            ],
            healthy=[onset - 1],
            pending=[onset + f - 1],
            firing=onset + f + 1,
            expected=[
                Expected({"cluster_queue": "research-train"}, 3),
                Expected({"cluster_queue": "clinical-train"}, 2),
            ],
        )
    )
    f = _m(q["inadmissible_for"])
    out.append(
        AlertCase(
            "KueueWorkloadsInadmissible",
            "inadmissible workloads fire after their for:",
            [
                (_series("kueue_pending_workloads", job=kueue, cluster_queue="research-train", status="inadmissible"), f"0x{onset - 1} 2x120"),
                (_series("kueue_pending_workloads", job=kueue, cluster_queue="research-train", status="active"), "5x130"),
            ],
            healthy=[onset - 1],
            pending=[onset + f - 1],
            firing=onset + f + 1,
            expected=[Expected({"cluster_queue": "research-train"}, 2)],
        )
    )

    if ctx.is_hub:
        # The hub also stores every site's series (with a `site` label): its
        # rules must leave those to the sites' own Prometheus.
        remote = {**g0, "site": "dc-fra"}
        f = _m(gpu["temperature_for"])
        out.append(
            AlertCase(
                "GpuTemperatureHigh",
                "on the hub, a remote site's hot GPU does not fire a second time",
                [(_series("DCGM_FI_DEV_GPU_TEMP", **remote), f"{hot}x120")],
                healthy=[onset + f + 1],
                pending=[],
                firing=onset + f + 1,
                expected=[],
            )
        )
    return out


# --- Go template expansion for the expected annotations ------------------------

def _go_float(value: float) -> str:
    """A float64 as Go's fmt %v prints it (shortest form)."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(float(value))


def _expand(template: str, labels: dict[str, str], value: float) -> str:
    def sub(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if expr.startswith("$labels."):
            return labels.get(expr[len("$labels."):], "<no value>")
        if expr == "$value":
            return _go_float(value)
        if expr == "$value | humanizePercentage":
            return f"{value * 100:.4g}%"
        raise ValueError(f"template expression {expr!r} is not supported by the test generator")

    return re.sub(r"\{\{(.*?)\}\}", sub, template)


def _minutes(n: int) -> str:
    return f"{n}m"


def promtool_tests(ctx: SiteContext, rule_file: str) -> dict[str, Any]:
    """The promtool test file for this site's rules, as a dict."""
    rules = {r["alert"]: r for r in alerts_for(ctx)}
    tests: list[dict[str, Any]] = []
    for case in cases(ctx):
        rule = rules[case.alert]
        checks: list[dict[str, Any]] = []
        for minute in sorted(set(case.healthy + case.pending)):
            checks.append({"eval_time": _minutes(minute), "alertname": case.alert, "exp_alerts": []})
        if case.firing not in case.healthy:
            exp = []
            for e in case.expected:
                labels = {**e.labels, **rule["labels"]}
                exp.append(
                    {
                        "exp_labels": labels,
                        "exp_annotations": {
                            k: _expand(v, labels, e.value) for k, v in rule["annotations"].items()
                        },
                    }
                )
            checks.append({"eval_time": _minutes(case.firing), "alertname": case.alert, "exp_alerts": exp})
        test: dict[str, Any] = {
            "name": f"{case.alert}: {case.name}",
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in case.series],
            "alert_rule_test": checks,
        }
        if case.pending:
            # Silent is not enough: at these times the alert must be pending,
            # so the silence comes from `for:` and not from a false condition.
            test["promql_expr_test"] = [
                {
                    "expr": f'ALERTS{{alertname="{case.alert}", alertstate="pending"}}',
                    "eval_time": _minutes(minute),
                    "exp_samples": [
                        {
                            "labels": _series(
                                "ALERTS",
                                alertname=case.alert,
                                alertstate="pending",
                                **{**e.labels, **rule["labels"]},
                            ),
                            "value": 1,
                        }
                        for e in case.expected
                    ],
                }
                for minute in case.pending
            ]
        tests.append(test)
    tests.append(_cost_test(ctx))
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}


def _cost_test(ctx: SiteContext) -> dict[str, Any]:
    prices = ctx.cfg["gpu_prices_usd_per_hour"]
    series = [
        (_series("DCGM_FI_DEV_GPU_TEMP", **_gpu(ctx, "0", "GPU-h0")), "50x30"),
        (_series("DCGM_FI_DEV_GPU_TEMP", **_gpu(ctx, "1", "GPU-h1")), "50x30"),
        # A MIG-partitioned GPU reports once per GPU instance: still one GPU.
        (_series("DCGM_FI_DEV_GPU_TEMP", **{**_gpu(ctx, "2", "GPU-h2"), "GPU_I_ID": "1"}), "50x30"),
        (_series("DCGM_FI_DEV_GPU_TEMP", **{**_gpu(ctx, "2", "GPU-h2"), "GPU_I_ID": "2"}), "50x30"),
        (_series("DCGM_FI_DEV_GPU_TEMP", **_gpu(ctx, "0", "GPU-l0", host="l40s-node", model="NVIDIA L40S")), "50x30"),
    ]
    h100 = prices["h100-80gb"][ctx.kind]
    l40s = prices["l40s"][ctx.kind]
    return {
        "name": "gpufleet:gpu_cost_usd_per_hour:sum counts GPUs once and prices them for this site's kind",
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series],
        "promql_expr_test": [
            {
                "expr": "gpufleet:gpus:count",
                "eval_time": "10m",
                "exp_samples": [
                    {"labels": 'gpufleet:gpus:count{accelerator="h100-80gb"}', "value": 3},
                    {"labels": 'gpufleet:gpus:count{accelerator="l40s"}', "value": 1},
                ],
            },
            {
                "expr": "gpufleet:gpu_cost_usd_per_hour:sum",
                "eval_time": "10m",
                "exp_samples": [
                    {"labels": 'gpufleet:gpu_cost_usd_per_hour:sum{accelerator="h100-80gb"}', "value": 3 * h100},
                    {"labels": 'gpufleet:gpu_cost_usd_per_hour:sum{accelerator="l40s"}', "value": 1 * l40s},
                ],
            },
        ],
    }


def alerts_for(ctx: SiteContext) -> list[dict[str, Any]]:
    return alerts(rule_groups(ctx))
