"""Version pins of the serving add-on (vLLM, the LLM gateway, its cache store).

These belong in ``k8s/versions.py`` (the fleet's one module of pins); they live
here until that module exists, and move there as a marked "serving" section.

Every image is pinned by exact tag AND by the digest of its multi-architecture
index, so a moved tag cannot change what runs. Where each digest was read:

* vLLM v0.24.0: the digest of ``vllm/vllm-openai:v0.24.0`` as recorded by
  several independent deployments (x86-64 and arm64 hosts, same index digest).
* LiteLLM v1.103.0: the index digest of ``ghcr.io/berriai/litellm:v1.103.0``
  (the same digest is published for the Docker Hub mirror). The Python package
  the tests run is pinned to the same version in ``uv.lock``, by hash.
* Valkey 8.1.10: the index digest of ``valkey/valkey:8.1.10-alpine``.

Re-check a digest with ``crane digest IMAGE:TAG`` or
``docker buildx imagetools inspect IMAGE:TAG`` before bumping a tag.
"""

from __future__ import annotations

VLLM_VERSION = "v0.24.0"
VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.24.0@sha256:251eba5cc7c12fed0b75da22a9240e582b1c9e39f6fbc064f86781b963bd814f"

LITELLM_VERSION = "1.103.0"
LITELLM_IMAGE = "ghcr.io/berriai/litellm:v1.103.0@sha256:bd089afdcd35b894b14a93f9743cdc8b591f82da1a38dd43a010a7b0c9de5fd7"
# PyPI releases of LiteLLM that carried a credential stealer (March 2026). The
# lock must never resolve to them; tests/serving/test_supply_chain.py checks it.
LITELLM_COMPROMISED = ("1.82.7", "1.82.8")

VALKEY_VERSION = "8.1.10"
VALKEY_IMAGE = "docker.io/valkey/valkey:8.1.10-alpine@sha256:081c2f5cb575efc901aa80ff9cdbd1ec6a301682fd35e1ebb4b0990a4a4a8507"

# prometheus-adapter serves vllm:num_requests_waiting on the custom metrics API
# for the queue-depth autoscaler.
PROMETHEUS_ADAPTER_CHART = "prometheus-adapter"
PROMETHEUS_ADAPTER_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
PROMETHEUS_ADAPTER_CHART_VERSION = "4.13.0"

# The LeaderWorkerSet API the multi-node vLLM groups use (kubernetes-sigs/lws).
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
