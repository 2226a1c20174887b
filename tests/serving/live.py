"""The rendered gateway run for real: processes on 127.0.0.1, started and stopped by the tests.

* :class:`Proc`: a child process in its own session with its output in a log
  file; stopped by its own process group, first SIGTERM, then SIGKILL.
* :class:`S3Server`: moto's S3-compatible server (``moto_server``), a process.
* :class:`ModelServer`: ``tests/serving/model_server.py``, a stand-in for one
  vLLM Service, a process.
* :class:`Blackhole`: what a site without internet looks like from inside:
  it accepts a TCP connection and never answers (a firewall that drops), and
  counts who tried. The gateway gets it as its HTTP(S) proxy and as the
  Hugging Face endpoint.
* :class:`Gateway`: the LiteLLM proxy started from a rendered ``llm-gateway``
  bundle as its container would be: the image's entrypoint runs ``litellm``
  with the container's ``args``, the environment is the container's ``env``
  with each ``secretKeyRef`` resolved from a dict of secret values, and the
  ConfigMap, Secret and emptyDir mounts are folders laid out as the pod would
  see them. Only the addresses differ: the cluster's Services are the local
  processes (``addresses``), and the proxy binds 127.0.0.1 on a free port.
* :class:`Workers`: HTTP connections pinned to one worker process each
  (psutil tells which worker accepted a connection).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc: Proc | None = None, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.popen.returncode}\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:.0f} s" + (f"\n{proc.tail()}" if proc else ""))
        time.sleep(interval)


class Proc:
    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)  # the group this test started
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._fh.close()


def http_ok(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    finally:
        conn.close()


class S3Server:
    """moto's S3 server (PyPI moto[server]), a real HTTP process speaking the S3 API."""

    region = "us-east-1"

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.proc = Proc("moto-s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], log_dir)
        wait_for(lambda: http_ok(self.port, "/moto-api/"), 60, "moto_server", self.proc)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id="test-reader", aws_secret_access_key="test-reader")

    def objects(self, bucket: str) -> dict[str, dict]:
        c = self.client()
        out = {}
        for obj in c.list_objects_v2(Bucket=bucket).get("Contents", []):
            out[obj["Key"]] = json.loads(c.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        return out

    def stop(self) -> None:
        self.proc.stop()


class ModelServer:
    def __init__(self, model: str, api_key: str, log_dir: Path, port: int | None = None) -> None:
        self.model, self.api_key, self.log_dir = model, api_key, log_dir
        self.port = port or free_port()
        self.start()

    def start(self) -> None:
        self.proc = Proc(f"model-{self.model}", [sys.executable, str(HERE / "model_server.py"), "--port", str(self.port),
                                                 "--model", self.model, "--api-key", self.api_key or ""], self.log_dir)
        wait_for(lambda: http_ok(self.port, "/health"), 30, f"stand-in for {self.model}", self.proc)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def answered(self) -> int:
        return self.stats()["answered"]

    def stop(self) -> None:
        self.proc.stop()


class Blackhole:
    """Accepts TCP connections and never answers; remembers each peer and first bytes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(0.5)
            try:
                first = conn.recv(200)
            except OSError:
                first = b""
            self.seen.append(first)
            self._held.append(conn)  # held open, never answered

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        for c in self._held:
            c.close()
        self.sock.close()


def container(bundle, name: str) -> dict[str, Any]:
    dep = next(o for o in bundle.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    return dep["spec"]["template"]["spec"]


class Gateway:
    """The rendered gateway Deployment's container, run as a local process."""

    def __init__(self, bundle, secrets: dict[tuple[str, str, str], str], addresses: dict[str, Any], log_dir: Path,
                 offline: Blackhole | None = None, startup_timeout: float = 300) -> None:
        self.proc: Proc | None = None
        pod = container(bundle, "llm-gateway")
        self.pod = pod
        [c] = pod["containers"]
        self.container = c
        ns = next(o for o in bundle.objects if o["kind"] == "Deployment")["metadata"]["namespace"]
        self.root = Path(tempfile.mkdtemp(prefix="gpufleet-gw-"))
        os.chmod(self.root, 0o755)
        cm = next(o for o in bundle.objects if o["kind"] == "ConfigMap")
        # The pod's mounts: each volume a folder here.
        mounts: dict[str, Path] = {}
        for m in c["volumeMounts"]:
            vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
            d = self.root / m["name"]
            d.mkdir()
            os.chmod(d, 0o755)
            if "configMap" in vol:
                for key, text in cm["data"].items():
                    (d / key).write_text(text)
                    os.chmod(d / key, 0o644)
            elif "secret" in vol:
                for item in vol["secret"]["items"]:
                    (d / item["path"]).write_text(secrets[(ns, vol["secret"]["secretName"], item["key"])])
                    os.chmod(d / item["path"], 0o644)
            elif "emptyDir" in vol:
                os.chmod(d, 0o1777)
            mounts[m["mountPath"]] = d
        self.mounts = mounts

        def local(path: str) -> str:
            for mount, d in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
                if path == mount or path.startswith(mount + "/"):
                    return str(d) + path[len(mount):]
            return path

        # The rendered config, with the cluster's addresses replaced by the local ones.
        config_path = Path(local(c["args"][c["args"].index("--config") + 1]))
        self.rendered = yaml.safe_load(config_path.read_text())
        conf = json.loads(json.dumps(self.rendered))
        cache = conf["litellm_settings"]["cache_params"]
        cache["host"], cache["port"] = "127.0.0.1", addresses["cache_port"]
        for entry in conf["model_list"]:
            entry["litellm_params"]["api_base"] = addresses["models"][entry["model_name"]]
        if "s3_callback_params" in conf["litellm_settings"]:
            conf["litellm_settings"]["s3_callback_params"]["s3_endpoint_url"] = addresses["s3"]
        config_path.write_text(yaml.safe_dump(conf, sort_keys=False))
        self.config = conf

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        self.unresolved: list[tuple[str, str, str]] = []  # secret keys the test has no value for
        for e in c["env"]:
            if "value" in e:
                env[e["name"]] = local(e["value"])
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                value = secrets.get((ns, ref["name"], ref["key"]))
                if value is None:
                    self.unresolved.append((ns, ref["name"], ref["key"]))
                else:
                    env[e["name"]] = value
        # The pod's /tmp is an emptyDir; Python's tempfile follows TMPDIR.
        env["TMPDIR"] = local("/tmp")
        env.update(addresses.get("env", {}))
        if offline is not None:
            # No internet: every outside connection ends in a black hole.
            for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
                env[var] = offline.url
            env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
            env["HF_ENDPOINT"] = offline.url
        self.env = env

        self.port = free_port()
        args = list(c["args"])
        args[args.index("--config") + 1] = str(config_path)
        args[args.index("--port") + 1] = str(self.port)
        self.workers = int(args[args.index("--num_workers") + 1]) if "--num_workers" in args else 1
        # The image's ENTRYPOINT (docker/prod_entrypoint.sh) is `exec litellm "$@"`.
        argv = [str(BIN / "litellm"), *args, "--host", "127.0.0.1"]
        self.proc = Proc("litellm", argv, log_dir, env=env, cwd=self.root)
        try:
            wait_for(lambda: http_ok(self.port, "/health/liveliness"), startup_timeout, "litellm proxy", self.proc, interval=0.5)
        except BaseException:
            self.stop()  # nothing of a failed start stays behind
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


class Workers:
    """One HTTP connection per gateway worker, so a request goes to the worker the test names."""

    def __init__(self, gateway: Gateway, timeout: float = 120) -> None:
        import psutil

        self.gateway = gateway
        self.parent = psutil.Process(gateway.proc.pid)
        self.pids: list[int] = []
        deadline = time.monotonic() + timeout
        while len(self.pids) < gateway.workers:
            conn, pid = self._connect()
            conn.close()
            if pid not in self.pids:
                self.pids.append(pid)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.pids)} of {gateway.workers} gateway workers accept connections")

    def _owner(self, client_port: int) -> int | None:
        for child in self.parent.children(recursive=True):
            try:
                for c in child.net_connections(kind="tcp"):
                    if c.laddr and c.laddr.port == self.gateway.port and c.raddr and c.raddr.port == client_port:
                        return child.pid
            except Exception:  # noqa: BLE001 - a child that just exited
                continue
        return None

    def _connect(self) -> tuple[http.client.HTTPConnection, int]:
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=90)
        conn.connect()
        port = conn.sock.getsockname()[1]
        pid = wait_for(lambda: self._owner(port), 10, "a worker to accept the connection")
        return conn, pid

    def on(self, worker: int) -> http.client.HTTPConnection:
        """A fresh connection accepted by worker number ``worker`` (0-based).

        A worker that uvicorn replaced (it died) is replaced here by its successor."""
        for _ in range(100):
            alive = {c.pid for c in self.parent.children(recursive=True)}
            self.pids = [p for p in self.pids if p in alive]
            conn, pid = self._connect()
            if pid not in self.pids:
                self.pids.append(pid)
            if len(self.pids) > worker and pid == self.pids[worker]:
                return conn
            conn.close()
        raise RuntimeError(f"no connection reached worker {worker} of {self.pids} in 100 tries")

    def request(self, worker: int, method: str, path: str, key: str | None = None, body: Any = None) -> tuple[int, dict, float]:
        """(status, JSON body, seconds) of one request served by ``worker``."""
        conn = self.on(worker)
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        started = time.monotonic()
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        elapsed = time.monotonic() - started
        try:
            data = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            data = {"raw": raw.decode(errors="replace")}
        return resp.status, data, elapsed
