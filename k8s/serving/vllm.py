"""vLLM workloads: one per served model per site.

A replica whose GPUs fit on one node of the site is a Deployment; one that
needs more GPUs than any node there carries becomes a LeaderWorkerSet group
(tensor parallel inside a node, pipeline parallel across nodes, Ray between
them). Each model also gets a Service, a PodDisruptionBudget and a
HorizontalPodAutoscaler on its request queue depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpufleet.errors import FleetError, Problem
from gpufleet.model import Fleet, Site, model_weights_gib
from gpufleet.schema import ServedModel
from k8s import versions

FLEET_FILE = "stacks/fleet.yaml"

# The fleet's quantization names -> vLLM's --quantization values.
# awq and gptq use the Marlin kernels, which vLLM recommends over its plain AWQ
# and GPTQ kernels on GPUs of compute capability 8.0 and newer (every
# accelerator in gpufleet's catalogue: A100, A10G, L4, L40S, H100, H200).
# int8 means an INT8 W8A8 checkpoint made with llm-compressor, which vLLM loads
# with its compressed-tensors method. "none" passes no flag.
VLLM_QUANTIZATION = {"fp8": "fp8", "awq": "awq_marlin", "gptq": "gptq_marlin", "int8": "compressed-tensors"}

SITE_LABEL = "gpufleet.io/site"
ACCELERATOR_LABEL = "gpufleet.io/accelerator"
DATA_CLASS_LABEL = "gpufleet.io/data-class"
MODEL_LABEL = "gpufleet.io/model"
LWS_ROLE_LABEL = "gpufleet.io/lws-role"
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
RAY_PORT = 6379


@dataclass(frozen=True)
class Layout:
    """How one replica's GPUs are spread over pods."""

    tensor_parallel: int  # GPUs per pod (1 on a MIG slice)
    pipeline_parallel: int  # pods (nodes) per replica
    mig_profile: str | None = None

    @property
    def multi_node(self) -> bool:
        return self.pipeline_parallel > 1


def namespace_for(model: ServedModel, cfg: dict[str, Any]) -> str:
    if model.data_class:
        return cfg["regulated_namespace"].format(data_class=model.data_class)
    return cfg["namespace"]


def workload_name(model: ServedModel) -> str:
    return f"vllm-{model.name}"


def service_host(model: ServedModel, cfg: dict[str, Any]) -> str:
    return f"{workload_name(model)}.{namespace_for(model, cfg)}.svc.cluster.local"


def gpus_per_node(site: Site, accelerator: str) -> int:
    """The most whole GPUs of ``accelerator`` one node at ``site`` offers."""
    best = 0
    for pool in site.node_pools:
        if pool.accelerator == accelerator:
            best = max(best, pool.gpus_per_node)
    for server in site.servers:
        if server.spec.accelerator == accelerator:
            best = max(best, server.whole_gpus)
    return best


def layout(model: ServedModel, site: Site, where: str = "") -> Layout:
    """Tensor and pipeline parallel sizes of one replica of ``model`` at ``site``."""
    p = model.placement
    if p.mig_profile:
        return Layout(1, 1, p.mig_profile)
    per_node = gpus_per_node(site, p.accelerator)
    if per_node == 0:
        raise FleetError([Problem(FLEET_FILE, where, f"site '{site.name}' has no node with whole {p.accelerator} GPUs to serve '{model.name}'")])
    if p.gpus <= per_node:
        return Layout(p.gpus, 1)
    # Largest power-of-two tensor-parallel size a node holds that divides the
    # replica's GPUs (attention heads split evenly only by powers of two in
    # common models); the rest is pipeline parallel across nodes.
    tp = max(d for d in range(1, per_node + 1) if p.gpus % d == 0 and d & (d - 1) == 0)
    return Layout(tp, p.gpus // tp)


def vllm_args(model: ServedModel, lay: Layout, cfg: dict[str, Any]) -> list[str]:
    """The vLLM OpenAI server's arguments for ``model``."""
    v = cfg["vllm"]
    util = v["gpu_memory_utilization"] / (model.time_slicing or 1)
    args = [
        "--model", model.source,
        "--served-model-name", model.name,
        "--host", "0.0.0.0",
        "--port", str(v["port"]),
    ]
    if model.quantization != "none":
        args += ["--quantization", VLLM_QUANTIZATION[model.quantization]]
    if model.from_object_store:
        args += ["--load-format", "runai_streamer"]
    args += ["--tensor-parallel-size", str(lay.tensor_parallel)]
    if lay.multi_node:
        args += ["--pipeline-parallel-size", str(lay.pipeline_parallel), "--distributed-executor-backend", "ray"]
    args.append("--enable-prefix-caching" if model.prefix_caching else "--no-enable-prefix-caching")
    args += [
        "--kv-cache-dtype", model.kv_cache_dtype,
        "--max-model-len", str(model.context_length),
        "--gpu-memory-utilization", f"{util:.2f}".rstrip("0").rstrip("."),
    ]
    return args


def labels(model: ServedModel, site: Site) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": model.name,
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "gpufleet",
        "app.kubernetes.io/managed-by": "gpufleet",
        "app.kubernetes.io/version": versions.VLLM_VERSION,
        MODEL_LABEL: model.name,
        SITE_LABEL: site.name,
    }
    if model.data_class:
        out[DATA_CLASS_LABEL] = model.data_class
    return out


def selector(model: ServedModel) -> dict[str, str]:
    return {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": model.name}


def _tolerations(model: ServedModel, site: Site) -> list[dict[str, Any]]:
    out = [dict(GPU_TAINT)]
    seen = {("nvidia.com/gpu", "NoSchedule")}
    acc = model.placement.accelerator
    for pool in site.node_pools:
        if pool.accelerator != acc:
            continue
        for t in pool.taints:
            if (t.key, t.effect) not in seen:
                seen.add((t.key, t.effect))
                tol = {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect} if t.value else {"key": t.key, "operator": "Exists", "effect": t.effect}
                out.append(tol)
    for server in site.servers:
        if server.spec.accelerator != acc:
            continue
        for raw in server.spec.node_taints:  # key[=value]:Effect, as kubeadm takes them
            kv, _, effect = raw.rpartition(":")
            key, _, value = kv.partition("=")
            if key and effect and (key, effect) not in seen:
                seen.add((key, effect))
                out.append({"key": key, "operator": "Equal", "value": value, "effect": effect} if value else {"key": key, "operator": "Exists", "effect": effect})
    return out


def _gpu_resources(model: ServedModel, lay: Layout, cfg: dict[str, Any]) -> dict[str, Any]:
    v = cfg["vllm"]
    weights = model_weights_gib(model) / lay.pipeline_parallel
    memory = math.ceil(weights + v["memory_headroom_gib"])
    if lay.mig_profile:
        gpu = {f"nvidia.com/mig-{lay.mig_profile}": 1}
        cpu = v["mig_cpus"]
    else:
        gpu = {"nvidia.com/gpu": lay.tensor_parallel}
        cpu = v["cpus_per_gpu"] * lay.tensor_parallel
    return {
        "requests": {"cpu": str(cpu), "memory": f"{memory}Gi", **gpu},
        "limits": {"memory": f"{memory}Gi", **gpu},
    }


def _cache_size_gib(model: ServedModel) -> int:
    # Room for the checkpoint as published (up to 16-bit weights, when vLLM
    # quantizes at load time) plus tokenizer and config files.
    return math.ceil(model.parameters_b * 1e9 * 2 / 2**30 * 1.1 + 10)


def _volumes(model: ServedModel, lay: Layout, cfg: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """The only writable paths of a vLLM container (its root filesystem is read-only).

    vLLM v0.24.0's image leaves HF_HOME, VLLM_CACHE_ROOT, TRITON_CACHE_DIR and
    the other cache settings unset so that they resolve under $HOME/.cache
    (docker/Dockerfile, vllm-openai-nonroot stage); torch's compile cache and
    Ray's session files go to /tmp. HOME is an emptyDir, the Hugging Face cache
    inside it one sized for the weights, /dev/shm one in memory for NCCL.
    """
    v = cfg["vllm"]
    shm = max(1, v["shm_gib_per_gpu"] * lay.tensor_parallel)
    volumes = [
        {"name": "model-cache", "emptyDir": {"sizeLimit": f"{_cache_size_gib(model)}Gi"}},
        {"name": "home", "emptyDir": {"sizeLimit": "20Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm}Gi"}},
    ]
    mounts = [
        {"name": "home", "mountPath": v["home"]},
        {"name": "model-cache", "mountPath": f"{v['home']}/.cache/huggingface"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    return volumes, mounts


def _store_env(store: dict[str, Any]) -> list[dict[str, Any]]:
    """The model streamer's S3 settings (the AWS SDK's variables): S3 with the
    pod's role at an AWS site; the site's MinIO, path-style, with keys at a data centre."""
    if "endpoint" not in store:
        return [{"name": "AWS_REGION", "value": store["region"]}]

    def secret(key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": store["minio_secret"], "key": store[key]}}

    return [
        {"name": "AWS_ENDPOINT_URL", "value": store["endpoint"]},
        {"name": "AWS_REGION", "value": store["minio_region"]},
        {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
        {"name": "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING", "value": "0"},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": secret("minio_access_key_key")},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": secret("minio_secret_key_key")},
    ]


def _env(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    v = cfg["vllm"]
    hf, key = v["hf_token_secret"], v["api_key_secret"]
    return [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": hf["name"], "key": hf["key"], "optional": True}}},
        # vLLM's --api-key from the environment (vllm/envs.py VLLM_API_KEY): the
        # OpenAI API answers only requests that carry it; /health and /metrics
        # stay open for the probes and Prometheus.
        {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": key["name"], "key": key["key"]}}},
        {"name": "HOME", "value": v["home"]},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]


def _probes(model: ServedModel, cfg: dict[str, Any]) -> dict[str, Any]:
    v = cfg["vllm"]
    startup_s = v["startup_base_s"] + v["startup_s_per_b_params"] * model.parameters_b
    health = {"path": "/health", "port": "http"}
    return {
        "startupProbe": {"httpGet": health, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": math.ceil(startup_s / 10)},
        "readinessProbe": {"httpGet": health, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": health, "periodSeconds": 20, "timeoutSeconds": 10, "failureThreshold": 6},
    }


def _security(cfg: dict[str, Any]) -> dict[str, Any]:
    # The image's `vllm` user, UID 2000 in group 0, which its caches and HOME
    # are writable for (docker/Dockerfile at v0.24.0); the default image keeps
    # USER root only so that derived images can still install packages.
    v = cfg["vllm"]
    return {
        "runAsNonRoot": True,
        "runAsUser": v["uid"],
        "runAsGroup": v["gid"],
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_spec(model: ServedModel, site: Site, lay: Layout, cfg: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    volumes, mounts = _volumes(model, lay, cfg)
    container = {**container, "volumeMounts": mounts, "securityContext": _security(cfg)}
    if model.from_object_store:
        container["env"] = container["env"] + _store_env(cfg["_model_store"])
    selector = {ACCELERATOR_LABEL: model.placement.accelerator, SITE_LABEL: site.name}
    if model.time_slicing and not lay.mig_profile:
        # The nodes whose device plugin shares each GPU (the GPU operator add-on labels them).
        selector.update(cfg.get("_time_slicing_labels", {}).get(model.placement.accelerator, {}))
    return {
        "nodeSelector": selector,
        "tolerations": _tolerations(model, site),
        "terminationGracePeriodSeconds": 120,
        "enableServiceLinks": False,
        # vLLM and Ray never call the Kubernetes API (the LWS controller injects
        # the group's addresses as environment variables).
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }


def _server_container(model: ServedModel, lay: Layout, cfg: dict[str, Any]) -> dict[str, Any]:
    v = cfg["vllm"]
    return {
        "name": "vllm",
        "image": versions.VLLM_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": vllm_args(model, lay, cfg),
        "ports": [{"name": "http", "containerPort": v["port"], "protocol": "TCP"}],
        "env": _env(cfg),
        "resources": _gpu_resources(model, lay, cfg),
        **_probes(model, cfg),
    }


def _leader_container(model: ServedModel, lay: Layout, cfg: dict[str, Any]) -> dict[str, Any]:
    """The group leader: Ray head, waits for its workers, then serves."""
    c = _server_container(model, lay, cfg)
    serve = " ".join(_shell_quote(a) for a in ["python3", "-m", "vllm.entrypoints.openai.api_server", *c["args"]])
    wait = (
        "import ray, sys, time\n"
        "ray.init(address='auto')\n"
        "want = int(sys.argv[1])\n"
        "while sum(1 for n in ray.nodes() if n['Alive']) < want:\n"
        "    time.sleep(5)\n"
    )
    script = (
        f"set -e\nray start --head --port={RAY_PORT} --num-gpus={lay.tensor_parallel}\n"
        f"python3 -c {_shell_quote(wait)} \"${{LWS_GROUP_SIZE}}\"\nexec {serve}\n"
    )
    c["command"] = ["/bin/bash", "-c", script]
    c.pop("args")
    c["ports"].append({"name": "ray", "containerPort": RAY_PORT, "protocol": "TCP"})
    return c


def _worker_container(model: ServedModel, lay: Layout, cfg: dict[str, Any]) -> dict[str, Any]:
    script = f"set -e\nexec ray start --address=\"${{LWS_LEADER_ADDRESS}}:{RAY_PORT}\" --num-gpus={lay.tensor_parallel} --block\n"
    return {
        "name": "vllm-worker",
        "image": versions.VLLM_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/bash", "-c", script],
        "env": _env(cfg),
        "resources": _gpu_resources(model, lay, cfg),
    }


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _meta(name: str, namespace: str, lab: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(lab)}


def max_replicas(model: ServedModel, site: Site, cfg: dict[str, Any]) -> int:
    """Autoscaler ceiling: a multiple of the model's replicas at the site, capped by the site's hardware."""
    p = model.placement
    replicas = model.replicas_for(site.name)
    if p.mig_profile:
        room = site.mig_capacity()[(p.accelerator, p.mig_profile)]
    else:
        room = site.gpu_capacity()[p.accelerator] // p.gpus * (model.time_slicing or 1)
    return max(replicas, min(replicas * cfg["autoscaling"]["max_factor"], room))


def build_model(site: Site, model: ServedModel, cfg: dict[str, Any], where: str = "") -> list[dict[str, Any]]:
    """Every object that serves ``model`` at ``site``."""
    lay = layout(model, site, where)
    ns = namespace_for(model, cfg)
    name = workload_name(model)
    lab = labels(model, site)
    sel = selector(model)
    replicas = model.replicas_for(site.name)  # replicas_at[site], else replicas
    objs: list[dict[str, Any]] = []

    if not lay.multi_node:
        container = _server_container(model, lay, cfg)
        workload = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(name, ns, lab),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": sel},
                # GPUs are the scarce resource: replace a replica in place
                # rather than waiting for a spare GPU to surge into.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                "template": {"metadata": {"labels": lab}, "spec": _pod_spec(model, site, lay, cfg, container)},
            },
        }
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        service_selector = sel
    else:
        leader_labels = {**lab, LWS_ROLE_LABEL: "leader"}
        worker_labels = {**lab, LWS_ROLE_LABEL: "worker"}
        workload = {
            "apiVersion": versions.LWS_API_VERSION,
            "kind": "LeaderWorkerSet",
            "metadata": _meta(name, ns, lab),
            "spec": {
                "replicas": replicas,
                "startupPolicy": "LeaderCreated",
                "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdateConfiguration": {"maxSurge": 0, "maxUnavailable": 1}},
                "leaderWorkerTemplate": {
                    "size": lay.pipeline_parallel,
                    "restartPolicy": "RecreateGroupOnPodRestart",
                    "leaderTemplate": {"metadata": {"labels": leader_labels}, "spec": _pod_spec(model, site, lay, cfg, _leader_container(model, lay, cfg))},
                    "workerTemplate": {"metadata": {"labels": worker_labels}, "spec": _pod_spec(model, site, lay, cfg, _worker_container(model, lay, cfg))},
                },
            },
        }
        target = {"apiVersion": versions.LWS_API_VERSION, "kind": "LeaderWorkerSet", "name": name}
        service_selector = {**sel, LWS_ROLE_LABEL: "leader"}
    objs.append(workload)

    objs.append({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns, lab),
        "spec": {
            "type": "ClusterIP",
            "selector": service_selector,
            "ports": [{"name": "http", "port": cfg["vllm"]["port"], "targetPort": "http", "protocol": "TCP"}],
        },
    })
    objs.append({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, ns, lab),
        # One replica (or one group's pod) may be evicted at a time: drains
        # proceed, and serving keeps the rest. minAvailable would block a
        # drain forever for a single-replica model.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": sel}},
    })
    a = cfg["autoscaling"]
    objs.append({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, ns, lab),
        "spec": {
            "scaleTargetRef": target,
            "minReplicas": replicas,
            "maxReplicas": max_replicas(model, site, cfg),
            "metrics": [{
                "type": "Pods",
                "pods": {
                    "metric": {"name": a["metric"]},
                    "target": {"type": "AverageValue", "averageValue": str(a["waiting_per_replica"])},
                },
            }],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]},
                "scaleDown": {"stabilizationWindowSeconds": a["scale_down_stabilization_s"], "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
            },
        },
    })
    return objs


def namespaces(fleet: Fleet, site: Site, models: list[ServedModel], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The serving namespaces (one per data class served here, labelled for
    residency) and who may reach vLLM in each: the gateway and Prometheus."""
    from k8s.policy import regulated_egress

    out = [_namespace(cfg["namespace"], {SITE_LABEL: site.name}), _vllm_ingress(cfg["namespace"], cfg, {"app.kubernetes.io/name": "vllm"})]
    for dc in sorted({m.data_class for m in models if m.data_class}):
        allowed = fleet.allowed_sites(dc) or []
        if site.name not in allowed:
            raise FleetError([Problem(FLEET_FILE, "residency", f"data class '{dc}' may only be at {', '.join(allowed) or 'no site'}; it cannot be served at '{site.name}'")])
        ns = cfg["regulated_namespace"].format(data_class=dc)
        out.append(_namespace(ns, {DATA_CLASS_LABEL: dc, SITE_LABEL: site.name}))
        out.append(_vllm_ingress(ns, cfg, {}))
        # Regulated weights come from the site's object store, nowhere else.
        out += regulated_egress(ns, site)
    return out


def _vllm_ingress(ns: str, cfg: dict[str, Any], pods: dict[str, str]) -> dict[str, Any]:
    """Who may reach vLLM (``pods`` of ``ns``; {} is every pod there): the
    site's gateway and its Prometheus (metrics), on the HTTP port, and the
    namespace's own vLLM pods (a group's Ray and NCCL traffic)."""
    def from_ns(name: str, pods: dict[str, str] | None = None) -> dict[str, Any]:
        peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}
        if pods:
            peer["podSelector"] = {"matchLabels": pods}
        return peer

    http = [{"port": "http", "protocol": "TCP"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "vllm-ingress", "namespace": ns, "labels": {"app.kubernetes.io/part-of": "gpufleet", "app.kubernetes.io/managed-by": "gpufleet"}},
        "spec": {
            "podSelector": {"matchLabels": dict(pods)} if pods else {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [from_ns(cfg["namespace"], {"app.kubernetes.io/name": cfg["gateway"]["name"]})], "ports": http},
                {"from": [from_ns(cfg["prometheus"]["namespace"])], "ports": http},
                {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm"}}}]},
            ],
        },
    }


def _namespace(name: str, extra: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/part-of": "gpufleet",
                "app.kubernetes.io/managed-by": "gpufleet",
                # Every pod gpufleet renders here meets the restricted profile.
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
                **extra,
            },
        },
    }
