"""cluster-autoscaler at every AWS site: how a cloud pool at zero gets nodes.

Why cluster-autoscaler and not Karpenter: the pools are EKS managed node groups
(cloud/nodepools.py explains why: capacity blocks and reservations live in the
launch template, the bounds are the model's quota), and cluster-autoscaler is
the autoscaler that drives managed node groups, through their Auto Scaling
groups. Karpenter launches instances itself and would bypass the node groups.

How burst capacity appears: the site's Kueue admits a training job against
quota only (cloud flavors are not Topology Aware Scheduling flavors,
:mod:`k8s.kueue`), so its pods are created and stay Pending for want of a
node. cluster-autoscaler sees them, simulates each node group's template node
(labels, taints and the GPU and EFA resources from the group's
``node-template`` tags, see :func:`cloud.nodepools.autoscaler_template_tags`),
picks a group the pods fit (expander ``least-waste``) and raises its desired
capacity, never past ``maxSize``. Nodes that stay idle are removed after the
scale-down delay, down to ``minSize``.

Capacity blocks: the pool's launch template targets the block
(cloud/nodepools.py), so instances can start only while the block is active.
Inside the window cluster-autoscaler grows the pool on demand like any other;
outside it the launch fails, cluster-autoscaler backs the group off
(``--max-node-provision-time``) and the pods wait (the job stays pending at
the site; on-prem-first dispatch has already left the other sites
nominated). Scaling the pool to zero 30 minutes before the block ends (the
AWS guidance) is a scheduled action on the group that gpufleet does not
render: the block's dates are not in the fleet model.

Rendered here: the ServiceAccount ``kube-system/cluster-autoscaler`` (its AWS
role comes from the EKS pod identity association in cloud/cluster.py), the
RBAC cluster-autoscaler's own example grants
(cloudprovider/aws/examples/cluster-autoscaler-autodiscover.yaml), and the
Deployment (image pinned in :mod:`k8s.versions`; ``AWS_REGION`` is set because
pods cannot reach the instance metadata service, IMDS hop limit 1).
"""

from __future__ import annotations

from typing import Any

from gpufleet.model import Fleet, Site
from k8s import versions
from k8s.core import AddonBundle

NAMESPACE = "kube-system"
NAME = "cluster-autoscaler"  # also the pod identity association's ServiceAccount (cloud/cluster.py)
METRICS_PORT = 8085
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "gpufleet"}
# Knobs, each with the reason it differs from cluster-autoscaler's default.
ARGS = (
    "--cloud-provider=aws",
    # GPU pools differ in price per node; fill the group that leaves the least idle.
    "--expander=least-waste",
    # A training pod's scratch emptyDir must not pin a node forever.
    "--skip-nodes-with-local-storage=false",
    # p5 nodes take long to boot and join (EFA, NVIDIA AMI): wait before giving up on a group.
    "--max-node-provision-time=25m",
    # Idle GPUs are expensive: give a finished job's node back after 10 minutes.
    "--scale-down-unneeded-time=10m",
    "--balance-similar-node-groups=false",
    "--stderrthreshold=info",
    "--v=2",
)


def cluster_name(fleet: Fleet, site: Site) -> str:
    from cloud.program import cluster_name as name

    return name(fleet, site)


def args(fleet: Fleet, site: Site) -> list[str]:
    from cloud.nodepools import CA_TAG_ENABLED, CA_TAG_PREFIX

    return [
        *ARGS,
        f"--node-group-auto-discovery=asg:tag={CA_TAG_ENABLED},{CA_TAG_PREFIX}{cluster_name(fleet, site)}",
        f"--address=:{METRICS_PORT}",
    ]


def _meta(name: str, namespace: str | None = NAMESPACE) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def cluster_role_rules() -> list[dict[str, Any]]:
    read = ["get", "list", "watch"]
    return [
        {"apiGroups": [""], "resources": ["events", "endpoints"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["endpoints"], "resourceNames": [NAME], "verbs": ["get", "update"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "update"]},
        {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "replicationcontrollers", "persistentvolumeclaims", "persistentvolumes"], "verbs": read},
        {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments", "replicasets", "statefulsets"], "verbs": read},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": read},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list", "watch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses", "csinodes", "csidrivers", "csistoragecapacities", "volumeattachments"], "verbs": read},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [NAME], "verbs": ["get", "update"]},
    ]


def objects(fleet: Fleet, site: Site) -> list[dict[str, Any]]:
    container = {
        "name": NAME,
        "image": versions.CLUSTER_AUTOSCALER_IMAGE,
        "command": ["./cluster-autoscaler", *args(fleet, site)],
        "env": [{"name": "AWS_REGION", "value": site.region}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "livenessProbe": {"httpGet": {"path": "/health-check", "port": "metrics"}, "periodSeconds": 30},
        "resources": {"requests": {"cpu": "100m", "memory": "600Mi"}, "limits": {"memory": "600Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(NAME, None), "rules": cluster_role_rules()},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(NAME, None),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(NAME),
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "list", "watch"]},
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-autoscaler-status"], "verbs": ["delete", "get", "update", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(NAME),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(NAME),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "template": {
                    "metadata": {"labels": dict(LABELS)},
                    "spec": {
                        "serviceAccountName": NAME,
                        "priorityClassName": "system-cluster-critical",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "fsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [container],
                    },
                },
            },
        },
    ]


def build(fleet: Fleet, site: Site) -> AddonBundle | None:
    if not site.is_aws:
        return None
    return AddonBundle("autoscaler", objects=objects(fleet, site))
