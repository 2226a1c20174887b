"""The lab itself works: the render applies everywhere, every controller is
healthy, the hub reaches every worker, and a Job runs on a KWOK node."""

from __future__ import annotations

import uuid

from fedlab import Federation, wait_for

KUEUE = "kueue.x-k8s.io/v1beta2"


def test_render_applies_strictly_at_every_site(federation: Federation):
    assert not federation.findings, "the API servers refused or warned:\n" + "\n".join(str(f) for f in federation.findings)


def test_every_component_is_healthy(federation: Federation):
    health = federation.health()
    bad = {k: v for k, v in health.items() if v != "ok"}
    assert not bad, bad
    for site in federation.sites.values():
        ver = site.client.get_json("/version")
        assert ver["gitVersion"] == federation_version(), (site.name, ver)


def federation_version() -> str:
    from k8s.versions import FEDLAB_KUBERNETES_VERSION

    return FEDLAB_KUBERNETES_VERSION


def test_multikueue_clusters_active_at_the_hub(federation: Federation):
    hub = federation.sites[federation.hub]
    workers = sorted(s for s in federation.sites if s != federation.hub)

    def active():
        items = hub.client.list(KUEUE, "MultiKueueCluster")
        state = {i["metadata"]["name"]: {c["type"]: (c["status"], c.get("message", "")) for c in i.get("status", {}).get("conditions", [])} for i in items}
        return state if state and all(v.get("Active", ("",))[0] == "True" for v in state.values()) else None

    try:
        state = wait_for("MultiKueueClusters Active", active, 90)
    except Exception as e:  # show what Kueue says
        items = hub.client.list(KUEUE, "MultiKueueCluster")
        raise AssertionError(f"{e}\n" + "\n".join(f"{i['metadata']['name']}: {i.get('status')}" for i in items)) from None
    # One MultiKueueCluster per worker site the hub dispatches to, each through its Secret.
    assert set(state) <= set(workers) and state, state


def _job(name: str, namespace: str, site: str, labels: dict[str, str] | None = None, gpu: bool = False) -> dict:
    # The team namespaces warn on the "restricted" Pod Security level (k8s/policy.py): comply.
    container = {"name": "main", "image": "busybox", "command": ["true"], "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                 "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    if gpu:
        container["resources"] = {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}

    spec = {"restartPolicy": "Never", "containers": [container],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}}
    if not labels:  # a plain Job: it pins itself to the site and tolerates the GPU taint
        spec["nodeSelector"] = {"gpufleet.io/site": site}
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"backoffLimit": 0, "template": {"spec": spec}},
    }


def _succeeded(site, namespace: str, name: str):
    job = site.client.get("batch/v1", "Job", name, namespace)
    return job and job.get("status", {}).get("succeeded") == 1


def test_plain_job_runs_on_a_kwok_node_at_dc_fra(federation: Federation):
    site = federation.sites["dc-fra"]
    ns = "team-research"
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    status, body, warnings = site.client.create(_job(name, ns, "dc-fra"))
    assert status == 201 and not warnings, (status, body.get("message"), warnings)
    wait_for(f"Job {ns}/{name} Succeeded", lambda: _succeeded(site, ns, name), 60)
    pods = site.client.list("v1", "Pod", ns, selector=f"job-name={name}")
    nodes = {n["metadata"]["name"]: n for n in site.client.list("v1", "Node")}
    assert pods and all(p["spec"].get("nodeName") in nodes for p in pods), [p["spec"].get("nodeName") for p in pods]
    assert all(nodes[p["spec"]["nodeName"]]["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake" for p in pods)
    assert all(p["status"]["phase"] == "Succeeded" for p in pods)
