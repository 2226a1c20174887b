"""Helpers of the federation scenarios (tests/fedlab/test_scenarios_*.py).

Jobs are real TrainJobs submitted to the hub's LocalQueues; every assertion
reads what the real components wrote (the hub's and the workers' Workloads,
the workers' TrainJobs and pods, the nodes the scheduler bound them to).

The ``dispatcher`` fixture runs the on-prem-first dispatcher the way the
rendered Deployment does: the controller source from the rendered ConfigMap,
the command-line flags of the rendered container, the hub credentials of the
rendered ServiceAccount (a token from the TokenRequest API), and, per worker,
the hub Secret ``gpufleet-dispatcher-<site>`` the README tells users to create
from the worker's rendered reader token. With a render that has no dispatcher
(the render as it was), it yields None and Kueue's own dispatcher decides.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedlab import Federation, Proc, Site, free_port, wait_for

KUEUE = "kueue.x-k8s.io/v1beta2"
TRAINER = "trainer.kubeflow.org/v1alpha1"
RUNTIME = "torch-distributed"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
PATCH_MANAGER = "gpufleet.io/scenario"
# KWOK's general pod-complete stage (fedlab.kwok_stages): a Job's pod completes
# after the delay; the jitter must not be smaller, or KWOK takes the jitter alone.
KEEP_RUNNING = "pod-complete.stage.kwok.x-k8s.io/delay"
KEEP_RUNNING_JITTER = "pod-complete.stage.kwok.x-k8s.io/jitter-delay"
TOPOLOGY_REQUIRED = "kueue.x-k8s.io/podset-required-topology"
# The example's training queues, (queue, team namespace), and the rendered EFA
# device plugin's DaemonSet (k8s/efa.py), shared by the scenario files.
RESEARCH = ("research-train", "team-research")
CLINICAL = ("clinical-train", "team-clinical")
EFA_PLUGIN = "aws-efa-k8s-device-plugin"


def say(line: str) -> None:
    print(f"fedlab: measured {line}", flush=True)


# ------------------------------------------------------------------ jobs


def trainjob(prefix: str, queue: str, namespace: str, nodes: int, gpus: int, run_for: str = "10m",
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A TrainJob on the fleet's runtime; its pods keep running for ``run_for``."""
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    pod_annotations = {KEEP_RUNNING: run_for, KEEP_RUNNING_JITTER: run_for, **(annotations or {})}
    return {
        "apiVersion": TRAINER,
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {QUEUE_LABEL: queue}},
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": RUNTIME},
            "trainer": {
                "numNodes": nodes,
                "resourcesPerNode": {
                    "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": str(gpus)},
                    "limits": {"nvidia.com/gpu": str(gpus)},
                },
            },
            "runtimePatches": [{
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                    "name": "node",
                    "template": {"spec": {"template": {"metadata": {"annotations": pod_annotations}}}},
                }]}}},
            }],
        },
    }


def submit(fed: Federation, job: dict[str, Any]) -> dict[str, Any]:
    hub = fed.sites[fed.hub]
    status, body, warnings = hub.client.create(job)
    assert status == 201 and not warnings, (status, body.get("message"), warnings)
    return job


def remove(fed: Federation, job: dict[str, Any], wait: float = 60) -> None:
    """Delete the job at the hub and wait until no site holds a copy or a pod of it."""
    md = job["metadata"]
    hub = fed.sites[fed.hub]
    hub.client.delete(TRAINER, "TrainJob", md["name"], md["namespace"])

    def gone():
        for site in fed.sites.values():
            if site.name != fed.hub and site.client.get(TRAINER, "TrainJob", md["name"], md["namespace"]):
                return False
            if pods(site, job):
                return False
        return hub.client.get(TRAINER, "TrainJob", md["name"], md["namespace"]) is None
    wait_for(f"TrainJob {md['namespace']}/{md['name']} gone everywhere", gone, wait)


def remove_at(site: Site, job: dict[str, Any], wait: float = 60) -> None:
    """Delete a job submitted at a worker itself and wait for its pods to go."""
    md = job["metadata"]
    site.client.delete(TRAINER, "TrainJob", md["name"], md["namespace"])
    wait_for(f"{site.name}: TrainJob {md['name']} gone", lambda: not site.client.get(TRAINER, "TrainJob", md["name"], md["namespace"]) and not pods(site, job), wait)


def hub_workload(fed: Federation, job: dict[str, Any]) -> dict[str, Any] | None:
    md = job["metadata"]
    for wl in fed.sites[fed.hub].client.list(KUEUE, "Workload", md["namespace"]):
        if any(o.get("kind") == "TrainJob" and o.get("name") == md["name"] for o in wl["metadata"].get("ownerReferences", [])):
            return wl
    return None


def workload_at(site: Site, name: str, namespace: str) -> dict[str, Any] | None:
    return site.client.get(KUEUE, "Workload", name, namespace)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return c
    return None


def pods(site: Site, job: dict[str, Any]) -> list[dict[str, Any]]:
    md = job["metadata"]
    return site.client.list("v1", "Pod", md["namespace"], selector=f"{JOBSET_NAME}={md['name']}")


def placed_at(fed: Federation, job: dict[str, Any], site_name: str, count: int, seen: dict[str, str] | None = None):
    """(pods, nodes) once ``count`` of the job's pods at ``site_name`` were bound to that
    site's nodes and Running (or already Succeeded: with KWOK's fast stages a Job's
    pods complete at once). ``seen`` collects pod -> node across polls."""
    site = fed.sites[site_name]
    seen = {} if seen is None else seen
    current = [p for p in pods(site, job) if p["spec"].get("nodeName") and p["status"].get("phase") in ("Running", "Succeeded")]
    for p in current:
        seen[p["metadata"]["name"]] = p["spec"]["nodeName"]
    if len(seen) < count:
        return None
    nodes = {n["metadata"]["name"]: n for n in site.client.list("v1", "Node")}
    assert all(n in nodes for n in seen.values()), seen
    return seen, nodes


def occupy(fed: Federation, site_name: str, servers: list[str] | None = None, accelerator: str = "h100-80gb") -> list[dict[str, Any]]:
    """Plain pods (not Kueue's) that take every whole GPU of the site's servers of
    ``accelerator`` (or of ``servers``): what other work on the machines looks
    like. Kueue's topology-aware placement counts them (non-TAS usage)."""
    site = fed.sites[site_name]
    made = []
    for node in site.client.list("v1", "Node"):
        gpus = int(node["status"]["allocatable"].get("nvidia.com/gpu", "0"))
        name = node["metadata"]["name"]
        if not gpus or node["metadata"]["labels"].get("gpufleet.io/accelerator") != accelerator or (servers is not None and name not in servers):
            continue
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"occupy-{name}-{uuid.uuid4().hex[:4]}", "namespace": "default", "labels": {"gpufleet.io/lab": "occupier"}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": name},
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "busy", "image": "busybox", "resources": {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}}],
            },
        }
        status, body, _ = site.client.create(pod)
        assert status == 201, body.get("message")
        made.append(pod)

    def all_running():
        return all((site.client.get("v1", "Pod", p["metadata"]["name"], "default") or {}).get("status", {}).get("phase") == "Running" for p in made)
    wait_for(f"{site_name}: occupiers Running", all_running, 60)
    return made


def release(fed: Federation, site_name: str, occupiers: list[dict[str, Any]]) -> None:
    site = fed.sites[site_name]
    for p in occupiers:
        site.client.request("DELETE", f"/api/v1/namespaces/default/pods/{p['metadata']['name']}?gracePeriodSeconds=0")
    wait_for(f"{site_name}: occupiers gone", lambda: not any(site.client.get("v1", "Pod", p["metadata"]["name"], "default") for p in occupiers), 60)


def copies(fed: Federation, job: dict[str, Any]) -> dict[str, bool]:
    """Site -> whether it holds a copy (Workload or TrainJob) of the job."""
    md = job["metadata"]
    out = {}
    wl = hub_workload(fed, job)
    for site in fed.sites.values():
        if site.name == fed.hub:
            continue
        has_job = site.client.get(TRAINER, "TrainJob", md["name"], md["namespace"]) is not None
        has_wl = wl is not None and workload_at(site, wl["metadata"]["name"], md["namespace"]) is not None
        out[site.name] = has_job or has_wl
    return out


def node_rows(site: Site) -> dict[str, dict[str, Any]]:
    return {n["metadata"]["name"]: n for n in site.client.list("v1", "Node")}


# ------------------------------------------------------------------ dispatcher


@dataclass
class Dispatcher:
    fed: Federation
    argv: list[str]
    log: Path
    proc: Proc | None = None

    def start(self) -> None:
        hub = self.fed.sites[self.fed.hub]
        self.proc = self.fed.procs.start(f"{hub.name}/dispatcher", self.argv, self.log)
        hub.procs["dispatcher"] = self.proc
        wait_for("dispatcher started", lambda: "dispatching for" in self.log.read_text(errors="replace") or not self.proc.alive(), 30)
        assert self.proc.alive(), self.proc.tail()

    def stop(self) -> None:
        if self.proc and self.proc.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.popen.wait(15)

    def restart(self) -> None:
        self.stop()
        self.start()

    def decisions(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "nominated" in rec:
                out.append(rec)
        return out

    def errors(self) -> list[str]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                out.append(line)
                continue
            if rec.get("level") == "error":
                out.append(rec.get("message", line))
        return out


def _rendered(fed: Federation, site: str, kind: str, name: str) -> dict[str, Any] | None:
    f = fed.render / "sites" / site / "k8s" / "dispatcher.yaml"
    if not f.exists():
        return None
    for d in yaml.safe_load_all(f.read_text()):
        if d and d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    return None


def _token(site: Site, namespace: str, account: str, seconds: int = 7200) -> str:
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
    status, body, _ = site.client.request("POST", path, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}})
    assert status == 201, (site.name, status, body.get("message"))
    return body["status"]["token"]


def start_dispatcher(fed: Federation) -> Dispatcher | None:
    hub = fed.sites[fed.hub]
    existing = hub.procs.get("dispatcher")
    deployment = _rendered(fed, fed.hub, "Deployment", "gpufleet-dispatcher")
    if deployment is None:
        return None
    ns = deployment["metadata"]["namespace"]
    config = _rendered(fed, fed.hub, "ConfigMap", "gpufleet-dispatcher")
    role = _rendered(fed, fed.hub, "Role", "gpufleet-dispatcher")
    work = fed.work / fed.hub / "dispatcher"
    work.mkdir(parents=True, exist_ok=True)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mount = container["volumeMounts"][0]["mountPath"]
    source = work / "controller.py"
    source.write_text(config["data"]["controller.py"])
    # The worker Secrets, as README "Deploying for real" says: the worker's reader
    # token (filled by its token controller) and CA, and its API URL.
    for secret_name in role["rules"][0]["resourceNames"]:
        worker = fed.sites[secret_name.removeprefix("gpufleet-dispatcher-")]

        def filled(w=worker):
            s = w.client.get("v1", "Secret", "gpufleet-dispatcher-reader-token", ns)
            return s if s and (s.get("data") or {}).get("token") else None
        token_secret = wait_for(f"{worker.name}: reader token filled", filled, 60)
        data = {k: base64.b64decode(v).decode() for k, v in token_secret["data"].items()}
        hub.client.apply({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name, "namespace": ns},
            "stringData": {"server": worker.server, "ca.crt": data["ca.crt"], "token": data["token"]},
        }, manager="fedlab")
    token_file = work / "token"
    token_file.write_text(_token(hub, ns, deployment["spec"]["template"]["spec"]["serviceAccountName"]))
    argv = [a.replace(f"{mount}/controller.py", str(source)) for a in container["command"]]
    argv = [sys.executable if a == "python3" else a for a in argv]
    i = argv.index("--health-addr")
    argv[i + 1] = f"127.0.0.1:{free_port()}"
    # -I -S: no site-packages, as in the stock image the Deployment runs.
    argv = [argv[0], "-I", "-S", *argv[1:], "--server", hub.server, "--token-file", str(token_file), "--ca-file", str(hub.pki.ca_file)]
    if existing is not None:
        return Dispatcher(fed, argv, existing.log, existing)
    d = Dispatcher(fed, argv, hub.dir / "logs" / "dispatcher.log")
    d.start()
    return d


_STARTED: dict[int, Dispatcher | None] = {}


@pytest.fixture(scope="session")
def dispatcher(federation):
    """The rendered dispatcher, running (None when the render has none)."""
    key = id(federation)
    if key not in _STARTED:
        _STARTED[key] = start_dispatcher(federation)
    yield _STARTED[key]


def active_clusters(fed: Federation) -> None:
    hub = fed.sites[fed.hub]

    def ok():
        items = hub.client.list(KUEUE, "MultiKueueCluster")
        return items and all((condition(i, "Active") or {}).get("status") == "True" for i in items)
    wait_for("MultiKueueClusters Active", ok, 90)


def elapsed(t0: float) -> float:
    return time.monotonic() - t0
