"""Namespaces, network isolation and data residency, the same at every site.

* Namespaces: one per team, labelled with the team and, when any of its
  queues handles a data class, ``gpufleet.io/data-class``; Pod Security
  Admission enforces ``baseline`` and warns and audits at ``restricted``.
  The add-ons' own namespaces are declared here too (the GPU operator's is
  ``privileged``: its DaemonSets need the host).
* Network: training namespaces deny all traffic by default and allow what
  distributed training needs: traffic between the job's own pods (torchrun
  rendezvous, NCCL bootstrap; RDMA traffic bypasses the kernel and is not
  subject to NetworkPolicy) and cluster DNS. Namespaces without a data class
  may also reach HTTPS endpoints (model hubs, object storage); regulated ones
  (team and serving namespaces alike, :func:`regulated_egress`) reach only
  cluster DNS, their own namespace and the site's object store
  (:data:`OBJECT_STORE`), where their data, checkpoints and model weights
  live. None of their workloads calls the Kubernetes API (torchrun, vLLM and
  Ray do not), so no egress to the API server either.
* Residency: a ValidatingAdmissionPolicy rejects a pod in a namespace
  labelled ``gpufleet.io/data-class=<class>`` unless the pod is pinned (by
  ``nodeSelector`` or required node affinity) to ``gpufleet.io/site`` values
  that the class's residency rule allows; at a site the rule does not allow,
  it rejects every pod in such a namespace. Kueue's flavors add the site's
  ``nodeSelector`` to every workload they admit, so queued training passes
  at allowed sites without users pinning anything. Any add-on may label a
  namespace with a data class to put it under the same policy.
"""

from __future__ import annotations

import json
from typing import Any

from gpufleet.model import Fleet, Site, Team
from k8s import gpu_operator, kueue, trainer

# The site's object store, the one destination outside their namespace that
# regulated workloads need: per site kind, NetworkPolicy peers and TCP ports.
# Data centres run MinIO in the site's cluster, in namespace `minio` (the
# feedback endpoint https://minio.<site>.<fleet>.internal fronts it); AWS
# sites reach S3 through an S3 interface endpoint inside the site's VPC
# ("{vpc_cidr}" is the stack's network.vpcCidr). Change these where your
# object store lives elsewhere.
OBJECT_STORE: dict[str, dict[str, Any]] = {
    "datacenter": {"peers": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}}}], "ports": [443, 9000]},
    "aws": {"peers": [{"ipBlock": {"cidr": "{vpc_cidr}"}}], "ports": [443]},
}
KUBE_DNS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}

LABEL_DATA_CLASS = "gpufleet.io/data-class"
LABEL_SITE = "gpufleet.io/site"
LABEL_TEAM = "gpufleet.io/team"
POLICY = "gpufleet-data-residency"
PSA = "pod-security.kubernetes.io"


class PolicyError(ValueError):
    """Input the policy cannot express (``where: what``)."""


def _psa(enforce: str, warn: str = "restricted") -> dict[str, str]:
    return {
        f"{PSA}/enforce": enforce,
        f"{PSA}/enforce-version": "latest",
        f"{PSA}/warn": warn,
        f"{PSA}/audit": warn,
    }


def team_data_class(team: Team) -> str | None:
    classes = sorted({q.data_class for q in team.queues if q.data_class})
    if len(classes) > 1:
        raise PolicyError(f"team {team.name}: queues with different data classes ({', '.join(classes)}) share namespace {team.namespace}; give each class its own team")
    return classes[0] if classes else None


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpufleet", **labels}}}


def team_namespace(team: Team) -> dict[str, Any]:
    labels = {LABEL_TEAM: team.name, **_psa("baseline")}
    data_class = team_data_class(team)
    if data_class:
        labels[LABEL_DATA_CLASS] = data_class
    return namespace(team.namespace, labels)


def system_namespaces(site: Site) -> list[dict[str, Any]]:
    out = [namespace(kueue.NAMESPACE, _psa("baseline")), namespace(trainer.NAMESPACE, _psa("baseline"))]
    if gpu_operator.has_gpus(site):
        out.append(namespace(gpu_operator.NAMESPACE, _psa("privileged", warn="privileged")))
    return out


def _netpol(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/part-of": "gpufleet"}},
        "spec": spec,
    }


def object_store_egress(site: Site) -> dict[str, Any]:
    """An egress rule to the site's object store (:data:`OBJECT_STORE`)."""
    entry = OBJECT_STORE[site.kind]
    vpc = site.aws.network.vpc_cidr if site.aws else ""
    peers = json.loads(json.dumps(entry["peers"]).replace("{vpc_cidr}", str(vpc)))
    return {"to": peers, "ports": [{"protocol": "TCP", "port": p} for p in entry["ports"]]}


def _dns_egress() -> dict[str, Any]:
    return {"to": [dict(KUBE_DNS)], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def regulated_egress(ns: str, site: Site) -> list[dict[str, Any]]:
    """Egress of a regulated namespace: DNS, its own pods, the object store; nothing else."""
    return [
        _netpol("default-deny-egress", ns, {"podSelector": {}, "policyTypes": ["Egress"]}),
        _netpol("allow-egress-dns", ns, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [_dns_egress()]}),
        _netpol("allow-egress-same-namespace", ns, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {}}]}]}),
        _netpol("allow-egress-object-store", ns, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [object_store_egress(site)]}),
    ]


def network_policies(team: Team, site: Site | None = None) -> list[dict[str, Any]]:
    ns = team.namespace
    same_namespace = [{"podSelector": {}}]
    out = [
        _netpol("default-deny", ns, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _netpol("allow-same-namespace", ns, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{"from": same_namespace}], "egress": [{"to": same_namespace}]}),
        _netpol("allow-dns", ns, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [_dns_egress()]}),
    ]
    if team_data_class(team) is None:
        out.append(_netpol("allow-https-egress", ns, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"protocol": "TCP", "port": 443}]}]}))
    elif site is not None:
        # Regulated: data, checkpoints and weights from the site's object store only.
        out.append(_netpol("allow-egress-object-store", ns, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [object_store_egress(site)]}))
    return out


# ----------------------------------------------------------------- residency


def residency_rules(fleet: Fleet) -> dict[str, list[str]]:
    return {r.data_class: list(r.sites) for r in fleet.residency}


def _cel(value: Any) -> str:
    """A CEL literal for a string, a list of strings or a map of those (JSON syntax is valid CEL here)."""
    return json.dumps(value, sort_keys=True)


def _required_terms() -> str:
    return "object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"


def admission_policy(fleet: Fleet, site: Site) -> dict[str, Any]:
    rules = residency_rules(fleet)
    variables = [
        {"name": "site", "expression": _cel(site.name)},
        {"name": "dataClass", "expression": f"namespaceObject.metadata.labels[{_cel(LABEL_DATA_CLASS)}]"},
        # A class without a residency rule may be nowhere: fail closed.
        {"name": "allowedSites", "expression": f"variables.dataClass in {_cel(rules)} ? {_cel(rules)}[variables.dataClass] : []"},
        {"name": "siteAllowed", "expression": "variables.site in variables.allowedSites"},
        {
            "name": "pinnedBySelector",
            "expression": f"has(object.spec.nodeSelector) && {_cel(LABEL_SITE)} in object.spec.nodeSelector"
            f" && object.spec.nodeSelector[{_cel(LABEL_SITE)}] in variables.allowedSites",
        },
        {
            "name": "pinnedByAffinity",
            "expression": "has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity)"
            " && has(object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution)"
            f" && size({_required_terms()}) > 0"
            f" && {_required_terms()}.all(t, has(t.matchExpressions) && t.matchExpressions.exists(e,"
            f" e.key == {_cel(LABEL_SITE)} && e.operator == 'In' && size(e.values) > 0"
            " && e.values.all(v, v in variables.allowedSites)))",
        },
    ]
    validations = [
        {
            "expression": "variables.siteAllowed",
            "reason": "Forbidden",
            "messageExpression": "'namespace ' + namespaceObject.metadata.name + ' holds ' + variables.dataClass"
            " + ' data, which may not be processed at site ' + variables.site"
            " + ' (allowed: ' + (size(variables.allowedSites) > 0 ? variables.allowedSites.join(', ') : 'nowhere') + ')'",
        },
        {
            "expression": "variables.pinnedBySelector || variables.pinnedByAffinity",
            "reason": "Forbidden",
            "messageExpression": "'pods in namespace ' + namespaceObject.metadata.name + ' (' + variables.dataClass + ' data) must be pinned to "
            f"{LABEL_SITE} in [' + variables.allowedSites.join(', ') + '] by nodeSelector or required node affinity'",
        },
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY, "labels": {"app.kubernetes.io/part-of": "gpufleet", LABEL_SITE: site.name}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]},
            "variables": variables,
            "validations": validations,
        },
    }


def admission_binding() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY, "labels": {"app.kubernetes.io/part-of": "gpufleet"}},
        "spec": {
            "policyName": POLICY,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchExpressions": [{"key": LABEL_DATA_CLASS, "operator": "Exists"}]}},
        },
    }


def objects(fleet: Fleet, site: Site) -> list[dict[str, Any]]:
    objs = system_namespaces(site)
    for team in fleet.teams:
        objs.append(team_namespace(team))
    for team in fleet.teams:
        if team.queues:  # a team with training queues gets the training network policy
            objs += network_policies(team, site)
    objs += [admission_policy(fleet, site), admission_binding()]
    return objs


def build(fleet: Fleet, site: Site):
    from k8s.core import AddonBundle

    return AddonBundle("policy", objects=objects(fleet, site))
