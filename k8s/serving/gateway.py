"""The LLM gateway of a site: LiteLLM proxy with a Valkey response cache.

Clients call one OpenAI-compatible endpoint per site; the gateway routes each
model name to that model's vLLM Service, answers repeated requests from the
cache (exact match, with a TTL, keyed per tenant) and records the prompts and
responses of the models that opted in to the site's bucket (S3 in AWS, MinIO
in a data centre) for the feedback loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gpufleet.errors import FleetError, Problem
from gpufleet.model import Fleet, Site
from gpufleet.schema import ServedModel
from k8s import versions
from k8s.serving.vllm import FLEET_FILE, SITE_LABEL, namespace_for, service_host

PLUGIN_FILE = Path(__file__).with_name("gpufleet_gateway.py")
CONFIG_DIR = "/etc/litellm"
# The gateway image runs as root (BerriAI/litellm Dockerfile, runtime stage:
# `USER root`, the proxy installed world-readable under /app/.venv, ENTRYPOINT
# docker/prod_entrypoint.sh, which execs `litellm "$@"`). It needs no root:
# the proxy writes only to the temporary directory (its Prometheus
# multiprocess folder, tempfile.gettempdir()/litellm_prometheus_multiproc),
# an emptyDir here. UID 65534 is the conventional unprivileged "nobody".
GATEWAY_UID = 65534
# The Valkey image's own user (valkey-io/valkey-container alpine Dockerfile:
# `addgroup -S -g 1000 valkey; adduser -S -G valkey -u 999 valkey`, data in
# /data). Its entrypoint drops root to that user; the container here starts
# valkey-server directly as that user instead.
VALKEY_UID, VALKEY_GID = 999, 1000


def vllm_key_env(namespace: str) -> str:
    """The gateway's environment variable holding the vLLM API key of ``namespace``."""
    return "VLLM_API_KEY_" + namespace.upper().replace("-", "_")


def feedback_target(fleet: Fleet, site: Site, cfg: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM's s3_callback_params for the site's feedback bucket (secrets by reference)."""
    f = cfg["feedback"]
    params: dict[str, Any] = {"s3_bucket_name": f["bucket"].format(fleet=fleet.name, site=site.name)}
    if site.is_aws:
        # The default AWS credential chain: the role associated with the
        # gateway's service account (EKS Pod Identity or IRSA). No keys.
        params["s3_region_name"] = site.region
    else:
        params["s3_region_name"] = f["minio_region"]
        params["s3_endpoint_url"] = f["minio_endpoint"].format(fleet=fleet.name, site=site.name)
        params["s3_aws_access_key_id"] = "os.environ/FEEDBACK_S3_ACCESS_KEY_ID"
        params["s3_aws_secret_access_key"] = "os.environ/FEEDBACK_S3_SECRET_ACCESS_KEY"
    return params


def feedback_policy(fleet: Fleet, site: Site, models: list[ServedModel], cfg: dict[str, Any]) -> dict[str, Any]:
    """Which models' answers the gateway at ``site`` records, and how."""
    out: dict[str, Any] = {}
    for i, m in ((fleet.models.index(m), m) for m in models):
        allowed = fleet.allowed_sites(m.data_class)
        if m.record_feedback and allowed is not None and site.name not in allowed:
            raise FleetError([Problem(FLEET_FILE, f"models[{i}].record_feedback", f"'{m.name}' holds '{m.data_class}' data, which may only be recorded at {', '.join(allowed)}, not at '{site.name}'")])
        out[m.name] = {
            "record_feedback": m.record_feedback,
            "pii": m.pii,
            "data_class": m.data_class,
            "allowed_sites": allowed,
        }
    return {"site": site.name, "prefix": cfg["feedback"]["prefix"], "models": out}


def litellm_config(fleet: Fleet, site: Site, models: list[ServedModel], cfg: dict[str, Any]) -> dict[str, Any]:
    """The proxy's config.yaml, as a mapping."""
    c = cfg["cache"]
    model_list = [
        {
            "model_name": m.name,
            "litellm_params": {
                # vLLM's OpenAI-compatible server, by its served model name.
                "model": f"hosted_vllm/{m.name}",
                "api_base": f"http://{service_host(m, cfg)}:{cfg['vllm']['port']}/v1",
                # vLLM refuses its API without this key (--api-key, k8s/serving/vllm.py).
                "api_key": f"os.environ/{vllm_key_env(namespace_for(m, cfg))}",
            },
            "model_info": {"gpufleet_record_feedback": m.record_feedback, "gpufleet_pii": m.pii, "gpufleet_data_class": m.data_class},
        }
        for m in models
    ]
    settings: dict[str, Any] = {
        "cache": True,
        "cache_params": {
            "type": "redis",
            "host": f"{c['name']}.{cfg['namespace']}.svc.cluster.local",
            "port": c["port"],
            "password": "os.environ/REDIS_PASSWORD",
            "ttl": c["ttl_s"],
            "mode": "default_on",
            "supported_call_types": ["completion", "acompletion", "text_completion", "atext_completion"],
        },
        "callbacks": ["gpufleet_gateway.tenant_cache", "prometheus"],
        "drop_params": False,
        # Token counts fall back to the bundled tiktoken encoding instead of
        # downloading a Hugging Face tokenizer: for a llama-3 model name LiteLLM
        # 1.103.0 fetches Xenova/llama-3-tokenizer from the hub on the first
        # token count (litellm/utils.py _select_tokenizer_helper), which a
        # failed request triggers; without internet that first request per
        # worker waited about 28 s for the hub's retries.
        "disable_hf_tokenizer_download": True,
    }
    if any(m.record_feedback for m in models):
        settings["callbacks"].append("gpufleet_gateway.feedback_recorder")
        settings["s3_callback_params"] = feedback_target(fleet, site, cfg)
    return {
        "model_list": model_list,
        "litellm_settings": settings,
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 2, "timeout": 600},
        "general_settings": {
            "master_key": "os.environ/LITELLM_MASTER_KEY",
            # Tenants without a database: the keys file (gpufleet_gateway.py).
            "custom_auth": "gpufleet_gateway.user_api_key_auth",
        },
    }


def _labels(name: str, component: str, site: Site, version: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "gpufleet",
        "app.kubernetes.io/managed-by": "gpufleet",
        "app.kubernetes.io/version": version,
        SITE_LABEL: site.name,
    }


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _restricted() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tenants(fleet: Fleet) -> dict[str, Any]:
    """The tenants the gateway knows: the fleet's teams (gpufleet_gateway.py reads it)."""
    return {"tenants": [t.name for t in fleet.teams]}


def serving_namespaces(models: list[ServedModel], cfg: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(namespace_for(m, cfg) for m in models))


def build_gateway(fleet: Fleet, site: Site, models: list[ServedModel], cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Objects and review files of the site's gateway and cache."""
    g, c = cfg["gateway"], cfg["cache"]
    ns = cfg["namespace"]
    conf = litellm_config(fleet, site, models, cfg)
    policy = feedback_policy(fleet, site, models, cfg)
    files = {
        "config.yaml": yaml.safe_dump(conf, sort_keys=False),
        "gpufleet_gateway.py": PLUGIN_FILE.read_text(encoding="utf-8"),
        "feedback-policy.json": json.dumps(policy, indent=2, sort_keys=True) + "\n",
        "tenants.json": json.dumps(tenants(fleet), indent=2) + "\n",
    }
    gw_labels = _labels(g["name"], "gateway", site, f"v{versions.LITELLM_VERSION}")
    gw_sel = {"app.kubernetes.io/name": g["name"]}
    cache_labels = _labels(c["name"], "cache", site, versions.VALKEY_VERSION)
    cache_sel = {"app.kubernetes.io/name": c["name"]}

    env = [
        _secret_env("LITELLM_MASTER_KEY", g["secret"], g["master_key_key"]),
        _secret_env("REDIS_PASSWORD", c["secret"], c["password_key"]),
        *(_secret_env(vllm_key_env(n), cfg["vllm"]["gateway_keys_secret"], n) for n in serving_namespaces(models, cfg)),
        {"name": "GPUFLEET_FEEDBACK_POLICY", "value": f"{CONFIG_DIR}/feedback-policy.json"},
        {"name": "GPUFLEET_TENANTS", "value": f"{CONFIG_DIR}/tenants.json"},
        {"name": "GPUFLEET_CLIENTS", "value": f"{g['keys_dir']}/{g['keys_file']}"},
        # Use the model price map shipped in the image; never fetch it at start.
        {"name": "LITELLM_LOCAL_MODEL_COST_MAP", "value": "True"},
        {"name": "LITELLM_TELEMETRY", "value": "False"},
        # Nothing from the Hugging Face hub (see disable_hf_tokenizer_download).
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        # UID 65534 has no home in the image; anything keyed to HOME lands in the emptyDir.
        {"name": "HOME", "value": "/tmp"},
    ]
    if not site.is_aws and "s3_callback_params" in conf["litellm_settings"]:
        f = cfg["feedback"]
        env += [
            _secret_env("FEEDBACK_S3_ACCESS_KEY_ID", f["minio_secret"], f["minio_access_key_key"]),
            _secret_env("FEEDBACK_S3_SECRET_ACCESS_KEY", f["minio_secret"], f["minio_secret_key_key"]),
        ]

    objs: list[dict[str, Any]] = [
        # Its own service account, so that an AWS site can give it the feedback
        # bucket's IAM role (EKS Pod Identity / IRSA inject their own token);
        # the gateway never calls the Kubernetes API, so no API token.
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": g["name"], "namespace": ns, "labels": gw_labels},
         "automountServiceAccountToken": False},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": g["name"], "namespace": ns, "labels": gw_labels},
            "data": dict(files),
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": g["name"], "namespace": ns, "labels": gw_labels},
            "spec": {
                "replicas": g["replicas"],
                "selector": {"matchLabels": gw_sel},
                "template": {
                    "metadata": {"labels": gw_labels},
                    "spec": {
                        "serviceAccountName": g["name"],
                        "automountServiceAccountToken": False,
                        "securityContext": {"runAsNonRoot": True, "runAsUser": GATEWAY_UID, "runAsGroup": GATEWAY_UID, "fsGroup": GATEWAY_UID,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "litellm",
                            "image": versions.LITELLM_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            # The image's entrypoint runs `litellm` with these arguments.
                            "args": ["--config", f"{CONFIG_DIR}/config.yaml", "--port", str(g["port"]), "--num_workers", str(g["num_workers"]),
                                     "--timeout_worker_healthcheck", str(g["worker_healthcheck_timeout_s"])],
                            "ports": [{"name": "http", "containerPort": g["port"], "protocol": "TCP"}],
                            "env": env,
                            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
                            "startupProbe": {"httpGet": {"path": "/health/liveliness", "port": "http"}, "periodSeconds": 5, "failureThreshold": 60},
                            "readinessProbe": {"httpGet": {"path": "/health/readiness", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5},
                            "livenessProbe": {"httpGet": {"path": "/health/liveliness", "port": "http"}, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3},
                            # Read-only root: the proxy writes only to /tmp (an emptyDir).
                            "securityContext": _restricted(),
                            "volumeMounts": [
                                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                                {"name": "keys", "mountPath": g["keys_dir"], "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": g["name"]}},
                            {"name": "keys", "secret": {"secretName": g["keys_secret"], "items": [{"key": g["keys_file"], "path": g["keys_file"]}]}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": g["name"], "namespace": ns, "labels": gw_labels},
            "spec": {"type": "ClusterIP", "selector": gw_sel, "ports": [{"name": "http", "port": g["port"], "targetPort": "http", "protocol": "TCP"}]},
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": g["name"], "namespace": ns, "labels": gw_labels},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": gw_sel}},
        },
        # --- the cache store ---------------------------------------------------
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": c["name"], "namespace": ns, "labels": cache_labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": cache_sel},
                "strategy": {"type": "Recreate"},
                "template": {
                    "metadata": {"labels": cache_labels},
                    "spec": {
                        "automountServiceAccountToken": False,  # Valkey never calls the Kubernetes API
                        "securityContext": {"runAsNonRoot": True, "runAsUser": VALKEY_UID, "runAsGroup": VALKEY_GID, "fsGroup": VALKEY_GID,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "valkey",
                            "image": versions.VALKEY_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["valkey-server"],
                            # A cache: bounded memory, least-recently-used eviction, no persistence.
                            "args": ["--port", str(c["port"]), "--requirepass", "$(VALKEY_PASSWORD)", "--maxmemory", c["max_memory"],
                                     "--maxmemory-policy", "allkeys-lru", "--save", "", "--appendonly", "no"],
                            "env": [_secret_env("VALKEY_PASSWORD", c["secret"], c["password_key"])],
                            "ports": [{"name": "redis", "containerPort": c["port"], "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": "250m", "memory": "2560Mi"}, "limits": {"memory": "2560Mi"}},
                            "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
                            "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 20, "failureThreshold": 3},
                            # Read-only root: Valkey's only writable path is its WORKDIR
                            # /data, and without persistence it writes nothing there.
                            "securityContext": _restricted(),
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": c["name"], "namespace": ns, "labels": cache_labels},
            "spec": {"type": "ClusterIP", "selector": cache_sel, "ports": [{"name": "redis", "port": c["port"], "targetPort": "redis", "protocol": "TCP"}]},
        },
        {
            # Only the gateway talks to the cache, and the cache talks to no one.
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": c["name"], "namespace": ns, "labels": cache_labels},
            "spec": {
                "podSelector": {"matchLabels": cache_sel},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": gw_sel}}], "ports": [{"port": "redis", "protocol": "TCP"}]}],
            },
        },
    ]
    return objs, files
