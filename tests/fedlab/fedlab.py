"""The federation lab: one real Kubernetes control plane per site of the fleet.

Per site: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
the KWOK controller (nodes and pods without kubelets), all built from the
upstream Go modules by tests/fedlab/build.py and run as processes on
127.0.0.1. Then the upstream CRDs and webhook configurations of the pinned
Kueue, JobSet and Trainer releases, the nodes derived from the fleet model
(tests/fedlab/nodes.py), the controllers with the configuration
``gpufleet render`` wrote, and everything in ``sites/<site>/k8s/*.yaml``
applied with server-side apply and strict field validation.

    with Federation(render_dir, work_dir) as fed:
        fed.sites["dc-fra"].core.list_node()

See tests/fedlab/README.md for what is run, with which overrides, and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import build  # noqa: E402
import nodes as lab_nodes  # noqa: E402
from pki import SitePKI  # noqa: E402

from k8s.versions import FEDLAB_GO_MODULES  # noqa: E402

UPSTREAM = Path(os.environ.get("GPUFLEET_UPSTREAM", ROOT.parent / "shared" / "upstream"))
KUEUE_NS = "kueue-system"
FIELD_MANAGER = "gpufleet"
# Groups whose CRDs come from a chart the lab does not run: taken from the
# upstream copies in $GPUFLEET_UPSTREAM/crds (same releases as the chart pins).
FOREIGN_CRD_GROUPS = ("monitoring.coreos.com", "nvidia.com", "leaderworkerset.x-k8s.io")
# kube-controller-manager: only the controllers the lab's workloads need.
KCM_CONTROLLERS = ",".join([
    "serviceaccount", "serviceaccount-token", "namespace", "garbagecollector", "job", "cronjob",
    "replicaset", "deployment", "statefulset", "daemonset", "ttl-after-finished", "podgc", "resourcequota",
    # removes the node.kubernetes.io/not-ready taint the API server's TaintNodesByCondition
    # admission puts on every new node, once KWOK reports it Ready
    "nodelifecycle",
])


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """YAML 1.1's ``=`` (the "value" type) is a plain string in Kubernetes manifests
    (prometheus-operator's CRDs list it as an enum value)."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_yaml_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=_Loader))  # noqa: S506


class LabError(RuntimeError):
    """A component that did not start or a step that did not finish (with where to look)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mod_dir(component: str) -> Path:
    """The pinned module's source in the Go module cache (CRDs, manifests, stages)."""
    spec = FEDLAB_GO_MODULES[component]
    gomodcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    # The module cache escapes capitals as !lower.
    escaped = "".join(f"!{c.lower()}" if c.isupper() else c for c in spec["module"])
    d = Path(gomodcache) / f"{escaped}@{spec['version']}"
    if not d.is_dir():
        raise LabError(f"{d}: not in the module cache (run tests/fedlab/build.py)")
    return d


def wait_for(what: str, fn: Callable[[], Any], timeout: float, interval: float = 0.5, log: Path | None = None) -> Any:
    """Poll ``fn`` until it returns a true value; LabError with its last error after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() > deadline:
            hint = f" (log {log})" if log else ""
            raise LabError(f"{what}: not after {timeout:.0f} s: {last!r}{hint}")
        time.sleep(interval)


# ------------------------------------------------------------------ processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss_kib(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started the lab dies,
    however it dies (prctl PR_SET_PDEATHSIG; kept across exec)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


class ProcessGroup:
    """Every process the lab starts, each in its own session; stopped by process id."""

    def __init__(self, pidfile: Path):
        self.procs: list[Proc] = []
        self.pidfile = pidfile

    def start(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
              private_tmp: Path | None = None) -> Proc:
        log.parent.mkdir(parents=True, exist_ok=True)
        if private_tmp is not None:
            # A private /tmp in a mount namespace of its own: Kueue, JobSet and
            # Trainer write their webhook certificates to fixed /tmp paths
            # (jobset pkg/util/cert/cert.go certDir, trainer pkg/util/cert/cert.go
            # certDir), which would collide between the sites' instances.
            private_tmp.mkdir(parents=True, exist_ok=True)
            argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                    'mount --bind "$0" /tmp && exec "$@"', str(private_tmp), *argv]
        out = open(log, "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, **(env or {})}, start_new_session=True, preexec_fn=_die_with_parent)
        out.close()
        proc = Proc(name, p, log)
        self.procs.append(proc)
        self._record()
        return proc

    def _record(self) -> None:
        self.pidfile.write_text("".join(f"{p.pid} {p.name}\n" for p in self.procs if p.alive()))

    def stop(self, timeout: float = 15) -> None:
        for p in reversed(self.procs):
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in reversed(self.procs):
            try:
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.popen.wait(5)
        self.procs.clear()
        self.pidfile.unlink(missing_ok=True)

    @staticmethod
    def reap_stale(pidfile: Path, marker: str) -> list[int]:
        """Stop what an interrupted earlier run left (only processes whose command line names ``marker``)."""
        killed = []
        if not pidfile.exists():
            return killed
        for line in pidfile.read_text().splitlines():
            pid = int(line.split()[0])
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed.append(pid)
        pidfile.unlink(missing_ok=True)
        return killed


# ------------------------------------------------------------------ API access


class ApplyError(Exception):
    def __init__(self, where: str, status: int | None, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.status, self.message = where, status, message


class SiteClient:
    """Raw REST against one API server (for server-side apply with warnings) plus kubernetes clients."""

    def __init__(self, server: str, ca: Path, cert: Path, key: Path):
        from kubernetes import client

        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(cert), str(key))
        cfg = client.Configuration()
        cfg.host = server
        cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file = str(ca), str(cert), str(key)
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                timeout: float = 30) -> tuple[int, dict[str, Any], list[str]]:
        """(status, decoded body, Warning headers)."""
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method, headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                raw, status, headers = r.read(), r.status, r.headers
        except urllib.error.HTTPError as e:
            raw, status, headers = e.read(), e.code, e.headers
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"raw": raw.decode(errors="replace")}
        return status, decoded, headers.get_all("Warning") or []

    def get_json(self, path: str) -> Any:
        status, body, _ = self.request("GET", path)
        if status != 200:
            raise LabError(f"GET {path}: {status} {body.get('message', body)}")
        return body

    def discover(self) -> None:
        self._resources.clear()
        groups = [("", "v1")]
        for g in self.get_json("/apis")["groups"]:
            groups += [(g["name"], v["version"]) for v in g["versions"]]
        for group, version in groups:
            gv = f"{group}/{version}" if group else version
            path = f"/apis/{gv}" if group else "/api/v1"
            try:
                res = self.get_json(path)["resources"]
            except LabError:
                continue
            for r in res:
                if "/" not in r["name"]:
                    self._resources[(gv, r["kind"])] = (r["name"], r["namespaced"])

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        if (api_version, kind) not in self._resources:
            self.discover()
        if (api_version, kind) not in self._resources:
            raise ApplyError(f"{kind} {api_version}", None, "the API server does not serve this kind")
        return self._resources[(api_version, kind)]

    def path(self, api_version: str, kind: str, name: str | None = None, namespace: str | None = None) -> str:
        plural, namespaced = self.resource(api_version, kind)
        base = f"/apis/{api_version}" if "/" in api_version else "/api/v1"
        ns = f"/namespaces/{namespace or 'default'}" if namespaced else ""
        return f"{base}{ns}/{plural}" + (f"/{name}" if name else "")

    def apply(self, obj: dict[str, Any], manager: str = FIELD_MANAGER, force: bool = True) -> dict[str, Any]:
        """Server-side apply with fieldValidation=Strict; any warning is an error too."""
        md = obj.get("metadata", {})
        where = f"{obj.get('kind')} {md.get('namespace', '') + '/' if md.get('namespace') else ''}{md.get('name')}"
        path = self.path(obj["apiVersion"], obj["kind"], md["name"], md.get("namespace"))
        q = f"?fieldManager={manager}&fieldValidation=Strict" + ("&force=true" if force else "")
        status, body, warnings = self.request("PATCH", path + q, json.dumps(obj).encode(), "application/apply-patch+yaml")
        if status not in (200, 201):
            raise ApplyError(where, status, body.get("message", str(body)))
        if warnings:
            raise ApplyError(where, status, "warnings: " + "; ".join(warnings))
        return body

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        status, body, _ = self.request("GET", self.path(api_version, kind, name, namespace))
        if status == 404:
            return None
        if status != 200:
            raise LabError(f"GET {kind} {name}: {status} {body.get('message')}")
        return body

    def list(self, api_version: str, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        path = self.path(api_version, kind, None, namespace)
        if namespace is None and self.resource(api_version, kind)[1]:
            path = path.replace("/namespaces/default", "")
        if selector:
            path += "?labelSelector=" + urllib.request.quote(selector)
        return self.get_json(path)["items"]

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> tuple[int, dict[str, Any], list[str]]:
        md = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], None, md.get("namespace"))
        return self.request("POST", path + "?fieldValidation=Strict" + ("&dryRun=All" if dry_run else ""), obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> int:
        status, _, _ = self.request("DELETE", self.path(api_version, kind, name, namespace) + "?propagationPolicy=Background")
        return status


# ------------------------------------------------------------------ sites


@dataclass
class Site:
    name: str
    dir: Path
    is_aws: bool
    ports: dict[str, int] = field(default_factory=dict)
    pki: SitePKI | None = None
    kubeconfig: Path | None = None
    client: SiteClient | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    releases: list[dict[str, Any]] = field(default_factory=list)
    webhook_ports: dict[str, int] = field(default_factory=dict)
    autoscaler_argv: list[str] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    # short-hands for tests
    @property
    def core(self):
        return self.client.core

    @property
    def batch(self):
        return self.client.batch

    @property
    def custom(self):
        return self.client.custom

    def release(self, addon: str) -> dict[str, Any] | None:
        for r in self.releases:
            if r.get("addon") == addon or r.get("release") == addon:
                return r
        return None


@dataclass
class Finding:
    site: str
    file: str
    what: str
    message: str

    def __str__(self) -> str:
        return f"{self.site}: {self.file}: {self.what}: {self.message}"


def _kustomize(kubectl: Path, directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run([str(kubectl), "kustomize", str(directory)], capture_output=True, text=True)
    if out.returncode != 0:
        raise LabError(f"kubectl kustomize {directory}: {out.stderr.strip()}")
    return [d for d in load_yaml_all(out.stdout) if d]


def kwok_stages(kubectl: Path) -> list[dict[str, Any]]:
    """KWOK's "fast" node and pod stages, with the ``pod-complete`` stage of its
    "general" set (kustomize/stage/pod/general/pod-complete.yaml): a Job's pod
    completes after ``pod-complete.stage.kwok.x-k8s.io/delay`` (default 1 s plus
    up to 5 s), so a training pod can keep its GPUs for as long as a scenario
    needs. Its jitter (``.../jitter-delay``) must be at least the delay:
    KWOK takes the jitter alone when it is the smaller one
    (pkg/utils/lifecycle/lifecycle.go, ``Stage.Delay``)."""
    stage = mod_dir("kwok") / "kustomize" / "stage"
    general = {d["metadata"]["name"]: d for d in _kustomize(kubectl, stage / "pod" / "general")}
    docs = _kustomize(kubectl, stage / "fast")
    out = [general["pod-complete"] if d["metadata"]["name"] == "pod-complete" else d for d in docs]
    if not any(d["metadata"]["name"] == "pod-complete" for d in docs):
        raise LabError("kwok fast stages: no pod-complete stage to replace")
    return out


class EfaRegistration:
    """The EFA device plugin's registration with the kubelet, for the lab's AWS nodes.

    On EKS a node of an EFA pool advertises ``vpc.amazonaws.com/efa`` only once
    the EFA device plugin runs on it and registers the interfaces with the
    kubelet. There is no kubelet here, so this does that part: a node of an EFA
    pool (nodes.py registers them without the resource; cluster-autoscaler's
    kwok provider creates them from a template that has it) gets the resource
    in ``status.capacity``/``allocatable`` while a Running pod of the rendered
    DaemonSet ``kube-system/aws-efa-k8s-device-plugin`` is bound to it, and
    loses it otherwise. A node is registered without it: a mutating admission
    webhook served here takes the resource out of every new node of an EFA pool
    (the kwok provider creates them from its template, which has it), so no pod
    that needs EFA is bound to a node before its plugin runs.
    """

    WEBHOOK = "fedlab-efa-registration"

    def __init__(self, site: Site, interfaces: dict[str, int], echo: Callable[[str], None]):
        import threading

        from k8s.efa import NAME, NAMESPACE

        self.site, self.client, self.interfaces, self.echo = site, site.client, interfaces, echo
        self.plugin, self.namespace = NAME, NAMESPACE
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._watch_nodes, name="efa-nodes", daemon=True),
                        threading.Thread(target=self._poll, name="efa-pods", daemon=True)]
        self.changes: list[tuple[float, str, str]] = []  # (time, node, "added"/"removed")
        self.server = None

    def start(self) -> None:
        self._serve_webhook()
        for t in self.threads:
            t.start()

    def _serve_webhook(self) -> None:
        import base64
        import http.server
        import threading

        efa_path = "/" + lab_nodes.EFA_RESOURCE.replace("~", "~0").replace("/", "~1")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                req = review["request"]
                st = (req.get("object") or {}).get("status") or {}
                ops = [{"op": "remove", "path": f"/status/{k}{efa_path}"} for k in ("capacity", "allocatable")
                       if lab_nodes.EFA_RESOURCE in (st.get(k) or {})]
                resp: dict[str, Any] = {"uid": req["uid"], "allowed": True}
                if ops:
                    resp.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode())
                out = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        cert, key = self.site.pki.issue("efa-webhook", "fedlab-efa-webhook", server=True, dns=["localhost"], ips=["127.0.0.1"])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, name="efa-webhook", daemon=True).start()
        port = self.server.server_address[1]
        body = {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": self.WEBHOOK},
            "webhooks": [{
                "name": "efa-registration.fedlab.gpufleet.io",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/node",
                                 "caBundle": base64.b64encode(self.site.pki.ca_file.read_bytes()).decode()},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["nodes"]}],
                "objectSelector": {"matchExpressions": [{"key": "gpufleet.io/pool", "operator": "In", "values": sorted(self.interfaces)}]},
                "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail", "timeoutSeconds": 5,
            }],
        }
        self.client.apply(body, manager="fedlab")

    def close(self) -> None:
        self.stop.set()
        if self.server is not None:
            self.server.shutdown()

    def _plugin_nodes(self) -> set[str]:
        status, body, _ = self.client.request("GET", f"/api/v1/namespaces/{self.namespace}/pods", timeout=10)
        if status != 200:
            return set()
        out = set()
        for p in body.get("items", []):
            owners = p["metadata"].get("ownerReferences") or []
            if any(o.get("kind") == "DaemonSet" and o.get("name") == self.plugin for o in owners) \
                    and p.get("status", {}).get("phase") == "Running" and p["spec"].get("nodeName"):
                out.add(p["spec"]["nodeName"])
        return out

    def reconcile(self, node: dict[str, Any], plugin_nodes: set[str]) -> None:
        pool = node["metadata"].get("labels", {}).get("gpufleet.io/pool")
        count = self.interfaces.get(pool or "")
        if not count:
            return
        name = node["metadata"]["name"]
        st = node.get("status") or {}
        have = (st.get("allocatable") or {}).get(lab_nodes.EFA_RESOURCE), (st.get("capacity") or {}).get(lab_nodes.EFA_RESOURCE)
        want = str(count) if name in plugin_nodes else None
        if have == (want, want):
            return
        patch = {"status": {"capacity": {lab_nodes.EFA_RESOURCE: want}, "allocatable": {lab_nodes.EFA_RESOURCE: want}}}
        status, body, _ = self.client.request("PATCH", f"/api/v1/nodes/{name}/status", patch, "application/merge-patch+json", timeout=10)
        if status == 200:
            self.changes.append((time.time(), name, "added" if want else "removed"))
            if os.environ.get("FEDLAB_DEBUG"):
                self.echo(f"fedlab: EFA on {name}: {'added' if want else 'removed'}")

    def _watch_nodes(self) -> None:
        while not self.stop.is_set():
            try:
                status, body, _ = self.client.request("GET", "/api/v1/nodes", timeout=10)
                if status != 200:
                    raise OSError(status)
                plugin = self._plugin_nodes()
                for n in body["items"]:
                    self.reconcile(n, plugin)
                rv = body["metadata"]["resourceVersion"]
                req = urllib.request.Request(f"{self.client.server}/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=60",
                                             headers={"Accept": "application/json"})
                with urllib.request.urlopen(req, context=self.client.ctx, timeout=90) as r:
                    for line in r:
                        if self.stop.is_set():
                            return
                        ev = json.loads(line)
                        if ev.get("type") in ("ADDED", "MODIFIED"):
                            self.reconcile(ev["object"], self._plugin_nodes())
            except (OSError, ValueError, KeyError):
                self.stop.wait(1.0)

    def _poll(self) -> None:
        while not self.stop.wait(1.0):
            try:
                plugin = self._plugin_nodes()
                status, body, _ = self.client.request("GET", "/api/v1/nodes", timeout=10)
                for n in body.get("items", []) if status == 200 else []:
                    self.reconcile(n, plugin)
            except (OSError, ValueError, KeyError):
                continue


class SecretVolumes:
    """What the kubelet does for a Secret volume, for the controllers' webhook certificates.

    Each controller's cert rotator (open-policy-agent/cert-controller) writes the
    certificates into a Secret and then waits until they appear in its CertDir,
    where a pod would see them through the Secret volume the chart mounts. No
    kubelet runs here, so this copies every key of the Secret into that folder.
    """

    def __init__(self):
        import threading

        self.mounts: list[tuple[SiteClient, str, str, Path]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="secret-volumes", daemon=True)

    def add(self, client: SiteClient, namespace: str, name: str, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.mounts.append((client, namespace, name, directory))
        if not self.thread.is_alive():
            self.thread.start()

    def _run(self) -> None:
        import base64

        while not self.stop.wait(1.0):
            for client, ns, name, d in list(self.mounts):
                try:
                    status, body, _ = client.request("GET", f"/api/v1/namespaces/{ns}/secrets/{name}", timeout=5)
                except OSError:
                    continue
                if status != 200:
                    continue
                for key, value in (body.get("data") or {}).items():
                    data = base64.b64decode(value)
                    f = d / key
                    if not f.exists() or f.read_bytes() != data:
                        tmp = d / f".{key}.tmp"
                        tmp.write_bytes(data)
                        tmp.rename(f)


class Federation:
    """The whole lab; ``up()`` brings it up, ``down()`` stops every process it started."""

    def __init__(self, render: Path, work: Path, fleet_file: Path | None = None, echo: Callable[[str], None] = print,
                 controllers: bool = True):
        from gpufleet.model import load_fleet

        self.render = Path(render).resolve()
        self.work = Path(work).resolve()
        self.echo = echo
        self.fleet = load_fleet(fleet_file or ROOT / "stacks" / "fleet.yaml")
        self.hub = self.fleet.hub
        self.sites: dict[str, Site] = {}
        self.procs = ProcessGroup(self.work / "pids")
        self.findings: list[Finding] = []
        self.timings: dict[str, float] = {}
        self.with_controllers = controllers
        self.bins = build.binaries()
        self.volumes = SecretVolumes()
        self.efa: dict[str, EfaRegistration] = {}

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> Federation:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def down(self) -> None:
        self.volumes.stop.set()
        for e in self.efa.values():
            e.close()
        self.procs.stop()

    def _step(self, name: str, fn: Callable[[], Any]) -> Any:
        t = time.monotonic()
        v = fn()
        self.timings[name] = time.monotonic() - t
        self.echo(f"fedlab: {name} in {self.timings[name]:.1f} s")
        return v

    def up(self) -> None:
        if not (self.render / "sites").is_dir():
            raise LabError(f"{self.render}: not a render directory (no sites/; run `gpufleet render --out DIR`)")
        missing = [b for b, p in self.bins.items() if not p.is_file()]
        if missing:
            raise LabError(f"binaries not built: {', '.join(missing)} (run tests/fedlab/build.py)")
        if self.work == Path("/tmp") or Path("/tmp") in self.work.parents:
            raise LabError(f"{self.work}: the lab's folder must not be under /tmp (the controllers get a private /tmp)")
        self.work.mkdir(parents=True, exist_ok=True)
        ProcessGroup.reap_stale(self.work / "pids", str(self.work))
        t0 = time.monotonic()
        for s in self.fleet.sites:
            d = self.work / s.name
            site = Site(s.name, d, s.is_aws)
            rel = self.render / "sites" / s.name / "k8s" / "helm-releases.yaml"
            if rel.exists():
                site.releases = (yaml.safe_load(rel.read_text()) or {}).get("releases", [])
            self.sites[s.name] = site
        self._step("control planes", self._control_planes)
        self._step("upstream CRDs and webhooks", self._upstream_manifests)
        self._step("nodes", self._nodes)
        self._efa_registration()
        if self.with_controllers:
            self._step("controllers", self._controllers)
        self._step("render applied", self._apply_render)
        self._step("multikueue secrets", self._multikueue_secrets)
        if self.with_controllers:
            self._step("cluster-autoscaler", self._autoscalers)
        self.timings["bring-up"] = time.monotonic() - t0
        self.echo(f"fedlab: federation up in {self.timings['bring-up']:.0f} s, RSS {self.rss_mib():.0f} MiB, "
                  f"{len(self.findings)} apply finding(s)")

    def rss_mib(self) -> float:
        return sum(p.rss_kib() for p in self.procs.procs) / 1024

    def check_alive(self) -> list[str]:
        return [f"{p.name} (pid {p.pid}) exited {p.popen.returncode}; log {p.log}:\n{p.tail()}" for p in self.procs.procs if not p.alive()]

    # -------------------------------------------------------------- control planes

    def _mount_webhook_secret(self, site: Site, comp: str, namespace: str, secret: str) -> None:
        """The Secret volume the chart mounts at /tmp/k8s-webhook-server/serving-certs (controller-runtime's
        default CertDir, which Kueue, JobSet and Trainer use), inside the controller's private /tmp."""
        self.volumes.add(site.client, namespace, secret, site.dir / "tmp" / comp / "k8s-webhook-server" / "serving-certs")

    def _start(self, site: Site, name: str, argv: list[str], env: dict[str, str] | None = None, private_tmp: bool = False) -> Proc:
        p = self.procs.start(f"{site.name}/{name}", argv, site.dir / "logs" / f"{name}.log", env,
                             site.dir / "tmp" / name if private_tmp else None)
        site.procs[name] = p
        return p

    def _control_planes(self) -> None:
        b = self.bins
        for site in self.sites.values():
            site.dir.mkdir(parents=True, exist_ok=True)
            for k in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler"):
                site.ports[k] = free_port()
            site.pki = SitePKI(site.dir / "pki", site.name)
            cert, key = site.pki.issue("admin", "fedlab-admin", ["system:masters"])
            site.kubeconfig = site.pki.kubeconfig(site.dir / "kubeconfig", site.server, cert, key, "fedlab-admin")
            site.client = SiteClient(site.server, site.pki.ca_file, cert, key)
            data = site.dir / "etcd"
            peer = f"http://127.0.0.1:{site.ports['etcd-peer']}"
            client_url = f"http://127.0.0.1:{site.ports['etcd']}"
            self._start(site, "etcd", [
                str(b["etcd"]), f"--name={site.name}", f"--data-dir={data}",
                f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={site.name}={peer}", "--quota-backend-bytes=536870912",
                "--snapshot-count=10000", "--unsafe-no-fsync", "--log-level=warn",
            ], {"ETCD_UNSUPPORTED_ARCH": ""})
        for site in self.sites.values():
            pki = site.pki
            self._start(site, "kube-apiserver", [
                str(b["kube-apiserver"]), f"--etcd-servers=http://127.0.0.1:{site.ports['etcd']}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={site.ports['apiserver']}",
                f"--tls-cert-file={pki.server_cert}", f"--tls-private-key-file={pki.server_key}",
                f"--client-ca-file={pki.ca_file}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub_file}", f"--service-account-signing-key-file={pki.sa_key_file}",
                "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
                "--allow-privileged=true", "--endpoint-reconciler-type=none", "--profiling=false",
                "--enable-priority-and-fairness=false", f"--cert-dir={site.dir / 'pki' / 'apiserver-generated'}",
            ])
        for site in self.sites.values():
            wait_for(f"{site.name}: kube-apiserver /readyz", lambda s=site: s.client.request("GET", "/readyz")[0] == 200,
                     120, log=site.procs["kube-apiserver"].log)
        for site in self.sites.values():
            kc = str(site.kubeconfig)
            common = [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                      "--bind-address=127.0.0.1", "--leader-elect=false"]
            self._start(site, "kube-controller-manager", [
                str(b["kube-controller-manager"]), *common, f"--secure-port={site.ports['kcm']}",
                f"--controllers={KCM_CONTROLLERS}", "--use-service-account-credentials=false",
                f"--service-account-private-key-file={site.pki.sa_key_file}", f"--root-ca-file={site.pki.ca_file}",
                f"--cert-dir={site.dir / 'pki' / 'kcm-generated'}",
            ])
            self._start(site, "kube-scheduler", [
                str(b["kube-scheduler"]), *common, f"--secure-port={site.ports['scheduler']}",
                f"--cert-dir={site.dir / 'pki' / 'scheduler-generated'}",
            ])
            stages = site.dir / "kwok-stages.yaml"
            if not stages.exists():
                stages.write_text(yaml.safe_dump_all(kwok_stages(b["kubectl"]), sort_keys=False))
            self._start(site, "kwok", [
                str(b["kwok"]), f"--kubeconfig={kc}", f"--config={stages}",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40", "--cidr=10.0.0.1/16", "--node-ip=10.0.0.1",
            ])
        for site in self.sites.values():
            for comp in ("kube-controller-manager", "kube-scheduler"):
                port = site.ports["kcm" if comp == "kube-controller-manager" else "scheduler"]
                wait_for(f"{site.name}: {comp} /healthz", lambda p=port: _https_ok(f"https://127.0.0.1:{p}/healthz"),
                         90, log=site.procs[comp].log)
            wait_for(f"{site.name}: default ServiceAccount", lambda s=site: s.client.get("v1", "ServiceAccount", "default", "default"),
                     60, log=site.procs["kube-controller-manager"].log)

    # -------------------------------------------------------------- upstream manifests

    def _upstream_docs(self) -> dict[str, list[dict[str, Any]]]:
        if getattr(self, "_udocs", None):
            return self._udocs
        kubectl = self.bins["kubectl"]
        cache = self.work / "upstream"
        cache.mkdir(parents=True, exist_ok=True)
        out = {}
        trainer_k = cache / "trainer-kustomization"
        trainer_k.mkdir(exist_ok=True)
        # The namespace the Trainer overlay (manifests/overlays/manager) sets, on the
        # bases it takes the CRDs and webhooks from (kustomize wants relative roots).
        base = trainer_k / "base"
        if not base.is_symlink():
            base.symlink_to(mod_dir("trainer") / "manifests" / "base")
        (trainer_k / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": "kubeflow-system", "resources": ["base/crds", "base/webhook"]}))
        for comp, directory in (("kueue", mod_dir("kueue") / "config" / "default"),
                                ("jobset", mod_dir("jobset") / "config" / "default"),
                                ("trainer", trainer_k)):
            f = cache / f"{comp}.json"
            if not f.exists():
                f.write_text(json.dumps(_kustomize(kubectl, directory)))
            out[comp] = json.loads(f.read_text())
        self._udocs = out
        return out

    def _each(self, fn: Callable[[Site], Any], sites: list[Site] | None = None) -> None:
        """``fn(site)`` for every site at once (the API servers work in parallel)."""
        from concurrent.futures import ThreadPoolExecutor

        sites = list(self.sites.values()) if sites is None else sites
        with ThreadPoolExecutor(max_workers=max(1, len(sites))) as pool:
            futures = [pool.submit(fn, s) for s in sites]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]

    def _upstream_manifests(self) -> None:
        self._upstream_docs()
        self._foreign_crds()
        self._each(self._upstream_site)

    def _upstream_site(self, site: Site) -> None:
        docs = self._upstream_docs()
        for comp, objs in docs.items():
            port = site.webhook_ports.setdefault(comp, free_port())
            # The Secret the controller's cert rotator fills (internalcert component).
            keep = sorted((o for o in objs if o["kind"] in ("Namespace", "CustomResourceDefinition", "Secret")),
                          key=lambda o: (o["kind"] != "Namespace", o["kind"] == "Secret"))
            hooks = [o for o in objs if o["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")]
            services: set[tuple[str, str]] = set()
            for o in keep + hooks:
                o = json.loads(json.dumps(o))
                refs = []
                if o["kind"] == "CustomResourceDefinition":
                    wh = ((o["spec"].get("conversion") or {}).get("webhook") or {}).get("clientConfig", {})
                    if "service" in wh:
                        refs.append(wh["service"])
                for w in o.get("webhooks", []):
                    refs.append(w["clientConfig"]["service"])
                for svc in refs:
                    # The controller listens on 127.0.0.1:<port>; the API server reaches
                    # the Service through its ExternalName and checks the controller's own
                    # certificate for <service>.<namespace>.svc (as kwokctl does).
                    svc["port"] = port
                    services.add((svc["namespace"], svc["name"]))
                self._must_apply(site, f"{comp} (upstream)", o)
            for ns in sorted({ns for ns, _ in services} | ({"kubeflow-system"} if comp == "trainer" else set())):
                self._must_apply(site, f"{comp} (lab)", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            if comp == "trainer":
                # What the Trainer overlay's secretGenerator creates (manifests/overlays/manager).
                self._must_apply(site, "trainer (upstream overlay)", {"apiVersion": "v1", "kind": "Secret",
                                 "metadata": {"name": "kubeflow-trainer-webhook-cert", "namespace": "kubeflow-system"}})
            for ns, name in sorted(services):
                self._must_apply(site, f"{comp} (lab)", {"apiVersion": "v1", "kind": "Service",
                                 "metadata": {"name": name, "namespace": ns},
                                 "spec": {"type": "ExternalName", "externalName": "127.0.0.1"}})
        # CRDs of charts the lab does not run, for the kinds the render uses.
        wanted = {(d.get("apiVersion", "").split("/")[0], d.get("kind")) for d in self._render_docs(site)}
        for f, crd in self._foreign_crds():
            if (crd["spec"]["group"], crd["spec"]["names"]["kind"]) in wanted:
                self._must_apply(site, f"{f.name} ($GPUFLEET_UPSTREAM)", crd)
        def established(s=site):
            for crd in s.client.list("apiextensions.k8s.io/v1", "CustomResourceDefinition"):
                conds = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
                if conds.get("Established") != "True":
                    return False
            return True
        wait_for(f"{site.name}: CRDs established", established, 60)
        site.client.discover()

    def _foreign_crds(self) -> list[tuple[Path, dict[str, Any]]]:
        if not hasattr(self, "_foreign"):
            # Upstream names these files <group>_<plural>.yaml.
            files = [f for f in sorted((UPSTREAM / "crds").glob("*.yaml")) if f.name.split("_", 1)[0] in FOREIGN_CRD_GROUPS]
            self._foreign = [(f, load_yaml(f.read_text())) for f in files]
        return self._foreign

    def _must_apply(self, site: Site, what: str, obj: dict[str, Any]) -> None:
        t = time.monotonic()
        try:
            site.client.apply(obj, manager="fedlab")
            if os.environ.get("FEDLAB_DEBUG"):
                self.echo(f"fedlab: {site.name}: applied {obj['kind']} {obj['metadata']['name']} in {time.monotonic() - t:.1f} s")
        except ApplyError as e:
            raise LabError(f"{site.name}: {what}: {e}") from None

    # -------------------------------------------------------------- nodes

    def _nodes(self) -> None:
        self._each(self._nodes_site)

    def _nodes_site(self, site: Site) -> None:
        s = self.fleet.site(site.name)
        for node in lab_nodes.site_nodes(self.fleet, s, self.render):
            status, body, warnings = site.client.create(node)
            if status not in (200, 201, 409) or warnings:
                raise LabError(f"{site.name}: Node {node['metadata']['name']}: {status} {body.get('message')} {warnings}")
        want = len(lab_nodes.site_nodes(self.fleet, self.fleet.site(site.name), self.render))

        def ready(s=site, n=want):
            items = s.client.list("v1", "Node")
            ok = [i for i in items if any(c["type"] == "Ready" and c["status"] == "True" for c in i.get("status", {}).get("conditions", []))]
            return len(ok) >= n
        wait_for(f"{site.name}: {want} KWOK nodes Ready", ready, 60, log=site.procs["kwok"].log)

    def _efa_registration(self) -> None:
        for site in self.sites.values():
            interfaces = lab_nodes.efa_interfaces(self.fleet, self.fleet.site(site.name))
            if interfaces:
                self.efa[site.name] = EfaRegistration(site, interfaces, self.echo)
                self.efa[site.name].start()

    # -------------------------------------------------------------- controllers

    def _controllers(self) -> None:
        for site in self.sites.values():
            if site.release("kueue"):
                self._start_kueue(site)
            if site.release("trainer"):
                self._start_jobset(site)
        for site in self.sites.values():
            if "jobset" in site.procs:
                self._wait_controller(site, "jobset")
        for site in self.sites.values():
            if site.release("trainer"):
                self._start_trainer(site)
        for site in self.sites.values():
            for comp in ("kueue", "trainer"):
                if comp in site.procs:
                    self._wait_controller(site, comp)

    def _wait_controller(self, site: Site, comp: str) -> None:
        port = site.ports[f"{comp}-health"]
        wait_for(f"{site.name}: {comp} /readyz", lambda: _http_ok(f"http://127.0.0.1:{port}/readyz"), 120, log=site.procs[comp].log)
        # Webhook configurations get their caBundle from the controller's own cert rotator.
        docs = self._upstream_docs()[comp]
        for o in docs:
            if o["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
                def injected(o=o):
                    cur = site.client.get("admissionregistration.k8s.io/v1", o["kind"], o["metadata"]["name"])
                    return cur and all(w["clientConfig"].get("caBundle") for w in cur.get("webhooks", []))
                wait_for(f"{site.name}: {comp} caBundle in {o['metadata']['name']}", injected, 90, log=site.procs[comp].log)

    def kueue_config(self, site: Site) -> dict[str, Any]:
        """The rendered Kueue configuration with the lab's overrides (README: "Overrides")."""
        rel = site.release("kueue")
        cfg = yaml.safe_load(rel["values"]["managerConfig"]["controllerManagerConfigYaml"])
        for k in ("kueue-health", "kueue-metrics"):
            site.ports.setdefault(k, free_port())
        cfg.setdefault("health", {})["healthProbeBindAddress"] = f"127.0.0.1:{site.ports['kueue-health']}"
        cfg.setdefault("metrics", {})["bindAddress"] = f"127.0.0.1:{site.ports['kueue-metrics']}"
        cfg.setdefault("webhook", {}).update({"port": site.webhook_ports["kueue"], "host": "127.0.0.1"})
        # In a pod the leader-election namespace is the service account's; out of a cluster it must be named.
        cfg.setdefault("leaderElection", {}).setdefault("resourceNamespace", cfg.get("namespace", KUEUE_NS))
        return cfg

    def _start_kueue(self, site: Site) -> None:
        cfg = self.kueue_config(site)
        f = site.dir / "kueue-config.yaml"
        f.write_text(yaml.safe_dump(cfg, sort_keys=False))
        site.ports["kueue-health"] = int(cfg["health"]["healthProbeBindAddress"].rsplit(":", 1)[1])
        icm = cfg.get("internalCertManagement") or {}
        self._mount_webhook_secret(site, "kueue", cfg.get("namespace", KUEUE_NS), icm.get("webhookSecretName", "kueue-webhook-server-cert"))
        self._start(site, "kueue", [
            str(self.bins["kueue"]), f"--config={f}", f"--kubeconfig={site.kubeconfig}",
            # The visibility API server reads fixed paths (/visibility, pkg/visibility/server.go certDir).
            "--feature-gates=VisibilityOnDemand=false",
        ], {"TMPDIR": "/tmp"}, private_tmp=True)

    def _start_jobset(self, site: Site) -> None:
        src = yaml.safe_load((mod_dir("jobset") / "config" / "components" / "manager" / "controller_manager_config.yaml").read_text())
        for k in ("jobset-health", "jobset-metrics"):
            site.ports[k] = free_port()
        src.setdefault("webhook", {}).update({"port": site.webhook_ports["jobset"], "host": "127.0.0.1"})
        src.setdefault("leaderElection", {})["resourceNamespace"] = "jobset-system"
        f = site.dir / "jobset-config.yaml"
        f.write_text(yaml.safe_dump(src, sort_keys=False))
        self._mount_webhook_secret(site, "jobset", "jobset-system",
                                   (src.get("internalCertManagement") or {}).get("webhookSecretName", "jobset-webhook-server-cert"))
        self._start(site, "jobset", [
            str(self.bins["jobset"]), f"--config={f}", f"--kubeconfig={site.kubeconfig}",
            f"--metrics-bind-address=127.0.0.1:{site.ports['jobset-metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{site.ports['jobset-health']}",
        ], private_tmp=True)

    def _start_trainer(self, site: Site) -> None:
        src = yaml.safe_load((mod_dir("trainer") / "manifests" / "base" / "manager" / "controller_manager_config.yaml").read_text())
        for k in ("trainer-health", "trainer-metrics", "trainer-status"):
            site.ports[k] = free_port()
        src["health"]["healthProbeBindAddress"] = f"127.0.0.1:{site.ports['trainer-health']}"
        src["metrics"]["bindAddress"] = f"127.0.0.1:{site.ports['trainer-metrics']}"
        src["webhook"].update({"port": site.webhook_ports["trainer"], "host": "127.0.0.1"})
        src.setdefault("statusServer", {})["port"] = site.ports["trainer-status"]
        src["leaderElection"]["resourceNamespace"] = "kubeflow-system"
        f = site.dir / "trainer-config.yaml"
        f.write_text(yaml.safe_dump(src, sort_keys=False))
        self._mount_webhook_secret(site, "trainer", "kubeflow-system", src["certManagement"]["webhookSecretName"])
        self._start(site, "trainer", [
            str(self.bins["trainer-controller-manager"]), f"--config={f}", f"--kubeconfig={site.kubeconfig}",
        ], private_tmp=True)

    # -------------------------------------------------------------- render

    def _render_files(self, site: Site) -> list[Path]:
        d = self.render / "sites" / site.name / "k8s"
        return sorted(p for p in d.glob("*.yaml") if p.name != "helm-releases.yaml")

    def _render_docs(self, site: Site) -> list[dict[str, Any]]:
        out = []
        for f in self._render_files(site):
            out += [d for d in load_yaml_all(f.read_text()) if isinstance(d, dict) and d.get("kind")]
        return out

    def _apply_render(self) -> None:
        self._each(self._apply_render_site)

    def _apply_render_site(self, site: Site) -> None:
        docs = [(f, d) for f in self._render_files(site) for d in load_yaml_all(f.read_text()) if isinstance(d, dict) and d.get("kind")]
        # Namespaces first (CRDs, had the render any, were installed before).
        docs.sort(key=lambda fd: (fd[1]["kind"] != "CustomResourceDefinition", fd[1]["kind"] != "Namespace"))
        for f, d in docs:
            try:
                site.client.apply(d)
            except ApplyError as e:
                self.findings.append(Finding(site.name, f.name, e.where, (f"HTTP {e.status}: " if e.status else "") + e.message))

    def _multikueue_secrets(self) -> None:
        """What the README asks users to create at the hub: Secret multikueue-<site>, key kubeconfig."""
        hub = self.sites[self.hub]
        for site in self.sites.values():
            if site.name == self.hub:
                continue
            cert, key = site.pki.issue("multikueue", "fedlab-multikueue", ["system:masters"])
            kc = site.pki.kubeconfig(site.dir / "multikueue-kubeconfig", site.server, cert, key, "multikueue")
            self._must_apply(hub, "multikueue secret (README step 6)", {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": f"multikueue-{site.name}", "namespace": KUEUE_NS},
                "stringData": {"kubeconfig": kc.read_text()},
            })

    # -------------------------------------------------------------- cluster-autoscaler

    # Flags of the rendered container that name AWS or the pod's environment; each
    # replaced (or, for auto-discovery, dropped: the kwok provider reads its node
    # groups from its ConfigMap) by the lab's value. Everything else is kept.
    CA_LAB_FLAGS = {"cloud-provider", "node-group-auto-discovery", "address", "kubeconfig", "namespace",
                    "leader-elect", "scan-interval"}

    def rendered(self, site: Site, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object of the render of ``site`` (any file), or None."""
        for d in self._render_docs(site):
            md = d.get("metadata") or {}
            if d.get("kind") == kind and md.get("name") == name and md.get("namespace") == namespace:
                return d
        return None

    def token_kubeconfig(self, site: Site, namespace: str, account: str, path: Path, seconds: int = 4 * 3600) -> Path:
        """A kubeconfig with a token of ``namespace/account`` (TokenRequest API), CA embedded."""
        import base64

        wait_for(f"{site.name}: ServiceAccount {namespace}/{account}", lambda: site.client.get("v1", "ServiceAccount", account, namespace), 30)
        status, body, _ = site.client.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}})
        if status != 201:
            raise LabError(f"{site.name}: token for {namespace}/{account}: {status} {body.get('message')}")
        cfg = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "lab", "cluster": {"server": site.server,
                                                     "certificate-authority-data": base64.b64encode(site.pki.ca_file.read_bytes()).decode()}}],
            "users": [{"name": account, "user": {"token": body["status"]["token"]}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": account}}],
            "current-context": "lab",
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)
        return path

    def _autoscalers(self) -> None:
        for site in self.sites.values():
            if site.is_aws and self.rendered(site, "Deployment", "kube-system", "cluster-autoscaler"):
                self._start_autoscaler(site)
            elif site.is_aws:
                self.echo(f"fedlab: {site.name}: the render has no cluster-autoscaler Deployment: none started")
        for site in self.sites.values():
            if "cluster-autoscaler" in site.procs:
                port = site.ports["ca"]
                wait_for(f"{site.name}: cluster-autoscaler /health-check", lambda p=port: _http_ok(f"http://127.0.0.1:{p}/health-check"),
                         120, log=site.procs["cluster-autoscaler"].log)

    def _start_autoscaler(self, site: Site) -> None:
        """cluster-autoscaler as the rendered Deployment runs it: the flags of its
        container (CA_LAB_FLAGS replaced), the API access of its ServiceAccount (a
        token, so the rendered RBAC is what it works with). The kwok cloud provider
        stands in for the AWS API: it creates the nodes with the admin kubeconfig
        (it reads $KUBECONFIG, cloudprovider/kwok/kwok_provider.go ``BuildKwok``)
        from one template node per pool (nodes.py), in ConfigMaps of its own."""
        s = self.fleet.site(site.name)
        dep = self.rendered(site, "Deployment", "kube-system", "cluster-autoscaler")
        ns = dep["metadata"]["namespace"]
        pod = dep["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "cluster-autoscaler"] or pod["containers"][:1]
        templates = {"apiVersion": "v1", "kind": "List", "items": lab_nodes.aws_templates(self.fleet, s)}
        provider = {
            "apiVersion": "v1alpha1",
            "readNodesFrom": "configmap",
            "nodegroups": {"fromNodeLabelKey": "gpufleet.io/pool"},
            "nodes": {"skipTaint": True},
            "configmap": {"name": "kwok-provider-templates"},
        }
        for name, key, data in (("kwok-provider-config", "config", provider), ("kwok-provider-templates", "templates", templates)):
            self._must_apply(site, "cluster-autoscaler kwok provider (lab)", {
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                "data": {key: yaml.safe_dump(data, sort_keys=False)}})
        site.ports["ca"] = free_port()
        kubeconfig = self.token_kubeconfig(site, ns, pod.get("serviceAccountName") or "default", site.dir / "cluster-autoscaler.kubeconfig")
        rendered_flags = [a for a in (container.get("command") or [])[1:] + (container.get("args") or [])]
        kept = [a for a in rendered_flags if a.startswith("--") and a[2:].split("=", 1)[0] not in self.CA_LAB_FLAGS]
        lab = [
            "--cloud-provider=kwok", f"--kubeconfig={kubeconfig}", f"--namespace={ns}",
            f"--address=127.0.0.1:{site.ports['ca']}", "--leader-elect=false",
            # rendered: the default 10 s; the lab looks twice as often
            "--scan-interval=5s",
        ]
        site.autoscaler_argv = kept + lab
        env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
        self._start(site, "cluster-autoscaler", [str(self.bins["cluster-autoscaler"]), *kept, *lab],
                    {**env, "KWOK_PROVIDER_MODE": "local", "KUBECONFIG": str(site.kubeconfig), "POD_NAMESPACE": ns,
                     "KWOK_PROVIDER_CONFIGMAP": "kwok-provider-config"})

    # -------------------------------------------------------------- helpers for tests

    def health(self) -> dict[str, str]:
        """Component -> 'ok' or why not, for every process of the lab."""
        out = {}
        for site in self.sites.values():
            for comp, proc in site.procs.items():
                key = f"{site.name}/{comp}"
                if not proc.alive():
                    out[key] = f"exited {proc.popen.returncode}: {proc.tail(5)}"
                    continue
                url = {
                    "kube-apiserver": None,
                    "kube-controller-manager": f"https://127.0.0.1:{site.ports['kcm']}/healthz",
                    "kube-scheduler": f"https://127.0.0.1:{site.ports['scheduler']}/healthz",
                    "kueue": f"http://127.0.0.1:{site.ports.get('kueue-health')}/readyz",
                    "jobset": f"http://127.0.0.1:{site.ports.get('jobset-health')}/readyz",
                    "trainer": f"http://127.0.0.1:{site.ports.get('trainer-health')}/readyz",
                    "cluster-autoscaler": f"http://127.0.0.1:{site.ports.get('ca')}/health-check",
                }.get(comp)
                if comp == "kube-apiserver":
                    ok = site.client.request("GET", "/readyz")[0] == 200
                elif url is None:
                    ok = True  # etcd is checked through the API server, KWOK by its nodes
                else:
                    ok = _https_ok(url) if url.startswith("https") else _http_ok(url)
                out[key] = "ok" if ok else f"not healthy ({url})"
        return out


RUNS = ROOT / ".fedlab" / "run"


def new_run_dir() -> Path:
    """A folder for this process's federation under .fedlab/run/<pid>; the folders of
    runs whose process is gone are cleaned up first (their leftover processes stopped)."""
    RUNS.mkdir(parents=True, exist_ok=True)
    for d in RUNS.iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        if Path(f"/proc/{d.name}").exists():
            continue  # another lab is running from this checkout
        ProcessGroup.reap_stale(d / "pids", str(d))
        import shutil

        shutil.rmtree(d, ignore_errors=True)
    d = RUNS / str(os.getpid())
    d.mkdir(exist_ok=True)
    return d


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _https_ok(url: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the components' self-signed serving certificates
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    """Bring the federation up and keep it until Ctrl-C (for looking around with kubectl)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--render", type=Path, required=True)
    ap.add_argument("--work", type=Path, help="the lab's folder (default .fedlab/run/<pid>)")
    args = ap.parse_args(argv)
    build.ensure()
    with Federation(args.render, args.work or new_run_dir()) as fed:
        for f in fed.findings:
            print(f"finding: {f}")
        for s in fed.sites.values():
            print(f"{s.name}: KUBECONFIG={s.kubeconfig}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
