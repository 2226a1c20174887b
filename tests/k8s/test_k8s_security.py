"""Every rendered container and every image set through Helm values, against a reviewed table.

For each container of every pod template that any site's bundles render
(Deployments, DaemonSets, LeaderWorkerSets, training runtimes), the test
tabulates: runAsNonRoot, readOnlyRootFilesystem, allowPrivilegeEscalation,
dropped capabilities, seccomp profile, service-account token, image digest and
whether a NetworkPolicy selects its pods (ingress, and egress where the
namespace is regulated). It fails when any setting differs from the reviewed
expectation below: every exception carries its reason, and k8s/SECURITY.md
lists the same exceptions for readers.

Helm releases: every image value a release sets must carry a digest, or be
listed in ``UNPINNED`` with the reason (no public record of the digest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import k8s

REPO = Path(__file__).resolve().parents[2]

LOCKED = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "drop": ("ALL",),
    "seccomp": "RuntimeDefault",
    "token": False,
    "digest": True,
    "ingress_policy": True,
}

# (bundle, workload, container) -> the settings that differ from LOCKED, and why.
EXCEPTIONS: dict[tuple[str, str, str], tuple[dict[str, Any], str]] = {
    ("llm-gateway", "llm-gateway", "litellm"): (
        {"ingress_policy": False},
        "every client namespace calls the gateway; it authenticates each request itself (keys file, k8s/serving/gpufleet_gateway.py)",
    ),
    ("autoscaler", "cluster-autoscaler", "cluster-autoscaler"): (
        {"token": True, "digest": False, "ingress_policy": False},
        "reads nodes and pods and resizes node groups through the Kubernetes API; no public record of the v1.33.0 digest (k8s/versions.py)",
    ),
    ("dispatcher", "gpufleet-dispatcher", "dispatcher"): (
        {"token": True, "ingress_policy": False},
        "watches and patches MultiKueue workloads through the Kubernetes API (k8s/dispatcher)",
    ),
    ("efa", "aws-efa-k8s-device-plugin", "aws-efa-k8s-device-plugin"): (
        {"runAsNonRoot": False, "readOnlyRootFilesystem": None, "allowPrivilegeEscalation": True, "drop": (), "seccomp": None,
         "privileged": True, "digest": False, "ingress_policy": False},
        "a device plugin: registers with the kubelet through its host socket and opens the EFA devices, as AWS's own chart runs it; "
        "no public record of the v0.5.20 digest (k8s/versions.py)",
    ),
}

# (chart release, values path) of images set through Helm values without a digest, and why.
UNPINNED: dict[tuple[str, str], str] = {
    ("gpu-operator", "operator"): "no public record of the nvcr.io/nvidia/gpu-operator:v26.7.0 digest",
    ("gpu-operator", "validator"): "the operator's image (no public record of its digest)",
    ("kueue", "controllerManager.manager.image"): "no public record of the kueue v0.19.2 digest",
    ("kubeflow-trainer", "image"): "no public record of the trainer-controller-manager v2.3.0 digest",
    ("kubeflow-trainer", "jobset.image"): "no public record of the jobset v0.12.0 digest",
    ("kube-prometheus-stack", "prometheusOperator.admissionWebhooks.patch.image"): "no public record of the kube-webhook-certgen 1.8.7 digest",
    ("prometheus-adapter", "image"): "no public record of the prometheus-adapter v0.12.0 digest",
}


def pod_templates(obj: dict[str, Any]):
    """(part, pod template) of every pod an object creates."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        yield "", spec["template"]
    elif kind == "CronJob":
        yield "", spec["jobTemplate"]["spec"]["template"]
    elif kind == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        yield "leader", lwt["leaderTemplate"]
        yield "worker", lwt["workerTemplate"]
    elif kind in ("ClusterTrainingRuntime", "TrainingRuntime"):
        for rj in spec["template"]["spec"]["replicatedJobs"]:
            yield rj["name"], rj["template"]["spec"]["template"]
    else:
        assert "template" not in spec, f"{kind} {obj['metadata']['name']} has a pod template this test does not know"


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    sel = policy["spec"]["podSelector"]
    return all(labels.get(k) == v for k, v in (sel.get("matchLabels") or {}).items()) and not sel.get("matchExpressions")


def rows(bundles: list) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    objects = [(b.name, o) for b in bundles for o in b.objects]
    policies = [o for _, o in objects if o["kind"] == "NetworkPolicy"]
    regulated = {o["metadata"]["name"] for _, o in objects if o["kind"] == "Namespace" and "gpufleet.io/data-class" in o["metadata"].get("labels", {})}
    team_namespaces = {o["metadata"]["name"] for _, o in objects if o["kind"] == "Namespace" and "gpufleet.io/team" in o["metadata"].get("labels", {})}
    out = {}
    for bundle, obj in objects:
        for part, tmpl in pod_templates(obj):
            pod = tmpl["spec"]
            labels = (tmpl.get("metadata") or {}).get("labels") or {}
            psc = pod.get("securityContext") or {}
            # A training runtime's pods run in the team namespaces; a namespaced object's in its own.
            namespaces = [obj["metadata"]["namespace"]] if obj["metadata"].get("namespace") else sorted(team_namespaces)
            ingress = all(any(p["metadata"]["namespace"] == ns and "Ingress" in p["spec"]["policyTypes"] and _selects(p, labels) for p in policies) for ns in namespaces)
            egress = all(any(p["metadata"]["namespace"] == ns and "Egress" in p["spec"]["policyTypes"] and _selects(p, labels) for p in policies)
                         for ns in namespaces if ns in regulated)
            for c in pod.get("initContainers", []) + pod["containers"]:
                sc = c.get("securityContext") or {}
                row = {
                    "runAsNonRoot": sc.get("runAsNonRoot", psc.get("runAsNonRoot")),
                    "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem"),
                    "allowPrivilegeEscalation": sc.get("allowPrivilegeEscalation"),
                    "drop": tuple((sc.get("capabilities") or {}).get("drop") or ()),
                    "seccomp": (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type"),
                    "token": pod.get("automountServiceAccountToken", True) is not False,
                    "digest": "@sha256:" in c["image"],
                    "ingress_policy": ingress,
                }
                if sc.get("privileged"):
                    row["privileged"] = True
                if (sc.get("capabilities") or {}).get("add"):
                    row["add"] = tuple(sc["capabilities"]["add"])
                if not egress:
                    row["regulated_egress_policy"] = False
                out[(bundle, obj["metadata"]["name"], part, c["name"])] = row
    return out


def expected(bundle: str, workload: str, container: str) -> dict[str, Any]:
    for (b, w, c), (diff, _why) in EXCEPTIONS.items():
        if b == bundle and c == container and workload.startswith(w):
            return {**LOCKED, **diff}
    return dict(LOCKED)


def _check(bundles_by_site: dict[str, list]) -> list[str]:
    problems = []
    for site, bundles in bundles_by_site.items():
        for (bundle, workload, part, container), got in rows(bundles).items():
            want = expected(bundle, workload, container)
            if got != want:
                diff = {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)}
                problems.append(f"{site}: {bundle}/{workload}{'/' + part if part else ''}/{container}: got, expected {diff}")
    return problems


@pytest.fixture(scope="module")
def site_bundles(fleet):
    return {s.name: k8s.site_bundles(fleet, s.name) for s in fleet.sites}


def test_every_rendered_container_matches_the_reviewed_table(site_bundles):
    problems = _check(site_bundles)
    assert not problems, "security settings differ from the reviewed table:\n" + "\n".join(problems)
    # Every row of the table is still rendered somewhere (no stale exception).
    rendered = {(b, w, c) for bundles in site_bundles.values() for (b, w, _, c) in rows(bundles)}
    for b, w, c in EXCEPTIONS:
        assert any(rb == b and rw.startswith(w) and rc == c for rb, rw, rc in rendered), f"no {b}/{w}/{c} is rendered: drop its exception"


def test_multi_node_groups_are_locked_down_too(fleet_variant):
    # A replica that spans nodes becomes a LeaderWorkerSet (leader and worker pods).
    def edit(data):
        m = next(m for m in data["models"] if m["name"] == "llama-3-1-70b-instruct")
        m["placement"]["gpus"] = 8
        m["replicas"] = 1

    f = fleet_variant(edit)
    bundles = k8s.site_bundles(f, "dc-fra")
    parts = {(w, p) for (b, w, p, c) in rows(bundles) if b == "vllm"}
    assert ("vllm-llama-3-1-70b-instruct", "leader") in parts and ("vllm-llama-3-1-70b-instruct", "worker") in parts
    problems = _check({"dc-fra": bundles})
    assert not problems, "\n".join(problems)


def test_security_md_explains_every_exception():
    text = (REPO / "k8s" / "SECURITY.md").read_text()
    for b, w, c in EXCEPTIONS:
        assert f"`{w}`" in text, f"k8s/SECURITY.md does not explain {b}/{w}/{c}"
    for release, path in UNPINNED:
        assert f"`{path}`" in text, f"k8s/SECURITY.md does not list {release} {path}"


def image_values(values: Any, path: str = ""):
    """(path, value) of every image a chart's values set: a mapping with a repository and a tag, version or sha."""
    if isinstance(values, dict):
        if "repository" in values and ({"tag", "version", "sha", "digest"} & set(values)):
            yield path, values
        for k, v in values.items():
            yield from image_values(v, f"{path}.{k}" if path else str(k))
    elif isinstance(values, list):
        for i, v in enumerate(values):
            yield from image_values(v, f"{path}[{i}]")


def _pinned(image: dict[str, Any]) -> bool:
    ref = str(image.get("tag") or image.get("version") or "")
    return "@sha256:" in ref or bool(image.get("sha")) or bool(image.get("digest"))


def test_every_image_set_through_helm_values_is_pinned_by_digest(site_bundles):
    problems, seen = [], set()
    for site, bundles in site_bundles.items():
        for b in bundles:
            for chart in b.charts:
                for path, image in image_values(chart.values):
                    seen.add((chart.release, path))
                    if _pinned(image) == ((chart.release, path) in UNPINNED):
                        problems.append(f"{site}: {chart.release} {path}: {image} " + ("has a digest: drop it from UNPINNED" if _pinned(image) else "has no digest"))
    assert not problems, "\n".join(problems)
    assert set(UNPINNED) <= seen, f"not set by any release: {sorted(set(UNPINNED) - seen)}"
    # The digests are well formed.
    for site, bundles in site_bundles.items():
        for b in bundles:
            for chart in b.charts:
                for path, image in image_values(chart.values):
                    if image.get("sha"):
                        assert len(image["sha"]) == 64 and int(image["sha"], 16) >= 0, (chart.release, path)
