"""The AWS EFA device plugin, on EFA node pools only.

A p5 node's EFA interfaces become the ``vpc.amazonaws.com/efa`` resource that
the site's training runtime requests (:mod:`k8s.trainer`) only when the EFA
device plugin runs on it; without it those pods stay Pending. The plugin is a
DaemonSet in ``kube-system`` restricted to the site's EFA pools (node affinity
on ``gpufleet.io/pool``) and tolerating their taints, so it never lands on
serving or system nodes.

The shape follows aws/eks-charts stable/aws-efa-k8s-device-plugin (v0.5.30,
templates/daemonset.yaml): host network, the kubelet's device-plugin socket
directory and ``/dev/infiniband`` from the host, a privileged container (the
chart's default since it serves privileged instance types), node-critical
priority, no service-account token. The image is the one that chart pins,
from the site region's EKS registry (:mod:`k8s.versions`).
"""

from __future__ import annotations

from typing import Any

from gpufleet.model import Fleet, Site
from k8s import versions
from k8s.core import AddonBundle
from k8s.kueue import tolerations

NAMESPACE = "kube-system"
NAME = "aws-efa-k8s-device-plugin"
LABEL_SITE = "gpufleet.io/site"
LABEL_POOL = "gpufleet.io/pool"
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "gpufleet"}
GPU_TAINT = ("nvidia.com/gpu", "true", "NoSchedule")


def image(region: str) -> str:
    account = versions.EKS_ECR_ACCOUNTS.get(region, versions.EKS_ECR_ACCOUNT)
    ref = f"{account}.dkr.ecr.{region}.amazonaws.com/eks/aws-efa-k8s-device-plugin:{versions.EFA_DEVICE_PLUGIN_VERSION}"
    return f"{ref}@{versions.EFA_DEVICE_PLUGIN_DIGEST}" if versions.EFA_DEVICE_PLUGIN_DIGEST else ref


def efa_pools(site: Site) -> list:
    return [p for p in site.node_pools if p.efa]


def daemonset(site: Site) -> dict[str, Any]:
    pools = efa_pools(site)
    taints: list[tuple[str, str, str]] = []
    for pool in pools:
        pool_taints = [(t.key, t.value, t.effect) for t in pool.taints]
        if pool.accelerator and not any(t[0] == GPU_TAINT[0] for t in pool_taints):
            pool_taints.insert(0, GPU_TAINT)
        taints += [t for t in pool_taints if t not in taints]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "priorityClassName": "system-node-critical",
                    "hostNetwork": True,
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": LABEL_SITE, "operator": "In", "values": [site.name]},
                                            {"key": LABEL_POOL, "operator": "In", "values": sorted(p.name for p in pools)},
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, *tolerations(taints)],
                    "containers": [
                        {
                            "name": NAME,
                            "image": image(site.region),
                            "securityContext": {"privileged": True, "allowPrivilegeEscalation": True, "runAsUser": 0, "runAsNonRoot": False},
                            "resources": {"requests": {"cpu": "10m", "memory": "20Mi"}},
                            "volumeMounts": [
                                {"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"},
                                {"name": "infiniband", "mountPath": "/dev/infiniband"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}},
                        {"name": "infiniband", "hostPath": {"path": "/dev/infiniband"}},
                    ],
                },
            },
        },
    }


def build(fleet: Fleet, site: Site) -> AddonBundle | None:
    if not site.is_aws or not efa_pools(site):
        return None
    return AddonBundle("efa", objects=[daemonset(site)])
