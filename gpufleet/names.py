"""Names a Kubernetes cluster accepts, and the namespaces that are not the teams' to take.

The rules are the API server's own (``k8s.io/apimachinery``):

* ``pkg/util/validation/validation.go``: ``IsDNS1123Label`` (namespaces:
  ``ValidateNamespaceName``; lower-case letters, digits and ``-``, at most 63)
  and ``IsDNS1123Subdomain`` (node names: ``ValidateNodeName``; labels of that
  kind joined by ``.``, at most 253);
* ``pkg/api/validate/content``: ``IsLabelKey`` (an optional DNS-subdomain
  prefix and ``/``, then a name of letters, digits, ``-``, ``_`` and ``.``
  that starts and ends with a letter or digit, at most 63) and
  ``IsLabelValue`` (the same characters, at most 63, or empty).

A data-centre node is named after its inventory host
(``roles/k8s_node/templates/kubeadm-join.yaml.j2``: ``nodeRegistration.name``
is ``inventory_hostname``), so host names follow the node-name rule.

:data:`RESERVED_NAMESPACES` are the namespaces Kubernetes creates and those
the fleet's add-ons install into (``tests/model/test_names.py`` checks the
list against every Namespace ``gpufleet render`` writes): a team given one of
them would share it with a system component and its policies.
"""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL = re.compile(rf"^{_LABEL}$")
DNS_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# Created by Kubernetes itself (kube-apiserver's system namespaces).
KUBERNETES_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# What the fleet's add-ons install into (k8s/kueue.py, k8s/trainer.py,
# k8s/gpu_operator.py, k8s/monitoring/config.py, k8s/serving/config.py).
ADDON_NAMESPACES = ("kueue-system", "kubeflow-system", "gpu-operator", "monitoring", "llm-serving")
RESERVED_NAMESPACES = KUBERNETES_NAMESPACES + ADDON_NAMESPACES
# Prefixes of namespaces made per use: Kubernetes reserves kube-*, and serving
# makes llm-serving-<data class> for each regulated data class it serves.
RESERVED_PREFIXES = ("kube-", "llm-serving-")
# Node labels gpufleet itself sets (cloud/nodepools.py on node pools,
# gpufleet/baremetal_vars.py on servers, the GPU operator's configuration
# labels): a pool label with one of these keys would silently override it.
GPUFLEET_NODE_LABELS = (
    "gpufleet.io/site", "gpufleet.io/pool", "gpufleet.io/accelerator", "gpufleet.io/rack", "gpufleet.io/server-class",
    "gpufleet.io/ib-block", "gpufleet.io/fabric", "k8s.amazonaws.com/accelerator", "nvidia.com/mig.config",
    "nvidia.com/device-plugin.config",
)
# Label and taint keys under these prefixes are set by Kubernetes, EKS or
# gpufleet, never by hand: the EKS API refuses node-group labels and taints with
# "reserved prefixes [kubernetes.io/, k8s.io/, eks.amazonaws.com/]"
# (aws/containers-roadmap#1451); nvidia.com/gpu.deploy.* decide where the GPU
# operator runs its operands (gpufleet sets them on data-centre servers).
RESERVED_LABEL_PREFIXES = ("kubernetes.io/", "k8s.io/", "eks.amazonaws.com/", "nvidia.com/gpu.deploy.")


def dns_label(value: str) -> str | None:
    """Why ``value`` is not an RFC 1123 label (a namespace name); None when it is one."""
    if len(value) > 63:
        return "at most 63 characters"
    if not DNS_LABEL.match(value):
        return "lower-case letters, digits and '-', starting and ending with a letter or digit (RFC 1123 label)"
    return None


def node_name(value: str) -> str | None:
    """Why ``value`` cannot name a Kubernetes node (an RFC 1123 subdomain); None when it can."""
    if len(value) > 253:
        return "at most 253 characters"
    if not DNS_SUBDOMAIN.match(value):
        return "lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit (RFC 1123 subdomain)"
    return None


def label_value(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes label value; None when it is one."""
    if len(value) > 63:
        return "a label value has at most 63 characters"
    if value and not _QUALIFIED.match(value):
        return "a label value is letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    return None


def label_key(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label (or taint) key; None when it is one."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return "a label key's prefix (before '/') is an RFC 1123 subdomain, e.g. example.com"
    if not name or len(name) > 63 or not _QUALIFIED.match(name):
        return "a label key's name is at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    return None


def reserved_namespace(name: str) -> str | None:
    """Who owns namespace ``name`` when it is not a team's to take; None when it is free."""
    if name in KUBERNETES_NAMESPACES or name.startswith("kube-"):
        return "Kubernetes"
    if name in ADDON_NAMESPACES or name.startswith("llm-serving-"):
        return "the fleet's add-ons"
    return None


def taint(text: str) -> str | None:
    """Why ``text`` is not a taint written ``key[=value]:Effect``; None when it is one."""
    body, colon, effect = text.rpartition(":")
    if not colon or effect not in TAINT_EFFECTS:
        return f"a taint is written key=value:Effect with Effect one of {', '.join(TAINT_EFFECTS)}"
    key, _, value = body.partition("=")
    return label_key(key) or label_value(value)


def user_label_key(key: str) -> str | None:
    """Why ``key`` cannot be a label or taint the user sets on a node pool; None when it can."""
    problem = label_key(key)
    if problem:
        return problem
    reserved = key if key in GPUFLEET_NODE_LABELS else next((p for p in RESERVED_LABEL_PREFIXES if key.startswith(p)), None)
    if reserved:
        return f"{'the key' if reserved == key else 'the prefix'} {reserved} is reserved (gpufleet, Kubernetes and EKS set such labels); choose a key of your own, e.g. example.com/tier"
    return None
