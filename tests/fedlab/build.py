"""Build the federation lab's Go components from the Go module proxy.

The modules and versions are pinned in k8s/versions.py (FEDLAB_GO_MODULES).
Every component gets a small generated module under ``.fedlab/build/`` that
requires the pinned module and lists its commands as ``tool`` lines; modules
with replace directives (Kubernetes, cluster-autoscaler) cannot be built with
``go install pkg@version`` (golang/go#44840), so the generated module carries
the replace directives they need. Binaries land in
``.fedlab/bin/<component>-<version>/`` and are reused while the recipe is
unchanged. Nothing is downloaded but Go modules through the module proxy.

    python tests/fedlab/build.py [--only kueue,etcd] [--root DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from k8s.versions import FEDLAB_GO_MODULES  # noqa: E402

DEFAULT_CACHE = ROOT / ".fedlab"
MIN_GO_FOR_TOOL = (1, 24)  # the `tool` directive


class BuildError(RuntimeError):
    pass


def _go_env(cache: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "GOTOOLCHAIN": "local",  # never fetch a toolchain: build with the machine's Go
        "GOWORK": "off",
        "CGO_ENABLED": "0",  # static, as upstream builds the control plane
        "GOFLAGS": " ".join(f for f in (env.get("GOFLAGS", ""), "-mod=mod") if f).strip(),
    })
    if cache is not None:  # a separate module and build cache (cold-build measurement)
        env["GOMODCACHE"] = str(cache / "gomodcache")
        env["GOCACHE"] = str(cache / "gocache")
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log) -> str:
    log.write(f"$ {' '.join(cmd)}  (in {cwd})\n")
    log.flush()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(p.stdout)
    log.flush()
    if p.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stdout[-4000:]}")
    return p.stdout


def _version_tuple(go: str) -> tuple[int, ...]:
    return tuple(int(x) for x in go.split(".")[:2])


def _recipe_key(name: str, spec: dict, go_version: str) -> str:
    blob = json.dumps({"name": name, "spec": spec, "go": go_version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def bin_dir(name: str, cache: Path = DEFAULT_CACHE) -> Path:
    spec = FEDLAB_GO_MODULES[name]
    return cache / "bin" / f"{name}-{spec['version']}"


def binaries(cache: Path = DEFAULT_CACHE) -> dict[str, Path]:
    """Binary name -> path, for every component (built or not)."""
    out = {}
    for name, spec in FEDLAB_GO_MODULES.items():
        for binary in spec["binaries"]:
            out[binary] = bin_dir(name, cache) / binary
    return out


def _go_version(env) -> str:
    return subprocess.run(["go", "env", "GOVERSION"], env=env, capture_output=True, text=True, check=True).stdout.strip()


def _module_info(module: str, version: str, workdir: Path, env, log) -> dict:
    out = _run(["go", "mod", "download", "-json", f"{module}@{version}"], workdir, env, log)
    info = json.loads(out[out.index("{"):])
    if info.get("Error"):
        raise BuildError(f"{module}@{version}: {info['Error']}")
    return info


def _wrapper_gomod(name: str, spec: dict, info: dict, workdir: Path, env, log) -> str:
    """The generated go.mod: require the pinned module, its replaces, its commands as tools."""
    dep = json.loads(_run(["go", "mod", "edit", "-json", info["GoMod"]], workdir, env, log))
    go = dep.get("Go") or "1.24"
    if _version_tuple(go) < MIN_GO_FOR_TOOL:
        go = "1.24"
    lines = [f"module gpufleet.fedlab/{name}", "", f"go {go}", ""]
    # GODEBUG defaults as upstream builds them (e.g. Kubernetes' `godebug default=go1.24`).
    for g in dep.get("Godebug") or []:
        lines.append(f"godebug {g['Key']}={g['Value']}")
    lines += ["", f"require {spec['module']} {spec['version']}"]
    kind = spec.get("wrapper", "plain")
    replaces: list[str] = []
    for r in dep.get("Replace") or []:
        old, new = r["Old"]["Path"], r["New"]
        local = not new.get("Version")
        if kind == "staging" and local and new["Path"].startswith("./staging/src/"):
            major_minor_patch = spec["version"].lstrip("v").split(".")
            staging = f"v0.{major_minor_patch[1]}.{major_minor_patch[2]}"
            replaces.append(f"replace {old} => {old} {staging}")
        elif kind == "own-replaces" and not local:
            replaces.append(f"replace {old} => {new['Path']} {new['Version']}")
        elif kind == "own-replaces" and local:
            version = (spec.get("local") or {}).get(old)
            if version is None:
                raise BuildError(f"k8s/versions.py: FEDLAB_GO_MODULES.{name}.local: no version for {old} (replaced by {new['Path']})")
            lines.append(f"require {old} {version}")
    lines += [""] + replaces + [""]
    lines += [f"tool {pkg}" for pkg in spec["binaries"].values()]
    return "\n".join(lines) + "\n"


def _ldflags(spec: dict, info: dict) -> str:
    version = spec["version"]
    parts = version.lstrip("v").split(".")
    fields = {
        "version": version,
        "major": parts[0],
        "minor": parts[1] if len(parts) > 1 else "0",
        "commit": (info.get("Origin") or {}).get("Hash", ""),
        "tree": "clean",
        "date": info.get("Time", ""),  # the commit's time: reproducible
    }
    return " ".join(["-s", "-w", "-buildid=", spec.get("ldflags", "").format(**fields)]).strip()


def prepare(name: str, cache: Path, go_cache: Path | None, log) -> dict:
    """Write the wrapper module and resolve its dependencies (network bound)."""
    spec = FEDLAB_GO_MODULES[name]
    env = _go_env(go_cache)
    work = cache / "build" / f"{name}-{spec['version']}"
    work.mkdir(parents=True, exist_ok=True)
    # A first go.mod and the pinned go.sum lines, so that a module the checksum
    # database does not know is verified against the pins, not refused.
    sums = "".join(line + "\n" for line in spec.get("sums", []))
    (work / "go.mod").write_text(f"module gpufleet.fedlab/{name}\n\ngo 1.24\n\nrequire {spec['module']} {spec['version']}\n")
    (work / "go.sum").write_text(sums)
    info = _module_info(spec["module"], spec["version"], work, env, log)
    (work / "go.mod").write_text(_wrapper_gomod(name, spec, info, work, env, log))
    (work / "go.sum").write_text(sums)
    # `go get` of the commands at the pinned version, with the build tags: it
    # resolves only what those builds import (`go mod tidy` would resolve every
    # build tag, e.g. all of cluster-autoscaler's cloud providers).
    cmd = ["go", "get"] + (["-tags", spec["tags"]] if spec.get("tags") else [])
    _run(cmd + [f"{pkg}@{spec['version']}" for pkg in spec["binaries"].values()], work, env, log)
    return {"work": work, "info": info}


def build(name: str, prepared: dict, cache: Path, go_cache: Path | None, log) -> Path:
    spec = FEDLAB_GO_MODULES[name]
    env = _go_env(go_cache)
    out = bin_dir(name, cache)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = ["go", "build", "-trimpath", "-o", str(tmp) + "/"]
    if spec.get("tags"):
        cmd += ["-tags", spec["tags"]]
    cmd += ["-ldflags", _ldflags(spec, prepared["info"])]
    cmd += list(spec["binaries"].values())
    _run(cmd, prepared["work"], env, log)
    # `go build` names a binary after the last element of its package path.
    for binary, pkg in spec["binaries"].items():
        built = tmp / pkg.rstrip("/").rsplit("/", 1)[-1]
        if built.name == "v3":  # go.etcd.io/etcd/server/v3: Go names it after "server"
            built = tmp / "server"
        if built != tmp / binary:
            built.rename(tmp / binary)
    (tmp / "BUILD.json").write_text(json.dumps({
        "module": spec["module"], "version": spec["version"], "commit": (prepared["info"].get("Origin") or {}).get("Hash"),
        "recipe": _recipe_key(name, spec, _go_version(env)),
    }, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def is_current(name: str, cache: Path, go_cache: Path | None = None) -> bool:
    spec = FEDLAB_GO_MODULES[name]
    out = bin_dir(name, cache)
    try:
        stamp = json.loads((out / "BUILD.json").read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("recipe") != _recipe_key(name, spec, _go_version(_go_env(go_cache))):
        return False
    return all((out / b).is_file() for b in spec["binaries"])


def ensure(names: list[str] | None = None, cache: Path = DEFAULT_CACHE, go_cache: Path | None = None,
           echo=print) -> dict[str, float]:
    """Build what is missing or stale; return seconds per component built."""
    names = names or list(FEDLAB_GO_MODULES)
    todo = [n for n in names if not is_current(n, cache, go_cache)]
    timings: dict[str, float] = {}
    if not todo:
        return timings
    (cache / "logs").mkdir(parents=True, exist_ok=True)
    logs = {n: open(cache / "logs" / f"build-{n}.log", "w") for n in todo}
    try:
        t0 = time.monotonic()
        # Resolve every module at once (network), then compile one at a time: the
        # Go compiler already uses every core, two builds at once only thrash.
        failed: dict[str, str] = {}
        prepared: dict[str, dict] = {}
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            futures = {n: pool.submit(prepare, n, cache, go_cache, logs[n]) for n in todo}
            for n, f in futures.items():
                try:
                    prepared[n] = f.result()
                except BuildError as e:
                    failed[n] = str(e)
        timings["(resolve)"] = time.monotonic() - t0
        echo(f"fedlab build: modules resolved in {timings['(resolve)']:.0f} s")
        for n in todo:
            if n in failed:
                continue
            t = time.monotonic()
            try:
                build(n, prepared[n], cache, go_cache, logs[n])
            except BuildError as e:
                failed[n] = str(e)
                continue
            timings[n] = time.monotonic() - t
            echo(f"fedlab build: {n} {FEDLAB_GO_MODULES[n]['version']} in {timings[n]:.0f} s")
    finally:
        for f in logs.values():
            f.close()
    if failed:
        raise BuildError("\n".join(f"{n} ({FEDLAB_GO_MODULES[n]['module']}@{FEDLAB_GO_MODULES[n]['version']}, log {cache / 'logs' / f'build-{n}.log'}): {msg}"
                                   for n, msg in failed.items()))
    return timings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated components (default: all)")
    ap.add_argument("--root", type=Path, default=DEFAULT_CACHE, help="cache folder (default .fedlab)")
    ap.add_argument("--go-cache", type=Path, help="separate GOMODCACHE/GOCACHE under this folder (cold build)")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else None
    for n in names or []:
        if n not in FEDLAB_GO_MODULES:
            print(f"--only: {n}: not a component of FEDLAB_GO_MODULES ({', '.join(FEDLAB_GO_MODULES)})", file=sys.stderr)
            return 2
    t0 = time.monotonic()
    try:
        timings = ensure(names, args.root.resolve(), args.go_cache.resolve() if args.go_cache else None)
    except BuildError as e:
        print(f"fedlab build: {e}", file=sys.stderr)
        return 1
    print(f"fedlab build: {len([k for k in timings if not k.startswith('(')])} built, total {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
