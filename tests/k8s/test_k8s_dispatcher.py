"""The on-prem-first dispatcher: its rule on workload objects, its writes, how it is deployed.

The rule's end-to-end behaviour against the real Kueue is in
tests/fedlab/test_scenarios_dispatch.py; here it is checked on objects shaped
as Kueue 0.19.2 writes them.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from k8s import dispatcher, multikueue
from k8s.dispatcher import controller as ctl
from k8s_harness import named

CHECKS = {"research-train-multikueue": "research-train"}
CONFIGS = {"research-train": ["dc-fra", "aws-euc1"]}
ACTIVE = {"dc-fra": True, "aws-euc1": True}


def workload(nominated=None, check_state="Pending", quota_reserved=True, cluster=None):
    status = {
        "conditions": [{"type": "QuotaReserved", "status": "True" if quota_reserved else "False", "reason": "QuotaReserved", "message": ""}],
        "admissionChecks": [{"name": "research-train-multikueue", "state": check_state, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }
    if nominated is not None:
        status["nominatedClusterNames"] = nominated
    if cluster:
        status["clusterName"] = cluster
    return {"metadata": {"name": "trainjob-a-1", "namespace": "team-research", "resourceVersion": "7"}, "status": status}


def remote_copy(reserved: str | None, message: str = "", reason: str = "Pending"):
    conds = [] if reserved is None else [{"type": "QuotaReserved", "status": reserved, "reason": reason, "message": message}]
    return {"metadata": {"name": "trainjob-a-1"}, "status": {"conditions": conds}}


def lookup(copies):
    return lambda cluster, ns, name: copies.get(cluster)


FULL = "couldn't assign flavors to pod set node: insufficient unused quota for nvidia.com/gpu in flavor h100-80gb, 8 more needed"


def test_first_site_is_nominated_at_once():
    d = ctl.decide(workload(), CHECKS, CONFIGS, ACTIVE, lookup({}))
    assert d and d.nominate == ["dc-fra"]


@pytest.mark.parametrize(
    "copy_,why",
    [
        (None, "the copy is not there yet"),
        (remote_copy(None), "the site has not evaluated it"),
        (remote_copy("True", reason="QuotaReserved"), "the site reserved quota"),
        (remote_copy("False", FULL + ". Pending the preemption of 1 workload(s)"), "the site is preempting for it"),
    ],
)
def test_the_cloud_waits_while_the_data_centre_has_not_refused(copy_, why):
    copies = {} if copy_ is None else {"dc-fra": copy_}
    assert ctl.decide(workload(["dc-fra"]), CHECKS, CONFIGS, ACTIVE, lookup(copies)) is None, why


def test_the_cloud_is_nominated_when_the_data_centre_reports_it_cannot_admit():
    d = ctl.decide(workload(["dc-fra"]), CHECKS, CONFIGS, ACTIVE, lookup({"dc-fra": remote_copy("False", FULL)}))
    assert d is not None
    assert d.nominate == ["dc-fra", "aws-euc1"]  # the data centre keeps its chance
    assert "insufficient unused quota" in d.reason and "aws-euc1" in d.reason


def test_an_unreachable_data_centre_counts_as_cannot_admit():
    d = ctl.decide(workload(["dc-fra"]), CHECKS, CONFIGS, {"dc-fra": False, "aws-euc1": True}, lookup({}))
    assert d and d.nominate == ["dc-fra", "aws-euc1"] and "not Active" in d.reason


def test_without_credentials_for_the_data_centre_nothing_bursts():
    """No Secret to read dc-fra with: the dispatcher cannot tell, so it waits (never guesses)."""
    assert ctl.decide(workload(["dc-fra"]), CHECKS, CONFIGS, ACTIVE, lambda c, ns, n: None) is None


@pytest.mark.parametrize(
    "wl",
    [
        workload(["dc-fra"], cluster="dc-fra"),  # admitted: clusterName is final
        workload(check_state="Ready"),
        workload(quota_reserved=False),  # no quota at the hub yet
        workload(["dc-fra", "aws-euc1"]),  # nothing after the last site
    ],
)
def test_no_decision(wl):
    copies = {"dc-fra": remote_copy("False", FULL), "aws-euc1": remote_copy("False", FULL)}
    assert ctl.decide(wl, CHECKS, CONFIGS, ACTIVE, lookup(copies)) is None


def test_a_regulated_queue_never_gets_a_site_its_config_does_not_list():
    checks = {"clinical-train-multikueue": "clinical-train"}
    wl = workload(["dc-fra"])
    wl["status"]["admissionChecks"][0]["name"] = "clinical-train-multikueue"
    d = ctl.decide(wl, checks, {"clinical-train": ["dc-fra"]}, ACTIVE, lookup({"dc-fra": remote_copy("False", FULL)}))
    assert d is None


# ------------------------------------------------------------------ writes


def test_the_patch_reapplies_exactly_what_kueue_admission_owns():
    wl = workload(["dc-fra"])
    wl["status"]["conditions"].append({"type": "Finished", "status": "False", "reason": "x", "message": ""})
    wl["metadata"]["managedFields"] = [
        {
            "manager": "kueue-admission",
            "operation": "Apply",
            "subresource": "status",
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "fieldsV1": {
                "f:status": {
                    "f:admissionChecks": {'k:{"name":"research-train-multikueue"}': {".": {}, "f:name": {}, "f:state": {}, "f:lastTransitionTime": {}, "f:message": {}}},
                    "f:conditions": {'k:{"type":"QuotaReserved"}': {".": {}, "f:type": {}, "f:status": {}, "f:reason": {}, "f:message": {}}},
                    "f:nominatedClusterNames": {},
                }
            },
        },
        {"manager": "someone-else", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {"f:conditions": {'k:{"type":"Finished"}': {}}}}},
    ]
    body = ctl.nomination_patch(wl, ["dc-fra", "aws-euc1"])
    assert body["metadata"] == {"name": "trainjob-a-1", "namespace": "team-research", "resourceVersion": "7"}
    status = body["status"]
    assert status["nominatedClusterNames"] == ["dc-fra", "aws-euc1"]
    assert [c["type"] for c in status["conditions"]] == ["QuotaReserved"]  # never the other manager's condition
    assert status["admissionChecks"][0]["state"] == "Pending"
    assert set(status) == {"admissionChecks", "conditions", "nominatedClusterNames"}


def test_the_controller_runs_on_the_standard_library_alone(tmp_path):
    """It runs from a ConfigMap in the stock Python image: no third-party import."""
    code = (
        "import sys, runpy\n"
        "sys.path = [p for p in sys.path if 'site-packages' not in p and 'dist-packages' not in p]\n"
        f"runpy.run_path({str(dispatcher.SOURCE)!r}, run_name='not_main')\n"
    )
    subprocess.run([sys.executable, "-I", "-S", "-c", code], check=True, capture_output=True, text=True)
    out = subprocess.run([sys.executable, "-I", "-S", str(dispatcher.SOURCE), "--server", "https://127.0.0.1:1", "--ca-file", str(tmp_path / "none")], capture_output=True, text=True)
    assert out.returncode == 2 and "none: No such file" in out.stderr


# ------------------------------------------------------------------ deployment


def test_hub_runs_the_controller_from_its_own_source(bundles, fleet):
    objs = bundles[fleet.hub]["dispatcher"].objects
    cm = named([o for o in objs if o["kind"] == "ConfigMap"], "gpufleet-dispatcher")
    assert cm["data"]["controller.py"] == dispatcher.SOURCE.read_text()
    dep = named([o for o in objs if o["kind"] == "Deployment"], "gpufleet-dispatcher")
    pod = dep["spec"]["template"]
    assert pod["metadata"]["annotations"]["gpufleet.io/controller-sha256"] == hashlib.sha256(cm["data"]["controller.py"].encode()).hexdigest()
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = pod["spec"]["containers"]
    assert "@sha256:" in container["image"] and container["image"].startswith("docker.io/library/python:3.11.")
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"]


def test_hub_dispatcher_may_read_only_its_worker_secrets(bundles, fleet):
    objs = bundles[fleet.hub]["dispatcher"].objects
    role = named([o for o in objs if o["kind"] == "Role"], "gpufleet-dispatcher")
    (rule,) = role["rules"]
    assert rule["resources"] == ["secrets"] and rule["verbs"] == ["get"]
    assert rule["resourceNames"] == [dispatcher.secret_name(s) for s in multikueue.dispatch_sites(fleet)]
    cluster_role = named([o for o in objs if o["kind"] == "ClusterRole"], "gpufleet-dispatcher")
    writes = [r for r in cluster_role["rules"] if set(r["verbs"]) - {"get", "list", "watch"}]
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in writes} == {(("workloads/status",), ("patch",)), (("events",), ("create",))}


def test_each_dispatch_site_has_a_read_only_account_for_the_hub(bundles, fleet):
    for site in multikueue.dispatch_sites(fleet):
        objs = bundles[site]["dispatcher"].objects
        role = named([o for o in objs if o["kind"] == "ClusterRole"], ctl.READER)
        assert role["rules"] == [{"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["get", "list", "watch"]}]
        token = named([o for o in objs if o["kind"] == "Secret"], dispatcher.READER_TOKEN)
        assert token["type"] == "kubernetes.io/service-account-token" and "data" not in token
    assert "dispatcher" not in bundles["aws-use1"]  # serving only: nothing dispatched there


def test_plan_states_the_rule(fleet):
    for q in multikueue.dispatch_plan(fleet):
        assert q["dispatcher"] == ctl.NAME
        assert "cannot admit" in q["rule"]
