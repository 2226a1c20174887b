"""The vLLM workloads: arguments from the model, GPUs or MIG slices, multi-node groups."""

from __future__ import annotations

import re

import pytest

from gpufleet.errors import FleetError
from gpufleet.model import Fleet
from k8s import versions
from k8s.serving import VLLM_QUANTIZATION, build
from k8s.serving.vllm import workload_name
from tests.schemas import assert_valid, validate_object
from tests.serving.conftest import model_entry


def objects(fleet: Fleet, site: str) -> list[dict]:
    return [o for b in build(fleet, site) for o in b.objects]


def find(objs: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def flag(args: list[str], name: str) -> str | None:
    """The value after ``name`` in an argument list (None when absent)."""
    if name not in args:
        return None
    return args[args.index(name) + 1]


def server(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_every_model_at_every_site_carries_its_quantization_and_tensor_parallel_size(fleet):
    seen = 0
    for site in fleet.sites:
        objs = objects(fleet, site.name)
        for m in fleet.models:
            if site.name not in m.sites:
                assert not [o for o in objs if o["metadata"]["name"] == workload_name(m)], f"{m.name} rendered at {site.name}"
                continue
            args = server(find(objs, "Deployment", workload_name(m)))["args"]
            assert flag(args, "--model") == m.source
            assert flag(args, "--served-model-name") == m.name
            assert flag(args, "--quantization") == (None if m.quantization == "none" else VLLM_QUANTIZATION[m.quantization])
            assert flag(args, "--tensor-parallel-size") == str(m.placement.gpus)
            assert flag(args, "--max-model-len") == str(m.context_length)
            assert flag(args, "--kv-cache-dtype") == m.kv_cache_dtype
            assert ("--enable-prefix-caching" in args) == m.prefix_caching
            assert ("--no-enable-prefix-caching" in args) == (not m.prefix_caching)
            seen += 1
    assert seen == sum(len(m.sites) for m in fleet.models) == 5


def test_quantized_regulated_model_runs_on_its_mig_slice(fleet):
    objs = objects(fleet, "dc-fra")
    dep = find(objs, "Deployment", "vllm-clinical-notes-8b")
    c = server(dep)
    assert flag(c["args"], "--quantization") == "awq_marlin"
    assert c["resources"]["limits"]["nvidia.com/mig-2g.20gb"] == 1
    assert c["resources"]["requests"]["nvidia.com/mig-2g.20gb"] == 1
    assert not any(k == "nvidia.com/gpu" for k in c["resources"]["limits"]), "a MIG replica must not ask for a whole GPU"
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpufleet.io/accelerator": "h100-80gb", "gpufleet.io/site": "dc-fra"}
    # The residency policy's view: a namespace labelled with the data class and the site.
    ns = find(objs, "Namespace", dep["metadata"]["namespace"])
    assert ns["metadata"]["labels"]["gpufleet.io/data-class"] == "regulated"
    assert ns["metadata"]["labels"]["gpufleet.io/site"] == "dc-fra"
    assert dep["spec"]["template"]["metadata"]["labels"]["gpufleet.io/data-class"] == "regulated"
    # ... and unregulated models do not land in it.
    big = find(objs, "Deployment", "vllm-llama-3-1-70b-instruct")
    assert big["metadata"]["namespace"] != dep["metadata"]["namespace"]
    assert "gpufleet.io/data-class" not in find(objs, "Namespace", big["metadata"]["namespace"])["metadata"]["labels"]


def test_weights_from_the_object_store_stream_from_the_sites_store(fleet, edited_fleet):
    """An s3:// source loads with vLLM's Run:ai model streamer: from the data
    centre's MinIO (path-style, keys by Secret reference) or from S3 with the
    pod's role at an AWS site. A Hugging Face source keeps vLLM's default loader."""
    def env(c: dict) -> dict:
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}

    c = server(find(objects(fleet, "dc-fra"), "Deployment", "vllm-clinical-notes-8b"))
    assert c["args"][:2] == ["--model", "s3://acme-models/clinical-notes-8b-awq"]
    assert flag(c["args"], "--load-format") == "runai_streamer"
    e = env(c)
    assert e["AWS_ENDPOINT_URL"] == "https://minio.dc-fra.acme-llm.internal"
    assert e["RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING"] == "0" and e["AWS_EC2_METADATA_DISABLED"] == "true"
    assert e["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "model-store-minio", "key": "access-key"}}
    assert e["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "model-store-minio", "key": "secret-key"}}

    hf = server(find(objects(fleet, "aws-use1"), "Deployment", workload_name(fleet.models[0])))
    assert flag(hf["args"], "--load-format") is None and "AWS_ENDPOINT_URL" not in env(hf)

    f = edited_fleet(lambda d: model_entry(d, fleet.models[0].name).update(source="s3://acme-models/llama"))
    c = server(find(objects(f, "aws-use1"), "Deployment", workload_name(f.models[0])))
    assert flag(c["args"], "--load-format") == "runai_streamer"
    assert env(c)["AWS_REGION"] == "us-east-1" and "AWS_ACCESS_KEY_ID" not in env(c), "AWS sites use the pod's role, no keys"


def test_whole_gpu_replicas_ask_for_their_gpus_and_tolerate_the_gpu_taint(fleet):
    dep = find(objects(fleet, "aws-euc1"), "Deployment", "vllm-llama-3-1-70b-instruct")
    c = server(dep)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["gpufleet.io/accelerator"] == "l40s"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert dep["spec"]["replicas"] == 2


def test_probes_pdb_and_queue_depth_autoscaler(fleet):
    objs = objects(fleet, "dc-fra")
    dep = find(objs, "Deployment", "vllm-llama-3-1-70b-instruct")
    c = server(dep)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    # Loading 70B of weights takes far longer than a liveness failure window.
    startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    liveness = c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"]
    assert startup >= 1800 > liveness
    pdb = find(objs, "PodDisruptionBudget", "vllm-llama-3-1-70b-instruct")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    hpa = find(objs, "HorizontalPodAutoscaler", "vllm-llama-3-1-70b-instruct")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm-llama-3-1-70b-instruct"}
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm:num_requests_waiting"
    assert hpa["spec"]["minReplicas"] == 2
    # dc-fra has 12 L40S (3 servers x 4): at most 3 replicas of 4 GPUs.
    assert hpa["spec"]["maxReplicas"] == 3
    # The regulated model scales up to the MIG slices the site has (4 GPUs x 3 x 2g.20gb).
    assert find(objs, "HorizontalPodAutoscaler", "vllm-clinical-notes-8b")["spec"]["maxReplicas"] == 9
    # The adapter chart that serves that metric to the autoscaler is pinned.
    chart = next(c for b in build(fleet, "dc-fra") for c in b.charts if c.chart == "prometheus-adapter")
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart.version)
    assert "vllm:num_requests_waiting" in str(chart.values["rules"]["custom"])


def test_monitoring_contract_labels_and_port_names(fleet):
    objs = objects(fleet, "aws-use1")
    vllm_pods = [o["spec"]["template"] for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("vllm-")]
    assert len(vllm_pods) == 2
    for t in vllm_pods:
        assert t["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm"
        assert t["metadata"]["labels"]["app.kubernetes.io/instance"]
        assert any(p["name"] == "http" for p in t["spec"]["containers"][0]["ports"])
    gw = find(objs, "Service", "llm-gateway")
    assert gw["metadata"]["labels"]["app.kubernetes.io/name"] == "llm-gateway"
    assert [p["name"] for p in gw["spec"]["ports"]] == ["http"]


def test_time_sliced_replicas_share_the_gpu_memory(edited_fleet):
    def edit(data):
        model_entry(data, "llama-3-1-8b-instruct")["time_slicing"] = 2

    f = edited_fleet(edit)
    dep = find(objects(f, "aws-use1"), "Deployment", "vllm-llama-3-1-8b-instruct")
    assert flag(server(dep)["args"], "--gpu-memory-utilization") == "0.45"
    # It lands on the nodes whose device plugin shares each GPU two ways.
    from k8s import gpu_operator

    label = gpu_operator.device_plugin_node_labels(f, f.site("aws-use1"))["l4"]
    assert label.items() <= dep["spec"]["template"]["spec"]["nodeSelector"].items()
    assert gpu_operator.time_slicing_configs(f, f.site("aws-use1"))[next(iter(label.values()))] == 2


def test_model_flags_follow_the_fleet_description(edited_fleet):
    def edit(data):
        m = model_entry(data, "llama-3-1-70b-instruct")
        m["prefix_caching"] = False
        m["kv_cache_dtype"] = "fp8"
        m["context_length"] = 32768

    f = edited_fleet(edit)
    args = server(find(objects(f, "aws-euc1"), "Deployment", "vllm-llama-3-1-70b-instruct"))["args"]
    assert "--no-enable-prefix-caching" in args and "--enable-prefix-caching" not in args
    assert flag(args, "--kv-cache-dtype") == "fp8"
    assert flag(args, "--max-model-len") == "32768"


def test_replicas_at_sets_one_sites_replicas_and_autoscaler_bounds(edited_fleet):
    """``replicas`` holds at every site not in ``replicas_at``; the autoscaler's
    floor is the site's count and its ceiling max_factor (3) times it, capped by
    the site's L40S (4 per replica: dc-fra 12, aws-euc1 32, aws-use1 24)."""
    def edit(data):
        model_entry(data, "llama-3-1-70b-instruct").update(replicas=2, replicas_at={"aws-use1": 1, "dc-fra": 3})

    f = edited_fleet(edit)
    got = {}
    for site in ("aws-euc1", "aws-use1", "dc-fra"):
        objs = objects(f, site)
        hpa = find(objs, "HorizontalPodAutoscaler", "vllm-llama-3-1-70b-instruct")["spec"]
        got[site] = (find(objs, "Deployment", "vllm-llama-3-1-70b-instruct")["spec"]["replicas"], hpa["minReplicas"], hpa["maxReplicas"])
    assert got == {"aws-euc1": (2, 2, 6), "aws-use1": (1, 1, 3), "dc-fra": (3, 3, 3)}


def test_replicas_at_sets_a_leader_worker_sets_replicas(edited_fleet):
    def edit(data):
        m = model_entry(data, "llama-3-1-70b-instruct")
        m["placement"]["gpus"] = 8
        m.update(sites=["dc-fra", "aws-use1"], replicas=1, replicas_at={"aws-use1": 2})

    f = edited_fleet(edit)
    assert find(objects(f, "dc-fra"), "LeaderWorkerSet", "vllm-llama-3-1-70b-instruct")["spec"]["replicas"] == 1
    objs = objects(f, "aws-use1")
    assert find(objs, "LeaderWorkerSet", "vllm-llama-3-1-70b-instruct")["spec"]["replicas"] == 2
    assert find(objs, "HorizontalPodAutoscaler", "vllm-llama-3-1-70b-instruct")["spec"]["minReplicas"] == 2


def pod_template(template: dict, namespace: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name, "namespace": namespace}, "template": template}


def test_replica_larger_than_a_node_becomes_a_leader_worker_set(edited_fleet):
    # 8 L40S per replica; dc-fra's L40S servers carry 4 each.
    def edit(data):
        m = model_entry(data, "llama-3-1-70b-instruct")
        m["placement"]["gpus"] = 8
        m["sites"] = ["dc-fra"]
        m["replicas"] = 1

    f = edited_fleet(edit)
    objs = objects(f, "dc-fra")
    assert not [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "vllm-llama-3-1-70b-instruct"]
    lws = find(objs, "LeaderWorkerSet", "vllm-llama-3-1-70b-instruct")
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    tmpl = lws["spec"]["leaderWorkerTemplate"]
    assert tmpl["size"] == 2
    leader = tmpl["leaderTemplate"]["spec"]["containers"][0]
    worker = tmpl["workerTemplate"]["spec"]["containers"][0]
    script = leader["command"][-1]
    assert "--tensor-parallel-size 4" in script and "--pipeline-parallel-size 2" in script
    assert "--quantization fp8" in script and "--distributed-executor-backend ray" in script
    assert "LWS_LEADER_ADDRESS" in worker["command"][-1]
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == 4 == worker["resources"]["limits"]["nvidia.com/gpu"]
    # Only the leader serves HTTP: the Service and the scrape port are on it alone.
    svc = find(objs, "Service", "vllm-llama-3-1-70b-instruct")
    assert svc["spec"]["selector"]["gpufleet.io/lws-role"] == "leader"
    assert tmpl["leaderTemplate"]["metadata"]["labels"]["gpufleet.io/lws-role"] == "leader"
    assert not any(p["name"] == "http" for p in worker.get("ports", []))
    assert find(objs, "HorizontalPodAutoscaler", "vllm-llama-3-1-70b-instruct")["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"
    # LeaderWorkerSet has no CRD in the upstream set the oracle knows, so the
    # oracle refuses it; its pod templates are checked as core PodTemplates.
    assert any("no schema" in p for p in validate_object(lws))
    ns = lws["metadata"]["namespace"]
    assert_valid([pod_template(tmpl["leaderTemplate"], ns, "leader"), pod_template(tmpl["workerTemplate"], ns, "worker")])
    assert_valid([o for o in objs if o["kind"] != "LeaderWorkerSet"])


def test_every_rendered_object_validates(fleet):
    total = 0
    for site in fleet.sites:
        objs = objects(fleet, site.name)
        if not objs:
            continue
        assert_valid(objs)
        total += len(objs)
    assert total > 40


def test_images_are_pinned_by_tag_and_digest(fleet):
    pinned = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")
    for v in (versions.VLLM_IMAGE, versions.LITELLM_IMAGE, versions.VALKEY_IMAGE):
        assert pinned.match(v), v
    images = set()
    for site in fleet.sites:
        for o in objects(fleet, site.name):
            spec = o.get("spec", {}).get("template", {}).get("spec", {})
            images |= {c["image"] for c in spec.get("containers", [])}
    assert images == {versions.VLLM_IMAGE, versions.LITELLM_IMAGE, versions.VALKEY_IMAGE}


def test_hub_without_models_gets_no_serving(fleet):
    assert build(fleet, "fra-hub") == []
    assert build(fleet, fleet.site("fra-hub")) == []


def test_unknown_site_is_a_one_line_problem(fleet):
    with pytest.raises(FleetError) as exc:
        build(fleet, "dc-fr")
    assert str(exc.value) == "stacks/fleet.yaml: sites: unknown site 'dc-fr' (did you mean 'dc-fra'?); sites: fra-hub, dc-fra, aws-euc1, aws-use1"


def test_only_the_gateway_and_monitoring_reach_vllm(fleet):
    objs = objects(fleet, "dc-fra")
    gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "llm-serving"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "llm-gateway"}}}
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    for model in ("vllm-clinical-notes-8b", "vllm-llama-3-1-70b-instruct"):
        dep = find(objs, "Deployment", model)
        ns = dep["metadata"]["namespace"]
        [pol] = [o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == ns and o["metadata"]["name"] == "vllm-ingress"]
        selected = pol["spec"]["podSelector"].get("matchLabels", {})
        assert selected.items() <= dep["spec"]["template"]["metadata"]["labels"].items(), "the policy does not select the vLLM pods"
        assert pol["spec"]["policyTypes"] == ["Ingress"]
        rules = pol["spec"]["ingress"]
        assert [r["from"] for r in rules] == [[gateway], [prometheus], [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm"}}}]]
        assert rules[0]["ports"] == rules[1]["ports"] == [{"port": "http", "protocol": "TCP"}]
    # The regulated namespace reaches DNS, itself and the site's object store only.
    ns = find(objs, "Deployment", "vllm-clinical-notes-8b")["metadata"]["namespace"]
    egress = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == ns and "Egress" in o["spec"]["policyTypes"]}
    assert egress["default-deny-egress"] == {"podSelector": {}, "policyTypes": ["Egress"]}
    assert set(egress) == {"default-deny-egress", "allow-egress-dns", "allow-egress-same-namespace", "allow-egress-object-store"}
    assert egress["allow-egress-object-store"]["egress"][0]["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}}}]


def test_vllm_requires_an_api_key_that_the_gateway_passes(fleet):
    import yaml as _yaml

    bundles = {b.name: b for b in build(fleet, "dc-fra")}
    conf = _yaml.safe_load(bundles["llm-gateway"].files["config.yaml"])
    gw = next(o for o in bundles["llm-gateway"].objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    gw_env = {e["name"]: e for e in gw["env"]}
    for entry in conf["model_list"]:
        dep = find(bundles["vllm"].objects, "Deployment", f"vllm-{entry['model_name']}")
        ns = dep["metadata"]["namespace"]
        [key] = [e for e in server(dep)["env"] if e["name"] == "VLLM_API_KEY"]
        assert key["valueFrom"]["secretKeyRef"] == {"name": "vllm-api-key", "key": "api-key"}
        var = entry["litellm_params"]["api_key"].removeprefix("os.environ/")
        # The gateway reads the key of the model's namespace from its own namespace's Secret.
        assert gw_env[var]["valueFrom"]["secretKeyRef"] == {"name": "vllm-api-keys", "key": ns}


def test_group_layout_splits_a_replica_into_power_of_two_tensor_parallel_pods(fleet):
    from k8s.serving import layout

    site = fleet.site("dc-fra")  # L40S servers with 4 GPUs each
    base = next(m for m in fleet.models if m.name == "llama-3-1-70b-instruct")
    cases = {4: (4, 1), 8: (4, 2), 12: (4, 3), 6: (2, 3), 5: (1, 5)}
    for gpus, want in cases.items():
        m = base.model_copy(update={"placement": base.placement.model_copy(update={"gpus": gpus})})
        lay = layout(m, site)
        assert (lay.tensor_parallel, lay.pipeline_parallel) == want, gpus
        assert lay.tensor_parallel * lay.pipeline_parallel == gpus


@pytest.mark.parametrize(("quantization", "flag_value"), [("gptq", "gptq_marlin"), ("int8", "compressed-tensors"), ("fp8", "fp8"), ("none", None)])
def test_each_quantization_maps_to_vllms_method(edited_fleet, quantization, flag_value):
    def edit(data):
        m = model_entry(data, "llama-3-1-70b-instruct")
        m["quantization"] = quantization
        m["kv_cache_gib"] = 20  # so that 16-bit weights fit 4 x L40S too

    f = edited_fleet(edit)
    args = server(find(objects(f, "aws-euc1"), "Deployment", "vllm-llama-3-1-70b-instruct"))["args"]
    assert flag(args, "--quantization") == flag_value
