"""Every tunable of the monitoring add-on, in one block.

Thresholds, SLO objectives, scrape selectors, versions and the GPU price table
live here and nowhere else (the kubernetes-mixin convention): the rule,
dashboard and chart builders read them, and a fleet can override any key by
passing ``config={...}`` to :func:`k8s.monitoring.build` (merged key by key).
"""

from __future__ import annotations

from typing import Any

from k8s.core import deep_merge

from gpufleet.economics.prices import dashboard_prices
from k8s import versions

_PRICES = dashboard_prices()

CONFIG: dict[str, Any] = {
    # --- kube-prometheus-stack -------------------------------------------------
    "chart": {
        "release": "kube-prometheus-stack",
        # The pin lives with every other chart version, in k8s/versions.py.
        "chart": versions.KUBE_PROMETHEUS_STACK_CHART,
        "repository": versions.KUBE_PROMETHEUS_STACK_REPOSITORY,
        "version": versions.KUBE_PROMETHEUS_STACK_VERSION,
        "namespace": "monitoring",
    },
    # Retention and disk per Prometheus. The hub keeps every site's series.
    "retention": {"site": "15d", "hub": "90d"},
    "storage_gib": {"site": 100, "hub": 500},
    # Remote write from every site to the hub's receiver. ``{hub}`` and
    # ``{fleet}`` are filled from the fleet model. The hub exposes the receiver
    # through an ingress protected by basic auth; the credentials live in the
    # Secret named here, in the monitoring namespace of every site (keys
    # ``username`` and ``password``; on the hub, ``auth`` in htpasswd format).
    "remote_write": {
        "host": "prometheus-receiver.{hub}.{fleet}.internal",
        "path": "/api/v1/write",
        "secret": "gpufleet-remote-write",
        "ingress_class": "nginx",
    },
    # Label that the chart's default selectors match (ruleSelector,
    # serviceMonitorSelector, podMonitorSelector all select `release: <release>`
    # when their *SelectorNilUsesHelmValues value is true, the chart default).
    # Derived from chart.release in build(); listed here for readers.
    # --- scrape targets --------------------------------------------------------
    "targets": {
        "dcgm": {
            "job": "nvidia-dcgm-exporter",
            "namespace": "gpu-operator",
            # Service the GPU operator creates for its dcgm-exporter DaemonSet.
            "service_labels": {"app": "nvidia-dcgm-exporter"},
            "port": "gpu-metrics",
            "interval": "30s",
        },
        "vllm": {
            "job": "vllm",
            "pod_labels": {"app.kubernetes.io/name": "vllm"},
            "port": "http",
            "path": "/metrics",
            # Pod label copied onto every vLLM series as `model` (the fleet
            # model's name, which vLLM's own `model_name` label need not equal).
            "model_pod_label": "app.kubernetes.io/instance",
            "interval": "15s",
        },
        "gateway": {
            "job": "llm-gateway",
            "service_labels": {"app.kubernetes.io/name": "llm-gateway"},
            "port": "http",
            # LiteLLM mounts its exporter at /metrics/ (/metrics redirects there).
            "path": "/metrics/",
            "interval": "30s",
            # LiteLLM 1.103.0 authenticates /metrics (litellm.require_auth_for_metrics_endpoint
            # defaults to True): Prometheus sends the gateway's metrics key, from
            # this Secret in the monitoring namespace; the gateway's keys file
            # lists its digest with scope `metrics` (k8s/serving/README.md).
            "bearer_secret": {"name": "llm-gateway-metrics", "key": "token"},
        },
        "kueue": {
            "job": "kueue",
            "namespace": "kueue-system",
            "service_labels": {"control-plane": "controller-manager"},
            "port": "https",
            "interval": "30s",
        },
        "kube_state_metrics": {"job": "kube-state-metrics"},
    },
    # --- alert thresholds ------------------------------------------------------
    "gpu": {
        # NVIDIA XID catalogue: 79 = GPU has fallen off the bus; 48 = double-bit
        # ECC error; 94 = contained ECC error; 95 = uncontained ECC error.
        "xid_fallen_off_bus": [79],
        "xid_memory_errors": [48, 94, 95],
        "xid_for": "1m",
        "row_remap_failure_for": "5m",
        "temperature_celsius": 85,
        "temperature_for": "10m",
        "exporter_absent_for": "15m",
        # Extended resources that mean "this node has NVIDIA GPUs" (whole GPUs,
        # and MIG slices under the mixed strategy), as kube-state-metrics names them.
        "node_gpu_resource_regex": "nvidia_com_gpu|nvidia_com_mig_.+",
    },
    "slo": {
        # Time to first token: `objective` of requests get their first token
        # within `ttft_bucket` seconds. The bound must be one of the buckets vLLM
        # exports for vllm:time_to_first_token_seconds (spelled as exported).
        "ttft_objective": 0.99,
        "ttft_bucket": "2.5",
        # Error ratio: server errors (HTTP 5xx) over all OpenAI API requests.
        "error_objective": 0.999,
        "api_handler_regex": "/v1/.+",
        # Multi-window, multi-burn-rate (SRE workbook, chapter 5): page when
        # both the long and the short window burn faster than the factor.
        "burn_windows": [
            {"factor": 14.4, "long": "1h", "short": "5m"},
            {"factor": 6, "long": "6h", "short": "30m"},
        ],
        "burn_for": "2m",
    },
    "serving": {
        "kv_cache_usage_ratio": 0.95,
        "kv_cache_for": "15m",
    },
    "queues": {
        # A queue is stuck when it has admissible pending workloads and has
        # admitted nothing within `admission_window`, for `pending_for`.
        "admission_window": "15m",
        "pending_for": "1h",
        "inadmissible_for": "30m",
    },
    # Runbooks live in docs/runbooks/<AlertName>.md of this repository; point
    # this at the place your copy of the repository is browsed (the URL below
    # is an example). Every alert's runbook_url is <base>/<AlertName>.md.
    "runbook_base_url": "https://github.com/acme/gpufleet/blob/main/docs/runbooks",
    # --- dashboards and cost ---------------------------------------------------
    "dashboards": {
        "folder": "GPU fleet",
        "label": "grafana_dashboard",
        "label_value": "1",
    },
    # Hourly price of one GPU, in USD, per accelerator (the names the fleet
    # description and gpufleet/catalog.py use) and per site kind. `model_regex`
    # matches the `modelName` label dcgm-exporter puts on every GPU series.
    # The figures are not kept here: they come from gpufleet/economics/prices.yaml,
    # the one reviewed price file the planner and `gpufleet optimize` read too
    # (with its sources and dates). `aws` is the cheapest on-demand GPU-hour of
    # an instance carrying the accelerator in the reference region; `datacenter`
    # is the owned server's committed GPU-hour (purchase written off, power,
    # colocation).
    "gpu_prices_usd_per_hour": {
        accel: {"model_regex": regex, **_PRICES[accel]}
        for accel, regex in {
            "h100-80gb": "NVIDIA H100.*80GB.*|NVIDIA H100 PCIe",
            "h200-141gb": "NVIDIA H200.*",
            "a100-40gb": "NVIDIA A100.*40GB.*",
            "a100-80gb": "NVIDIA A100.*80GB.*",
            "l40s": "NVIDIA L40S.*",
            "l4": "NVIDIA L4",
            "a10g": "NVIDIA A10G",
        }.items()
    },
}


def merged(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """CONFIG with ``overrides`` merged in, key by key (dicts recursively)."""
    return deep_merge(CONFIG, overrides or {})
