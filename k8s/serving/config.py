"""Every tunable of the serving add-on, in one block.

The builders read these and nothing else; :func:`k8s.serving.build` accepts
``config={...}`` overrides, merged key by key.
"""

from __future__ import annotations

from typing import Any

from k8s.core import deep_merge

CONFIG: dict[str, Any] = {
    # Namespaces. Models with a data class run in their own namespace, labelled
    # with the class and the site, which the residency admission policy reads.
    "namespace": "llm-serving",
    "regulated_namespace": "llm-serving-{data_class}",
    # --- vLLM ------------------------------------------------------------------
    "vllm": {
        "port": 8000,
        # Share of a GPU's (or MIG slice's) memory vLLM may claim. Matches the
        # fit check in gpufleet.model; divided by the replicas that time-slice
        # one GPU, since each of them would otherwise claim the whole of it.
        "gpu_memory_utilization": 0.9,
        # Host resources per replica: CPUs per whole GPU (a MIG slice counts as
        # `mig_cpus`), and memory to stage the weights on load plus headroom.
        "cpus_per_gpu": 8,
        "mig_cpus": 2,
        "memory_headroom_gib": 16,
        # Shared memory for NCCL between tensor-parallel workers.
        "shm_gib_per_gpu": 4,
        # Model loading: the startup probe allows `startup_base_s` plus
        # `startup_s_per_b_params` per billion parameters before the liveness
        # probe takes over (downloading 70B of weights takes many minutes).
        "startup_base_s": 600,
        "startup_s_per_b_params": 20,
        # Hugging Face token for gated repositories, by reference only.
        "hf_token_secret": {"name": "hf-token", "key": "token"},
        # The key vLLM requires on its OpenAI API (vLLM's --api-key, read from
        # VLLM_API_KEY): a Secret of this name in each serving namespace. The
        # gateway holds the key of every serving namespace in `gateway_keys_secret`
        # (in the gateway's namespace), one entry per namespace, named after it.
        "api_key_secret": {"name": "vllm-api-key", "key": "api-key"},
        "gateway_keys_secret": "vllm-api-keys",
        # The image's unprivileged user (vllm-project/vllm v0.24.0
        # docker/Dockerfile, vllm-base stage: `useradd --uid 2000 --gid 0
        # --home-dir /home/vllm vllm`); its caches resolve under HOME.
        "uid": 2000,
        "gid": 0,
        "home": "/home/vllm",
    },
    # --- autoscaling on queue depth ---------------------------------------------
    "autoscaling": {
        # Requests waiting in one replica's queue above which another replica
        # is added (vllm:num_requests_waiting, averaged over the replicas).
        "waiting_per_replica": 4,
        # Upper bound: `max_factor` x the model's replicas, and never more than
        # the site's GPUs (or MIG slices) of that kind can hold.
        "max_factor": 3,
        "scale_down_stabilization_s": 600,
        "metric": "vllm:num_requests_waiting",
    },
    "prometheus": {
        # kube-prometheus-stack's Prometheus at every site (release
        # kube-prometheus-stack, namespace monitoring).
        "url": "http://kube-prometheus-stack-prometheus.monitoring.svc",
        "port": 9090,
        "namespace": "monitoring",  # kube-prometheus-stack and prometheus-adapter
    },
    # --- the gateway (LiteLLM proxy) and its response cache -------------------
    "gateway": {
        "name": "llm-gateway",
        "port": 4000,
        "replicas": 2,
        # Worker processes per replica (`litellm --num_workers`). They share the
        # response cache in Valkey and nothing in memory (gpufleet_gateway.py).
        "num_workers": 2,
        # Seconds a starting worker may take to answer uvicorn's health check
        # before the supervisor kills and restarts it (uvicorn 0.54 defaults to
        # 5). A worker re-imports LiteLLM first, which takes about 5 s of CPU:
        # with the default, a worker on a busy node never finishes starting.
        "worker_healthcheck_timeout_s": 120,
        # Secrets the gateway reads, by reference: its master key (the
        # administrator's), and the client keys: a JSON file of SHA-256 digests,
        # each naming its tenant (a fleet team) or the `metrics` scope
        # (k8s/serving/README.md shows the format). No database: LiteLLM's
        # virtual keys need Postgres through Prisma.
        "secret": "llm-gateway",
        "master_key_key": "master-key",
        "keys_secret": "llm-gateway-keys",
        "keys_file": "keys.json",
        "keys_dir": "/etc/litellm-keys",
    },
    "cache": {
        "name": "llm-cache",
        "port": 6379,
        # Exact-match response cache: seconds an answer stays valid.
        "ttl_s": 3600,
        "max_memory": "2gb",
        "secret": "llm-cache",
        "password_key": "password",
    },
    # --- model store: weights given as s3:// paths ------------------------------
    # A model's `source` may be an object-store path (required for a data class
    # with a residency rule: its namespace reaches nothing else). vLLM streams
    # the safetensors from there with Run:ai's model streamer (--load-format
    # runai_streamer), which the vllm-openai image ships. AWS sites read S3
    # with the pod's role; data centres read their MinIO (path-style) with keys
    # from this Secret.
    "model_store": {
        "minio_endpoint": "https://minio.{site}.{fleet}.internal",
        "minio_region": "us-east-1",
        "minio_secret": "model-store-minio",
        "minio_access_key_key": "access-key",
        "minio_secret_key_key": "secret-key",
    },
    # --- feedback: prompts and responses to object storage ----------------------
    "feedback": {
        # One bucket per site. AWS sites write to S3 with the gateway's IAM role
        # (IRSA / EKS Pod Identity on its service account, no keys); data
        # centres write to their MinIO with keys from the Secret below.
        "bucket": "{fleet}-{site}-llm-feedback",
        "minio_endpoint": "https://minio.{site}.{fleet}.internal",
        "minio_region": "us-east-1",
        "minio_secret": "llm-feedback-minio",
        "minio_access_key_key": "access-key",
        "minio_secret_key_key": "secret-key",
        # Object prefixes: records of models flagged pii go under their own
        # prefix, so storage policy and retention can treat them apart.
        "prefix": "feedback",
    },
}


def merged(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """CONFIG with ``overrides`` merged in, key by key (dicts recursively)."""
    return deep_merge(CONFIG, overrides or {})
