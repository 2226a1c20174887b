"""The planner: what each engine will do for each site, as plain data.

``build_plan(fleet)`` returns a JSON-serialisable dict whose shape is stable
for tools (keys sorted on output, lists in a deterministic order). The
formatters in :mod:`gpufleet.report` turn it into a terminal table or a
pull-request comment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpufleet import __version__
from gpufleet.catalog import ACCELERATORS
from gpufleet.model.dispatch import dispatch_plan
from gpufleet.model import Fleet, Site, model_weights_gib, replica_memory_gib, replica_memory_need_gib

PLAN_FORMAT = 1


def _site_plan(fleet: Fleet, site: Site) -> dict[str, Any]:
    whole = site.gpu_capacity()
    mig = site.mig_capacity()
    entry: dict[str, Any] = {
        "name": site.name,
        "kind": site.kind,
        "role": "hub" if site.name == fleet.hub else "worker",
        "kubernetes_version": site.kubernetes_version,
        "fabric": site.fabric,
        "whole_gpus": dict(sorted(whole.items())),
        "mig_slices": [{"accelerator": a, "profile": p, "count": n} for (a, p), n in sorted(mig.items())],
        "models": [m.name for m in fleet.models if site.name in m.sites],
        "queues": [q.name for q in fleet.queues if site.name in q.queue.sites],
    }
    if site.aws:
        net, cl = site.aws.network, site.aws.cluster
        entry["region"] = site.region
        entry["node_pools"] = [
            {
                "name": p.name,
                "instance_types": list(p.instance_types),
                "capacity_type": p.capacity_type,
                "min_size": p.min_size,
                "max_size": p.max_size,
                "accelerator": p.accelerator,
                "gpus_per_node": p.gpus_per_node,
                "efa_interfaces": p.efa_interfaces,
            }
            for p in site.aws.node_pools
        ]
        gpu_pools = [p for p in site.aws.node_pools if p.accelerator]
        entry["stack"] = {
            "engine": "pulumi",
            "declares": [
                f"aws.Provider for {site.region}",
                f"VPC {net.vpc_cidr}: private and public subnets in {len(net.availability_zones)} AZs, NAT {net.nat_gateways}",
                f"EKS {cl.kubernetes_version}: endpoint {cl.endpoint_access}, API access entries, KMS-encrypted secrets, logs {', '.join(cl.log_types)}",
                f"{len(site.aws.node_pools)} managed node groups ({len(gpu_pools)} GPU, tainted nvidia.com/gpu=true:NoSchedule), IMDSv2, encrypted volumes",
                *[f"cluster placement group and {p.efa_interfaces} EFA interfaces per node for {p.name}" for p in site.aws.node_pools if p.efa],
                "fleet add-ons through this cluster's Kubernetes provider",
            ],
        }
    else:
        entry["location"] = site.spec.location
        classes: dict[str, dict[str, Any]] = {}
        for s in site.servers:
            c = classes.setdefault(
                s.spec.server_class,
                {"class": s.spec.server_class, "servers": 0, "accelerator": s.spec.accelerator, "gpus_per_server": s.spec.gpu_count, "pool": s.spec.pool, "nvswitch": s.spec.nvswitch},
            )
            c["servers"] += 1
        entry["server_classes"] = sorted(classes.values(), key=lambda c: c["class"])
        entry["racks"] = sorted({s.spec.rack for s in site.servers})
        entry["stack"] = {
            "engine": "pulumi + ansible",
            "declares": [
                f"Ansible: {len(site.servers)} servers from {site.spec.inventory} ("
                + ("driver, fabric manager, NCCL, MIG, DCGM, kubeadm join, acceptance gate" if any(s.spec.gpu_count for s in site.servers) else "OS baseline, containerd, kubeadm control plane")
                + ")",
                "Pulumi: no AWS resources; fleet add-ons through the cluster's kubeconfig (a stack secret)",
            ],
        }
    return entry


def _queues(fleet: Fleet) -> list[dict[str, Any]]:
    """Per queue: the MultiKueue dispatch order, the GPUs behind each step and
    the share of the queue's quota Kueue is given there (gpufleet.model.dispatch,
    which the Kueue add-on renders)."""
    out = []
    for q in dispatch_plan(fleet):
        out.append(
            {
                "name": q["name"],
                "team": q["team"],
                "namespace": q["namespace"],
                "priority": q["priority"],
                "data_class": q["data_class"],
                "quota": dict(sorted(q["quota"].items())),
                "borrowing_limit": dict(sorted(q["borrowing_limit"].items())),
                "reordered": q["reordered"],
                "dispatcher": q["dispatcher"],
                "dispatch_rule": q["rule"],
                "unplaced": q["unplaced"],
                "dispatch": [
                    {"order": st["step"], "site": st["site"], "kind": st["kind"], "gpus": dict(sorted(st["gpus"].items())), "quota": dict(sorted(st["quota"].items()))}
                    for st in q["steps"]
                ],
            }
        )
    return out


def build_plan(fleet: Fleet) -> dict[str, Any]:
    total: dict[str, int] = {}
    for site in fleet.sites:
        for a, n in site.gpu_capacity().items():
            total[a] = total.get(a, 0) + n
    queues = _queues(fleet)
    models = []
    for m in fleet.models:
        p = m.placement
        models.append(
            {
                "name": m.name,
                "source": m.source,
                "parameters_b": m.parameters_b,
                "quantization": m.quantization,
                "context_length": m.context_length,
                "placement": {"accelerator": p.accelerator, "gpus": p.gpus, "mig_profile": p.mig_profile},
                "tensor_parallel_size": p.gpus,
                "sites": list(m.sites),
                "replicas_per_site": m.replicas,  # the default; replicas_at has each site's count
                "replicas_at": {s: m.replicas_for(s) for s in m.sites},
                "data_class": m.data_class,
                "memory_gib": {
                    "weights": round(model_weights_gib(m), 1),
                    "needed": round(replica_memory_need_gib(m), 1),
                    "offered": round(replica_memory_gib(m), 1),
                },
            }
        )
    return {
        "format": PLAN_FORMAT,
        "gpufleet_version": __version__,
        "fleet": fleet.name,
        "hub": fleet.hub,
        "accelerators": {a: ACCELERATORS[a].product for a in sorted({*total, *(m.placement.accelerator for m in fleet.models)})},
        "sites": [_site_plan(fleet, s) for s in fleet.sites],
        "queues": queues,
        "models": models,
        "residency": [{"data_class": r.data_class, "sites": list(r.sites), "description": r.description} for r in fleet.residency],
    }


# ------------------------------------------------------------------- economics


def plan_cost(fleet: Fleet, demand_path: str | Path | None = None) -> dict[str, Any] | None:
    """Monthly cost per site and owned-GPU utilisation of the fleet as described
    (gpufleet.economics.costing), against demand.yaml beside fleet.yaml when there."""
    from gpufleet.economics.costing import as_described
    from gpufleet.economics.demand import load_demand
    from gpufleet.economics.prices import default_prices

    path = Path(demand_path) if demand_path else Path(fleet.path).parent / "demand.yaml"
    demand = load_demand(path, fleet) if path.is_file() else None
    cost = as_described(fleet, default_prices(), demand)
    cost["demand"] = str(path) if demand else None
    return cost


def _fleet_facts(fleet: Fleet) -> dict[str, dict[str, Any]]:
    facts: dict[str, dict[str, Any]] = {"sites": {}, "pools": {}, "servers": {}, "queues": {}, "models": {}, "mig_layouts": {}}
    for s in fleet.sites:
        facts["sites"][s.name] = f"{s.kind} {s.region or s.spec.location}"
        for p in s.node_pools:
            facts["pools"][f"{s.name}/{p.name}"] = f"{'/'.join(p.instance_types)} {p.capacity_type} {p.min_size}-{p.max_size}"
        for srv in s.servers:
            facts["servers"][f"{s.name}/{srv.name}"] = f"{srv.spec.server_class}" + (f", {srv.spec.gpu_count} x {srv.spec.accelerator}" if srv.spec.gpu_count else "")
            if srv.spec.mig_layout:
                facts["mig_layouts"][f"{s.name}/{srv.name}"] = srv.mig_config
    for q in fleet.queues:
        facts["queues"][q.name] = f"sites {', '.join(q.queue.sites)}; quota " + ", ".join(f"{n} x {a}" for a, n in sorted(q.queue.quota.items()))
    for m in fleet.models:
        p = m.placement
        place = f"MIG {p.mig_profile} of {p.accelerator}" if p.mig_profile else f"{p.gpus} x {p.accelerator}"
        facts["models"][m.name] = f"{place}, {m.quantization}, {_replicas_text(m)}"
    return facts


def _replicas_text(m) -> str:  # noqa: ANN001 - ServedModel
    """``2 replicas at aws-euc1, aws-use1; 3 at dc-fra``: the sites grouped by their count, the default first."""
    by_count: dict[int, list[str]] = {}
    for s in m.sites:
        by_count.setdefault(m.replicas_for(s), []).append(s)
    parts = [f"{n} at {', '.join(sites)}" for n, sites in sorted(by_count.items(), key=lambda kv: kv[0] != m.replicas)]
    return parts[0].replace(" at ", " replicas at ", 1) + "".join(f"; {p}" for p in parts[1:])


def diff_fleets(base: Fleet, head: Fleet) -> dict[str, list[dict[str, Any]]]:
    """What changed from ``base`` to ``head``: per kind, the added, removed and changed entries."""
    a, b = _fleet_facts(base), _fleet_facts(head)
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in a:
        rows = []
        for key in sorted(set(a[kind]) | set(b[kind])):
            old, new = a[kind].get(key), b[kind].get(key)
            if old == new:
                continue
            rows.append({"name": key, "change": "added" if old is None else "removed" if new is None else "changed", "before": old, "after": new})
        out[kind] = rows
    return out


def load_base(fleet: Fleet, ref: str) -> tuple[Fleet, str]:
    """The fleet as it was at git ref ``ref`` (the files read with ``git archive`` into a temporary folder)."""
    import subprocess
    import tarfile
    import tempfile

    from gpufleet.errors import FleetError, Problem
    from gpufleet.model import load_fleet

    root = Path(fleet.root).resolve()
    top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode != 0:
        raise FleetError([Problem(str(fleet.path), "", f"--base {ref}: not inside a git repository ({top.stderr.strip()})")])
    repo = Path(top.stdout.strip())
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True, text=True)
    if sha.returncode != 0:
        raise FleetError([Problem(str(fleet.path), "", f"--base {ref}: no such commit")])
    commit = sha.stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="gpufleet-base-"))
    rel_root = root.relative_to(repo)
    parts = [str(rel_root / Path(fleet.path).resolve().parent.relative_to(root))] + sorted({str(rel_root / str(s.spec.inventory)) for s in fleet.sites if s.spec.inventory})
    with tempfile.TemporaryFile() as fh:
        proc = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit, "--", *[p.removeprefix("./") for p in parts]], stdout=fh, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            # an inventory that did not exist at the base: take what there is
            proc = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit, "--", parts[0].removeprefix("./")], stdout=fh, stderr=subprocess.PIPE)
            if proc.returncode != 0:
                raise FleetError([Problem(str(fleet.path), "", f"--base {ref}: {proc.stderr.decode(errors='replace').strip()}")])
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            tar.extractall(tmp, filter="data")
    base_fleet = tmp / rel_root / Path(fleet.path).resolve().relative_to(root)
    try:
        return load_fleet(base_fleet), commit
    except FleetError as exc:
        raise FleetError([Problem(f"{ref}:{p.file.replace(str(tmp) + '/', '')}", p.path, p.message) for p in exc.problems]) from None


def changes_since(fleet: Fleet, ref: str) -> dict[str, Any]:
    import shutil

    base, commit = load_base(fleet, ref)
    try:
        diff = diff_fleets(base, fleet)
        head_cost = plan_cost(fleet)
        from gpufleet.errors import FleetError

        try:  # the base priced against today's demand, so the difference is the fleet's
            base_cost = plan_cost(base, Path(fleet.path).parent / "demand.yaml")
        except FleetError:
            base_cost = plan_cost(base)
    finally:
        shutil.rmtree(Path(base.root), ignore_errors=True)
    return {
        "ref": ref,
        "commit": commit,
        "diff": diff,
        "cost_usd_per_month": {"base": base_cost["total_usd_per_month"], "head": head_cost["total_usd_per_month"], "difference": round(head_cost["total_usd_per_month"] - base_cost["total_usd_per_month"], 2)},
        "owned_gpu_utilisation": {"base": base_cost["owned_gpu_utilisation"], "head": head_cost["owned_gpu_utilisation"]},
        "sites": _site_cost_diff(base_cost, head_cost),
    }


def _site_cost_diff(base: dict[str, Any], head: dict[str, Any]) -> list[dict[str, Any]]:
    b = {s["site"]: s["usd_per_month"] for s in base["sites"]}
    h = {s["site"]: s["usd_per_month"] for s in head["sites"]}
    return [{"site": s, "base": b.get(s, 0.0), "head": h.get(s, 0.0), "difference": round(h.get(s, 0.0) - b.get(s, 0.0), 2)} for s in sorted(set(b) | set(h))]
