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
        # Secrets the gateway reads, by reference: its master key and the
        # Postgres URL that holds virtual keys and teams (tenants).
        "secret": "llm-gateway",
        "master_key_key": "master-key",
        "database_url_key": "database-url",
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
