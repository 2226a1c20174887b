"""A stand-in for one vLLM OpenAI server, run as its own process by the gateway tests.

It answers ``POST /v1/chat/completions`` like vLLM does for a served model,
and, like vLLM started with ``--api-key``, refuses any request whose
``Authorization`` header is not ``Bearer <key>`` with HTTP 401 (an empty
``--api-key`` accepts any request, as vLLM without one does). ``GET
/stats`` (open, for the test) reports what it received: every request's model,
prompt and whether its key was right.

    python model_server.py --port 18000 --model NAME --api-key KEY
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    server_version = "stand-in-vllm/1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        st = self.server.state  # type: ignore[attr-defined]
        if self.path == "/stats":
            with st["lock"]:
                self._send(200, {"answered": st["answered"], "refused": st["refused"], "requests": st["requests"]})
        elif self.path == "/health":
            self._send(200, {})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        st = self.server.state  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        ok = not st["key"] or self.headers.get("Authorization") == f"Bearer {st['key']}"
        with st["lock"]:
            st["requests"].append({"path": self.path, "model": body.get("model"), "key_ok": ok,
                                   "prompt": (body.get("messages") or [{}])[-1].get("content")})
            if not ok:
                st["refused"] += 1
            else:
                st["answered"] += 1
            n = st["answered"]
        if not ok:
            self._send(401, {"error": "Unauthorized"})
            return
        if not self.path.endswith("/chat/completions"):
            self._send(404, {"error": "not found"})
            return
        prompt = (body.get("messages") or [{}])[-1].get("content")
        self._send(200, {
            "id": f"chatcmpl-{st['model']}-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": f"{st['model']} answer {n} to: {prompt}"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        })


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--api-key", default="")
    args = ap.parse_args()
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    httpd.state = {"lock": threading.Lock(), "key": args.api_key, "model": args.model,  # type: ignore[attr-defined]
                   "answered": 0, "refused": 0, "requests": []}
    httpd.serve_forever()


if __name__ == "__main__":
    main()
