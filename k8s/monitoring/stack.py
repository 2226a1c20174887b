"""The kube-prometheus-stack chart for one site.

Every site's Prometheus labels what leaves it with `fleet` and `site` (external
labels) and remote-writes to the hub; the hub instead runs the remote-write
receiver, behind an ingress with basic auth, and keeps the fleet's history.

Rule, ServiceMonitor and PodMonitor selection: with
`*SelectorNilUsesHelmValues: true` (the chart default, set explicitly here) the
chart's Prometheus selects only objects labelled `release: <release name>`;
every object this add-on emits carries that label.
"""

from __future__ import annotations

from typing import Any

from .. import versions
from ..core import Chart
from .context import SiteContext


def remote_write_host(ctx: SiteContext) -> str:
    return ctx.cfg["remote_write"]["host"].format(hub=ctx.hub, fleet=ctx.fleet)


def remote_write_url(ctx: SiteContext) -> str:
    return f"https://{remote_write_host(ctx)}{ctx.cfg['remote_write']['path']}"


def _image(name: str) -> dict[str, str]:
    """An image value of the chart (registry, repository, tag, sha) from k8s/versions.py."""
    registry, repository, tag, sha = versions.KUBE_PROMETHEUS_STACK_IMAGES[name]
    return {"registry": registry, "repository": repository, "tag": tag, "sha": sha or ""}


def values(ctx: SiteContext) -> dict[str, Any]:
    cfg = ctx.cfg
    role = "hub" if ctx.is_hub else "site"
    rw = cfg["remote_write"]
    spec: dict[str, Any] = {
        "externalLabels": {"fleet": ctx.fleet, "site": ctx.site},
        "ruleSelectorNilUsesHelmValues": True,
        "serviceMonitorSelectorNilUsesHelmValues": True,
        "podMonitorSelectorNilUsesHelmValues": True,
        "retention": cfg["retention"][role],
        "storageSpec": {
            "volumeClaimTemplate": {
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": f"{cfg['storage_gib'][role]}Gi"}},
                }
            }
        },
    }
    prometheus: dict[str, Any] = {"prometheusSpec": spec}
    if ctx.is_hub:
        spec["enableRemoteWriteReceiver"] = True
        prometheus["ingress"] = {
            "enabled": True,
            "ingressClassName": rw["ingress_class"],
            "hosts": [remote_write_host(ctx)],
            "paths": [rw["path"]],
            "pathType": "Prefix",
            "annotations": {
                "nginx.ingress.kubernetes.io/auth-type": "basic",
                "nginx.ingress.kubernetes.io/auth-secret": rw["secret"],
                "nginx.ingress.kubernetes.io/proxy-body-size": "16m",
            },
            "tls": [{"secretName": "prometheus-receiver-tls", "hosts": [remote_write_host(ctx)]}],
        }
    else:
        spec["remoteWrite"] = [
            {
                "name": "hub",
                "url": remote_write_url(ctx),
                "basicAuth": {
                    "username": {"name": rw["secret"], "key": "username"},
                    "password": {"name": rw["secret"], "key": "password"},
                },
                "queueConfig": {"maxSamplesPerSend": 5000, "capacity": 20000},
            }
        ]
    dash = cfg["dashboards"]
    spec["image"] = _image("prometheus")
    return {
        "prometheus": prometheus,
        "alertmanager": {"enabled": True, "alertmanagerSpec": {"image": _image("alertmanager")}},
        "prometheusOperator": {
            "image": _image("operator"),
            "prometheusConfigReloader": {"image": _image("config-reloader")},
            "admissionWebhooks": {"patch": {"image": _image("webhook-certgen")}},
        },
        "kube-state-metrics": {"image": _image("kube-state-metrics")},
        "grafana": {
            "enabled": True,
            "sidecar": {
                "dashboards": {
                    "enabled": True,
                    "label": dash["label"],
                    "labelValue": dash["label_value"],
                    "folderAnnotation": "grafana_folder",
                    "provider": {"foldersFromFilesStructure": True},
                }
            },
        },
    }


def chart(ctx: SiteContext) -> Chart:
    c = ctx.cfg["chart"]
    return Chart(
        release=c["release"],
        chart=c["chart"],
        repository=c["repository"],
        version=c["version"],
        namespace=c["namespace"],
        values=values(ctx),
    )
