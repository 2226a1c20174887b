"""gpufleet's plugins for the LiteLLM proxy (the fleet's LLM gateway).

This file is shipped to the gateway in its ConfigMap, beside ``config.yaml``,
and loaded by the proxy itself: ``general_settings.custom_auth`` names
:func:`user_api_key_auth`, ``litellm_settings.callbacks`` name the two hooks
(LiteLLM 1.103.0 ``litellm/proxy/types_utils/utils.py`` ``get_instance_fn``
imports ``gpufleet_gateway`` from the config file's folder).

* ``user_api_key_auth`` is who the caller is. Each client key belongs to one
  tenant (a fleet team); the keys are listed, as SHA-256 digests only, in the
  file the ``llm-gateway-keys`` Secret mounts (``GPUFLEET_CLIENTS``), so
  tenants work without LiteLLM's database (its virtual keys need Postgres
  through Prisma). A tenant key may call the model API routes only; the key
  with scope ``metrics`` may read ``/metrics`` only (Prometheus); the master
  key is the administrator. Unknown keys get HTTP 401, keys outside their
  routes HTTP 403. The proxy calls this before any of its own checks
  (``litellm/proxy/auth/user_api_key_auth.py`` ``_user_api_key_auth_builder``,
  through ``litellm_enterprise`` ``enterprise_custom_auth``), for every
  route that authenticates, ``/metrics`` included
  (``litellm/proxy/middleware/prometheus_auth_middleware.py``).
* ``tenant_cache`` scopes the response cache to the caller's tenant. LiteLLM's
  exact-match cache key is built from the request alone (model, messages,
  parameters; ``litellm/caching/caching.py`` ``Cache.get_cache_key``), so two
  teams sending the same prompt would share an answer. LiteLLM prefixes the
  key with the request's cache namespace (``cache={"namespace": ...}``); this
  hook sets that namespace from the authenticated caller (its team, else its
  hashed API key) and overrides any namespace the client sent, so one tenant
  cannot read another's entries.
* ``feedback_recorder`` writes prompts and responses of the models that opted
  in (``record_feedback``) to the site's bucket with LiteLLM's own S3 logger,
  under ``<prefix>/pii/<model>/`` for models flagged ``pii`` and
  ``<prefix>/general/<model>/`` otherwise. A model with a data class is
  recorded only when this gateway's site is one its residency rule allows.
  Answers served from the cache are not recorded again.

The response cache lives in Valkey only. LiteLLM fronts a Redis response
cache with a per-process in-memory copy (``litellm/caching/caching_handler.py``:
``LLMCachingHandler`` wraps ``litellm.cache.cache`` and the module's
``in_memory_cache_obj`` in a ``DualCache``), and a worker that reads an
entry from Redis keeps it in memory for the in-memory layer's own TTL
(``DualCache._backfill_kwargs``; ``InMemoryCache`` defaults to 600 s), past
the configured TTL and past an entry deleted in Valkey. Importing this file
sets that layer's ``max_size_in_memory`` to 0, which makes
``InMemoryCache.set_cache`` store nothing, so every worker reads Valkey and
the configured TTL holds across workers.

The feedback policy (which models, which site) is the JSON file named by
``GPUFLEET_FEEDBACK_POLICY``, the tenants the JSON file named by
``GPUFLEET_TENANTS``; gpufleet renders both beside this file. The S3
connection (bucket, region, endpoint, credentials) is LiteLLM's
``litellm_settings.s3_callback_params``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from typing import Any

import litellm
from litellm.caching import caching_handler
from litellm.integrations.custom_logger import CustomLogger

POLICY_ENV = "GPUFLEET_FEEDBACK_POLICY"
DEFAULT_POLICY = "/etc/litellm/feedback-policy.json"
TENANTS_ENV = "GPUFLEET_TENANTS"
DEFAULT_TENANTS = "/etc/litellm/tenants.json"
KEYS_ENV = "GPUFLEET_CLIENTS"
DEFAULT_KEYS = "/etc/litellm-keys/keys.json"
MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
CACHE_NAMESPACE_PREFIX = "gpufleet"
PII_TAG = "gpufleet-pii"
METRICS_SCOPE = "metrics"

# Routes a tenant key may call: the OpenAI-compatible model API, with and
# without the /v1 prefix (LiteLLM serves both).
TENANT_ROUTES = frozenset({
    "/v1/chat/completions", "/chat/completions",
    "/v1/completions", "/completions",
    "/v1/models", "/models",
})
# Routes the metrics key may read (the proxy mounts its exporter at /metrics/).
METRICS_ROUTES = frozenset({"/metrics"})


def _response_cache_in_valkey_only() -> None:
    caching_handler.in_memory_cache_obj.max_size_in_memory = 0


_response_cache_in_valkey_only()


# ------------------------------------------------------------------ tenants


class _JsonFile:
    """A JSON file, read again whenever it changes (a rotated Secret, for one)."""

    def __init__(self, env: str, default: str) -> None:
        self.env, self.default = env, default
        self._lock = threading.Lock()
        self._stamp: tuple[str, int, int] | None = None
        self._data: Any = None

    def path(self) -> str:
        return os.environ.get(self.env) or self.default

    def read(self) -> Any:
        path = self.path()
        st = os.stat(path)  # a missing file is an error: no keys, no callers
        stamp = (path, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                with open(path, encoding="utf-8") as fh:
                    self._data = json.load(fh)
                self._stamp = stamp
            return self._data


_keys_file = _JsonFile(KEYS_ENV, DEFAULT_KEYS)
_tenants_file = _JsonFile(TENANTS_ENV, DEFAULT_TENANTS)


def key_digest(key: str) -> str:
    """What the keys file holds for a key: its SHA-256, hex (``printf %s KEY | sha256sum``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _entries(keys_doc: Any) -> dict[str, dict]:
    entries = keys_doc.get("keys") if isinstance(keys_doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{_keys_file.path()}: expected {{\"keys\": [{{\"sha256\": ..., \"tenant\": ...}}, ...]}}")
    out: dict[str, dict] = {}
    for e in entries:
        if isinstance(e, dict) and isinstance(e.get("sha256"), str):
            out[e["sha256"].lower()] = e
    return out


def _route(request: Any) -> str:
    path = request.url.path
    return path.rstrip("/") or "/"


def _denied(message: str, code: int):
    from litellm.proxy._types import ProxyException

    return ProxyException(message=message, type="auth_error", param="api_key", code=code)


async def user_api_key_auth(request: Any, api_key: str):
    """LiteLLM ``custom_auth``: the caller's identity from its key, without a database."""
    from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

    key = (api_key or "").strip()
    if key[:7].lower() == "bearer ":
        key = key[7:].strip()
    if not key:
        raise _denied("no API key: send Authorization: Bearer <key>", 401)
    digest = key_digest(key)
    route = _route(request)
    master = os.environ.get(MASTER_KEY_ENV) or ""
    if master and hmac.compare_digest(key.encode(), master.encode()):
        return UserAPIKeyAuth(api_key=digest, token=digest, key_alias="master", user_role=LitellmUserRoles.PROXY_ADMIN)
    entry = _entries(_keys_file.read()).get(digest)
    if entry is None:
        raise _denied("unknown API key", 401)
    if entry.get("scope") == METRICS_SCOPE:
        if route not in METRICS_ROUTES:
            raise _denied(f"the metrics key may not call {route}", 403)
        return UserAPIKeyAuth(api_key=digest, token=digest, key_alias="metrics", user_role=LitellmUserRoles.INTERNAL_USER_VIEW_ONLY)
    tenant = entry.get("tenant")
    tenants = (_tenants_file.read() or {}).get("tenants") or []
    if not isinstance(tenant, str) or tenant not in tenants:
        raise _denied(f"API key of unknown tenant {tenant!r} (tenants here: {', '.join(tenants)})", 401)
    if route not in TENANT_ROUTES:
        raise _denied(f"tenant keys may not call {route}", 403)
    return UserAPIKeyAuth(api_key=digest, token=digest, team_id=tenant, key_alias=entry.get("name") or f"{tenant}-key",
                          user_role=LitellmUserRoles.INTERNAL_USER)


# ------------------------------------------------------------- cache scope


def tenant_of(user_api_key_dict: Any) -> str:
    """The tenant a request belongs to: its team, else its (hashed) API key."""
    team = getattr(user_api_key_dict, "team_id", None)
    if team:
        return f"team:{team}"
    token = getattr(user_api_key_dict, "token", None)  # the proxy keeps keys hashed
    if token:
        return f"key:{token}"
    return "anonymous"


def cache_namespace(tenant: str) -> str:
    return f"{CACHE_NAMESPACE_PREFIX}:{tenant}"


def scope_request(data: dict, user_api_key_dict: Any) -> dict:
    """Set the request's cache namespace to its tenant's, whatever the client sent."""
    controls = {k: v for k, v in (data.get("cache") or {}).items() if k != "namespace"}
    controls["namespace"] = cache_namespace(tenant_of(user_api_key_dict))
    data["cache"] = controls
    for key in ("metadata", "litellm_metadata"):
        meta = data.get(key)
        if isinstance(meta, dict):
            meta.pop("redis_namespace", None)  # the other way LiteLLM reads a namespace
    return data


# ----------------------------------------------------------------- feedback


def load_policy(path: str | None = None) -> dict:
    path = path or os.environ.get(POLICY_ENV) or DEFAULT_POLICY
    try:
        with open(path, encoding="utf-8") as fh:
            policy = json.load(fh)
    except FileNotFoundError:
        return {"site": None, "prefix": "feedback", "models": {}}
    if not isinstance(policy, dict) or not isinstance(policy.get("models"), dict):
        raise ValueError(f"{path}: expected a mapping with 'site', 'prefix' and 'models'")
    return policy


def record_as(policy: dict, model_group: str | None) -> str | None:
    """'pii' or 'general' when ``model_group``'s answers are to be recorded here, else None."""
    entry = policy.get("models", {}).get(model_group or "")
    if not entry or not entry.get("record_feedback"):
        return None
    if entry.get("data_class") and policy.get("site") not in (entry.get("allowed_sites") or []):
        return None
    return "pii" if entry.get("pii") else "general"


class TenantCacheScope(CustomLogger):
    """Pre-call hook: per-tenant cache keys, and the PII tag on flagged models."""

    def __init__(self, policy_path: str | None = None) -> None:
        super().__init__()
        self._policy_path = policy_path

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):  # noqa: ANN001
        data = scope_request(data, user_api_key_dict)
        if record_as(load_policy(self._policy_path), data.get("model")) == "pii":
            meta = data.setdefault("metadata", {})
            tags = list(meta.get("tags") or [])
            if PII_TAG not in tags:
                tags.append(PII_TAG)
            meta["tags"] = tags
        return data


class FeedbackRecorder(CustomLogger):
    """Success callback: opted-in models' prompts and responses to object storage."""

    def __init__(self, policy_path: str | None = None) -> None:
        super().__init__()
        self._policy_path = policy_path
        self._policy: dict | None = None
        self.loggers: dict[tuple[str, str], Any] = {}

    @property
    def policy(self) -> dict:
        if self._policy is None:
            self._policy = load_policy(self._policy_path)
        return self._policy

    def _logger(self, kind: str, model: str):
        from litellm.integrations.s3_v2 import S3Logger

        key = (kind, model)
        if key not in self.loggers:  # created inside the event loop: S3Logger starts its flush task
            prefix = str(self.policy.get("prefix") or "feedback").strip("/")
            self.loggers[key] = S3Logger(s3_path=f"{prefix}/{kind}/{model}")
        return self.loggers[key]

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # noqa: ANN001
        payload = kwargs.get("standard_logging_object") or {}
        if payload.get("cache_hit"):
            return
        model = payload.get("model_group") or (kwargs.get("litellm_params") or {}).get("metadata", {}).get("model_group")
        kind = record_as(self.policy, model)
        if kind is None:
            return
        await self._logger(kind, model).async_log_success_event(kwargs, response_obj, start_time, end_time)

    async def flush(self) -> None:
        for logger in self.loggers.values():
            await logger.flush_queue()


tenant_cache = TenantCacheScope()
feedback_recorder = FeedbackRecorder()

__all__ = [
    "tenant_cache", "feedback_recorder", "user_api_key_auth", "TenantCacheScope", "FeedbackRecorder",
    "scope_request", "record_as", "load_policy", "key_digest", "litellm",
]
