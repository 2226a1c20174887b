"""Records every task result of a playbook run as one JSON line.

The lab enables it next to the normal screen output (it is not a stdout
callback) and reads the file afterwards: per-host counts, the tasks that
changed on a rerun, and the ``skipped: ...`` messages the roles print when a
step does not apply to a host. The file is named by ``LAB_RECORD_FILE``.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: lab_record
    type: aggregate
    short_description: write each task result as a JSON line
    description:
      - Appends one JSON object per task result to the file named by the
        LAB_RECORD_FILE environment variable.
    requirements:
      - LAB_RECORD_FILE set in the environment
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "lab_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        path = os.environ.get("LAB_RECORD_FILE")
        self._out = open(path, "a", encoding="utf-8") if path else None
        self._play = ""

    def _write(self, record: dict) -> None:
        if self._out is None:
            return
        self._out.write(json.dumps(record, default=str) + "\n")
        self._out.flush()

    def v2_playbook_on_play_start(self, play) -> None:
        self._play = play.get_name()

    def _result(self, status: str, result) -> None:
        res = result._result
        task = result._task
        record = {
            "time": time.time(),
            "play": self._play,
            "host": result._host.get_name(),
            "task": task.get_name(),
            "action": task.action,
            "role": task._role.get_name() if task._role else None,
            "status": status,
            "changed": bool(res.get("changed", False)),
        }
        for key in ("msg", "skip_reason", "stderr", "rc"):
            if key in res:
                value = res[key]
                if isinstance(value, str) and len(value) > 2000:
                    value = value[-2000:]
                record[key] = value
        if "results" in res and status == "failed":
            record["msg"] = record.get("msg") or "; ".join(
                str(r.get("msg", "")) for r in res["results"] if r.get("failed")
            )
        self._write(record)

    def v2_runner_on_ok(self, result) -> None:
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        self._result("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_skipped(self, result) -> None:
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result) -> None:
        self._result("unreachable", result)

    def v2_playbook_on_stats(self, stats) -> None:
        summary = {h: stats.summarize(h) for h in sorted(stats.processed)}
        self._write({"time": time.time(), "stats": summary})
        if self._out is not None:
            self._out.close()
            self._out = None
