"""The rendered gateway, live: the real ``litellm`` proxy process (the locked
1.103.0, with two workers as rendered) started from the rendered
configuration exactly as its container runs it, with Debian's redis-server for
the site's Valkey, moto's S3 server for the feedback bucket, one stand-in vLLM
server process per model, and no internet (every outside connection ends in a
black hole). Everything listens on 127.0.0.1 on free ports and is stopped by
its process group at the end; each request has a time limit.

The secrets the rendered objects reference are given values here, as an
operator would create them (k8s/serving/README.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("litellm.proxy.proxy_server", reason="litellm[proxy] is not installed")
pytest.importorskip("moto")
pytest.importorskip("psutil")

from k8s import monitoring, serving  # noqa: E402
from tests.serving.live import Blackhole, Gateway, ModelServer, S3Server, Workers, container, wait_for  # noqa: E402
from tests.serving.local_services import RedisServer  # noqa: E402

if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not installed (tests/install-system-deps.sh installs it)", allow_module_level=True)

MODEL = "llama-3-1-70b-instruct"
REGULATED = "clinical-notes-8b"
NOT_RECORDED = "llama-3-1-8b-instruct"
TENANT_KEYS = {"research": "sk-research-0a1b2c3d4e5f", "clinical": "sk-clinical-6a7b8c9d0e1f"}
METRICS_KEY = "sk-metrics-1f2e3d4c5b6a"
MASTER_KEY = "sk-master-9f8e7d6c5b4a"
PROMTOOL = shutil.which("promtool")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bundle(bundles, name):
    return next(b for b in bundles if b.name == name)


def secret_values(site_bundles, redis: RedisServer) -> dict[tuple[str, str, str], str]:
    """The Secrets an operator creates for the site, keyed (namespace, name, key)."""
    ns = "llm-serving"
    keys = {"keys": [{"sha256": digest(k), "tenant": t, "name": f"{t}-test"} for t, k in TENANT_KEYS.items()]
            + [{"sha256": digest(METRICS_KEY), "scope": "metrics", "name": "prometheus"}]}
    out = {
        (ns, "llm-gateway", "master-key"): MASTER_KEY,
        (ns, "llm-cache", "password"): redis.password,
        (ns, "llm-gateway-keys", "keys.json"): json.dumps(keys),
        (ns, "llm-feedback-minio", "access-key"): "MINIOTESTACCESSKEY",
        (ns, "llm-feedback-minio", "secret-key"): "minio-test-secret",
        ("monitoring", "llm-gateway-metrics", "token"): METRICS_KEY,
    }
    for o in bundle(site_bundles, "vllm").objects:
        if o["kind"] == "Namespace":
            n = o["metadata"]["name"]
            out[(n, "vllm-api-key", "api-key")] = out[(ns, "vllm-api-keys", n)] = f"vllm-key-for-{n}"
    return out


def vllm_key(site_bundles, model: str, secrets) -> str | None:
    """The key the model's vLLM pods require, from their rendered environment (None: no key)."""
    dep = next(o for o in bundle(site_bundles, "vllm").objects
               if o["kind"] in ("Deployment", "LeaderWorkerSet") and o["metadata"]["labels"].get("gpufleet.io/model") == model)
    spec = dep["spec"]["template"]["spec"] if dep["kind"] == "Deployment" else dep["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    for e in spec["containers"][0]["env"]:
        if e["name"] == "VLLM_API_KEY":
            ref = e["valueFrom"]["secretKeyRef"]
            return secrets[(dep["metadata"]["namespace"], ref["name"], ref["key"])]
    return None


def start_site(fleet, site: str, log_dir: Path, stack: ExitStack, extra_env: dict[str, str] | None = None) -> SimpleNamespace:
    bundles = serving.build(fleet, site)
    gw_bundle = bundle(bundles, "llm-gateway")
    redis = RedisServer().start()
    stack.callback(redis.stop)
    secrets = secret_values(bundles, redis)
    s3 = S3Server(log_dir)
    stack.callback(s3.stop)
    models = {}
    for entry in yaml.safe_load(gw_bundle.files["config.yaml"])["model_list"]:
        name = entry["model_name"]
        models[name] = ModelServer(name, vllm_key(bundles, name, secrets), log_dir)
        stack.callback(models[name].stop)
    conf = yaml.safe_load(gw_bundle.files["config.yaml"])
    bucket = conf["litellm_settings"].get("s3_callback_params", {}).get("s3_bucket_name")
    if bucket:
        s3.client().create_bucket(Bucket=bucket)  # created out of band, as in production
    offline = Blackhole()
    stack.callback(offline.stop)
    gateway = Gateway(gw_bundle, secrets,
                      {"cache_port": redis.port, "models": {n: m.base for n, m in models.items()}, "s3": s3.endpoint, "env": extra_env or {}},
                      log_dir, offline=offline)
    stack.callback(gateway.stop)
    workers = Workers(gateway)
    return SimpleNamespace(site=site, bundles=bundles, gateway=gateway, workers=workers, redis=redis, s3=s3, models=models,
                           bucket=bucket, offline=offline, secrets=secrets, log_dir=log_dir,
                           sent=Counter(), hits=Counter())


@pytest.fixture(scope="module")
def dc(fleet, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("gateway-dc-fra")
    with ExitStack() as stack:
        yield start_site(fleet, "dc-fra", log_dir, stack)


@pytest.fixture(scope="module")
def aws(fleet, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("gateway-aws-use1")
    with ExitStack() as stack:
        # At AWS sites the gateway's IAM role reaches the default credential
        # chain through EKS Pod Identity; here, its environment form.
        yield start_site(fleet, "aws-use1", log_dir, stack,
                         extra_env={"AWS_ACCESS_KEY_ID": "AKIATESTROLECREDS", "AWS_SECRET_ACCESS_KEY": "aws-test-secret"})


def chat(site, worker: int, tenant: str | None, prompt: str, model: str = MODEL, key: str | None = None, **extra):
    """One chat request on ``worker``; counts it and whether the model server answered it."""
    key = key if key is not None else TENANT_KEYS[tenant]
    up = model in site.models and site.models[model].proc.popen.poll() is None
    before = site.models[model].answered() if up else 0
    status, body, seconds = site.workers.request(worker, "POST", "/v1/chat/completions", key,
                                                 {"model": model, "messages": [{"role": "user", "content": prompt}], **extra})
    reached = (site.models[model].answered() - before) if up else 0
    if status == 200:
        site.sent[model] += 1
        if reached == 0:
            site.hits[model] += 1
    return SimpleNamespace(status=status, body=body, seconds=seconds, reached_model=reached,
                           text=(body.get("choices") or [{}])[0].get("message", {}).get("content") if status == 200 else None)


def cache_keys(site, tenant: str) -> list[str]:
    return site.redis.client().keys(f"gpufleet:team:{tenant}:*")


def wait_cached(site, tenant: str, n: int = 1) -> list[str]:
    """LiteLLM writes a fresh answer to the cache from a background task."""
    return wait_for(lambda: (k := cache_keys(site, tenant)) and len(k) >= n and k, 15, f"a cache entry of {tenant}")


def logs(site) -> str:
    return site.gateway.proc.tail(6000)


# ------------------------------------------------------------------ dc-fra


def test_the_proxy_runs_the_rendered_config_with_every_secret_it_references(dc):
    assert dc.gateway.workers == 2, "the gateway renders two workers"
    assert len(dc.workers.pids) == 2
    assert dc.gateway.unresolved == [], f"the Deployment reads secrets no operator step provides: {dc.gateway.unresolved}"


def test_tenant_keys_authenticate_without_a_database(dc):
    r = chat(dc, 0, "research", "Which GPUs does dc-fra have?")
    assert r.status == 200, f"{r.status} {r.body}\n{logs(dc)}"
    assert r.reached_model == 1


def test_a_repeated_request_is_answered_from_the_cache_by_another_worker(dc):
    first = chat(dc, 0, "research", "What is MIG?")
    assert first.status == 200 and first.reached_model == 1, first.body
    wait_cached(dc, "research")
    again = chat(dc, 1, "research", "What is MIG?")
    assert again.status == 200, again.body
    assert again.reached_model == 0, "the repeat reached the model server: the second worker did not find the cached answer"
    assert again.text == first.text


def test_another_tenant_does_not_get_the_cached_answer(dc):
    research = chat(dc, 0, "research", "Summarise the ward notes.")
    wait_cached(dc, "research")
    clinical = chat(dc, 1, "clinical", "Summarise the ward notes.")
    assert clinical.status == 200 and clinical.reached_model == 1, "one tenant was answered from another tenant's cache"
    assert clinical.text != research.text
    # A client cannot choose another tenant's namespace.
    forged = chat(dc, 0, "clinical", "What is MIG?", cache={"namespace": "gpufleet:team:research"})
    assert forged.status == 200 and forged.reached_model == 1
    # Each tenant then finds its own entry; the regulated model's answers are cached per tenant too.
    wait_cached(dc, "clinical")
    assert chat(dc, 0, "clinical", "Summarise the ward notes.").reached_model == 0
    reg = chat(dc, 0, "clinical", "Patient reports chest pain since Tuesday.", model=REGULATED)
    assert reg.status == 200 and reg.reached_model == 1, reg.body
    wait_cached(dc, "clinical", 3)
    assert chat(dc, 1, "clinical", "Patient reports chest pain since Tuesday.", model=REGULATED).reached_model == 0


def test_the_configured_ttl_holds_across_workers(dc):
    ttl = dc.gateway.rendered["litellm_settings"]["cache_params"]["ttl"]
    first = chat(dc, 0, "research", "How long is an answer kept?")
    assert first.reached_model == 1
    [key] = [k for k in wait_cached(dc, "research") if dc.redis.client().get(k) and "How long" in dc.redis.client().get(k)] or [None]
    assert key, "no cache entry for the request"
    assert ttl - 30 < dc.redis.client().ttl(key) <= ttl, "the entry does not carry the configured TTL"
    # Worker 1 reads the entry from Valkey ...
    assert chat(dc, 1, "research", "How long is an answer kept?").reached_model == 0
    # ... then the entry's TTL runs out in Valkey.
    dc.redis.client().pexpire(key, 1)
    wait_for(lambda: not dc.redis.client().exists(key), 5, "the entry to expire")
    for worker in (1, 0):
        r = chat(dc, worker, "research", "How long is an answer kept?")
        assert r.reached_model == 1, f"worker {worker} still answered from its own copy after the entry expired in Valkey"
        dc.redis.client().delete(*cache_keys(dc, "research"))


def test_keys_reach_only_their_routes(dc):
    assert dc.workers.request(0, "POST", "/v1/chat/completions", "sk-not-a-key", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]})[0] == 401
    assert dc.workers.request(0, "POST", "/v1/chat/completions", None, {"model": MODEL, "messages": [{"role": "user", "content": "x"}]})[0] == 401
    assert dc.workers.request(0, "POST", "/cache/flushall", TENANT_KEYS["research"], {})[0] == 403
    assert dc.workers.request(1, "POST", "/v1/chat/completions", METRICS_KEY, {"model": MODEL, "messages": [{"role": "user", "content": "x"}]})[0] == 403
    status, body, _ = dc.workers.request(0, "GET", "/v1/models", TENANT_KEYS["research"])
    assert status == 200 and {m["id"] for m in body["data"]} == {MODEL, REGULATED}


def scrape(fleet, site) -> tuple[int, str, dict]:
    import http.client

    [mbundle] = monitoring.build(fleet, site.site)
    sm = next(o for o in mbundle.objects if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == "gpufleet-llm-gateway")
    [ep] = sm["spec"]["endpoints"]
    svc = next(o for o in bundle(site.bundles, "llm-gateway").objects if o["kind"] == "Service" and o["metadata"]["name"] == "llm-gateway")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "the ServiceMonitor does not select the gateway Service"
    port = next(p for p in svc["spec"]["ports"] if p["name"] == ep["port"])
    cport = next(p for p in container(bundle(site.bundles, "llm-gateway"), "llm-gateway")["containers"][0]["ports"] if p["name"] == port["targetPort"])
    assert cport["containerPort"] == int(dict(zip(site.gateway.container["args"][::2], site.gateway.container["args"][1::2]))["--port"])
    headers = {}
    auth = ep.get("authorization")
    if auth:
        ref = auth["credentials"]
        headers["Authorization"] = f"{auth.get('type', 'Bearer')} {site.secrets[(sm['metadata']['namespace'], ref['name'], ref['key'])]}"
    assert ep.get("scheme", "http") == "http"
    conn = http.client.HTTPConnection("127.0.0.1", site.gateway.port, timeout=30)
    try:
        conn.request("GET", ep.get("path", "/metrics"), headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace"), {"job": next(r["replacement"] for r in ep["relabelings"] if r.get("targetLabel") == "job")}
    finally:
        conn.close()


def test_the_servicemonitor_can_scrape_the_gateway(fleet, dc):
    status, text, _ = scrape(fleet, dc)
    assert status == 200, f"HTTP {status}: {text[:300]}"
    assert "litellm_requests_metric_total" in text
    # Without the key, nobody reads them.
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", dc.gateway.port, timeout=30)
    conn.request("GET", "/metrics/")
    assert conn.getresponse().status == 401
    conn.close()


def _gateway_panel(fleet, site: str) -> str:
    [mbundle] = monitoring.build(fleet, site)
    cm = next(o for o in mbundle.objects if o["metadata"]["name"] == "gpufleet-dashboard-serving")
    board = json.loads(next(iter(cm["data"].values())))
    panel = next(p for p in board["panels"] if p.get("title") == "Response cache hit ratio (gateway)")
    [target] = panel["targets"]
    return target["expr"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`)")
def test_the_dashboards_cache_hit_ratio_is_computed_from_what_the_gateway_exports(fleet, dc, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    assert dc.hits[MODEL] and dc.sent[MODEL] > dc.hits[MODEL], "the earlier tests made hits and misses"
    status, text, relabel = scrape(fleet, dc)
    assert status == 200, text[:300]
    expr = _gateway_panel(fleet, dc.site).replace("$model", ".*")
    series = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {**sample.labels, **relabel}
            inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            series.append({"series": f"{sample.name}{{{inner}}}", "values": f"0 {sample.value}"})
    used = {name for name in ("litellm_cache_hits_metric_total", "litellm_requests_metric_total", "litellm_cache_misses_metric_total") if name in expr}
    exported = {s["series"].split("{")[0] for s in series}
    assert used <= exported, f"the panel reads {sorted(used - exported)}, which the gateway never exported after hits and misses"
    expected = [{"labels": f'{{model="{m}", site="{dc.site}"}}', "value": dc.hits[m] / dc.sent[m]} for m in sorted(dc.sent) if dc.hits[m]]
    (tmp_path / "empty.yaml").write_text("groups: []\n")
    (tmp_path / "ratio.test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["empty.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series,
                   "promql_expr_test": [{"expr": expr, "eval_time": "1m", "exp_samples": expected}]}],
    }, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", "ratio.test.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_feedback_is_recorded_for_opted_in_models_with_pii_tagged(dc):
    assert dc.bucket == "acme-llm-dc-fra-llm-feedback"
    misses = {m: dc.sent[m] - dc.hits[m] for m in dc.sent}
    got = wait_for(lambda: (o := dc.s3.objects(dc.bucket)) and len(o) >= sum(misses.values()) and o, 60, "the feedback records in S3")
    time.sleep(12)  # one more flush interval of LiteLLM's S3 logger: nothing beyond the misses arrives
    got = dc.s3.objects(dc.bucket)
    by_model = Counter(k.split("/")[2] for k in got)
    assert by_model == Counter(misses), f"records per model {dict(by_model)}, answered by a model server {misses} (cache hits are not recorded)"
    for key, rec in got.items():
        kind, model = key.split("/")[1:3]
        assert key.startswith("feedback/")
        if model == REGULATED:
            assert kind == "pii" and "gpufleet-pii" in rec["request_tags"], key
            assert rec["metadata"]["user_api_key_team_id"] == "clinical"
        else:
            assert kind == "general" and "gpufleet-pii" not in rec["request_tags"], key
        assert rec["messages"] and rec["response"]


def test_vllm_requires_its_key_and_the_gateway_sends_it(dc):
    for name, m in dc.models.items():
        stats = m.stats()
        assert m.api_key, f"the rendered vLLM for {name} requires no API key"
        assert stats["refused"] == 0 and stats["answered"] > 0, f"{name}: {stats['refused']} requests without the right key"


def test_nothing_left_the_site(dc):
    assert dc.offline.seen == [], f"the gateway tried to reach the internet: {dc.offline.seen[:3]}"


def test_a_site_without_internet_does_not_stall_on_the_first_failed_request(dc):
    # The model's server goes away: each worker's first failed request for
    # it must fail fast, not wait for a tokenizer from the Hugging Face hub.
    dc.models[MODEL].stop()
    for worker in (0, 1):
        r = chat(dc, worker, "research", f"unanswerable {worker}")
        assert r.status >= 500
        assert r.seconds < 15, f"worker {worker}: the first failed request took {r.seconds:.1f} s"
    assert dc.offline.seen == [], f"the gateway tried to reach the internet: {dc.offline.seen[:3]}"


# ------------------------------------------------------------------ aws-use1


def test_models_that_did_not_opt_in_are_not_recorded_and_regulated_ones_not_at_other_sites(aws):
    assert aws.bucket == "acme-llm-aws-use1-llm-feedback"
    assert chat(aws, 0, "research", "record me").status == 200
    assert chat(aws, 1, "research", "not for recording", model=NOT_RECORDED).status == 200
    # The regulated model is not served here at all.
    r = chat(aws, 0, "clinical", "Patient reports chest pain.", model=REGULATED)
    assert r.status in (400, 404), r.body
    got = wait_for(lambda: aws.s3.objects(aws.bucket), 60, "the feedback record in S3")
    time.sleep(12)
    got = aws.s3.objects(aws.bucket)
    assert [k.split("/")[:3] for k in got] == [["feedback", "general", MODEL]], sorted(got)
    assert "record me" in json.dumps(next(iter(got.values()))["messages"])
