"""Monitoring and alerting add-on: one bundle per site.

``build(fleet, site)`` returns the site's kube-prometheus-stack chart (pinned),
its Namespace, the scrape monitors (dcgm-exporter, vLLM, the LLM gateway,
Kueue), the gpufleet PrometheusRule, the Grafana dashboards as ConfigMaps, the
dcgm-exporter counters ConfigMap (sites with GPUs) and, as a review file, the rendered
rule groups (their promtool unit tests are test code: tests/monitoring/rule_tests.py).

Every threshold, selector, version and price lives in :mod:`.config`.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..core import AddonBundle
from . import dashboards, dcgm, rules, scrape, stack
from .config import CONFIG, merged
from .context import FleetLike, SiteContext, SiteLike, site_context

__all__ = ["CONFIG", "FleetLike", "SiteLike", "build", "context", "RULES_FILE"]

RULES_FILE = "gpufleet-rules.yaml"


def context(fleet: FleetLike, site: SiteLike | str, config: dict[str, Any] | None = None) -> SiteContext:
    """The per-site view the builders work from (config merged over CONFIG)."""
    return site_context(fleet, site, merged(config))


def _namespace(ctx: SiteContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ctx.namespace,
            # node-exporter needs the host's network, PID namespace and paths.
            "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
        },
    }


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)


def build(fleet: FleetLike, site: SiteLike | str, config: dict[str, Any] | None = None) -> list[AddonBundle]:
    """The monitoring add-on for one site of the fleet.

    ``site`` is a site object or its name; ``config`` overrides keys of
    :data:`CONFIG`.
    """
    ctx = context(fleet, site, config)
    rule = rules.prometheus_rule(ctx)
    objects: list[dict[str, Any]] = [_namespace(ctx), *scrape.monitors(ctx), rule, *dashboards.configmaps(ctx)]
    if ctx.has_gpus:
        # Where the GPU operator runs (sites with GPUs): its ClusterPolicy
        # names this ConfigMap (k8s/gpu_operator.py).
        objects.append(dcgm.counters_configmap(ctx.cfg["targets"]["dcgm"]["namespace"]))
    files = {RULES_FILE: _dump(rule["spec"])}
    return [AddonBundle(name="monitoring", objects=objects, charts=[stack.chart(ctx)], files=files)]
