"""Offline preview of a site's stack: the real program under Pulumi's mock engine.

``preview_site(fleet_path, site)`` returns what the program declares for that
stack — each resource's type, name and inputs — without the Pulumi CLI, a
cloud account or a cluster. ``gpufleet render`` writes it to
``sites/<site>/pulumi-preview.json`` for review.

Pulumi's runtime settings (stack, config, mocks) are process-wide, so each
site runs in a fresh interpreter (``python -m cloud.preview --fleet F --site S``,
which prints the list as JSON). Resources get deterministic fake ids and ARNs,
so a preview is stable from run to run and diffs cleanly in a pull request.

Each preview process runs in a session of its own, so :class:`Previews` can
stop it and anything it started (``gpufleet render`` does when interrupted),
and it asks the kernel to kill it when the process that started it dies
(``PR_SET_PDEATHSIG``), so a render killed with SIGKILL leaves none behind.

Secrets never appear: values the program marks secret (``pulumi.Output.secret``,
secret config), any value under a key such as ``kubeconfig``, ``password`` or
``token``, and the values of Kubernetes Secrets are replaced by ``"[secret]"``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MASK = "[secret]"
PLACEHOLDER_KUBECONFIG = "apiVersion: v1\nkind: Config\n# placeholder: the stack's secret kubeconfig is not read by the preview\n"
ERROR_MARKER = "gpufleet-preview-error: "
_SECRET_KEY = re.compile(r"(kubeconfig|password|passphrase|token|secret|privatekey|secretkey|accesskey|credentials?)$", re.IGNORECASE)
TIMEOUT_S = 120
PARENT_ENV = "GPUFLEET_PREVIEW_PARENT"  # pid of the process that started a preview
STOP_GRACE_S = 3.0


# --------------------------------------------------------------------- the mocks


def _fake_outputs(typ: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    """Plausible outputs for a resource, so that resources depending on it resolve."""
    service = typ.split(":")[1].split("/")[0] if typ.startswith("aws:") else "x"
    out = dict(inputs)
    out.setdefault("arn", f"arn:aws:{service}:{region}:123456789012:{name}")
    if "name" not in out and typ.startswith("aws:"):
        out["name"] = name
    if typ == "aws:eks/cluster:Cluster":
        cluster = inputs.get("name", name)
        out["endpoint"] = f"https://{cluster}.gr7.{region}.eks.amazonaws.com"
        out["certificateAuthority"] = {"data": base64.b64encode(b"mock certificate authority").decode()}
        out["vpcConfig"] = {**inputs.get("vpcConfig", {}), "clusterSecurityGroupId": f"sg-{cluster}-cluster"}
        out["status"] = "ACTIVE"
    elif typ == "aws:ec2/launchTemplate:LaunchTemplate":
        out["latestVersion"] = 1
        out["defaultVersion"] = 1
    elif typ == "aws:kms/key:Key":
        out["keyId"] = f"{name}-key-id"
    elif typ == "aws:eks/nodeGroup:NodeGroup":
        out.setdefault("nodeGroupName", name)
    return out


class RecordingMocks:
    """A ``pulumi.runtime.Mocks`` that records every resource the program declares."""

    def __init__(self, region: str = "us-east-1"):
        self.region = region
        self.resources: list[dict[str, Any]] = []

    def new_resource(self, args):  # pulumi.runtime.MockResourceArgs
        self.resources.append({"type": args.typ, "name": args.name, "inputs": args.inputs, "provider": args.provider, "custom": args.custom})
        return f"{args.name}-id", _fake_outputs(args.typ, args.name, _unwrap(args.inputs), self.region)

    def call(self, args):  # pulumi.runtime.MockCallArgs
        return {}

    # The mock monitor calls these on newer SDKs; nothing to do for them.
    def register_transform(self, transform) -> None:  # pragma: no cover - SDK hook
        pass

    def register_invoke_transform(self, transform) -> None:  # pragma: no cover - SDK hook
        pass


def _mocks_class():
    import pulumi

    class _Mocks(RecordingMocks, pulumi.runtime.Mocks):
        pass

    return _Mocks


def make_mocks(region: str = "us-east-1") -> RecordingMocks:
    """A fresh recording mock, usable with ``pulumi.runtime.set_mocks``."""
    return _mocks_class()(region)


def _unwrap(value: Any) -> Any:
    from pulumi.runtime import rpc

    if rpc.is_rpc_secret(value):
        return _unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def mask(value: Any, key: str | None = None) -> Any:
    """JSON-safe copy of ``value`` with secrets replaced by ``"[secret]"``."""
    from pulumi.runtime import rpc

    if rpc.is_rpc_secret(value) or (key is not None and _SECRET_KEY.search(key) and value not in (None, "", [], {})):
        return MASK
    if isinstance(value, dict):
        return {str(k): mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf carries every number as a double
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if value is rpc.UNKNOWN or value is getattr(rpc, "UNKNOWN", object()):
        return "[unknown]"
    name = getattr(value, "_name", None)
    return f"<{type(value).__name__} {name}>" if name else str(value)


def mask_inputs(typ: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """A resource's inputs as the preview shows them: :func:`mask`, and every value of a Kubernetes Secret."""
    out = mask(inputs)
    if typ == "kubernetes:core/v1:Secret":
        for key in ("data", "stringData"):
            if isinstance(out.get(key), dict):
                out[key] = {k: MASK for k in out[key]}
    return out


# ------------------------------------------------------------ running the program


def stack_config(site) -> tuple[dict[str, str], list[str]]:
    """The stack's config as the Pulumi engine hands it to a program (values JSON-encoded)."""
    import yaml

    raw = yaml.safe_load(Path(site.stack_file).read_text()) or {}
    config: dict[str, str] = {}
    for key, value in (raw.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            continue  # encrypted; the preview never decrypts
        config[str(key)] = value if isinstance(value, str) else json.dumps(value)
    secret_keys = []
    if not site.is_aws:
        config["gpufleet:kubeconfig"] = PLACEHOLDER_KUBECONFIG
        secret_keys.append("gpufleet:kubeconfig")
    return config, secret_keys


def collect(fleet_path: str, site_name: str) -> list[dict[str, Any]]:
    """Run the program for one stack in this process (once per process) and return its resources."""
    import pulumi
    from pulumi.runtime.mocks import _sync_await
    from pulumi.runtime.stack import run_pulumi_func

    from cloud.program import build_site
    from gpufleet.model import load_fleet

    fleet = load_fleet(fleet_path)
    try:
        site = fleet.site(site_name)
    except KeyError:
        names = ", ".join(s.name for s in fleet.sites)
        raise LookupError(f"no site '{site_name}' in {fleet_path} (sites: {names})") from None
    mocks = make_mocks(site.region or "us-east-1")
    pulumi.runtime.set_mocks(mocks, project="gpufleet", stack=site_name, preview=False)
    config, secret_keys = stack_config(site)
    pulumi.runtime.set_all_config(config, secret_keys)

    def program() -> None:
        result = build_site(fleet, site_name, export=True)
        outputs = list(result.outputs.values())
        _sync_await(pulumi.Output.all(*outputs).future()) if outputs else None

    _sync_await(run_pulumi_func(program))
    rows = [{"type": r["type"], "name": r["name"], "inputs": mask_inputs(r["type"], r["inputs"])} for r in mocks.resources]
    return sorted(rows, key=lambda r: (r["type"], r["name"]))


def preview_site(fleet_path: str, site: str) -> list[dict[str, Any]]:
    """The resources ``site``'s stack declares: ``[{"type", "name", "inputs"}]``, sorted, secrets masked.

    Runs in a fresh interpreter; a problem comes back as a ``RuntimeError``
    with a one-line message.
    """
    return Previews().run(fleet_path, site)


class Previews:
    """Preview processes started together, which :meth:`stop` ends together (from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[str]] = set()
        self._stopped = False

    def run(self, fleet_path: str, site: str) -> list[dict[str, Any]]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env.pop("PULUMI_CONFIG", None)
        # Let the interpreter cache compiled modules: importing pulumi_aws from source takes seconds.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env[PARENT_ENV] = str(os.getpid())
        # Same working folder as the caller, so file names in messages read as the user gave them.
        cmd = [sys.executable, "-m", "cloud.preview", "--fleet", str(fleet_path), "--site", site]
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{site}: offline Pulumi preview not started: stopped")
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            self._running.add(proc)
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"{site}: the offline Pulumi preview did not finish within {TIMEOUT_S} s") from None
        finally:
            with self._lock:
                self._running.discard(proc)
        if self._stopped:
            raise RuntimeError(f"{site}: offline Pulumi preview stopped")
        if proc.returncode != 0:
            raise RuntimeError(f"{site}: offline Pulumi preview failed: {_error_line(stderr)}")
        try:
            return json.loads(stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"{site}: offline Pulumi preview printed no resource list") from None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every running preview (its whole process group): SIGTERM, then SIGKILL after ``grace_s``."""
        with self._lock:
            self._stopped = True
            procs = list(self._running)
        for proc in procs:
            _kill_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait()


def _kill_group(proc: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the preview leads its own session: its pid is its group's id


def _exit_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the one that started it dies (prctl PR_SET_PDEATHSIG)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if str(os.getppid()) != parent:
        os._exit(1)  # the parent died before the request took effect


def _error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(ERROR_MARKER):
            return ln[len(ERROR_MARKER) :]
    return lines[-1] if lines else "no error message"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.preview", description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", required=True, help="the fleet-wide file, e.g. stacks/fleet.yaml")
    parser.add_argument("--site", required=True, help="the stack (site) to preview")
    args = parser.parse_args(argv)
    _exit_with_parent()
    from cloud.program import ProgramError
    from gpufleet.errors import FleetError

    try:
        resources = collect(args.fleet, args.site)
    except FleetError as exc:
        print(ERROR_MARKER + "; ".join(str(p) for p in exc.problems), file=sys.stderr)
        return 2
    except (ProgramError, LookupError) as exc:
        print(ERROR_MARKER + str(exc).replace("\n", " "), file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - reported as one line, never a traceback
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(ERROR_MARKER + f"{type(exc).__name__}: {msg}", file=sys.stderr)
        return 1
    json.dump(resources, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
