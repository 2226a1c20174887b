"""Cloud capacity at aws-euc1: the p5 pool grows from zero, and its nodes get EFA.

These drive aws-euc1 directly (its own LocalQueue, a node joining), so each
mechanism is shown on its own; test_scenarios_dispatch.py shows them behind
the hub's dispatch (it runs first, while the pool is still at 0).
"""

from __future__ import annotations

import time
import uuid

import nodes as lab_nodes
from scenario_kit import EFA_PLUGIN, elapsed, node_rows, placed_at, pods, remove_at, say, trainjob

from fedlab import Federation, wait_for

POOL = "train-h100"


def _pool_nodes(site):
    return [n for n in node_rows(site).values() if n["metadata"]["labels"].get("gpufleet.io/pool") == POOL]


def test_a_job_at_aws_euc1_grows_the_empty_p5_pool_through_cluster_autoscaler(federation: Federation):
    aws = federation.sites["aws-euc1"]
    before = _pool_nodes(aws)  # nodes an earlier scenario made may still be there (scale-down waits 10 min)
    pool = next(p for p in federation.fleet.site("aws-euc1").node_pools if p.name == POOL)
    want = len(before) + 1  # one 8-GPU pod per p5 node: one more than the pool has
    assert want <= pool.max_size, (len(before), pool.max_size)
    job = trainjob("research-at-aws", "research-train", "team-research", nodes=want, gpus=8)
    status, body, warnings = aws.client.create(job)
    assert status == 201 and not warnings, (status, body.get("message"), warnings)
    t0 = time.monotonic()
    seen: dict[str, str] = {}
    try:
        try:
            wait_for("the job's pods bound at aws-euc1", lambda: placed_at(federation, job, "aws-euc1", want, seen), 180, interval=0.3)
        except Exception as e:
            ps = pods(aws, job)
            events = [f"{ev.get('reason')}: {ev.get('note') or ev.get('message')}" for ev in aws.client.list("v1", "Event", "team-research")][-8:]
            raise AssertionError(f"{e}\npool nodes: {[n['metadata']['name'] for n in _pool_nodes(aws)]} (before: {len(before)})\n"
                                 f"pods: {[(p['metadata']['name'], p['status'].get('phase'), [c.get('message') for c in p['status'].get('conditions', [])]) for p in ps]}\n"
                                 f"events: {events}") from None
        grown = _pool_nodes(aws)
        say(f"aws-euc1 p5 pool {len(before)} -> {len(grown)} nodes, {want} pods bound {elapsed(t0):.1f} s after submission")
        assert len(grown) > len(before)
        rows = node_rows(aws)
        assert all(rows[n]["metadata"]["labels"]["gpufleet.io/pool"] == POOL for n in seen.values())
        new = [n for n in grown if n["metadata"]["name"] not in {b["metadata"]["name"] for b in before}]
        assert all(n["spec"].get("providerID", "").startswith("kwok:") for n in new)  # cluster-autoscaler's kwok provider
    finally:
        remove_at(aws, job)


def test_efa_device_plugin_lands_on_every_efa_node_and_no_other(federation: Federation):
    """A p5 node joins, as EKS registers it: the rendered EFA device plugin
    DaemonSet puts its pod there, and on no serving or system node."""
    aws = federation.sites["aws-euc1"]
    fleet = federation.fleet
    site = fleet.site("aws-euc1")
    pool, args = next((p, a) for p, a in lab_nodes._pool_args(fleet, site) if p.name == POOL)
    node = lab_nodes.pool_template(fleet, site, pool, args, index=0)
    name = f"{args.node_group_name}-joined-{uuid.uuid4().hex[:4]}"
    node["metadata"]["name"] = name
    node["metadata"]["labels"]["kubernetes.io/hostname"] = name
    node["spec"]["providerID"] = f"kwok:{name}"
    status, body, warnings = aws.client.create(node)
    assert status == 201 and not warnings, (status, body.get("message"))
    t0 = time.monotonic()
    try:
        def plugin_pods():
            return [p for p in aws.client.list("v1", "Pod", "kube-system") if p["metadata"]["name"].startswith(EFA_PLUGIN)]

        def on_node():
            return [p for p in plugin_pods() if p["spec"].get("nodeName") == name and p["status"].get("phase") == "Running"]
        try:
            wait_for(f"EFA device plugin Running on {name}", on_node, 60)
        except Exception as e:
            raise AssertionError(f"{e}: DaemonSets in kube-system: "
                                 f"{[d['metadata']['name'] for d in aws.client.list('apps/v1', 'DaemonSet', 'kube-system')]}") from None
        say(f"EFA device plugin Running on the joined p5 node {elapsed(t0):.1f} s after it registered")
        # The node registered without EFA; the plugin brought its interfaces.
        assert lab_nodes.EFA_RESOURCE not in node["status"]["allocatable"], node["status"]
        efa = wait_for(f"{name}: {lab_nodes.EFA_RESOURCE} allocatable",
                       lambda: (aws.client.get("v1", "Node", name) or {}).get("status", {}).get("allocatable", {}).get(lab_nodes.EFA_RESOURCE), 30)
        assert efa == str(args.efa_interfaces), (efa, args.efa_interfaces)
        rows = node_rows(aws)
        for p in plugin_pods():
            n = p["spec"].get("nodeName")
            assert n is None or rows[n]["metadata"]["labels"].get("gpufleet.io/pool") == POOL, (p["metadata"]["name"], n)
    finally:
        aws.client.delete("v1", "Node", name)
