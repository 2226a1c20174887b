#!/usr/bin/env python3
"""gpufleet's on-prem-first MultiKueue dispatcher.

A small controller that runs beside Kueue's MultiKueue manager at the hub and
decides which worker clusters a pending workload is copied to. It uses
Kueue's external-dispatcher contract (Kueue 0.19.2): with
``multiKueue.dispatcherName`` set to a name that is neither built-in
dispatcher, Kueue's MultiKueue workload controller copies a workload only to
the clusters in ``.status.nominatedClusterNames`` and leaves that list to
someone else (``nominateAndSynchronizeWorkers``,
pkg/controller/admissionchecks/multikueue/workload.go;
site/content/en/docs/concepts/multikueue.md, "External").

The rule, per workload that holds quota at the hub, whose MultiKueue admission
check is Pending and that has no ``clusterName`` yet:

1. Nothing nominated: nominate the first cluster of its MultiKueueConfig
   (gpufleet lists data centres first).
2. Otherwise look at the last nominated cluster. The next cluster of the list
   is added (the earlier ones stay nominated, so whichever admits first wins)
   only when that cluster *reports that it cannot admit the workload*:

   * its copy of the workload has ``QuotaReserved=False`` (Kueue's scheduler
     writes this with the reason and message of the failed flavor assignment,
     ``requeueAndUpdate`` in pkg/scheduler/scheduler.go), and the message does
     not say that preemption is under way ("Pending the preemption of N
     workload(s)": the site will admit it once the victims are gone); or
   * its MultiKueueCluster is not Active (Kueue cannot reach it).

   While the copy is not there yet, has no QuotaReserved condition, or holds
   quota, nothing changes.

There is no timer and no state in memory: every pass derives the decision
from the objects, so a restart changes nothing.

Writing ``nominatedClusterNames``: Kueue writes the admission part of a
workload's status with server-side apply as field manager ``kueue-admission``
(``PatchAdmissionStatus``, pkg/workload/patching/patching.go) and clears the
list when it sets ``clusterName``; the CRD refuses both set at once. So the
list must belong to ``kueue-admission`` (the first of the three options the
Kueue docs give). This controller applies, as ``kueue-admission``, exactly the
fields that manager already owns (read from ``metadata.managedFields``) at
their current values plus the new list, with the object's resourceVersion, so
nothing else changes and a concurrent write makes the apply fail and retry.

Reading the workers: per worker cluster, a Secret in the hub's Kueue namespace
named ``gpufleet-dispatcher-<cluster>`` with keys ``server`` (the API URL),
``ca.crt`` and ``token`` (a token of the read-only ServiceAccount
``gpufleet-dispatcher-reader`` that gpufleet renders at every worker). The
Secret layout is that of a service-account token Secret plus ``server``.

Only the Python standard library is used, so the controller runs from a
ConfigMap in the stock Python image. Each decision is printed as one JSON line
and recorded as an Event on the workload (reason ``Nominated``).

    python3 controller.py [--namespace kueue-system] [--interval 5]
                          [--server URL --token-file F --ca-file F]  # default: in-cluster
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import http.server
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

NAME = "gpufleet.io/onprem-first"  # the multiKueue.dispatcherName this controller serves
FIELD_MANAGER = "kueue-admission"  # Kueue's pkg/constants AdmissionName
MULTIKUEUE_CONTROLLER = "kueue.x-k8s.io/multikueue"
KUEUE = "/apis/kueue.x-k8s.io/v1beta2"
KUEUE_API_VERSION = "kueue.x-k8s.io/v1beta2"
SECRET_PREFIX = "gpufleet-dispatcher-"
READER = "gpufleet-dispatcher-reader"  # the ServiceAccount (and ClusterRole) at every worker
PREEMPTING = "Pending the preemption of"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


# ------------------------------------------------------------------ API access


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Api:
    """A bearer-token client for one API server (standard library only)."""

    def __init__(self, server: str, ca_pem: str | None, bearer: Callable[[], str], timeout: float = 10.0):
        self.server = server.rstrip("/")
        self.bearer = bearer
        self.timeout = timeout
        self.context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json", params: dict[str, str] | None = None) -> Any:
        url = self.server + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.bearer()}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise ApiError(exc.code, detail) from None
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise


def file_token(path: str) -> Callable[[], str]:
    # Read on every request: projected service-account tokens rotate.
    return lambda: open(path).read().strip()


# ------------------------------------------------------------------ decisions


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def is_true(obj: dict[str, Any], kind: str) -> bool:
    cond = condition(obj, kind)
    return cond is not None and cond.get("status") == "True"


@dataclass(frozen=True)
class Verdict:
    cannot_admit: bool
    why: str


@dataclass(frozen=True)
class Decision:
    nominate: list[str]
    reason: str


RemoteLookup = Callable[[str, str, str], "dict[str, Any] | None"]


def judge(cluster: str, active: dict[str, bool], remote: RemoteLookup, namespace: str, name: str) -> Verdict:
    """Whether ``cluster`` reports that it cannot admit the workload."""
    if not active.get(cluster, False):
        return Verdict(True, f"MultiKueueCluster {cluster} is not Active")
    copy_ = remote(cluster, namespace, name)
    if copy_ is None:
        return Verdict(False, f"no copy at {cluster} yet")
    reserved = condition(copy_, "QuotaReserved")
    if reserved is None:
        return Verdict(False, f"{cluster} has not evaluated it yet")
    if reserved.get("status") == "True":
        return Verdict(False, f"{cluster} reserved quota for it")
    message = reserved.get("message") or ""
    if PREEMPTING in message:
        return Verdict(False, f"{cluster} is preempting for it: {message}")
    return Verdict(True, f"{cluster}: {reserved.get('reason', '')}: {message}")


def decide(
    workload: dict[str, Any],
    checks: dict[str, str],
    configs: dict[str, list[str]],
    active: dict[str, bool],
    remote: RemoteLookup,
) -> Decision | None:
    """The new ``nominatedClusterNames`` of ``workload``, or None to leave it.

    ``checks``: MultiKueue AdmissionCheck name -> its MultiKueueConfig name;
    ``configs``: MultiKueueConfig name -> its clusters in order;
    ``active``: MultiKueueCluster name -> whether its Active condition is True;
    ``remote(cluster, namespace, name)``: the workload's copy at a cluster, or None.
    """
    status = workload.get("status") or {}
    if status.get("clusterName") or is_true(workload, "Finished") or not is_true(workload, "QuotaReserved"):
        return None
    state = next((s for s in status.get("admissionChecks") or [] if s.get("name") in checks), None)
    if state is None or state.get("state") != "Pending":
        return None
    order = configs.get(checks[state["name"]]) or []
    if not order:
        return None
    nominated = list(status.get("nominatedClusterNames") or [])
    tried = [c for c in order if c in nominated]
    if not tried:
        return Decision([order[0]], f"{order[0]} is first in the queue's order")
    last = tried[-1]
    meta = workload["metadata"]
    verdict = judge(last, active, remote, meta["namespace"], meta["name"])
    if not verdict.cannot_admit:
        return None
    later = [c for c in order[order.index(last) + 1 :] if c not in nominated]
    if not later:
        return None
    return Decision(tried + [later[0]], f"{verdict.why}; nominating {later[0]}")


# ------------------------------------------------------------------ writing


def project(value: Any, fields: dict[str, Any]) -> Any:
    """The part of ``value`` that a managedFields entry (FieldsV1) owns."""
    if not fields or set(fields) == {"."}:
        return copy.deepcopy(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in fields.items():
            if key.startswith("f:") and key[2:] in value:
                out[key[2:]] = project(value[key[2:]], sub)
        return out
    if isinstance(value, list):
        items: list[Any] = []
        for key, sub in fields.items():
            if key.startswith("k:"):
                want = json.loads(key[2:])
                for item in value:
                    if isinstance(item, dict) and all(item.get(k) == v for k, v in want.items()):
                        part = project(item, sub)
                        if isinstance(part, dict):
                            part.update(want)
                        items.append(part)
                        break
            elif key.startswith("v:"):
                wanted = json.loads(key[2:])
                if wanted in value:
                    items.append(wanted)
            elif key.startswith("i:") and int(key[2:]) < len(value):
                items.append(project(value[int(key[2:])], sub))
        return items
    return copy.deepcopy(value)


def nomination_patch(workload: dict[str, Any], nominate: list[str]) -> dict[str, Any]:
    """A server-side apply body for the status subresource, as ``kueue-admission``:
    the fields that manager owns at their current values, plus the new list."""
    owned: dict[str, Any] = {}
    for entry in workload["metadata"].get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply" and entry.get("subresource") == "status":
            owned = project(workload, entry.get("fieldsV1") or {})
            break
    meta = workload["metadata"]
    body = {k: v for k, v in owned.items() if k not in ("apiVersion", "kind", "metadata")}
    body["apiVersion"] = KUEUE_API_VERSION
    body["kind"] = "Workload"
    body["metadata"] = {**(owned.get("metadata") or {}), "name": meta["name"], "namespace": meta["namespace"], "resourceVersion": meta["resourceVersion"]}
    body.setdefault("status", {})["nominatedClusterNames"] = list(nominate)
    return body


def micro_time(now: datetime.datetime) -> str:
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------ the loop


class Dispatcher:
    def __init__(self, hub: Api, namespace: str, log=sys.stdout, instance: str | None = None):
        self.hub = hub
        self.namespace = namespace
        self.log = log
        self.instance = instance or socket.gethostname()
        self._workers: dict[str, tuple[str, Api]] = {}  # cluster -> (secret resourceVersion, client)
        self._said: dict[str, str] = {}  # cluster -> last problem reported, to say it once
        self.last_pass = 0.0

    def emit(self, **fields: Any) -> None:
        fields = {"time": micro_time(datetime.datetime.now(datetime.timezone.utc)), **fields}
        self.log.write(json.dumps(fields, sort_keys=False) + "\n")
        self.log.flush()

    def worker(self, cluster: str) -> Api | None:
        secret = self.hub.get_or_none(f"/api/v1/namespaces/{self.namespace}/secrets/{SECRET_PREFIX}{cluster}")
        if secret is None:
            self.say(cluster, f"no Secret {self.namespace}/{SECRET_PREFIX}{cluster}: cannot read {cluster}")
            return None
        version = secret["metadata"]["resourceVersion"]
        cached = self._workers.get(cluster)
        if cached and cached[0] == version:
            return cached[1]
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        missing = [k for k in ("server", "ca.crt", "token") if not data.get(k)]
        if missing:
            self.say(cluster, f"Secret {self.namespace}/{SECRET_PREFIX}{cluster} lacks {', '.join(missing)}")
            return None
        token = data["token"].strip()
        api = Api(data["server"].strip(), data["ca.crt"], lambda: token)
        self._workers[cluster] = (version, api)
        return api

    def say(self, cluster: str, problem: str) -> None:
        if self._said.get(cluster) != problem:
            self._said[cluster] = problem
            self.emit(level="error", cluster=cluster, message=problem)

    def remote(self, cluster: str, namespace: str, name: str) -> dict[str, Any] | None:
        api = self.worker(cluster)
        if api is None:
            return None  # cannot judge: treated as "not evaluated yet", never as "cannot admit"
        try:
            found = api.get_or_none(f"{KUEUE}/namespaces/{namespace}/workloads/{name}")
        except (ApiError, OSError) as exc:
            self.say(cluster, f"reading {namespace}/{name} at {cluster}: {exc}")
            return None
        self._said.pop(cluster, None)
        return found

    def once(self) -> list[tuple[dict[str, Any], Decision]]:
        checks = {
            ac["metadata"]["name"]: ((ac.get("spec") or {}).get("parameters") or {}).get("name", "")
            for ac in self.hub.get(f"{KUEUE}/admissionchecks")["items"]
            if (ac.get("spec") or {}).get("controllerName") == MULTIKUEUE_CONTROLLER
        }
        configs = {c["metadata"]["name"]: list((c.get("spec") or {}).get("clusters") or []) for c in self.hub.get(f"{KUEUE}/multikueueconfigs")["items"]}
        active = {c["metadata"]["name"]: is_true(c, "Active") for c in self.hub.get(f"{KUEUE}/multikueueclusters")["items"]}
        done = []
        for wl in self.hub.get(f"{KUEUE}/workloads")["items"]:
            decision = decide(wl, checks, configs, active, self.remote)
            if decision is None:
                continue
            meta = wl["metadata"]
            try:
                self.hub.call(
                    "PATCH",
                    f"{KUEUE}/namespaces/{meta['namespace']}/workloads/{meta['name']}/status",
                    nomination_patch(wl, decision.nominate),
                    content_type="application/apply-patch+yaml",
                    params={"fieldManager": FIELD_MANAGER, "force": "true"},
                )
            except ApiError as exc:
                if exc.status == 409:  # changed since listed: decide again next pass
                    continue
                raise
            self.emit(workload=f"{meta['namespace']}/{meta['name']}", nominated=decision.nominate, reason=decision.reason)
            self.event(wl, decision)
            done.append((wl, decision))
        self.last_pass = time.monotonic()
        return done

    def event(self, wl: dict[str, Any], decision: Decision) -> None:
        meta = wl["metadata"]
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name'][:200]}-", "namespace": meta["namespace"]},
            "eventTime": micro_time(datetime.datetime.now(datetime.timezone.utc)),
            "reportingController": NAME,
            "reportingInstance": self.instance,
            "action": "Nominate",
            "reason": "Nominated",
            "type": "Normal",
            "regarding": {"apiVersion": KUEUE_API_VERSION, "kind": "Workload", "namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid", "")},
            "note": f"nominated {', '.join(decision.nominate)}: {decision.reason}"[:1024],
        }
        try:
            self.hub.call("POST", f"/apis/events.k8s.io/v1/namespaces/{meta['namespace']}/events", body)
        except (ApiError, OSError) as exc:  # an event is a courtesy; the nomination stands
            self.emit(level="error", message=f"recording the event: {exc}")

    def run(self, interval: float, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.once()
            except (ApiError, OSError, KeyError, ValueError) as exc:
                self.emit(level="error", message=f"pass failed: {exc}")
            stop.wait(interval)


def serve_health(addr: str, dispatcher: Dispatcher, interval: float) -> http.server.HTTPServer:
    host, _, port = addr.rpartition(":")

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            fresh = time.monotonic() - dispatcher.last_pass < max(30.0, 3 * interval)
            self.send_response(200 if self.path == "/healthz" and fresh else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((host or "0.0.0.0", int(port)), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--namespace", default="kueue-system", help="Kueue's namespace at the hub (where the worker Secrets are)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between passes")
    ap.add_argument("--server", default=None, help="hub API URL (default: in-cluster)")
    ap.add_argument("--token-file", default=f"{SA_DIR}/token")
    ap.add_argument("--ca-file", default=f"{SA_DIR}/ca.crt")
    ap.add_argument("--health-addr", default=":8081", help="host:port of /healthz; empty for none")
    args = ap.parse_args(argv)
    server = args.server
    if server is None:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            print("controller.py: not in a cluster (KUBERNETES_SERVICE_HOST unset) and no --server given", file=sys.stderr)
            return 2
        server = f"https://{host}:{port}"
    try:
        ca = open(args.ca_file).read()
        open(args.token_file).close()
    except OSError as exc:
        print(f"controller.py: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    dispatcher = Dispatcher(Api(server, ca, file_token(args.token_file)), args.namespace)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.health_addr:
        serve_health(args.health_addr, dispatcher, args.interval)
    dispatcher.emit(message=f"{NAME} dispatching for {server}", interval=args.interval)
    dispatcher.run(args.interval, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
