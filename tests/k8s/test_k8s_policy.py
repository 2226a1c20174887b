"""Namespaces, network policies and the residency admission policy.

The admission policy's CEL expressions are taken from the rendered objects and
evaluated with cel-python against sample pods, the way the API server evaluates
them: variables in order, then each validation.
"""

from __future__ import annotations

import copy

import celpy
import pytest
from celpy import celtypes

from k8s import policy
from k8s_harness import named, objects_of

LABEL = "gpufleet.io/site"


def _join(items, sep=celtypes.StringType("")):
    return celtypes.StringType(str(sep).join(str(i) for i in items))


def evaluate(vap: dict, pod: dict, ns: dict) -> list[str]:
    """Messages of the validations ``pod`` fails (empty: admitted)."""
    env = celpy.Environment()
    functions = {"join": _join}  # Kubernetes' CEL strings library, used by the messages
    activation = {"object": celpy.json_to_cel(pod), "namespaceObject": celpy.json_to_cel(ns)}
    variables: dict = {}
    for var in vap["spec"]["variables"]:
        activation["variables"] = celtypes.MapType(variables)
        value = env.program(env.compile(var["expression"]), functions=functions).evaluate(activation)
        if isinstance(value, celpy.CELEvalError):
            raise value
        variables[celtypes.StringType(var["name"])] = value
    activation["variables"] = celtypes.MapType(variables)
    failed = []
    for rule in vap["spec"]["validations"]:
        ok = env.program(env.compile(rule["expression"]), functions=functions).evaluate(activation)
        assert isinstance(ok, celtypes.BoolType), f"{rule['expression']} evaluated to {ok!r}"
        if not ok:
            failed.append(str(env.program(env.compile(rule["messageExpression"]), functions=functions).evaluate(activation)))
    return failed


def _pod(node_selector=None, affinity=None) -> dict:
    spec = {"containers": [{"name": "train", "image": "busybox"}]}
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if affinity is not None:
        spec["affinity"] = affinity
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-clinical"}, "spec": spec}


def _affinity(*terms):
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def _term(key, op, values):
    return {"matchExpressions": [{"key": key, "operator": op, "values": values}]}


@pytest.fixture(scope="module")
def vaps(bundles):
    return {site: named(objects_of(b, "ValidatingAdmissionPolicy"), policy.POLICY) for site, b in bundles.items()}


@pytest.fixture(scope="module")
def clinical_ns(bundles):
    return named(objects_of(bundles["dc-fra"], "Namespace"), "team-clinical")


def test_regulated_namespace_is_labelled_and_research_is_not(clinical_ns, bundles):
    assert clinical_ns["metadata"]["labels"]["gpufleet.io/data-class"] == "regulated"
    research = named(objects_of(bundles["dc-fra"], "Namespace"), "team-research")
    assert "gpufleet.io/data-class" not in research["metadata"]["labels"]


def test_binding_applies_the_policy_to_data_class_namespaces_only(bundles):
    for site, b in bundles.items():
        binding = named(objects_of(b, "ValidatingAdmissionPolicyBinding"), policy.POLICY)
        assert binding["spec"]["policyName"] == policy.POLICY
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert binding["spec"]["matchResources"]["namespaceSelector"] == {"matchExpressions": [{"key": "gpufleet.io/data-class", "operator": "Exists"}]}


ALLOWED_SITE_CASES = [
    ("nodeSelector to dc-fra", _pod({LABEL: "dc-fra", "gpufleet.io/accelerator": "h100-80gb"}), True),
    ("affinity In [dc-fra]", _pod(affinity=_affinity(_term(LABEL, "In", ["dc-fra"]))), True),
    ("affinity, every term pinned", _pod(affinity=_affinity(_term(LABEL, "In", ["dc-fra"]), {"matchExpressions": [{"key": LABEL, "operator": "In", "values": ["dc-fra"]}, {"key": "x", "operator": "Exists"}]})), True),
    ("not pinned", _pod(), False),
    ("nodeSelector without the site", _pod({"gpufleet.io/accelerator": "h100-80gb"}), False),
    ("nodeSelector to another site", _pod({LABEL: "aws-euc1"}), False),
    ("affinity In [dc-fra, aws-euc1]", _pod(affinity=_affinity(_term(LABEL, "In", ["dc-fra", "aws-euc1"]))), False),
    ("affinity NotIn [aws-euc1]", _pod(affinity=_affinity(_term(LABEL, "NotIn", ["aws-euc1"]))), False),
    ("affinity, one term unpinned", _pod(affinity=_affinity(_term(LABEL, "In", ["dc-fra"]), _term("gpufleet.io/pool", "In", ["training"]))), False),
    ("preferred affinity only", _pod(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": _term(LABEL, "In", ["dc-fra"])}]}}), False),
]


@pytest.mark.parametrize("what,pod,admitted", ALLOWED_SITE_CASES, ids=[c[0] for c in ALLOWED_SITE_CASES])
def test_at_an_allowed_site_only_pods_pinned_to_allowed_sites_are_admitted(vaps, clinical_ns, what, pod, admitted):
    failed = evaluate(vaps["dc-fra"], pod, clinical_ns)
    assert (failed == []) == admitted, failed
    if not admitted:
        assert failed == ["pods in namespace team-clinical (regulated data) must be pinned to gpufleet.io/site in [dc-fra] by nodeSelector or required node affinity"]


@pytest.mark.parametrize("site", ["aws-euc1", "aws-use1", "fra-hub"])
def test_at_a_site_the_rule_does_not_allow_every_pod_is_rejected(vaps, clinical_ns, site):
    for pod in (_pod({LABEL: "dc-fra"}), _pod({LABEL: site}), _pod()):
        failed = evaluate(vaps[site], pod, clinical_ns)
        assert failed and failed[0] == f"namespace team-clinical holds regulated data, which may not be processed at site {site} (allowed: dc-fra)"


def test_a_data_class_without_a_residency_rule_is_allowed_nowhere(vaps, clinical_ns):
    ns = copy.deepcopy(clinical_ns)
    ns["metadata"]["labels"]["gpufleet.io/data-class"] = "unlisted"
    failed = evaluate(vaps["dc-fra"], _pod({LABEL: "dc-fra"}), ns)
    assert failed[0].endswith("may not be processed at site dc-fra (allowed: nowhere)")


def test_kueue_admitted_training_pods_pass_because_flavors_pin_the_site(bundles, vaps, clinical_ns):
    flavor = named(objects_of(bundles["dc-fra"], "ResourceFlavor"), "h100-80gb")
    pod = _pod(dict(flavor["spec"]["nodeLabels"]))  # Kueue injects the flavor's node labels as nodeSelector
    assert evaluate(vaps["dc-fra"], pod, clinical_ns) == []


def test_policy_matches_pod_creation(vaps):
    for vap in vaps.values():
        assert vap["spec"]["failurePolicy"] == "Fail"
        assert vap["spec"]["matchConstraints"]["resourceRules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]


# ------------------------------------------------------------- namespaces, network


def test_team_namespaces_enforce_pod_security(bundles, fleet):
    for site, b in bundles.items():
        for team in fleet.teams:
            labels = named(objects_of(b, "Namespace"), team.namespace)["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
            assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_gpu_operator_namespace_is_privileged_only_where_it_runs(bundles, fleet):
    for site, b in bundles.items():
        names = {n["metadata"]["name"]: n for n in objects_of(b, "Namespace")}
        assert ("gpu-operator" in names) == ("gpu-operator" in b)
        if "gpu-operator" in names:
            assert names["gpu-operator"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def _policies(bundles, ns):
    return {p["metadata"]["name"]: p["spec"] for p in objects_of(bundles["dc-fra"], "NetworkPolicy") if p["metadata"]["namespace"] == ns}


def test_training_namespaces_deny_by_default_and_allow_the_job_and_dns(bundles):
    for ns in ("team-research", "team-clinical"):
        pols = _policies(bundles, ns)
        assert pols["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        same = pols["allow-same-namespace"]
        assert same["ingress"] == [{"from": [{"podSelector": {}}]}] and same["egress"] == [{"to": [{"podSelector": {}}]}]
        dns = pols["allow-dns"]["egress"][0]
        assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
        assert dns["to"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}


def test_only_unregulated_training_may_reach_https_endpoints(bundles):
    assert "allow-https-egress" in _policies(bundles, "team-research")
    assert "allow-https-egress" not in _policies(bundles, "team-clinical")


def test_a_team_mixing_data_classes_is_refused(fleet_variant):
    import k8s

    def edit(data):
        data["teams"][1]["queues"].append({"name": "clinical-open", "priority": 1, "sites": ["dc-fra"], "quota": {"h100-80gb": 1}})
        data["residency"].append({"data_class": "internal", "sites": ["dc-fra"]})
        data["teams"][1]["queues"][-1]["data_class"] = "internal"

    variant = fleet_variant(edit)
    with pytest.raises(k8s.BundleError, match="team clinical: queues with different data classes"):
        k8s.site_bundles(variant, "dc-fra")


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def test_every_add_ons_workloads_in_data_class_namespaces_pass_the_policy(bundles, vaps):
    """Pods that other add-ons (serving, for one) put in data-class namespaces are admitted where they are rendered."""
    checked = 0
    for site, b in bundles.items():
        namespaces = {n["metadata"]["name"]: n for n in objects_of(b, "Namespace") if "gpufleet.io/data-class" in n["metadata"].get("labels", {})}
        for obj in objects_of(b):
            if obj["kind"] in WORKLOAD_KINDS and obj["metadata"].get("namespace") in namespaces:
                template = obj["spec"]["template"]
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": obj["metadata"]["namespace"]}, "spec": template["spec"]}
                assert evaluate(vaps[site], pod, namespaces[obj["metadata"]["namespace"]]) == [], (site, obj["kind"], obj["metadata"]["name"])
                checked += 1
    if not checked:
        pytest.skip("no add-on renders workloads in a data-class namespace")


def test_regulated_namespaces_reach_only_dns_themselves_and_the_object_store(fleet, bundles):
    """Every egress rule that applies in a regulated namespace, team or serving, at every site."""
    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    checked = set()
    for site, by_name in bundles.items():
        namespaces = [o for o in objects_of(by_name, "Namespace") if "gpufleet.io/data-class" in o["metadata"]["labels"]]
        for ns in (n["metadata"]["name"] for n in namespaces):
            pols = [p["spec"] for p in objects_of(by_name, "NetworkPolicy") if p["metadata"]["namespace"] == ns and "Egress" in p["spec"]["policyTypes"]]
            assert any(p["podSelector"] == {} and not p.get("egress") for p in pols), f"{site}/{ns}: no default-deny egress"
            for p in pols:
                assert p["podSelector"] == {}, f"{site}/{ns}: an egress rule for some pods only"
                for rule in p.get("egress", []):
                    assert rule.get("to"), f"{site}/{ns}: an egress rule to anywhere: {rule}"
                    for peer in rule["to"]:
                        if peer == dns:
                            assert {(x["protocol"], x["port"]) for x in rule["ports"]} == {("UDP", 53), ("TCP", 53)}
                        elif peer == {"podSelector": {}}:
                            pass  # the namespace's own pods
                        else:
                            assert rule == policy.object_store_egress(fleet.site(site)), f"{site}/{ns}: egress to {peer}, neither DNS, its own pods nor the object store"
                            assert "0.0.0.0/0" not in str(peer)
            checked.add(ns)
    assert {"team-clinical", "llm-serving-regulated"} <= checked

