#!/usr/bin/env python3
"""Runs the whole lab: image, VMs, site.yml twice, testinfra, teardown.

    python tests/lab/run_lab.py            # what `make lab` runs
    python tests/lab/run_lab.py --full     # plus the NVIDIA driver install path
    python tests/lab/run_lab.py --keep     # leave the VMs running afterwards

Exit 0 when every step passed: both playbook runs succeeded on every host,
the second run changed nothing, and the testinfra suites passed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lablib  # noqa: E402
from lablib import LabError, Step  # noqa: E402


def _terminate(signum, frame):  # turn SIGTERM/SIGHUP into a normal exit so teardown runs
    raise SystemExit(128 + signum)


def print_report(steps: list[Step], runs: list[lablib.PlaybookRun]) -> None:
    out = sys.stdout
    out.write("\n== lab summary ==\n")
    width = max(len(s.name) for s in steps)
    for s in steps:
        secs = f"{s.seconds:7.1f}s" if s.status not in ("skipped", "pending") else "        "
        out.write(f"  {s.name:<{width}}  {s.status:<8} {secs}  {s.detail}\n")
    if runs:
        first = runs[0]
        roles = first.roles_run()
        out.write("\n== roles (task results in the first run) ==\n")
        for role in sorted(roles):
            c = roles[role]
            out.write(
                f"  {role:<26} ok={c['ok']:<4} changed_tasks={sum(1 for r in first.records if r.get('role') == role and r.get('changed'))}"
                f" skipped={c['skipped']:<4} failed={c['failed']}\n"
            )
        skipped = first.skip_messages()
        out.write("\n== skipped steps (reported by the roles) ==\n")
        if not skipped:
            out.write("  none\n")
        for host, role, msg in skipped:
            out.write(f"  {host:<12} {role:<24} {msg}\n")
    for run in runs:
        fails = run.failures()
        if fails:
            out.write(f"\n== failures in {run.log_file.stem} ==\n")
            for r in fails:
                msg = str(r.get("msg") or r.get("stderr") or "").strip().replace("\n", " ")
                out.write(f"  {r['host']}: [{r.get('role') or '-'}] {r['task']}: {msg[:400]}\n")
    if len(runs) > 1:
        changed = runs[1].changed_tasks()
        if changed:
            out.write(f"\n== tasks that changed on the rerun ({runs[1].log_file.stem}) ==\n")
            for r in changed:
                out.write(f"  {r['host']}: [{r.get('role') or '-'}] {r['task']}\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="also run the NVIDIA driver install path")
    ap.add_argument("--keep", action="store_true", help="leave the VMs running at the end")
    ap.add_argument("--playbook", default="site.yml", help="playbook in baremetal/ (default site.yml)")
    ap.add_argument("--vms", nargs="+", default=list(lablib.DEFAULT_VMS), help="VM names")
    ap.add_argument("--no-infra", action="store_true", help="skip the testinfra suites")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)

    mode = "lab-full" if args.full else "lab"
    extra: list[str] = []
    steps = [Step("image"), Step("boot"), Step("preflight"), Step(f"{args.playbook} run 1"),
             Step(f"{args.playbook} run 2"), Step("testinfra"), Step("teardown")]
    runs: list[lablib.PlaybookRun] = []
    timings: dict = {"mode": mode, "vms": args.vms, "playbook": args.playbook, "started": time.time()}
    ok = True
    t0 = time.monotonic()
    try:
        _, steps[0] = lablib.build_image()
        inventory, steps[1] = lablib.up(tuple(args.vms))
        if args.full:
            # In the inventory (not -e), so the testinfra suites see it too.
            with open(inventory / "group_vars" / "lab_gpu.yml", "a", encoding="utf-8") as fh:
                fh.write("\n" + (lablib.HERE / "full-vars.yml").read_text())
            lablib.derive(inventory)  # the branch full-vars.yml sets
        _, steps[2] = lablib.preflight(inventory)
        for i in (1, 2):
            step = steps[2 + i]
            run = lablib.run_playbook(args.playbook, inventory, f"{mode}-{Path(args.playbook).stem}-{i}", extra)
            runs.append(run)
            step.seconds = run.seconds
            totals = {h: s.get("changed", 0) for h, s in run.stats.items()}
            step.detail = "changed " + ", ".join(f"{h}={n}" for h, n in sorted(totals.items()))
            timings[f"run{i}"] = {"seconds": run.seconds, "rc": run.rc, "stats": run.stats}
            if run.rc != 0 or not run.stats:
                step.status = "failed"
                step.detail += f" (rc {run.rc}; failed or unreachable: {', '.join(run.failed_hosts) or '-'})"
                ok = False
                break
            step.status = "ran"
            if i == 2 and any(totals.values()):
                step.status = "failed"
                step.detail += " (the rerun must change nothing)"
                ok = False
        if ok and not args.no_infra:
            infra = lablib.run_testinfra(inventory, f"{mode}-testinfra")
            steps[5].seconds = infra.seconds
            steps[5].status = "ran" if infra.rc == 0 else "failed"
            steps[5].detail = ", ".join(f"{n} {k}" for k, n in infra.counts.items())
            timings["testinfra"] = {"seconds": infra.seconds, "rc": infra.rc, "counts": infra.counts}
            ok = ok and infra.rc == 0
        elif args.no_infra:
            steps[5].status, steps[5].detail = "skipped", "--no-infra"
        else:
            steps[5].status, steps[5].detail = "skipped", "a playbook run failed"
    except LabError as exc:
        ok = False
        if exc.step is not None:
            for i, s in enumerate(steps):
                if s.name == exc.step.name:
                    steps[i] = exc.step
        print(f"lab: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, SystemExit):
        ok = False
        print("lab: interrupted", file=sys.stderr)
    finally:
        for s in steps[:-1]:
            if s.status == "pending":
                s.status, s.detail = "skipped", "an earlier step failed"
        td = time.monotonic()
        if args.keep:
            steps[6].status, steps[6].detail = "skipped", "--keep: stop the VMs with tests/lab/down.sh"
        else:
            lablib.down()
            steps[6].status, steps[6].seconds = "ran", round(time.monotonic() - td, 1)
        timings["total_seconds"] = round(time.monotonic() - t0, 1)
        timings["steps"] = {s.name: {"status": s.status, "seconds": s.seconds, "detail": s.detail} for s in steps}
        if runs:
            timings["skipped_by_roles"] = [
                {"host": h, "role": r, "message": m} for h, r, m in runs[0].skip_messages()
            ]
        print_report(steps, runs)
        path = lablib.write_timings(timings, f"timings-{mode}.json")
        print(f"\nlab: {'PASSED' if ok else 'FAILED'} in {timings['total_seconds']}s; timings in {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
