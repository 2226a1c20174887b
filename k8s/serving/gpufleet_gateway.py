"""gpufleet's two plugins for the LiteLLM proxy (the fleet's LLM gateway).

This file is shipped to the gateway in its ConfigMap, beside ``config.yaml``,
and loaded by the proxy from ``litellm_settings.callbacks``:

* ``tenant_cache`` scopes the response cache to the caller's tenant. LiteLLM's
  exact-match cache key is built from the request alone (model, messages,
  parameters), so two teams sending the same prompt would share an answer.
  LiteLLM prefixes the key with the request's cache namespace
  (``cache={"namespace": ...}``); this hook sets that namespace from the
  authenticated caller (its team, else its hashed API key) and overrides any
  namespace the client sent, so one tenant cannot read another's entries.
* ``feedback_recorder`` writes prompts and responses of the models that opted
  in (``record_feedback``) to the site's bucket with LiteLLM's own S3 logger,
  under ``<prefix>/pii/<model>/`` for models flagged ``pii`` and
  ``<prefix>/general/<model>/`` otherwise. A model with a data class is
  recorded only when this gateway's site is one its residency rule allows.
  Answers served from the cache are not recorded again.

The policy (which models, which site) is the JSON file named by
``GPUFLEET_FEEDBACK_POLICY`` that gpufleet renders beside this file. The S3
connection (bucket, region, endpoint, credentials) is LiteLLM's
``litellm_settings.s3_callback_params``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

POLICY_ENV = "GPUFLEET_FEEDBACK_POLICY"
DEFAULT_POLICY = "/etc/litellm/feedback-policy.json"
CACHE_NAMESPACE_PREFIX = "gpufleet"
PII_TAG = "gpufleet-pii"


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

__all__ = ["tenant_cache", "feedback_recorder", "TenantCacheScope", "FeedbackRecorder", "scope_request", "record_as", "load_policy", "litellm"]
