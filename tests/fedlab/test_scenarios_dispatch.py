"""Where a TrainJob submitted at the hub runs, and when the cloud is chosen.

README ("On-prem first, cloud burst after"): a research job goes to dc-fra
first; aws-euc1 is nominated only when dc-fra reports that it cannot admit the
job (its copy has QuotaReserved=False, no preemption pending), within one pass
of the dispatcher (5 s); then aws-euc1's empty p5 pool grows through
cluster-autoscaler. A clinical (regulated) job only ever goes to dc-fra.

"dc-fra full": plain pods (not Kueue's) take every whole H100 of its servers,
the way other work on the machines would; Kueue's topology-aware placement
counts them, so dc-fra's Kueue refuses the job for want of room.
"""

from __future__ import annotations

import calendar
import time

import nodes as lab_nodes
from scenario_kit import (
    CLINICAL,
    EFA_PLUGIN,
    RESEARCH,
    condition,
    copies,
    dispatcher,  # noqa: F401 - fixture
    elapsed,
    hub_workload,
    node_rows,
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

EFA = lab_nodes.EFA_RESOURCE
TRAINER = "trainer.kubeflow.org/v1alpha1"


def _wall(ts: str) -> float:
    return calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))


def _refusal(fed: Federation, job, site: str):
    wl = hub_workload(fed, job)
    if not wl:
        return None
    copy_ = workload_at(fed.sites[site], wl["metadata"]["name"], wl["metadata"]["namespace"])
    cond = condition(copy_, "QuotaReserved")
    return (cond, copy_) if cond and cond["status"] == "False" else None


def _explain(fed: Federation, job) -> str:
    wl = hub_workload(fed, job)
    lines = [f"hub workload: {wl and wl['metadata']['name']}: {wl and wl.get('status')}"]
    for name, site in fed.sites.items():
        if name == fed.hub or not wl:
            continue
        copy_ = workload_at(site, wl["metadata"]["name"], wl["metadata"]["namespace"])
        if copy_:
            lines.append(f"{name}: {[(c['type'], c['status'], c.get('message', '')) for c in copy_['status'].get('conditions', [])]}")
    return "\n".join(lines)


def test_research_job_runs_at_dc_fra_while_it_has_room(federation: Federation, dispatcher):
    t0 = time.monotonic()
    job = submit(federation, trainjob("research-fits", *RESEARCH, nodes=1, gpus=8))
    try:
        try:
            seen, nodes = wait_for("pod bound at dc-fra", lambda: placed_at(federation, job, "dc-fra", 1), 90, interval=0.3)
        except Exception as e:
            raise AssertionError(f"{e}\n{_explain(federation, job)}") from None
        say(f"research job bound at dc-fra {elapsed(t0):.1f} s after submission")
        assert all(nodes[n]["metadata"]["labels"]["gpufleet.io/site"] == "dc-fra" for n in seen.values())
        wl = hub_workload(federation, job)
        assert wl["status"].get("clusterName") == "dc-fra"
        assert copies(federation, job).get("aws-euc1") is False  # the cloud never got a copy
        if dispatcher is not None:
            mine = [d for d in dispatcher.decisions() if d["workload"].endswith("/" + wl["metadata"]["name"])]
            assert [d["nominated"] for d in mine] == [["dc-fra"]], mine
    finally:
        remove(federation, job)


def test_clinical_job_runs_at_dc_fra(federation: Federation, dispatcher):
    t0 = time.monotonic()
    job = submit(federation, trainjob("clinical-fits", *CLINICAL, nodes=1, gpus=8))
    try:
        try:
            wait_for("pod bound at dc-fra", lambda: placed_at(federation, job, "dc-fra", 1), 90, interval=0.3)
        except Exception as e:
            raise AssertionError(f"{e}\n{_explain(federation, job)}") from None
        say(f"clinical job bound at dc-fra {elapsed(t0):.1f} s after submission")
    finally:
        remove(federation, job)


def test_cloud_is_chosen_when_dc_fra_reports_it_cannot_admit_and_its_pool_grows(federation: Federation, dispatcher):
    """dc-fra full: a 2 x 8-GPU research job is refused there; the dispatcher
    nominates aws-euc1 within one pass (never before the refusal), and
    cluster-autoscaler grows aws-euc1's p5 pool from 0 for its pods."""
    aws = federation.sites["aws-euc1"]
    pool_nodes = lambda: [n for n in node_rows(aws).values() if n["metadata"]["labels"].get("gpufleet.io/pool") == "train-h100"]  # noqa: E731
    before = pool_nodes()
    assert not before, "the p5 pool starts at minSize 0 (this file runs before test_scenarios_pools.py)"
    busy = occupy(federation, "dc-fra")
    burst = None
    try:
        t0 = time.monotonic()
        burst = submit(federation, trainjob("research-burst", *RESEARCH, nodes=2, gpus=8))
        history: list[tuple[float, list[str]]] = []

        def nominated_cloud():
            st = (hub_workload(federation, burst) or {}).get("status") or {}
            names = list(st.get("nominatedClusterNames") or [])
            if not history or history[-1][1] != names:
                history.append((time.time(), names))
            return "aws-euc1" in names or st.get("clusterName") == "aws-euc1"

        def refused():
            nominated_cloud()
            return _refusal(federation, burst, "dc-fra")

        try:
            cond, _ = wait_for("dc-fra reports it cannot admit the job", refused, 60, interval=0.2)
        except Exception as e:
            raise AssertionError(f"{e}\n{_explain(federation, burst)}") from None
        t_refused = _wall(cond["lastTransitionTime"])
        try:
            wait_for("aws-euc1 nominated", nominated_cloud, 30, interval=0.2)
        except Exception as e:
            raise AssertionError(f"{e}: the cloud was not chosen within 30 s of dc-fra's refusal at "
                                 f"{cond['lastTransitionTime']} ({cond['reason']}: {cond['message']})\nnominations seen: {history}") from None
        t_nominated = next((t for t, names in history if "aws-euc1" in names), time.time())
        lag = t_nominated - t_refused
        say(f"aws-euc1 nominated {lag:.1f} s after dc-fra's QuotaReserved=False ({cond['reason']}: {cond['message'][:140]})")
        # Never before dc-fra refused (condition times have one-second resolution).
        early = [(t, names) for t, names in history if "aws-euc1" in names and t < t_refused - 1]
        assert not early, (early, cond["lastTransitionTime"])
        assert -1.0 <= lag <= 5 + 5, lag  # one dispatcher pass (5 s) plus the pass itself and the polling, on a loaded machine
        if dispatcher is not None:
            wl = hub_workload(federation, burst)
            mine = [d for d in dispatcher.decisions() if d["workload"].endswith("/" + wl["metadata"]["name"])]
            assert [d["nominated"] for d in mine][:2] == [["dc-fra"], ["dc-fra", "aws-euc1"]], mine
            assert mine[1]["reason"].startswith("dc-fra: "), mine[1]

        t1 = time.monotonic()
        seen: dict[str, str] = {}
        try:
            wait_for("burst pods bound at aws-euc1", lambda: placed_at(federation, burst, "aws-euc1", 2, seen), 180, interval=0.3)
        except Exception as e:
            raise AssertionError(f"{e}\np5 pool nodes: {[n['metadata']['name'] for n in pool_nodes()]}\n"
                                 f"pods: {[(p['metadata']['name'], p['status'].get('phase'), p['spec'].get('nodeName')) for p in pods(aws, burst)]}\n"
                                 f"{_explain(federation, burst)}") from None
        grown = pool_nodes()
        say(f"p5 pool grew 0 -> {len(grown)} nodes, the job's 2 pods bound {elapsed(t1):.1f} s after nomination ({elapsed(t0):.1f} s after submission)")
        assert len(grown) >= 2
        assert set(seen.values()) <= {n["metadata"]["name"] for n in grown}, seen
        # Nodes the autoscaler added (the kwok provider: providerID kwok:<name>).
        assert all(n["spec"].get("providerID", "").startswith("kwok:") for n in grown)
        # The pods asked for EFA (the site's LimitRange, k8s/trainer.py) and were bound
        # only once the rendered EFA device plugin ran on their nodes.
        efa = federation.efa["aws-euc1"]
        for p in pods(aws, burst):
            (main,) = [c for c in p["spec"]["containers"] if c["name"] == "node"] or p["spec"]["containers"][:1]
            assert EFA in {**(main["resources"].get("limits") or {}), **(main["resources"].get("requests") or {})}, (p["metadata"]["name"], main["resources"])
            node = p["spec"]["nodeName"]
            added = [t for t, n, what in efa.changes if n == node and what == "added"]
            bound = _wall((condition(p, "PodScheduled") or {})["lastTransitionTime"])
            assert added and bound >= added[0] - 1, (node, efa.changes, bound)
        hub_wl = hub_workload(federation, burst)
        assert hub_wl["status"].get("clusterName") == "aws-euc1"
        check = next(a for a in hub_wl["status"]["admissionChecks"])
        assert check["state"] == "Ready", check
        admitted = condition(hub_wl, "Admitted")
        delayed = [a.get("delayedTopologyRequest") for a in hub_wl["status"]["admission"]["podSetAssignments"]]
        say(f"hub workload of the job at aws-euc1: admission check {check['state']} ({check.get('message')}), "
            f"Admitted condition {admitted and (admitted['status'], admitted['reason'])}, delayedTopologyRequest {delayed}")
        # The hub's TrainJob shows the worker's status (Kueue's TrainJob MultiKueue adapter copies it).
        hub = federation.sites[federation.hub]
        md = burst["metadata"]

        def synced():
            here = (hub.client.get(TRAINER, "TrainJob", md["name"], md["namespace"]) or {}).get("status")
            there = (aws.client.get(TRAINER, "TrainJob", md["name"], md["namespace"]) or {}).get("status")
            return here if here and here == there and here.get("jobsStatus") else None
        st = wait_for("the hub's TrainJob shows aws-euc1's status", synced, 30)
        say(f"hub TrainJob status synced from aws-euc1: jobsStatus {st['jobsStatus']}")

        def plugin_everywhere():
            dps = [p for p in aws.client.list("v1", "Pod", "kube-system") if p["metadata"]["name"].startswith(EFA_PLUGIN)]
            on = {p["spec"].get("nodeName") for p in dps if p["status"].get("phase") == "Running"}
            return dps if on >= {n["metadata"]["name"] for n in grown} else None
        try:
            plugin_pods = wait_for("EFA device plugin Running on the new p5 nodes", plugin_everywhere, 60)
        except Exception as e:
            raise AssertionError(f"{e}: no EFA device plugin on the EFA pool's nodes") from None
        all_nodes = node_rows(aws)
        assert all(all_nodes[p["spec"]["nodeName"]]["metadata"]["labels"].get("gpufleet.io/pool") == "train-h100" for p in plugin_pods)
    finally:
        if burst is not None:
            remove(federation, burst, wait=120)
        release(federation, "dc-fra", busy)


def test_clinical_job_waits_for_dc_fra_and_never_goes_to_aws(federation: Federation, dispatcher):
    busy = occupy(federation, "dc-fra")
    job = None
    try:
        job = submit(federation, trainjob("clinical-waits", *CLINICAL, nodes=1, gpus=8))
        cond, _ = wait_for("dc-fra reports it cannot admit the clinical job", lambda: _refusal(federation, job, "dc-fra"), 60)
        say(f"clinical job refused at dc-fra ({cond['reason']}: {cond['message'][:140]}); watching 15 s, across a dispatcher restart")
        if dispatcher is not None:
            dispatcher.restart()  # no timer and no memory: a restart changes nothing
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            st = hub_workload(federation, job).get("status") or {}
            assert set(st.get("nominatedClusterNames") or []) <= {"dc-fra"}, st
            assert st.get("clusterName") in (None, "dc-fra"), st
            where = copies(federation, job)
            assert not where.get("aws-euc1") and not where.get("aws-use1"), where
            for name in ("aws-euc1", "aws-use1"):
                assert not pods(federation.sites[name], job)
            time.sleep(1)
        assert not placed_at(federation, job, "dc-fra", 1), "no room at dc-fra while it is full"
        if dispatcher is not None:
            wl = hub_workload(federation, job)
            mine = [d["nominated"] for d in dispatcher.decisions() if d["workload"].endswith("/" + wl["metadata"]["name"])]
            assert mine == [["dc-fra"]], mine
        # Once dc-fra has room, the job runs there.
        whole_server = next(p for p in busy if p["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "8")
        release(federation, "dc-fra", [whole_server])
        t0 = time.monotonic()
        wait_for("clinical job bound at dc-fra once there is room", lambda: placed_at(federation, job, "dc-fra", 1), 120, interval=0.3)
        say(f"clinical job bound at dc-fra {elapsed(t0):.1f} s after a server was freed")
    finally:
        if job is not None:
            remove(federation, job, wait=120)
        release(federation, "dc-fra", busy)
