"""Apply add-on bundles to one site's cluster with pulumi-kubernetes.

Order, across all the site's bundles:

1. Namespaces (every add-on's, so charts and objects have somewhere to go).
2. Charts, each a ``helm.v3.Release`` at its exact pinned version.
3. Every other object, after all charts: the charts install the CRDs (Kueue,
   Trainer, JobSet, the GPU operator's) and the webhooks those objects need.

Charts are Helm releases rather than ``helm.v4.Chart`` because the GPU
operator's chart relies on Helm hooks (its CRD upgrade job) that only a real
release runs, because ``helm list``/``helm rollback`` then work on the
cluster as they would for a GitOps controller installing the same
``helm-releases.yaml``, and because a release is one reviewable resource
whose values diff in ``pulumi preview``.

Objects become one resource each: the typed pulumi-kubernetes class for
built-in kinds, a generic custom resource (:class:`CustomObject`) otherwise, so a
preview shows each object and its diff. Every resource gets the given
provider (the site's cluster) and parent.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from k8s.core import AddonBundle, Chart

# API groups whose kinds pulumi-kubernetes ships typed classes for: group -> module.
_TYPED_GROUPS = {
    "": "core",
    "apps": "apps",
    "batch": "batch",
    "policy": "policy",
    "autoscaling": "autoscaling",
    "networking.k8s.io": "networking",
    "rbac.authorization.k8s.io": "rbac",
    "admissionregistration.k8s.io": "admissionregistration",
    "scheduling.k8s.io": "scheduling",
    "storage.k8s.io": "storage",
    "node.k8s.io": "node",
    "coordination.k8s.io": "coordination",
    "discovery.k8s.io": "discovery",
    "certificates.k8s.io": "certificates",
}
_EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


class DeployError(ValueError):
    """A bundle that cannot be applied as given (``where: what``)."""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def resource_name(obj: dict[str, Any]) -> str:
    """A Pulumi resource name unique per object in a cluster."""
    meta = obj.get("metadata") or {}
    group = obj["apiVersion"].rpartition("/")[0] or "core"
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{group}:{obj['kind']}:{ns}{meta.get('name')}"


def _typed_class(api_version: str, kind: str):
    group, _, version = api_version.rpartition("/")
    package = _TYPED_GROUPS.get(group)
    if package is None:
        return None
    try:
        module = importlib.import_module(f"pulumi_kubernetes.{package}.{version}")
    except ImportError:
        return None
    return getattr(module, kind, None)


def apply_object(obj: dict[str, Any], name: str, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """One Kubernetes object as a Pulumi resource."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version or not kind or not (obj.get("metadata") or {}).get("name"):
        raise DeployError(f"{name}: an object needs apiVersion, kind and metadata.name")
    rest = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    cls = _typed_class(api_version, kind)
    if cls is not None:
        return cls(name, opts=opts, metadata=obj["metadata"], **{_snake(k): v for k, v in rest.items()})
    return CustomObject(name, obj, opts)


class CustomObject(pulumi.CustomResource):
    """A custom resource with any top-level fields (``apiextensions.CustomResource``
    carries only ``spec``; a WorkloadPriorityClass, for one, has ``value``)."""

    def __init__(self, name: str, obj: dict[str, Any], opts: pulumi.ResourceOptions):
        from pulumi_kubernetes import _utilities

        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(version=_utilities.get_version()))
        super().__init__(f"kubernetes:{obj['apiVersion']}:{obj['kind']}", name, dict(obj), opts)


def check_chart(chart: Chart, where: str) -> None:
    if not _EXACT_VERSION.match(chart.version or ""):
        raise DeployError(f"{where}: chart {chart.chart} version '{chart.version}' is not an exact version (no ranges)")
    if not chart.repository:
        raise DeployError(f"{where}: chart {chart.chart} has no repository")


def release(chart: Chart, name: str, opts: pulumi.ResourceOptions) -> k8s.helm.v3.Release:
    if chart.repository.startswith("oci://"):
        source: dict[str, Any] = {"chart": f"{chart.repository.rstrip('/')}/{chart.chart}"}
    else:
        source = {"chart": chart.chart, "repository_opts": k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository)}
    return k8s.helm.v3.Release(
        name,
        name=chart.release,
        version=chart.version,
        namespace=chart.namespace,
        create_namespace=False,  # declared as objects, applied first
        values=chart.values,
        atomic=False,
        cleanup_on_fail=True,
        timeout=900,
        opts=opts,
        **source,
    )


def deploy_bundles(
    bundles: Iterable[AddonBundle],
    provider: pulumi.ProviderResource,
    parent: pulumi.Resource | None = None,
    prefix: str = "",
) -> list[pulumi.Resource]:
    """Apply ``bundles`` through ``provider``: namespaces, then charts, then objects.

    ``prefix`` (for example the site's name) keeps resource names unique when
    one program applies several sites' bundles.
    """
    bundles = [b for b in bundles if b is not None]
    seen: dict[str, str] = {}
    namespaces: list[tuple[str, dict[str, Any]]] = []
    others: list[tuple[str, dict[str, Any]]] = []
    charts: list[tuple[str, Chart]] = []
    for bundle in bundles:
        for i, chart in enumerate(bundle.charts):
            check_chart(chart, f"{bundle.name}.charts[{i}]")
            charts.append((f"{prefix}helm:{chart.namespace}/{chart.release}", chart))
        for i, obj in enumerate(bundle.objects):
            if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
                raise DeployError(f"{bundle.name}.objects[{i}]: not a Kubernetes object")
            name = prefix + resource_name(obj)
            if name in seen:
                raise DeployError(f"{bundle.name}.objects[{i}]: {name} is also declared by the {seen[name]} add-on")
            seen[name] = bundle.name
            (namespaces if obj["apiVersion"] == "v1" and obj["kind"] == "Namespace" else others).append((name, obj))
    released = {n for n, _ in charts}
    if len(released) != len(charts):
        raise DeployError("two charts share a release name and namespace")

    def opts(depends_on: list[pulumi.Resource]) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(provider=provider, parent=parent, depends_on=depends_on)

    out: list[pulumi.Resource] = []
    ns_resources = [apply_object(obj, name, opts([])) for name, obj in namespaces]
    out += ns_resources
    chart_resources = [release(chart, name, opts(ns_resources)) for name, chart in charts]
    out += chart_resources
    out += [apply_object(obj, name, opts([*ns_resources, *chart_resources])) for name, obj in others]
    return out
