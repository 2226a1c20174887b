"""ServiceMonitors and PodMonitors for the fleet's GPU, serving and queue targets.

Every monitor sets `job` explicitly (the rules select on it) and carries the
`release` label the chart's serviceMonitorSelector / podMonitorSelector match.
"""

from __future__ import annotations

from typing import Any

from .context import SiteContext


def _meta(ctx: SiteContext, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ctx.namespace,
        "labels": {"release": ctx.release, "app.kubernetes.io/part-of": "gpufleet"},
    }


def _label_key(label: str) -> str:
    """A Kubernetes label as it appears in service-discovery meta labels."""
    return "".join(c if c.isalnum() else "_" for c in label)


def _set_job(job: str) -> dict[str, Any]:
    return {"action": "replace", "targetLabel": "job", "replacement": job}


def dcgm_service_monitor(ctx: SiteContext) -> dict[str, Any]:
    t = ctx.cfg["targets"]["dcgm"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(ctx, "gpufleet-dcgm-exporter"),
        "spec": {
            "namespaceSelector": {"matchNames": [t["namespace"]]},
            "selector": {"matchLabels": dict(t["service_labels"])},
            "endpoints": [
                {
                    "port": t["port"],
                    "path": "/metrics",
                    "interval": t["interval"],
                    # dcgm-exporter labels each GPU's series with the pod and
                    # namespace of the workload using it: keep those.
                    "honorLabels": True,
                    "relabelings": [
                        _set_job(t["job"]),
                        # The node the exporter runs on, for DcgmExporterAbsent.
                        {
                            "action": "replace",
                            "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                            "targetLabel": "node",
                        },
                    ],
                }
            ],
        },
    }


def vllm_pod_monitor(ctx: SiteContext) -> dict[str, Any]:
    t = ctx.cfg["targets"]["vllm"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _meta(ctx, "gpufleet-vllm"),
        "spec": {
            "namespaceSelector": {"any": True},
            "selector": {"matchLabels": dict(t["pod_labels"])},
            "podMetricsEndpoints": [
                {
                    "port": t["port"],
                    "path": t["path"],
                    "interval": t["interval"],
                    "relabelings": [
                        _set_job(t["job"]),
                        {
                            "action": "replace",
                            "sourceLabels": [f"__meta_kubernetes_pod_label_{_label_key(t['model_pod_label'])}"],
                            "targetLabel": "model",
                        },
                    ],
                }
            ],
        },
    }


def gateway_service_monitor(ctx: SiteContext) -> dict[str, Any]:
    t = ctx.cfg["targets"]["gateway"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(ctx, "gpufleet-llm-gateway"),
        "spec": {
            "namespaceSelector": {"any": True},
            "selector": {"matchLabels": dict(t["service_labels"])},
            "endpoints": [
                {
                    "port": t["port"],
                    "path": t["path"],
                    "interval": t["interval"],
                    "authorization": {"type": "Bearer", "credentials": dict(t["bearer_secret"])},
                    "relabelings": [_set_job(t["job"])],
                }
            ],
        },
    }


def kueue_service_monitor(ctx: SiteContext) -> dict[str, Any]:
    t = ctx.cfg["targets"]["kueue"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(ctx, "gpufleet-kueue"),
        "spec": {
            "namespaceSelector": {"matchNames": [t["namespace"]]},
            "selector": {"matchLabels": dict(t["service_labels"])},
            "endpoints": [
                {
                    # Kueue serves metrics over HTTPS with authentication and
                    # authorisation: Prometheus presents its service-account
                    # token (the chart's ClusterRole allows GET /metrics).
                    "port": t["port"],
                    "path": "/metrics",
                    "scheme": "https",
                    "interval": t["interval"],
                    "bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                    # Kueue's default metrics certificate is self-signed; where
                    # cert-manager issues it, verify it with tlsConfig.ca instead.
                    "tlsConfig": {"insecureSkipVerify": True},
                    "relabelings": [_set_job(t["job"])],
                }
            ],
        },
    }


def monitors(ctx: SiteContext) -> list[dict[str, Any]]:
    return [
        dcgm_service_monitor(ctx),
        vllm_pod_monitor(ctx),
        gateway_service_monitor(ctx),
        kueue_service_monitor(ctx),
    ]
