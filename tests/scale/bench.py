"""Benchmark: `gpufleet validate` on generated large fleets, beside `ansible-inventory --list`.

    python tests/scale/bench.py [--sizes 0.5,1] [--repeat 3] [--ansible per-dc|combined|both|none] [--results FILE]

For each size (1 = 20 AWS regions, 50 data centres, 10,000 GPU servers,
80,000 GPUs; see tests/scale/fleetgen.py) it generates the fleet, then runs each
command as a child process and reads the child's own resource usage
(``os.wait4``): wall time, CPU time (user + system) and peak resident memory
(``ru_maxrss``).

* gpufleet: ``gpufleet validate --fleet <dir>/stacks/fleet.yaml``, the median
  of ``--repeat`` runs (it loads and cross-checks the whole fleet: stacks,
  every inventory, every host).
* ansible-inventory, ``per-dc`` (default): one ``ansible-inventory -i
  inventory/<dc> --list`` per data-centre inventory, as each is an inventory of
  its own; times are summed over all data centres, memory is the largest.
  ``combined``: one process given every inventory (``-i`` per data centre),
  startup paid once (its merged host variables are not meaningful, since group
  names repeat across data centres, but it reads the same files).

The machine is shared, so wall time varies with load; CPU time is the steadier
figure. Goals (issue 2): at full size under 5 s and 1 GiB, twice the fleet at
most 2.2 times the time, and faster than ansible-inventory.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.scale.fleetgen import generate  # noqa: E402

BIN = Path(sys.executable).parent


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mib: float
    rc: int


def run(cmd: list[str], cwd: Path | None = None) -> Run:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False"}
    with tempfile.TemporaryFile() as errfile:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errfile, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        errfile.seek(0)
        err = errfile.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{err[-2000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode)


def median_run(cmd: list[str], repeat: int) -> Run:
    runs = [run(cmd) for _ in range(repeat)]
    return Run(statistics.median(r.wall for r in runs), statistics.median(r.cpu for r in runs), max(r.rss_mib for r in runs), 0)


def ansible_per_dc(inventories: list[Path]) -> Run:
    runs = [run([str(BIN / "ansible-inventory"), "-i", str(d), "--list"], cwd=d) for d in inventories]
    return Run(sum(r.wall for r in runs), sum(r.cpu for r in runs), max(r.rss_mib for r in runs), 0)


def ansible_combined(inventories: list[Path]) -> Run:
    cmd = [str(BIN / "ansible-inventory")]
    for d in inventories:
        cmd += ["-i", str(d)]
    return run([*cmd, "--list"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.5,1", help="comma-separated scales (1 = 10,000 GPU servers)")
    ap.add_argument("--repeat", type=int, default=3, help="gpufleet runs per size (median)")
    ap.add_argument("--ansible", choices=["per-dc", "combined", "both", "none"], default="per-dc")
    ap.add_argument("--out", type=Path, help="where to generate the fleets (default: a temporary folder)")
    ap.add_argument("--results", type=Path, help="also write the figures as a markdown table to this file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",")]
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="gpufleet-bench-")
        args.out = Path(tmp.name)

    gpufleet = str(BIN / "gpufleet")
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; python {platform.python_version()}")
    baseline = median_run([gpufleet, "validate", "--fleet", str(REPO / "stacks" / "fleet.yaml")], args.repeat)
    print(f"baseline: gpufleet validate on the bundled example (13 servers): {baseline.wall:.2f} s wall, {baseline.cpu:.2f} s CPU, {baseline.rss_mib:.0f} MiB")

    rows = []
    for size in sizes:
        folder = args.out / f"scale-{size:g}"
        summary = generate(folder, size)
        inventories = sorted(p for p in (folder / "inventory").iterdir() if p.is_dir())
        print(f"\nsize {size:g}: {summary.line()} -> {folder}")
        ours = median_run([gpufleet, "validate", "--fleet", str(folder / "stacks" / "fleet.yaml")], args.repeat)
        print(f"  gpufleet validate:               {ours.wall:7.2f} s wall {ours.cpu:7.2f} s CPU {ours.rss_mib:7.0f} MiB peak")
        row = {"size": size, "summary": summary, "ours": ours, "per-dc": None, "combined": None, "inventories": len(inventories)}
        if args.ansible in ("per-dc", "both"):
            row["per-dc"] = r = ansible_per_dc(inventories)
            print(f"  ansible-inventory, {len(inventories)} runs:     {r.wall:7.2f} s wall {r.cpu:7.2f} s CPU {r.rss_mib:7.0f} MiB peak (summed over inventories)")
        if args.ansible in ("combined", "both"):
            row["combined"] = r = ansible_combined(inventories)
            print(f"  ansible-inventory, one process:  {r.wall:7.2f} s wall {r.cpu:7.2f} s CPU {r.rss_mib:7.0f} MiB peak (all {len(inventories)} inventories)")
        rows.append(row)

    goals = []
    full = max(rows, key=lambda r: r["size"])
    goals.append((f"size {full['size']:g}: under 5 s wall", full["ours"].wall < 5.0))
    goals.append((f"size {full['size']:g}: under 1 GiB", full["ours"].rss_mib < 1024))
    if len(rows) >= 2:
        small = min(rows, key=lambda r: r["size"])
        factor = full["size"] / small["size"]
        ratio = full["ours"].wall / small["ours"].wall
        cpu_ratio = full["ours"].cpu / small["ours"].cpu
        goals.append((f"{factor:g}x the fleet: {ratio:.2f}x the wall time, {cpu_ratio:.2f}x the CPU time (goal <= {1.1 * factor:.1f}x)", ratio <= 1.1 * factor))
    for kind in ("per-dc", "combined"):
        if full[kind]:
            goals.append((f"faster than ansible-inventory ({kind}): {full[kind].wall / full['ours'].wall:.0f}x", full["ours"].wall < full[kind].wall))
    print()
    for text, ok in goals:
        print(f"  [{'ok' if ok else 'MISSED'}] {text}")

    if args.results:
        args.results.write_text(_markdown(rows, baseline, goals))
        print(f"\nwrote {args.results}")
    if tmp:
        tmp.cleanup()
    return 1 if args.strict and not all(ok for _, ok in goals) else 0


def _markdown(rows: list[dict], baseline: Run, goals: list[tuple[str, bool]]) -> str:
    out = [
        "| fleet | command | wall | CPU (user+sys) | peak memory |",
        "|---|---|---:|---:|---:|",
        f"| bundled example (13 servers) | `gpufleet validate` | {baseline.wall:.2f} s | {baseline.cpu:.2f} s | {baseline.rss_mib:.0f} MiB |",
    ]
    for row in rows:
        s = row["summary"]
        fleet = f"{row['size']:g}: {s.regions} regions, {s.datacenters} DCs, {s.gpu_servers:,} GPU servers, {s.gpus:,} GPUs"
        r = row["ours"]
        out.append(f"| {fleet} | `gpufleet validate` | {r.wall:.2f} s | {r.cpu:.2f} s | {r.rss_mib:.0f} MiB |")
        if row["per-dc"]:
            r = row["per-dc"]
            out.append(f"| {fleet} | `ansible-inventory --list`, one run per inventory ({row['inventories']}), summed | {r.wall:.1f} s | {r.cpu:.1f} s | {r.rss_mib:.0f} MiB (largest) |")
        if row["combined"]:
            r = row["combined"]
            out.append(f"| {fleet} | `ansible-inventory --list`, one process, all {row['inventories']} inventories | {r.wall:.1f} s | {r.cpu:.1f} s | {r.rss_mib:.0f} MiB |")
    out.append("")
    out += [f"- {'met' if ok else 'MISSED'}: {text}" for text, ok in goals]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
