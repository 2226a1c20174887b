"""Placement at dc-fra: one InfiniBand block on request, MIG slices for serving,
and the queue metrics Kueue reports."""

from __future__ import annotations

import ssl
import time
import urllib.request

from gpufleet import facts
from scenario_kit import (
    RESEARCH,
    TOPOLOGY_REQUIRED,
    condition,
    dispatcher,  # noqa: F401 - fixture
    elapsed,
    hub_workload,
    occupy,
    placed_at,
    pods,
    release,
    remove,
    say,
    submit,
    trainjob,
    workload_at,
)

from fedlab import Federation, wait_for

IB_BLOCK = facts.LABEL_IB_BLOCK


def _explain(fed: Federation, job) -> str:
    wl = hub_workload(fed, job)
    out = [f"hub: {wl and [(c['type'], c['status'], c.get('message', '')) for c in wl.get('status', {}).get('conditions', [])]}"]
    for name, site in fed.sites.items():
        if name != fed.hub and wl:
            c = workload_at(site, wl["metadata"]["name"], wl["metadata"]["namespace"])
            if c:
                out.append(f"{name}: {[(x['type'], x['status'], x.get('message', '')) for x in c['status'].get('conditions', [])]}")
    return "\n".join(out)


def test_job_asking_for_one_infiniband_block_gets_one_and_an_unannotated_job_runs_too(federation: Federation, dispatcher):
    t0 = time.monotonic()
    blocked = submit(federation, trainjob("research-ib", *RESEARCH, nodes=2, gpus=8, annotations={TOPOLOGY_REQUIRED: IB_BLOCK}))
    plain = submit(federation, trainjob("research-plain", *RESEARCH, nodes=1, gpus=8))
    try:
        assignment: dict = {}
        seen: dict[str, str] = {}

        def placed():
            # Kueue's placement at the worker (read while the copy exists: KWOK's
            # fast stages finish the job at once and MultiKueue then removes it).
            wl = hub_workload(federation, blocked)
            if wl and not assignment:
                copy_ = workload_at(federation.sites["dc-fra"], wl["metadata"]["name"], wl["metadata"]["namespace"])
                for psa in (((copy_ or {}).get("status") or {}).get("admission") or {}).get("podSetAssignments") or []:
                    if psa.get("topologyAssignment"):
                        assignment.update(psa["topologyAssignment"])
                        assignment["request"] = copy_["spec"]["podSets"][0].get("topologyRequest")
            got = placed_at(federation, blocked, "dc-fra", 2, seen)
            return got if got and assignment else None
        try:
            seen, nodes = wait_for("the IB-block job's pods bound at dc-fra", placed, 90, interval=0.3)
        except Exception as e:
            raise AssertionError(f"{e}\n{_explain(federation, blocked)}") from None
        blocks = {nodes[n]["metadata"]["labels"].get(IB_BLOCK) for n in seen.values()}
        assert len(blocks) == 1 and None not in blocks, blocks
        say(f"IB-block job bound at dc-fra on block {sorted(blocks)[0]} {elapsed(t0):.1f} s after submission")
        # Kueue at dc-fra read the request and placed the pods by it (the assignment names the hosts).
        assert (assignment["request"] or {}).get("required") == IB_BLOCK, assignment
        assert assignment["levels"][-1] == "kubernetes.io/hostname", assignment
        try:
            wait_for("the unannotated job's pod bound at dc-fra", lambda: placed_at(federation, plain, "dc-fra", 1), 60, interval=0.3)
        except Exception as e:
            raise AssertionError(f"{e}\n{_explain(federation, plain)}") from None
    finally:
        for j in (blocked, plain):
            remove(federation, j)


def test_job_requiring_an_infiniband_block_waits_for_dc_fra_and_wins_it_back(federation: Federation, dispatcher):
    """README: cloud flavors are quota-only, so a job that requires an InfiniBand
    block is refused at aws-euc1 and waits; dc-fra stays nominated, so it runs
    there once dc-fra has room."""
    busy = occupy(federation, "dc-fra")
    job = None
    try:
        job = submit(federation, trainjob("research-ib-waits", *RESEARCH, nodes=2, gpus=8, annotations={TOPOLOGY_REQUIRED: IB_BLOCK}))

        def refused_at(site):
            wl = hub_workload(federation, job)
            copy_ = wl and workload_at(federation.sites[site], wl["metadata"]["name"], wl["metadata"]["namespace"])
            c = condition(copy_, "QuotaReserved")
            return c if c and c["status"] == "False" else None
        try:
            wait_for("dc-fra reports it cannot admit the IB-block job", lambda: refused_at("dc-fra"), 60, interval=0.5)
            cloud = wait_for("aws-euc1 reports it cannot admit the IB-block job", lambda: refused_at("aws-euc1"), 60, interval=0.5)
        except Exception as e:
            raise AssertionError(f"{e}\n{_explain(federation, job)}") from None
        say(f"IB-block job refused at aws-euc1: {cloud['reason']}: {cloud['message'][:160]}")
        assert "does not support TopologyAwareScheduling" in cloud["message"], cloud
        for name in ("aws-euc1", "aws-use1"):
            assert not pods(federation.sites[name], job), name
        st = hub_workload(federation, job)["status"]
        assert "dc-fra" in (st.get("nominatedClusterNames") or []) and not st.get("clusterName"), st
        release(federation, "dc-fra", busy)
        busy = []
        t0 = time.monotonic()
        seen: dict[str, str] = {}
        try:
            seen, nodes = wait_for("the IB-block job bound at dc-fra once it has room",
                                   lambda: placed_at(federation, job, "dc-fra", 2, seen), 120, interval=0.3)
        except Exception as e:
            raise AssertionError(f"{e}\n{_explain(federation, job)}") from None
        blocks = {nodes[n]["metadata"]["labels"].get(IB_BLOCK) for n in seen.values()}
        assert len(blocks) == 1 and None not in blocks, blocks
        assert hub_workload(federation, job)["status"].get("clusterName") == "dc-fra"
        say(f"IB-block job bound at dc-fra (block {sorted(blocks)[0]}) {elapsed(t0):.1f} s after its servers were freed")
        for name in ("aws-euc1", "aws-use1"):
            assert not pods(federation.sites[name], job), name
    finally:
        if job is not None:
            remove(federation, job, wait=120)
        if busy:
            release(federation, "dc-fra", busy)


def test_clinical_notes_serving_pods_are_bound_to_the_mig_partitioned_server(federation: Federation):
    dc = federation.sites["dc-fra"]
    mig_servers = {s.name for s in federation.fleet.site("dc-fra").servers if s.mig_slices}
    assert mig_servers == {"fra-hgx-04"}

    def serving_pods():
        ps = [p for p in dc.client.list("v1", "Pod", "llm-serving-regulated", selector="gpufleet.io/model=clinical-notes-8b")
              if p["status"].get("phase") == "Running"]
        return ps if len(ps) >= 3 else None
    try:
        ps = wait_for("3 clinical-notes-8b pods Running", serving_pods, 60)
    except Exception as e:
        listed = dc.client.list("v1", "Pod", "llm-serving-regulated")
        raise AssertionError(f"{e}: {[(p['metadata']['name'], p['status'].get('phase'), p['spec'].get('nodeName')) for p in listed]}") from None
    for p in ps:
        asked = p["spec"]["containers"][0]["resources"]["requests"]
        assert asked.get("nvidia.com/mig-2g.20gb") in ("1", 1), asked
        assert p["spec"]["nodeName"] in mig_servers, p["spec"]["nodeName"]


def _metrics(fed: Federation, site_name: str) -> str:
    """Kueue's /metrics, read the way the monitoring add-on's ServiceMonitor does: a
    service-account token allowed GET /metrics, TLS not verified (self-signed)."""
    site = fed.sites[site_name]
    c = site.client
    for obj in (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "lab-metrics-reader", "namespace": "kueue-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "lab-metrics-reader"},
         "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "lab-metrics-reader"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "lab-metrics-reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "lab-metrics-reader", "namespace": "kueue-system"}]},
    ):
        c.apply(obj, manager="fedlab")
    status, body, _ = c.request("POST", "/api/v1/namespaces/kueue-system/serviceaccounts/lab-metrics-reader/token",
                                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}})
    assert status == 201, body
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"https://127.0.0.1:{site.ports['kueue-metrics']}/metrics",
                                 headers={"Authorization": f"Bearer {body['status']['token']}"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return r.read().decode()


def test_kueue_reports_cluster_queue_resource_metrics(federation: Federation):
    """The queue dashboard's quota panel: kueue_cluster_queue_resource_usage per
    queue, flavor and resource (k8s/monitoring/dashboards.py)."""
    def present():
        text = _metrics(federation, "dc-fra")
        rows = [line for line in text.splitlines() if line.startswith("kueue_cluster_queue_nominal_quota{")]
        usage = [line for line in text.splitlines() if line.startswith("kueue_cluster_queue_resource_usage{")]
        return (rows, usage) if rows and usage else None
    try:
        rows, usage = wait_for("kueue_cluster_queue_* metrics at dc-fra", present, 60, interval=2)
    except Exception as e:
        text = _metrics(federation, "dc-fra")
        names = sorted({line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("kueue_cluster_queue")})
        raise AssertionError(f"{e}; kueue_cluster_queue metrics served: {names}") from None
    assert any('cluster_queue="research-train"' in r and 'flavor="h100-80gb"' in r and 'resource="nvidia.com/gpu"' in r for r in usage), usage
    assert any('cluster_queue="clinical-train"' in r for r in rows), rows
