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
  may not.
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


def network_policies(team: Team) -> list[dict[str, Any]]:
    ns = team.namespace
    same_namespace = [{"podSelector": {}}]
    out = [
        _netpol("default-deny", ns, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _netpol("allow-same-namespace", ns, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{"from": same_namespace}], "egress": [{"to": same_namespace}]}),
        _netpol(
            "allow-dns",
            ns,
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    }
                ],
            },
        ),
    ]
    if team_data_class(team) is None:
        out.append(_netpol("allow-https-egress", ns, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"protocol": "TCP", "port": 443}]}]}))
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
            objs += network_policies(team)
    objs += [admission_policy(fleet, site), admission_binding()]
    return objs


def build(fleet: Fleet, site: Site):
    from k8s.core import AddonBundle

    return AddonBundle("policy", objects=objects(fleet, site))
