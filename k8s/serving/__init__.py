"""The serving add-on: vLLM per model per site, and the site's LLM gateway.

``build(fleet, site)`` returns, for a site that serves at least one model:

* ``vllm``: the serving namespaces (one per data class served here, labelled
  for the residency policy), and per model a Deployment (or a LeaderWorkerSet
  when a replica spans nodes), Service, PodDisruptionBudget and queue-depth
  HorizontalPodAutoscaler, plus the pinned prometheus-adapter chart that
  serves the queue-depth metric to the autoscaler;
* ``llm-gateway``: LiteLLM proxy (routes, per-tenant response cache, feedback
  recording) and its Valkey cache store; its config files come along in
  ``files`` for review.

A site that serves no model gets no bundle. Problems in the fleet description
raise :class:`gpufleet.errors.FleetError` (``file: key: message`` lines).
"""

from __future__ import annotations

import json
from typing import Any

from gpufleet.errors import FleetError, Problem, did_you_mean
from gpufleet.model import Fleet, Site
from k8s.core import AddonBundle, Chart
from k8s import versions
from k8s.serving.config import CONFIG, merged
from k8s.serving.gateway import build_gateway, feedback_policy, litellm_config
from k8s.serving.vllm import FLEET_FILE, VLLM_QUANTIZATION, build_model, layout, namespaces

__all__ = ["build", "models_at", "CONFIG", "VLLM_QUANTIZATION", "layout", "litellm_config", "feedback_policy"]


def _site(fleet: Fleet, site: Site | str) -> Site:
    if isinstance(site, Site):
        return site
    if isinstance(site, str):
        try:
            return fleet.site(site)
        except KeyError:
            names = [s.name for s in fleet.sites]
            raise FleetError([Problem(FLEET_FILE, "sites", f"unknown site '{site}'{did_you_mean(site, names)}; sites: {', '.join(names)}")]) from None
    raise FleetError([Problem(FLEET_FILE, "sites", f"expected a site or a site name, not {type(site).__name__}")])


def models_at(fleet: Fleet, site: Site | str):
    """The models placed at ``site``, in fleet.yaml order."""
    name = _site(fleet, site).name
    return [m for m in fleet.models if name in m.sites]


def _adapter_chart(cfg: dict[str, Any]) -> Chart:
    metric = cfg["autoscaling"]["metric"]
    p = cfg["prometheus"]
    return Chart(
        release="prometheus-adapter",
        chart=versions.PROMETHEUS_ADAPTER_CHART,
        repository=versions.PROMETHEUS_ADAPTER_REPOSITORY,
        version=versions.PROMETHEUS_ADAPTER_CHART_VERSION,
        namespace=p["namespace"],
        values={
            "image": {"repository": versions.PROMETHEUS_ADAPTER_IMAGE[0],
                      "tag": versions.tag_at_digest(versions.PROMETHEUS_ADAPTER_IMAGE[1], versions.PROMETHEUS_ADAPTER_IMAGE[2])},
            "prometheus": {"url": p["url"], "port": p["port"]},
            "rules": {
                "default": False,
                "custom": [{
                    "seriesQuery": f'{metric}{{namespace!="",pod!=""}}',
                    "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
                    "name": {"matches": f"^{metric}$", "as": metric},
                    "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
                }],
            },
        },
    )


def model_store(fleet: Fleet, site: Site, cfg: dict[str, Any]) -> dict[str, Any]:
    """Where vLLM reads weights given as s3:// paths at ``site``: S3 itself at an
    AWS site (the default credential chain: the pod's role), the site's MinIO at
    a data centre (endpoint and keys from the Secret ``model_store.minio_secret``)."""
    ms = cfg["model_store"]
    if site.is_aws:
        return {"region": site.region}
    return {**ms, "endpoint": ms["minio_endpoint"].format(fleet=fleet.name, site=site.name)}


def build(fleet: Fleet, site: Site | str, config: dict[str, Any] | None = None) -> list[AddonBundle]:
    """The serving bundles of ``site`` (a Site or a site name)."""
    s = _site(fleet, site)
    cfg = merged(config)
    models = models_at(fleet, s)
    if not models:
        return []
    from gpufleet import facts

    cfg["_time_slicing_labels"] = facts.device_plugin_node_labels(fleet, s)
    cfg["_model_store"] = model_store(fleet, s, cfg)
    vllm_objs = namespaces(fleet, s, models, cfg)
    for m in models:
        vllm_objs += build_model(s, m, cfg, where=f"models[{fleet.models.index(m)}]")
    gw_objs, files = build_gateway(fleet, s, models, cfg)
    # Plain, unshared data: no object shares a sub-mapping with another, so
    # YAML output carries no anchors and one object's edit cannot leak.
    vllm_objs = json.loads(json.dumps(vllm_objs))
    gw_objs = json.loads(json.dumps(gw_objs))
    return [
        AddonBundle(name="vllm", objects=vllm_objs, charts=[_adapter_chart(cfg)]),
        AddonBundle(name="llm-gateway", objects=gw_objs, files=files),
    ]
