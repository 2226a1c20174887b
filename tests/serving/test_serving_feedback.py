"""The feedback loop: opted-in models' prompts and responses reach the site's bucket.

LiteLLM's own S3 logger does the writing, driven by gpufleet's recorder and
configured from the rendered gateway files; the bucket is a local HTTP endpoint
that accepts S3 PUTs (standing in for MinIO or S3). No connection leaves
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest
import yaml

litellm = pytest.importorskip("litellm")

from litellm.caching.caching import Cache  # noqa: E402
from litellm.caching.caching_handler import in_memory_cache_obj  # noqa: E402
from litellm.proxy._types import UserAPIKeyAuth  # noqa: E402

from gpufleet.errors import FleetError  # noqa: E402
from k8s.serving import build, config, feedback_policy  # noqa: E402
from k8s.serving import gpufleet_gateway as plugin  # noqa: E402
from tests.serving.local_services import ObjectStore, OpenAIBackend, loopback_only  # noqa: E402


class Site:
    """The gateway of one site, as rendered, wired to local stand-ins."""

    def __init__(self, fleet, site: str, tmp_path, backend: OpenAIBackend, store: ObjectStore, monkeypatch) -> None:
        bundle = next(b for b in build(fleet, site) if b.name == "llm-gateway")
        self.config = yaml.safe_load(bundle.files["config.yaml"])
        policy = tmp_path / f"{site}-feedback-policy.json"
        policy.write_text(bundle.files["feedback-policy.json"])
        params = dict(self.config["litellm_settings"]["s3_callback_params"])
        self.bucket = params["s3_bucket_name"]
        params["s3_endpoint_url"] = store.endpoint  # the site's MinIO / S3, here on 127.0.0.1
        monkeypatch.setattr(litellm, "s3_callback_params", params)
        self.recorder = plugin.FeedbackRecorder(str(policy))
        self.hook = plugin.TenantCacheScope(str(policy))
        # One recorder per gateway process, as the proxy registers it; no
        # callback of an earlier test may linger in LiteLLM's lists.
        for name in ("input_callback", "success_callback", "failure_callback", "_async_success_callback", "_async_failure_callback"):
            monkeypatch.setattr(litellm, name, [])
        monkeypatch.setattr(litellm, "callbacks", [self.recorder])
        model_list = [
            {"model_name": e["model_name"], "litellm_params": {**e["litellm_params"], "api_base": backend.base_url, "api_key": "unused"}}
            for e in self.config["model_list"]
        ]
        self.router = litellm.Router(model_list=model_list, num_retries=0, cache_responses=litellm.cache is not None)
        self.runner = asyncio.Runner()

    def ask(self, model: str, prompt: str, team: str = "research") -> object:
        data = {"model": model, "messages": [{"role": "user", "content": prompt}]}
        data = self.runner.run(self.hook.async_pre_call_hook(UserAPIKeyAuth(api_key=f"sk-{team}", team_id=team), None, data, "acompletion"))
        return self.runner.run(self.router.acompletion(**data))

    def queued(self) -> int:
        return sum(len(lg.log_queue) for lg in self.recorder.loggers.values())

    def settle(self, store: ObjectStore, expect: int) -> None:
        """Let LiteLLM's background logging deliver ``expect`` records, flush, and wait for the uploads."""
        deadline = time.monotonic() + 10
        while self.queued() < expect and time.monotonic() < deadline:
            self.runner.run(asyncio.sleep(0.05))
        self.runner.run(asyncio.sleep(0.3))  # and nothing more than expected
        queued = self.queued()
        self.runner.run(self.recorder.flush())  # S3Logger uploads from background tasks
        deadline = time.monotonic() + 10
        while len(store.objects) < queued and time.monotonic() < deadline:
            self.runner.run(asyncio.sleep(0.05))

    def close(self) -> None:
        self.runner.close()


@pytest.fixture
def store():
    s = ObjectStore().start()
    yield s
    s.stop()


@pytest.fixture
def site(fleet, tmp_path, backend, store, monkeypatch):
    loopback_only(monkeypatch)
    monkeypatch.setenv("FEEDBACK_S3_ACCESS_KEY_ID", "MINIOTESTACCESSKEY")
    monkeypatch.setenv("FEEDBACK_S3_SECRET_ACCESS_KEY", "minio-test-secret")
    # AWS sites use the default credential chain (the pod's role); here, its env form.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTROLECREDS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-test-secret")
    monkeypatch.setattr(litellm, "cache", None)
    opened = []

    def make(name: str) -> Site:
        s = Site(fleet, name, tmp_path, backend, store, monkeypatch)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def records(store: ObjectStore, bucket: str) -> dict[str, dict]:
    out = {}
    for path, obj in store.objects.items():
        assert path.startswith(f"/{bucket}/"), f"object outside the site's bucket: {path}"
        out[path[len(bucket) + 2 :]] = {"payload": json.loads(obj["body"]), "authorization": obj["authorization"]}
    return out


def test_data_centre_records_both_opted_in_models_to_its_minio_bucket(site, store):
    gw = site("dc-fra")
    assert gw.bucket == "acme-llm-dc-fra-llm-feedback"
    gw.ask("llama-3-1-70b-instruct", "Explain NVSwitch.")
    gw.ask("clinical-notes-8b", "Patient reports chest pain since Tuesday.")
    gw.settle(store, expect=2)
    got = records(store, gw.bucket)
    assert len(got) == 2
    general = [k for k in got if k.startswith("feedback/general/llama-3-1-70b-instruct/")]
    pii = [k for k in got if k.startswith("feedback/pii/clinical-notes-8b/")]
    assert len(general) == 1 and len(pii) == 1, sorted(got)
    rec = got[pii[0]]["payload"]
    assert "Patient reports chest pain since Tuesday." in json.dumps(rec["messages"])
    assert "answer" in json.dumps(rec["response"])
    assert plugin.PII_TAG in rec["request_tags"]
    assert plugin.PII_TAG not in got[general[0]]["payload"]["request_tags"]
    # Signed with the MinIO keys the gateway reads from its Secret.
    assert all("Credential=MINIOTESTACCESSKEY/" in r["authorization"] for r in got.values())


def test_models_that_did_not_opt_in_are_not_recorded(site, store, backend):
    gw = site("aws-use1")
    assert "s3_endpoint_url" not in gw.config["litellm_settings"]["s3_callback_params"]  # real S3 at AWS sites
    assert gw.config["litellm_settings"]["s3_callback_params"]["s3_region_name"] == "us-east-1"
    gw.ask("llama-3-1-8b-instruct", "not for recording")
    gw.ask("llama-3-1-70b-instruct", "record me")
    gw.settle(store, expect=1)
    got = records(store, gw.bucket)
    assert len(backend.requests) == 2
    assert [k.split("/")[:3] for k in got] == [["feedback", "general", "llama-3-1-70b-instruct"]]
    assert "record me" in json.dumps(next(iter(got.values()))["payload"]["messages"])
    # No keys in the config: the pod's role, through the default credential chain.
    assert "Credential=AKIATESTROLECREDS/" in next(iter(got.values()))["authorization"]


def test_answers_served_from_the_cache_are_not_recorded_twice(site, store, backend, monkeypatch):
    monkeypatch.setattr(litellm, "cache", Cache())  # in-memory store, enough to produce a hit
    in_memory_cache_obj.flush_cache()
    gw = site("dc-fra")
    gw.ask("llama-3-1-70b-instruct", "same question")
    gw.ask("llama-3-1-70b-instruct", "same question")
    gw.settle(store, expect=1)
    in_memory_cache_obj.flush_cache()
    assert len(backend.requests) == 1
    assert len(records(store, gw.bucket)) == 1


def test_regulated_model_records_only_at_its_allowed_sites(fleet):
    for s in fleet.sites:
        for b in build(fleet, s):
            if b.name != "llm-gateway":
                continue
            policy = json.loads(b.files["feedback-policy.json"])
            for name, entry in policy["models"].items():
                if entry["data_class"] and plugin.record_as(policy, name):
                    assert s.name in fleet.allowed_sites(entry["data_class"]), f"{name} recorded at {s.name}"
    # The builder refuses to record a regulated model elsewhere ...
    clinical = next(m for m in fleet.models if m.name == "clinical-notes-8b")
    with pytest.raises(FleetError) as exc:
        feedback_policy(fleet, fleet.site("aws-euc1"), [clinical], config.merged())
    assert "may only be recorded at dc-fra, not at 'aws-euc1'" in str(exc.value)
    # ... and the recorder, given a policy for the wrong site, records nothing.
    dc = json.loads(next(b for b in build(fleet, "dc-fra") if b.name == "llm-gateway").files["feedback-policy.json"])
    assert plugin.record_as(dc, "clinical-notes-8b") == "pii"
    assert plugin.record_as({**dc, "site": "aws-euc1"}, "clinical-notes-8b") is None
    assert plugin.record_as({**dc, "site": "aws-euc1"}, "llama-3-1-70b-instruct") == "general"
