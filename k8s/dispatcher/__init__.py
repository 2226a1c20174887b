"""The on-prem-first dispatcher: how it is deployed at the hub and read at the workers.

The controller itself is :mod:`k8s.dispatcher.controller` (Python standard
library only; see its docstring for the rule and Kueue's contract). gpufleet
deploys it without an image of its own: its source goes into a ConfigMap, and
a Deployment runs it with the stock Python image pinned by digest in
:mod:`k8s.versions` (``DISPATCHER_PYTHON_IMAGE``). A change to the controller
changes the ConfigMap and the pod template's checksum annotation, so the
Deployment rolls.

At the hub (namespace ``kueue-system``, beside Kueue): the ConfigMap, the
Deployment (one replica, ``Recreate``: never two writers), a ServiceAccount,
a ClusterRole to read Workloads, AdmissionChecks, MultiKueueConfigs and
MultiKueueClusters, apply Workload status and record Events, and a Role that
may read only the worker Secrets ``gpufleet-dispatcher-<site>``.

At every worker a queue dispatches to: the ServiceAccount
``gpufleet-dispatcher-reader`` in ``kueue-system``, a ClusterRole that may
only get, list and watch Workloads, and a token Secret for it
(``gpufleet-dispatcher-reader-token``, filled by the worker's token
controller). Copy its ``token`` and ``ca.crt``, with the worker's API URL as
``server``, into the hub Secret ``gpufleet-dispatcher-<site>`` (README,
"Deploying for real"). gpufleet renders no secret values.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from gpufleet.model import Fleet, Site
from k8s import versions
from k8s.core import AddonBundle
from k8s.dispatcher.controller import NAME, READER, SECRET_PREFIX

__all__ = ["NAME", "build", "hub_objects", "worker_objects", "secret_name"]

NAMESPACE = "kueue-system"  # Kueue's; the worker kubeconfig Secrets live here too
APP = "gpufleet-dispatcher"
SOURCE = Path(__file__).with_name("controller.py")
MOUNT = "/opt/gpufleet"
HEALTH_PORT = 8081
INTERVAL_SECONDS = 5
READER_TOKEN = f"{READER}-token"
LABELS = {"app.kubernetes.io/name": APP, "app.kubernetes.io/part-of": "gpufleet"}


def secret_name(site: str) -> str:
    """The hub Secret (keys ``server``, ``ca.crt``, ``token``) the dispatcher reads ``site`` with."""
    return f"{SECRET_PREFIX}{site}"


def _meta(name: str, namespace: str | None = NAMESPACE, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespace:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def source() -> str:
    return SOURCE.read_text()


def hub_objects(fleet: Fleet) -> list[dict[str, Any]]:
    from k8s.multikueue import dispatch_sites

    sites = dispatch_sites(fleet)
    if not sites:
        return []
    code = source()
    digest = hashlib.sha256(code.encode()).hexdigest()
    container = {
        "name": "dispatcher",
        "image": versions.DISPATCHER_PYTHON_IMAGE,
        "command": ["python3", "-u", f"{MOUNT}/controller.py", "--namespace", NAMESPACE, "--interval", str(INTERVAL_SECONDS), "--health-addr", f":{HEALTH_PORT}"],
        "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 30, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "20m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "controller", "mountPath": MOUNT, "readOnly": True}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(APP)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(APP, None),
            "rules": [
                {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads", "admissionchecks", "multikueueconfigs", "multikueueclusters"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads/status"], "verbs": ["patch"]},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(APP, None),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": APP},
            "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(APP),
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret_name(s) for s in sites], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(APP),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": APP},
            "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": NAMESPACE}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(APP), "data": {"controller.py": code}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(APP),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/name": APP}},
                "template": {
                    "metadata": {"labels": dict(LABELS), "annotations": {"gpufleet.io/controller-sha256": digest}},
                    "spec": {
                        "serviceAccountName": APP,
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [container],
                        "volumes": [{"name": "controller", "configMap": {"name": APP}}],
                    },
                },
            },
        },
    ]


def worker_objects() -> list[dict[str, Any]]:
    """What a worker needs so that the hub's dispatcher can read its Workloads."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(READER)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(READER, None),
            "rules": [{"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(READER, None),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": READER},
            "subjects": [{"kind": "ServiceAccount", "name": READER, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": _meta(READER_TOKEN, annotations={"kubernetes.io/service-account.name": READER}),
        },
    ]


def build(fleet: Fleet, site: Site) -> AddonBundle | None:
    from k8s.multikueue import dispatch_sites

    if site.name == fleet.hub:
        objs = hub_objects(fleet)
    elif site.name in dispatch_sites(fleet):
        objs = worker_objects()
    else:
        objs = []
    return AddonBundle("dispatcher", objects=objs) if objs else None
