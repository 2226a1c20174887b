"""Alerting and recording rules, rendered from the one config block.

Every alert carries `severity` and the annotations `summary`, `description`
and `runbook_url` (docs/runbooks/<alert>.md). The promtool unit tests for these
rules are in ``tests/monitoring/rule_tests.py``.
"""

from __future__ import annotations

from typing import Any

from .context import SiteContext


def _budget(objective: float) -> str:
    """The error budget 1 - objective, printed without float noise."""
    return f"{1 - objective:.6g}"


def _alert(
    ctx: SiteContext,
    name: str,
    expr: str,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    **labels: str,
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **labels},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{ctx.cfg['runbook_base_url']}/{name}.md",
        },
    }


def gpu_rules(ctx: SiteContext) -> dict[str, Any]:
    gpu = ctx.cfg["gpu"]
    dcgm = ctx.selector("dcgm")
    ksm = ctx.selector("kube_state_metrics", f'resource=~"{gpu["node_gpu_resource_regex"]}"')
    up_dcgm = ctx.selector("dcgm")
    not_ready = ctx.selector("kube_state_metrics", 'condition="Ready"', 'status="true"')

    def xid_expr(codes: list[int]) -> str:
        return " or ".join(f"DCGM_FI_DEV_XID_ERRORS{{{dcgm}}} == {code}" for code in codes)

    return {
        "name": "gpufleet-gpu",
        "rules": [
            _alert(
                ctx,
                "GpuXidFallenOffBus",
                xid_expr(gpu["xid_fallen_off_bus"]),
                gpu["xid_for"],
                "critical",
                "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has fallen off the bus (XID {{ $value }}).",
                "The driver lost GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) "
                "on node {{ $labels.Hostname }}: XID {{ $value }}. Workloads on it have failed; "
                "the node needs draining and a GPU reset or a reboot.",
            ),
            _alert(
                ctx,
                "GpuXidMemoryError",
                xid_expr(gpu["xid_memory_errors"]),
                gpu["xid_for"],
                "warning",
                "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported memory error XID {{ $value }}.",
                "GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node "
                "{{ $labels.Hostname }} reported XID {{ $value }} (48: double-bit ECC error, "
                "94: contained ECC error, 95: uncontained ECC error). The process using that "
                "memory was stopped; the GPU may need a reset and row remapping.",
            ),
            _alert(
                ctx,
                "GpuRowRemapFailure",
                f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{dcgm}}} > 0",
                gpu["row_remap_failure_for"],
                "warning",
                "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} failed to remap a memory row.",
                "GPU {{ $labels.gpu }} ({{ $labels.modelName }}, {{ $labels.UUID }}) on node "
                "{{ $labels.Hostname }} has no spare rows left to remap a failing memory row. "
                "Its memory can no longer be repaired in the field: take it out of service "
                "and replace it.",
            ),
            _alert(
                ctx,
                "GpuTemperatureHigh",
                f"DCGM_FI_DEV_GPU_TEMP{{{dcgm}}} > {gpu['temperature_celsius']}",
                gpu["temperature_for"],
                "warning",
                "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} runs at {{ $value }} °C.",
                "GPU {{ $labels.gpu }} ({{ $labels.modelName }}) on node {{ $labels.Hostname }} "
                f"has been above {gpu['temperature_celsius']} °C for {gpu['temperature_for']}. "
                "It will throttle its clocks and, if it keeps heating, shut down.",
            ),
            _alert(
                ctx,
                "DcgmExporterAbsent",
                f"max by (node) (kube_node_status_capacity{{{ksm}}} > 0)\n"
                f"unless on (node)\n"
                f"max by (node) (up{{{up_dcgm}}} == 1)\n"
                # A node that is not Ready has its own alert (KubeNodeNotReady).
                f"unless on (node)\n"
                f"max by (node) (kube_node_status_condition{{{not_ready}}} == 0)",
                gpu["exporter_absent_for"],
                "warning",
                "No dcgm-exporter is scraped on GPU node {{ $labels.node }}.",
                "Node {{ $labels.node }} is Ready and has NVIDIA GPUs, but Prometheus has no "
                "healthy dcgm-exporter target on it (missing or down) for "
                f"{gpu['exporter_absent_for']}. Every GPU alert is blind on this node.",
            ),
        ],
    }


def _slo_ratio_rules(ctx: SiteContext) -> list[dict[str, Any]]:
    slo = ctx.cfg["slo"]
    vllm = ctx.selector("vllm")
    windows = sorted(
        {w["long"] for w in slo["burn_windows"]} | {w["short"] for w in slo["burn_windows"]},
        key=_seconds,
    )
    by = "sum by (namespace, model)"
    rules: list[dict[str, Any]] = []
    for w in windows:
        rules.append(
            {
                "record": f"namespace_model:vllm_ttft_slow:ratio_rate{w}",
                "expr": (
                    f"1 - (\n"
                    f"  {by} (rate(vllm:time_to_first_token_seconds_bucket{{{vllm}, le=\"{slo['ttft_bucket']}\"}}[{w}]))\n"
                    f"/\n"
                    f"  {by} (rate(vllm:time_to_first_token_seconds_count{{{vllm}}}[{w}]))\n"
                    f")"
                ),
            }
        )
    for w in windows:
        rules.append(
            {
                "record": f"namespace_model:vllm_http_errors:ratio_rate{w}",
                "expr": (
                    f"{by} (rate(http_requests_total{{{vllm}, handler=~\"{slo['api_handler_regex']}\", status=\"5xx\"}}[{w}]))\n"
                    f"/\n"
                    f"{by} (rate(http_requests_total{{{vllm}, handler=~\"{slo['api_handler_regex']}\"}}[{w}]))"
                ),
            }
        )
    return rules


def _burn_expr(record: str, objective: float, windows: list[dict[str, Any]]) -> str:
    budget = _budget(objective)
    parts = []
    for w in windows:
        threshold = f"({w['factor']} * {budget})"
        parts.append(
            f"(\n  {record}{w['long']} > {threshold}\nand\n  {record}{w['short']} > {threshold}\n)"
        )
    return "\nor\n".join(parts)


def serving_rules(ctx: SiteContext) -> dict[str, Any]:
    slo = ctx.cfg["slo"]
    serving = ctx.cfg["serving"]
    vllm = ctx.selector("vllm")
    windows_text = " and ".join(
        f"{w['factor']}x over {w['long']} and {w['short']}" for w in slo["burn_windows"]
    )
    ttft_pct = f"{slo['ttft_objective'] * 100:g}%"
    err_pct = f"{slo['error_objective'] * 100:g}%"
    return {
        "name": "gpufleet-serving",
        "rules": [
            *_slo_ratio_rules(ctx),
            _alert(
                ctx,
                "VllmTimeToFirstTokenBudgetBurn",
                _burn_expr(
                    "namespace_model:vllm_ttft_slow:ratio_rate",
                    slo["ttft_objective"],
                    slo["burn_windows"],
                ),
                slo["burn_for"],
                "critical",
                "Model {{ $labels.model }} burns its time-to-first-token error budget too fast.",
                f"The SLO is {ttft_pct} of requests with a first token within "
                f"{slo['ttft_bucket']} s. Model {{{{ $labels.model }}}} in namespace "
                "{{ $labels.namespace }} has {{ $value | humanizePercentage }} slow requests, "
                f"a burn rate that exhausts the monthly budget in days ({windows_text}).",
                slo="time-to-first-token",
            ),
            _alert(
                ctx,
                "VllmErrorBudgetBurn",
                _burn_expr(
                    "namespace_model:vllm_http_errors:ratio_rate",
                    slo["error_objective"],
                    slo["burn_windows"],
                ),
                slo["burn_for"],
                "critical",
                "Model {{ $labels.model }} burns its error budget too fast.",
                f"The SLO is {err_pct} of API requests answered without a server error. "
                "Model {{ $labels.model }} in namespace {{ $labels.namespace }} answers "
                "{{ $value | humanizePercentage }} of requests with HTTP 5xx, a burn rate "
                f"that exhausts the monthly budget in days ({windows_text}).",
                slo="errors",
            ),
            _alert(
                ctx,
                "VllmKvCacheSaturated",
                f"max by (namespace, model, pod) (vllm:kv_cache_usage_perc{{{vllm}}}) > {serving['kv_cache_usage_ratio']}\n"
                f"and on (namespace, model, pod)\n"
                f"max by (namespace, model, pod) (vllm:num_requests_waiting{{{vllm}}}) > 0",
                serving["kv_cache_for"],
                "warning",
                "vLLM pod {{ $labels.pod }} ({{ $labels.model }}) has a full KV cache and queued requests.",
                "Pod {{ $labels.pod }} of model {{ $labels.model }} in namespace "
                "{{ $labels.namespace }} has used more than "
                f"{serving['kv_cache_usage_ratio'] * 100:g}% of its KV cache with requests waiting "
                f"for {serving['kv_cache_for']}: new requests queue and latency rises.",
            ),
        ],
    }


def queue_rules(ctx: SiteContext) -> dict[str, Any]:
    q = ctx.cfg["queues"]
    kueue_active = ctx.selector("kueue", 'status="active"')
    kueue_inadmissible = ctx.selector("kueue", 'status="inadmissible"')
    kueue = ctx.selector("kueue")
    return {
        "name": "gpufleet-queues",
        "rules": [
            _alert(
                ctx,
                "KueueWorkloadsPendingTooLong",
                f"sum by (cluster_queue) (kueue_pending_workloads{{{kueue_active}}}) > 0\n"
                f"unless on (cluster_queue)\n"
                f"sum by (cluster_queue) (increase(kueue_admitted_workloads_total{{{kueue}}}[{q['admission_window']}])) > 0",
                q["pending_for"],
                "warning",
                "ClusterQueue {{ $labels.cluster_queue }} has pending workloads and admits none.",
                "ClusterQueue {{ $labels.cluster_queue }} has had {{ $value }} admissible "
                f"workloads pending for {q['pending_for']} without admitting any "
                "(no admission in any "
                f"{q['admission_window']} window). Its quota or the capacity behind it is "
                "exhausted or blocked.",
            ),
            _alert(
                ctx,
                "KueueWorkloadsInadmissible",
                f"sum by (cluster_queue) (kueue_pending_workloads{{{kueue_inadmissible}}}) > 0",
                q["inadmissible_for"],
                "warning",
                "ClusterQueue {{ $labels.cluster_queue }} holds inadmissible workloads.",
                "ClusterQueue {{ $labels.cluster_queue }} has {{ $value }} workloads that "
                f"cannot be admitted as they are (for {q['inadmissible_for']}): they ask for a "
                "flavor, a resource or a quantity the queue cannot provide, or the queue is inactive.",
            ),
        ],
    }


def cost_rules(ctx: SiteContext) -> dict[str, Any]:
    """GPUs present and their hourly cost at this site, per accelerator."""
    dcgm = ctx.selector("dcgm")
    rules: list[dict[str, Any]] = []
    for accel, entry in ctx.cfg["gpu_prices_usd_per_hour"].items():
        price = entry[ctx.kind]
        gpus = f'count(count by (UUID) (DCGM_FI_DEV_GPU_TEMP{{{dcgm}, modelName=~"{entry["model_regex"]}"}}))'
        rules.append({"record": "gpufleet:gpus:count", "expr": gpus, "labels": {"accelerator": accel}})
        rules.append(
            {
                "record": "gpufleet:gpu_cost_usd_per_hour:sum",
                "expr": f"{gpus} * {price}",
                "labels": {"accelerator": accel},
            }
        )
    return {"name": "gpufleet-cost", "interval": "1m", "rules": rules}


def rule_groups(ctx: SiteContext) -> list[dict[str, Any]]:
    return [gpu_rules(ctx), serving_rules(ctx), queue_rules(ctx), cost_rules(ctx)]


def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


def prometheus_rule(ctx: SiteContext) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "gpufleet",
            "namespace": ctx.namespace,
            "labels": {"release": ctx.release, "app.kubernetes.io/part-of": "gpufleet"},
        },
        "spec": {"groups": rule_groups(ctx)},
    }


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(duration[:-1]) * units[duration[-1]]
