"""Benchmark (not a test): `gpufleet optimize`'s program on generated fleets, and one Mélange setting.

    nice -n 10 python tests/scale/bench_optimize.py [--sizes 0.25,0.5,1] [--threads 2] [--time-limit 120]
    nice -n 10 python tests/scale/bench_optimize.py --melange

Fleet: the generated fleet (tests/scale fleetgen, or gpufleet.scale) at each
size; 1 = 20 AWS regions, 50 data centres, 10,000 GPU servers, 80,000 GPUs.
Demand at size s: 200*s models (1 to 70B, two quantizations each) over 20*s
site groups (a region and the data centres beside it), and 100*s training
queues. That demand fills about 2 % of the owned GPUs, so its cheapest plan
spends nothing in the cloud; the second program `gpufleet optimize` solves,
everything on AWS on-demand, is a cloud cost problem of the same demand and is
timed too.

Each size runs in its own child process, so peak memory (ru_maxrss) is the
solve's own. Reported per size: wall and CPU seconds (user + system, all
threads) of loading the fleet, of building the program and of HiGHS, the load
average before and after (the machine is shared: wall above CPU is waiting for
a core), peak memory of the child up to the proposal (generating and loading the fleet included), the solver's status, the cost gap
against HiGHS's dual bound of the whole program (every replica shape; the ones
left out are dominated), that bound, and the gap of the owned GPU-hours (the
tie-break).

Mélange (Griggs et al. 2024, arXiv 2404.14527): Llama2-7B, the conversational
(Chatbot Arena, short-context) setting with a 120 ms TPOT SLO, GPUs L4, A10G,
A100-80GB, H100-80GB at the paper's on-demand prices; the cheapest mix against
the cheapest single GPU type, at 1 to 32 requests/s, solved with the same HiGHS
program builder. What differs from the paper is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _generate(out: Path, size: float):
    try:
        from tests.scale.fleetgen import generate  # where the generator is moving to
    except ImportError:
        from gpufleet.scale import generate
    return generate(out, size)


def synthetic_demand(fleet, size: float, seed: int = 11):  # noqa: ANN001
    from gpufleet.economics.demand import Demand, DemandSpec, ModelInfo

    rng = random.Random(seed)
    regions = [s.name for s in fleet.sites if s.is_aws]
    dcs = [s.name for s in fleet.sites if not s.is_aws and s.name != fleet.hub]
    n_groups = max(1, min(len(regions), round(20 * size)))
    groups = []
    for g in range(n_groups):
        near = dcs[g * len(dcs) // n_groups : (g + 1) * len(dcs) // n_groups][:2]
        groups.append([regions[g % len(regions)], *near])
    sizes = [1.0, 3.0, 8.0, 8.0, 13.0, 32.0, 70.0]
    serving, models, serving_sites = [], {}, []
    for i in range(max(1, round(200 * size))):
        pb = rng.choice(sizes)
        name = f"m{i:03d}-{int(pb)}b"
        models[name] = ModelInfo(name, pb, f"acme/{name}", 16384, None, None)
        sites = groups[i % len(groups)]
        peak = round(rng.uniform(0.2, 6.0) * (8 / pb) ** 0.5, 3)
        serving.append({"model": name, "sites": sites, "requests_per_s": {"peak": peak, "offpeak": round(peak * rng.uniform(0.1, 0.5), 3)},
                        "input_tokens": rng.choice([500, 1000, 2000]), "output_tokens": rng.choice([150, 300, 500]),
                        "slo": {"ttft_p95_s": 2.0, "tpot_p95_ms": rng.choice([50, 80])}, "quantizations": ["fp8", "awq"] if pb > 8 else ["none", "awq"],
                        "interruptible": rng.random() < 0.3, "parameters_b": pb, "source": f"acme/{name}", "context_length": 16384})
        serving_sites.append(list(sites))
    queues = [q for q in fleet.queues]
    training, training_sites = [], []
    for qi in range(max(1, round(100 * size))):
        q = queues[qi % len(queues)]
        acc = sorted(q.queue.quota)[0]
        training.append({"queue": f"{q.name}-{qi}", "gpu_hours_per_month": float(rng.choice([2000, 5000, 10000, 20000])), "accelerators": [acc],
                         "job_gpus": rng.choice([8, 16]), "interruptible": rng.random() < 0.5})
        training_sites.append(list(q.queue.sites))
    spec = DemandSpec.model_validate({"peak_hours_per_day": 12, "serving": serving, "training": training})
    return Demand(spec, "synthetic", models, serving_sites, training_sites, [None] * len(training))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(size: float, threads: int, time_limit: float, gap: float) -> dict:
    from gpufleet.economics.optimize import Options, cloud_sites, owned_classes, solve
    from gpufleet.economics.prices import default_prices
    from gpufleet.model import load_fleet

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gpufleet-bench-opt-") as tmp:
        summary = _generate(Path(tmp), size)
        w0, c0 = time.perf_counter(), _cpu()
        fleet = load_fleet(Path(tmp) / "stacks" / "fleet.yaml")
        demand = synthetic_demand(fleet, size)
        prices = default_prices()
        w1, c1 = time.perf_counter(), _cpu()
        p = solve(fleet, demand, prices, Options(owned_classes(fleet), cloud_sites(fleet)), time_limit=time_limit, gap=gap, threads=threads)
        w2, c2 = time.perf_counter(), _cpu()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # the second program `gpufleet optimize` solves: everything on AWS on-demand (a cloud cost problem)
        od = solve(fleet, demand, prices, Options([], cloud_sites(fleet), allow_owned=False, capacity_types=("on-demand",), residency=False), time_limit=time_limit, gap=gap, threads=threads)
        w3, c3 = time.perf_counter(), _cpu()
    s, o = p.solver, od.solver
    return {
        "size": size, "servers": summary.gpu_servers, "gpus": summary.gpus, "models": len(demand.spec.serving), "queues": len(demand.spec.training),
        "variables": s["variables"], "integer_variables": s["integer_variables"], "constraints": s["constraints"],
        "load_wall_s": round(w1 - w0, 2), "load_cpu_s": round(c1 - c0, 2),
        "build_wall_s": s.get("build_seconds"), "build_cpu_s": s.get("build_cpu_seconds"),
        "solve_wall_s": s["seconds"], "solve_cpu_s": s.get("cpu_seconds"),
        "optimize_wall_s": round(w2 - w1, 2), "optimize_cpu_s": round(c2 - c1, 2),
        "loadavg_before": [round(v, 1) for v in load_before], "loadavg_after": [round(v, 1) for v in os.getloadavg()],
        "peak_rss_mib": round(rss, 1),
        "status": s["status"], "gap": s["gap"], "bound_usd_per_month": s.get("bound_usd_per_month"), "owned_status": s.get("owned_status"), "owned_gap": s.get("owned_gap"),
        "stages": [(st["objective_name"], st["status"], st["seconds"], st["cpu_seconds"], st["nodes"]) for st in s.get("stages", [])],
        "total_usd_per_month": p.total_usd_per_month, "cloud_usd_per_month": p.cloud_usd_per_month, "owned_gpu_utilisation": p.owned_gpu_utilisation, "unmet": len(p.unmet),
        "on_demand": {"wall_s": round(w3 - w2, 2), "cpu_s": round(c3 - c2, 2), "variables": o["variables"], "integer_variables": o["integer_variables"],
                      "status": o["status"], "gap": o["gap"], "total_usd_per_month": od.total_usd_per_month, "bound_usd_per_month": o.get("bound_usd_per_month"),
                      "stages": [(st["objective_name"], st["status"], st["seconds"], st["cpu_seconds"], st["nodes"]) for st in o.get("stages", [])]},
    }


# ------------------------------------------------------------------- Mélange

MELANGE_GPUS = {  # the paper's GPU set and on-demand prices per GPU-hour (A10G, A100 as in its repository's example)
    "l4": 0.70, "a10g": 1.01, "a100-80gb": 3.67, "h100-80gb": 7.516,
}
# Request sizes (input, output tokens) and shares: a bucketed stand-in for the
# Chatbot Arena (lmsys-chat-1m) conversations, short prompts and answers.
ARENA_BUCKETS = [((64, 64), 0.20), ((64, 256), 0.20), ((256, 256), 0.20), ((512, 512), 0.15), ((1024, 256), 0.15), ((2048, 512), 0.10)]


def melange(rates=(1, 2, 4, 8, 16, 32), tpot_ms: float = 120.0) -> list[dict]:
    from gpufleet.economics.program import Program as Mip
    from gpufleet.economics.perf import Architecture, ReplicaShape, Workload, roofline

    arch = Architecture(32, 32, 128)  # Llama2-7B: 32 layers, 32 KV heads (no grouped-query attention)
    tput = {}  # (bucket, gpu) -> requests/s one GPU sustains at the SLO
    for b, ((i, o), _share) in enumerate(ARENA_BUCKETS):
        for g in MELANGE_GPUS:
            e = roofline(ReplicaShape(g, None, "none", 1), Workload(6.74, i, o, 10.0, tpot_ms, arch))
            tput[(b, g)] = e.tokens_per_s / o if e.feasible else 0.0

    def cheapest(rate: float, gpus: list[str]) -> tuple[float, dict]:
        m = Mip()
        n = {g: m.var(("n", g), MELANGE_GPUS[g], 0, 10_000) for g in gpus}
        x = {}
        for b, (_size, share) in enumerate(ARENA_BUCKETS):
            row = {}
            for g in gpus:
                if tput[(b, g)] > 0:
                    x[(b, g)] = row[m.var(("x", b, g), 0.0, 0, 1, integer=False)] = 1.0
            m.row(row, lo=1.0, hi=1.0)
        for g in gpus:
            # sum over buckets of rate * share * x[b,g] / tput[b,g] <= n[g]
            terms = {n[g]: -1.0}
            for (b, g2), _ in x.items():
                if g2 == g:
                    idx = m.names.index(("x", b, g))
                    terms[idx] = rate * ARENA_BUCKETS[b][1] / tput[(b, g)]
            m.row(terms, hi=0.0)
        sol, info = m.solve(time_limit=30, gap=0.0)
        return info["objective"] or math.inf, {g: int(round(sol[v])) for g, v in n.items() if sol is not None and round(sol[v])}

    rows = []
    for rate in rates:
        mix, alloc = cheapest(rate, list(MELANGE_GPUS))
        singles = {g: cheapest(rate, [g])[0] for g in MELANGE_GPUS}
        best_single = min(singles.values())
        worst_single = max(v for v in singles.values() if math.isfinite(v))
        rows.append({"rate": rate, "mix_usd_per_hour": round(mix, 2), "mix": alloc, "single": {g: round(v, 2) for g, v in singles.items()},
                     "saving_vs_best_single": round(1 - mix / best_single, 3), "saving_vs_worst_single": round(1 - mix / worst_single, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.25,0.5,1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--gap", type=float, default=0.01)
    ap.add_argument("--melange", action="store_true")
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one, args.threads, args.time_limit, args.gap)))
        return 0
    if args.melange:
        for r in melange():
            print(json.dumps(r))
        return 0
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; HiGHS threads {args.threads}")
    for size in [float(s) for s in args.sizes.split(",")]:
        proc = subprocess.run([sys.executable, __file__, "--one", str(size), "--threads", str(args.threads), "--time-limit", str(args.time_limit), "--gap", str(args.gap)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"size {size}: failed\n{proc.stderr[-3000:]}")
            return 1
        print(proc.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
