"""Real services on 127.0.0.1 for the gateway tests, each started and stopped by the test.

* :class:`RedisServer`: Debian's ``redis-server`` on a free port, in a
  temporary directory, with a password (as the site's Valkey has).
* :class:`OpenAIBackend`: a minimal OpenAI-compatible chat endpoint, standing
  in for vLLM, that counts the requests that reach it.
* :class:`ObjectStore`: an HTTP endpoint that accepts S3 ``PUT`` requests and
  keeps the objects, standing in for MinIO.
* :func:`loopback_only`: refuses any connection that is not to 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, password: str = "cache-test-password") -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (tests/install-system-deps.sh installs Debian's redis-server)")
        self.password = password
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gpufleet-redis-"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--requirepass", self.password, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}") from None
                time.sleep(0.05)
        client.close()
        return self

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Server:
    handler: type[BaseHTTPRequestHandler]

    def start(self) -> Any:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        owner: OpenAIBackend = self.server.owner  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        with owner.lock:
            owner.requests.append(body)
            n = len(owner.requests)
        prompt = body["messages"][-1]["content"]
        reply = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": f"answer {n} to: {prompt}"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class OpenAIBackend(_Server):
    handler = _ChatHandler

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class _PutHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:  # noqa: N802
        owner: ObjectStore = self.server.owner  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with owner.lock:
            owner.objects[self.path] = {"body": body, "authorization": self.headers.get("Authorization", "")}
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class ObjectStore(_Server):
    handler = _PutHandler

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def loopback_only(monkeypatch) -> list[tuple]:
    """Make every socket connection outside 127.0.0.1 fail; returns the refused addresses."""
    refused: list[tuple] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def allowed(address: Any) -> bool:
        if isinstance(address, tuple) and address:
            return address[0] in ("127.0.0.1", "::1", "localhost")
        return True  # unix sockets

    def connect(self, address):  # noqa: ANN001
        if not allowed(address):
            refused.append(address)
            raise ConnectionRefusedError(f"test isolation: no network beyond 127.0.0.1 ({address!r})")
        return real_connect(self, address)

    def connect_ex(self, address):  # noqa: ANN001
        if not allowed(address):
            refused.append(address)
            return 111
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return refused
