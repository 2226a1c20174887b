"""The rendered gateway: routes to each model's vLLM Service, cache, feedback target, secrets."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from k8s.serving import build
from k8s.serving.gateway import PLUGIN_FILE

SECRETISH = re.compile(r"KEY|PASSWORD|TOKEN|SECRET|DATABASE_URL")


def bundles(fleet, site):
    return {b.name: b for b in build(fleet, site)}


def config_of(fleet, site) -> dict:
    return yaml.safe_load(bundles(fleet, site)["llm-gateway"].files["config.yaml"])


def serving_sites(fleet):
    return [s.name for s in fleet.sites if any(s.name in m.sites for m in fleet.models)]


def test_every_model_routes_to_its_own_vllm_service(fleet):
    for site in serving_sites(fleet):
        b = bundles(fleet, site)
        services = {(o["metadata"]["name"], o["metadata"]["namespace"]): o for o in b["vllm"].objects if o["kind"] == "Service"}
        conf = config_of(fleet, site)
        names = [e["model_name"] for e in conf["model_list"]]
        assert names == [m.name for m in fleet.models if site in m.sites]
        for e in conf["model_list"]:
            m = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)/v1", e["litellm_params"]["api_base"])
            assert m, e
            svc = services[(m.group(1), m.group(2))]
            assert int(m.group(3)) == svc["spec"]["ports"][0]["port"]
            assert svc["metadata"]["labels"]["app.kubernetes.io/instance"] == e["model_name"]
            # vLLM serves the model under the fleet's name (--served-model-name).
            assert e["litellm_params"]["model"] == f"hosted_vllm/{e['model_name']}"


def test_cache_is_the_sites_valkey_with_a_ttl_and_tenant_scoping(fleet):
    conf = config_of(fleet, "aws-euc1")
    s = conf["litellm_settings"]
    assert s["cache"] is True
    p = s["cache_params"]
    assert p["type"] == "redis" and p["ttl"] == 3600
    assert p["password"] == "os.environ/REDIS_PASSWORD"
    objs = bundles(fleet, "aws-euc1")["llm-gateway"].objects
    svc = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "llm-cache")
    assert p["host"] == f"llm-cache.{svc['metadata']['namespace']}.svc.cluster.local" and p["port"] == svc["spec"]["ports"][0]["port"]
    assert "gpufleet_gateway.tenant_cache" in s["callbacks"]
    valkey = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "llm-cache")
    c = valkey["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][c["args"].index("--requirepass") + 1] == "$(VALKEY_PASSWORD)"
    netpol = next(o for o in objs if o["kind"] == "NetworkPolicy")
    assert netpol["spec"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "llm-gateway"}}}]


def test_feedback_goes_to_s3_in_aws_and_minio_in_data_centres(fleet):
    buckets = set()
    for site in serving_sites(fleet):
        p = config_of(fleet, site)["litellm_settings"]["s3_callback_params"]
        buckets.add(p["s3_bucket_name"])
        if fleet.site(site).is_aws:
            assert p["s3_region_name"] == fleet.site(site).region
            assert "s3_endpoint_url" not in p and "s3_aws_access_key_id" not in p
        else:
            assert p["s3_endpoint_url"].startswith("https://minio.")
            assert p["s3_aws_access_key_id"].startswith("os.environ/") and p["s3_aws_secret_access_key"].startswith("os.environ/")
    assert len(buckets) == len(serving_sites(fleet)) == 3, "one bucket per site"


def test_no_feedback_callback_where_no_model_opted_in(edited_fleet):
    def edit(data):
        for m in data["models"]:
            m["record_feedback"] = False

    f = edited_fleet(edit)
    s = config_of(f, "dc-fra")["litellm_settings"]
    assert "gpufleet_gateway.feedback_recorder" not in s["callbacks"] and "s3_callback_params" not in s


def test_secrets_only_by_reference(fleet):
    for site in serving_sites(fleet):
        for b in build(fleet, site):
            for o in b.objects:
                assert o["kind"] != "Secret"
                spec = o.get("spec", {}).get("template", {}).get("spec", {})
                for c in spec.get("containers", []):
                    for env in c.get("env", []):
                        if SECRETISH.search(env["name"]):
                            assert "value" not in env and "secretKeyRef" in env["valueFrom"], f"{site}: {env}"
        conf = config_of(fleet, site)
        assert conf["general_settings"] == {"master_key": "os.environ/LITELLM_MASTER_KEY", "custom_auth": "gpufleet_gateway.user_api_key_auth"}
        for entry in conf["model_list"]:
            assert entry["litellm_params"]["api_key"].startswith("os.environ/VLLM_API_KEY_")


def test_gateway_loads_its_plugin_through_the_proxys_own_loader(fleet, tmp_path):
    pytest.importorskip("fastapi")  # the loader lives in LiteLLM's proxy package
    from litellm.proxy.types_utils.utils import get_instance_fn

    b = bundles(fleet, "dc-fra")["llm-gateway"]
    assert b.files["gpufleet_gateway.py"] == PLUGIN_FILE.read_text()
    dep = next(o for o in b.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "llm-gateway")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    config_path = c["args"][c["args"].index("--config") + 1]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert config_path.rsplit("/", 1)[0] == mount["mountPath"]
    cm = next(o for o in b.objects if o["kind"] == "ConfigMap")
    assert set(cm["data"]) == {"config.yaml", "gpufleet_gateway.py", "feedback-policy.json", "tenants.json"}
    assert json.loads(cm["data"]["tenants.json"]) == {"tenants": [t.name for t in fleet.teams]}
    policy_env = next(e for e in c["env"] if e["name"] == "GPUFLEET_FEEDBACK_POLICY")
    assert policy_env["value"] == f"{mount['mountPath']}/feedback-policy.json"
    # The rendered files, laid out as the ConfigMap mounts them, load with the proxy's loader.
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text)
    conf = yaml.safe_load(cm["data"]["config.yaml"])
    for ref in conf["litellm_settings"]["callbacks"]:
        if ref.startswith("gpufleet_gateway."):
            hook = get_instance_fn(ref, config_file_path=str(tmp_path / "config.yaml"))
            assert type(hook).__name__ in ("TenantCacheScope", "FeedbackRecorder")
    auth = get_instance_fn(conf["general_settings"]["custom_auth"], config_file_path=str(tmp_path / "config.yaml"))
    assert auth.__name__ == "user_api_key_auth"
