"""The gateway's response cache, end to end against a real store.

Debian's redis-server runs on 127.0.0.1 (started and stopped here); LiteLLM's
own Router and Cache, configured from the rendered gateway config, sit in front
of a local OpenAI-compatible backend that counts the requests reaching it; the
requests pass through gpufleet's tenant hook exactly as the proxy runs it.
No connection leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map

import pytest
import yaml

litellm = pytest.importorskip("litellm")

from litellm.caching.caching import Cache  # noqa: E402
from litellm.caching.caching_handler import in_memory_cache_obj  # noqa: E402
from litellm.proxy._types import UserAPIKeyAuth  # noqa: E402

from k8s.serving import build  # noqa: E402
from k8s.serving import gpufleet_gateway as plugin  # noqa: E402
from tests.serving.local_services import RedisServer, loopback_only  # noqa: E402

MODEL = "llama-3-1-70b-instruct"


@pytest.fixture
def no_network(monkeypatch):
    return loopback_only(monkeypatch)


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def gateway_config(fleet):
    bundle = next(b for b in build(fleet, "dc-fra") if b.name == "llm-gateway")
    return yaml.safe_load(bundle.files["config.yaml"])


@pytest.fixture
def gateway(gateway_config, redis_server, backend, no_network):
    """LiteLLM as the rendered config sets it up, pointed at the local store and backend."""
    params = dict(gateway_config["litellm_settings"]["cache_params"])
    assert params["type"] == "redis" and params["password"] == "os.environ/REDIS_PASSWORD"
    params.update(host="127.0.0.1", port=str(redis_server.port), password=redis_server.password)
    old_cache = litellm.cache
    litellm.cache = Cache(**params)
    # LiteLLM fronts the Redis cache with a per-process in-memory copy (one per
    # gateway worker); start each test with it empty, as a fresh worker does.
    in_memory_cache_obj.flush_cache()
    model_list = []
    for entry in gateway_config["model_list"]:
        litellm_params = {**entry["litellm_params"], "api_base": backend.base_url, "api_key": "unused"}
        model_list.append({"model_name": entry["model_name"], "litellm_params": litellm_params})
    # The proxy turns on the router's response caching once a cache is configured.
    router = litellm.Router(model_list=model_list, num_retries=0, cache_responses=True)
    with asyncio.Runner() as runner:  # one event loop for the test, as in the proxy
        yield Gateway(router, runner, redis_server)
    litellm.cache = old_cache
    in_memory_cache_obj.flush_cache()


class Gateway:
    def __init__(self, router, runner: asyncio.Runner, store: RedisServer) -> None:
        self.router, self.runner, self.store = router, runner, store

    def call(self, data: dict, caller) -> object:
        """One request as the proxy handles it: the tenant hook, then the router.

        LiteLLM writes a fresh answer to the cache from a background task; wait
        (up to 10 s) until the store holds it, as a later request would find it.
        """
        before = self.store.client().dbsize()
        data = self.runner.run(plugin.tenant_cache.async_pre_call_hook(caller, None, data, "acompletion"))
        response = self.runner.run(self.router.acompletion(**data))
        if not cache_hit(response) and not (data.get("cache") or {}).get("no-store"):
            deadline = time.monotonic() + 10
            while self.store.client().dbsize() == before and time.monotonic() < deadline:
                self.runner.run(asyncio.sleep(0.05))
        return response


def ask(gateway: Gateway, team: str, prompt: str, **extra) -> object:
    data = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **extra}
    return gateway.call(data, UserAPIKeyAuth(api_key=f"sk-{team}-key", team_id=team))


def cache_hit(response) -> bool:
    return bool(response._hidden_params.get("cache_hit"))


def test_repeated_request_is_answered_from_the_cache(gateway, backend, redis_server, gateway_config, no_network):
    first = ask(gateway, "research", "What is MIG?")
    assert len(backend.requests) == 1 and not cache_hit(first)
    # The request reached the backend under vLLM's served model name.
    assert backend.requests[0]["model"] == MODEL

    # The repeat is answered by another gateway worker: nothing in its memory,
    # so the answer must come from the shared store.
    in_memory_cache_obj.flush_cache()
    hits_before = redis_server.client().info("stats")["keyspace_hits"]
    second = ask(gateway, "research", "What is MIG?")
    assert len(backend.requests) == 1, "the repeated request reached the backend"
    assert cache_hit(second)
    assert redis_server.client().info("stats")["keyspace_hits"] == hits_before + 1
    assert second.choices[0].message.content == first.choices[0].message.content == "answer 1 to: What is MIG?"

    # The entry lives in the real store, in the tenant's namespace, with the configured TTL.
    keys = redis_server.client().keys("*")
    assert len(keys) == 1 and keys[0].startswith("gpufleet:team:research:")
    ttl = redis_server.client().ttl(keys[0])
    assert 0 < ttl <= gateway_config["litellm_settings"]["cache_params"]["ttl"] == 3600
    assert no_network == []


def test_a_different_prompt_is_a_miss(gateway, backend):
    ask(gateway, "research", "What is MIG?")
    other = ask(gateway, "research", "What is NVLink?")
    assert len(backend.requests) == 2 and not cache_hit(other)


def test_same_prompt_from_another_tenant_is_a_miss(gateway, backend, redis_server):
    ask(gateway, "research", "Summarise the ward notes.")
    other = ask(gateway, "clinical", "Summarise the ward notes.")
    assert len(backend.requests) == 2, "one tenant was answered from another tenant's cache"
    assert not cache_hit(other)
    assert other.choices[0].message.content == "answer 2 to: Summarise the ward notes."
    # Each tenant now hits its own entry.
    assert cache_hit(ask(gateway, "clinical", "Summarise the ward notes."))
    assert cache_hit(ask(gateway, "research", "Summarise the ward notes."))
    assert len(backend.requests) == 2
    prefixes = sorted(k.rsplit(":", 1)[0] for k in redis_server.client().keys("*"))
    assert prefixes == ["gpufleet:team:clinical", "gpufleet:team:research"]


def test_a_tenant_cannot_choose_another_tenants_namespace(gateway, backend):
    ask(gateway, "research", "What is the dose?")
    forged = ask(gateway, "clinical", "What is the dose?", cache={"namespace": "gpufleet:team:research"},
                 metadata={"redis_namespace": "gpufleet:team:research"})
    assert not cache_hit(forged)
    assert len(backend.requests) == 2


def test_keys_without_a_team_are_scoped_by_their_hashed_key(gateway, backend):
    def call(key: str):
        return gateway.call({"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}, UserAPIKeyAuth(api_key=key))

    call("sk-one")
    assert not cache_hit(call("sk-two"))
    assert cache_hit(call("sk-one"))
    assert len(backend.requests) == 2
    keys = gateway.store.client().keys("*")
    assert all(k.startswith("gpufleet:key:") and "sk-one" not in k and "sk-two" not in k for k in keys) and len(keys) == 2


def test_client_cache_controls_other_than_namespace_still_apply(gateway, backend):
    ask(gateway, "research", "fresh please")
    bypass = ask(gateway, "research", "fresh please", cache={"no-cache": True})
    assert not cache_hit(bypass) and len(backend.requests) == 2
