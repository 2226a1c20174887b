"""The cross-checks: what each input says, held against the others. One function per check.

:func:`cross_check` runs them all once every file has loaded cleanly. Each
returns problems against fleet.yaml, a stack or an inventory file: the place
the user must edit.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from gpufleet import eks, mig
from gpufleet.errors import Problem, did_you_mean
from gpufleet.model.cuda import driver_cuda
from gpufleet.model.sizing import GPU_MEMORY_UTILIZATION, RUNTIME_OVERHEAD_GIB, model_weights_gib, replica_memory_gib, replica_memory_need_gib
from gpufleet.model.types import Fleet, Site
from gpufleet.schema import Queue, ServedModel


@dataclass
class Context:
    """What every check needs: the fleet, where fleet.yaml is, and each site's capacity (computed once)."""

    fleet: Fleet
    fleet_file: str

    def __post_init__(self) -> None:
        self.known = {s.name for s in self.fleet.spec.sites}
        self.sites = {s.name: s for s in self.fleet.sites}
        self.classes = {r.data_class for r in self.fleet.spec.residency}
        # Each site's capacity walks all its servers: compute it once, not per reference.
        self.gpu_cap = {s.name: s.gpu_capacity() for s in self.fleet.sites}
        self.mig_cap = {s.name: s.mig_capacity() for s in self.fleet.sites}

    def problem(self, path: str, message: str) -> Problem:
        return Problem(self.fleet_file, path, message)

    def unknown_site(self, name: str, path: str) -> list[Problem]:
        return [] if name in self.known else [self.problem(path, f"unknown site '{name}'{did_you_mean(name, self.known)}")]

    def queue_paths(self) -> list[tuple[str, Queue]]:
        return [(f"teams[{ti}].queues[{qi}]", q) for ti, t in enumerate(self.fleet.spec.teams) for qi, q in enumerate(t.queues)]


def cross_check(fleet: Fleet, fleet_file: str) -> list[Problem]:
    """Every check between the inputs."""
    ctx = Context(fleet, fleet_file)
    problems: list[Problem] = []
    for check in CHECKS:
        problems.extend(check(ctx))
    return problems


def unique_names(ctx: Context) -> list[Problem]:
    """Sites, teams, namespaces, queues, models and data classes are each named once."""
    spec = ctx.fleet.spec
    qpaths = ctx.queue_paths()
    lists: list[tuple[list[str], str, Callable[[int], str]]] = [
        ([s.name for s in spec.sites], "site name", lambda i: f"sites[{i}].name"),
        ([t.name for t in spec.teams], "team name", lambda i: f"teams[{i}].name"),
        ([t.namespace for t in spec.teams], "namespace", lambda i: f"teams[{i}].namespace"),
        ([q.name for _, q in qpaths], "queue name", lambda i: f"{qpaths[i][0]}.name"),
        ([m.name for m in spec.models], "model name", lambda i: f"models[{i}].name"),
        ([r.data_class for r in spec.residency], "residency data_class", lambda i: f"residency[{i}].data_class"),
    ]
    out = []
    for values, what, path_of in lists:
        seen: set[str] = set()
        for i, v in enumerate(values):
            if v in seen:
                out.append(ctx.problem(path_of(i), f"duplicate {what} '{v}'"))
            seen.add(v)
    return out


def hub_and_residency_sites(ctx: Context) -> list[Problem]:
    """The hub and every residency rule name real sites."""
    spec = ctx.fleet.spec
    out = ctx.unknown_site(spec.hub, "hub")
    for ri, rule in enumerate(spec.residency):
        for si, s in enumerate(rule.sites):
            out += ctx.unknown_site(s, f"residency[{ri}].sites[{si}]")
    return out


def residency(ctx: Context, data_class: str | None, sites: list[str], path: str, what: str) -> list[Problem]:
    """A queue or model holding regulated data names only sites its rule allows."""
    if data_class is None:
        return []
    if data_class not in ctx.classes:
        return [ctx.problem(f"{path}.data_class", f"no residency rule for data class '{data_class}'{did_you_mean(data_class, ctx.classes)}")]
    allowed = ctx.fleet.allowed_sites(data_class) or []
    return [
        ctx.problem(f"{path}.sites[{si}]", f"{what} holds '{data_class}' data, which may only be at {', '.join(allowed)}; '{s}' is not allowed")
        for si, s in enumerate(sites)
        if s not in allowed
    ]


def queues(ctx: Context) -> list[Problem]:
    """Each queue: real worker sites (not the hub), listed once, residency, and a quota its sites hold."""
    out: list[Problem] = []
    hub = ctx.fleet.spec.hub
    for path, q in ctx.queue_paths():
        for si, s in enumerate(q.sites):
            found = ctx.unknown_site(s, f"{path}.sites[{si}]")
            out += found
            if not found and s == hub:
                out.append(ctx.problem(f"{path}.sites[{si}]", f"'{s}' is the hub: the MultiKueue manager cannot run the workloads it dispatches"))
        if len(set(q.sites)) != len(q.sites):
            out.append(ctx.problem(f"{path}.sites", "a site is listed twice"))
        out += residency(ctx, q.data_class, q.sites, path, "queue")
        if all(s in ctx.sites for s in q.sites):  # capacity behind a misspelt site is unknown; its own problem says so
            out += quota(ctx, path, q)
    return out


def quota(ctx: Context, path: str, q: Queue) -> list[Problem]:
    out = []
    for acc, want in q.quota.items():
        have = sum(ctx.gpu_cap[s][acc] for s in q.sites)
        if want > have:
            detail = ", ".join(f"{s}: {ctx.gpu_cap[s][acc]}" for s in q.sites)
            out.append(ctx.problem(f"{path}.quota.{acc}", f"quota of {want} {acc} GPUs exceeds the {have} whole GPUs at its sites ({detail})"))
    return out


def models(ctx: Context) -> list[Problem]:
    """Each served model: real sites, residency, fits its placement, and its sites have that placement."""
    out: list[Problem] = []
    for mi, m in enumerate(ctx.fleet.spec.models):
        path = f"models[{mi}]"
        for si, s in enumerate(m.sites):
            out += ctx.unknown_site(s, f"{path}.sites[{si}]")
        out += residency(ctx, m.data_class, m.sites, path, "model")
        out += model_fit(ctx, m, path)
        if m.placement.mig_profile and m.time_slicing:
            out.append(ctx.problem(f"{path}.time_slicing", "time-slicing applies to whole GPUs, not MIG slices"))
        out += model_capacity(ctx, m, path)
        out += model_source(ctx, m, path)
        out += model_replicas_at(ctx, m, path)
    return out


def model_replicas_at(ctx: Context, m: ServedModel, path: str) -> list[Problem]:
    """``replicas_at`` names only sites the model is placed at: a count for any
    other site would deploy nothing there, and say it does."""
    return [
        ctx.problem(f"{path}.replicas_at.{s}", f"'{s}' is not one of the model's sites{did_you_mean(s, m.sites)}; its sites: {', '.join(m.sites)}")
        for s in m.replicas_at
        if s not in m.sites
    ]


def model_source(ctx: Context, m: ServedModel, path: str) -> list[Problem]:
    """A model whose data class has a residency rule loads its weights from the
    site's object store: its namespace may reach only DNS, itself and that
    store (k8s/policy.py, regulated_egress), so a Hugging Face download would
    never start."""
    if m.data_class not in ctx.classes or m.from_object_store:  # no rule: reported by residency()
        return []
    return [ctx.problem(f"{path}.source", (
        f"'{m.name}' holds '{m.data_class}' data, whose namespace reaches only DNS, itself and the site's object store:"
        f" give the weights as an object-store path (s3://bucket/prefix), not '{m.source}'"))]


def model_capacity(ctx: Context, m: ServedModel, path: str) -> list[Problem]:
    p = m.placement
    out = []
    for si, s in enumerate(m.sites):
        if s not in ctx.sites:
            continue
        if p.mig_profile:
            if ctx.mig_cap[s][(p.accelerator, p.mig_profile)] == 0:
                out.append(ctx.problem(f"{path}.sites[{si}]", f"site '{s}' has no {p.accelerator} GPU partitioned with MIG profile {p.mig_profile}"))
        elif ctx.gpu_cap[s][p.accelerator] == 0:
            have = ", ".join(sorted(set(ctx.gpu_cap[s]) | {a for a, _ in ctx.mig_cap[s]})) or "none"
            out.append(ctx.problem(f"{path}.sites[{si}]", f"site '{s}' has no whole {p.accelerator} GPUs (it has: {have})"))
    return out


def model_fit(ctx: Context, m: ServedModel, path: str) -> list[Problem]:
    """Weights + KV cache + runtime fit the placement's memory at vLLM's utilisation."""
    p = m.placement
    if p.mig_profile:
        table = mig.MIG_PROFILES.get(p.accelerator)
        if table is None:
            return [ctx.problem(f"{path}.placement.mig_profile", f"{p.accelerator} does not support MIG")]
        if p.mig_profile not in table:
            return [ctx.problem(f"{path}.placement.mig_profile", f"MIG profile '{p.mig_profile}' does not exist on {p.accelerator}{did_you_mean(p.mig_profile, table)}")]
    need, have = replica_memory_need_gib(m), replica_memory_gib(m)
    if need <= have:
        return []
    where = p.mig_profile or f"{p.gpus} x {p.accelerator}"
    if m.time_slicing and m.time_slicing > 1 and not p.mig_profile:
        where += f" shared by {m.time_slicing} time-sliced replicas"
    return [
        ctx.problem(
            f"{path}.placement",
            f"does not fit: {model_weights_gib(m):.1f} GiB of weights ({m.parameters_b:g}B at {m.quantization}) + {m.kv_cache_gib:g} GiB KV cache"
            f" + {RUNTIME_OVERHEAD_GIB * p.gpus:g} GiB runtime = {need:.1f} GiB, but {where} offers {have:.1f} GiB at {GPU_MEMORY_UTILIZATION:.0%} utilisation",
        )
    ]


def cidr_overlaps(ctx: Context) -> list[Problem]:
    """No two site networks (node, pod, VPC) overlap."""
    nets: list[tuple[str, str, str, ipaddress.IPv4Network]] = []
    for i, s in enumerate(ctx.fleet.spec.sites):
        if s.node_cidr:
            nets.append((ctx.fleet_file, f"sites[{i}].node_cidr", s.name, ipaddress.IPv4Network(s.node_cidr)))
        if s.pod_cidr:
            nets.append((ctx.fleet_file, f"sites[{i}].pod_cidr", s.name, ipaddress.IPv4Network(s.pod_cidr)))
    for site in ctx.fleet.sites:
        if site.aws:
            nets.append((site.stack_file, "config.gpufleet:network.vpcCidr", site.name, ipaddress.IPv4Network(site.aws.network.vpc_cidr)))
    out = []
    for i, (_f1, p1, s1, n1) in enumerate(nets):
        for f2, p2, _s2, n2 in nets[i + 1 :]:
            if n1.overlaps(n2):
                out.append(Problem(f2, p2, f"{n2} overlaps {n1} ({s1} {p1.rsplit('.', 1)[-1]})"))
    return out


_PLAIN_IPV4 = re.compile(r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$")


def _address(value: str) -> str:
    """One spelling per address: IP addresses in canonical form, host names in lower case."""
    if _PLAIN_IPV4.match(value):
        return value  # already canonical (no leading zeros)
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        return value.strip().lower().rstrip(".")


def shared_addresses(ctx: Context) -> list[Problem]:
    """Two hosts with one address: SSH (address and port) or a BMC; across every data centre."""
    ssh: dict[tuple[str, int], tuple[str, str, str]] = {}
    anyone: dict[str, tuple[str, str, str]] = {}  # address -> first (host, variable, file) using it
    bmcs: dict[str, tuple[str, str, str]] = {}
    out = []
    for site in ctx.fleet.sites:
        for server in site.servers:
            for var, value in (("ansible_host", server.ansible_host), ("gpufleet_bmc_address", server.spec.bmc_address)):
                if value is None:
                    continue
                addr = _address(value)
                me = (server.name, var, server.origin.get(var, server.file))
                if var == "ansible_host":
                    first = ssh.get((addr, server.ansible_port or 22)) or bmcs.get(addr)
                    ssh.setdefault((addr, server.ansible_port or 22), me)
                else:
                    first = anyone.get(addr)
                    bmcs.setdefault(addr, me)
                anyone.setdefault(addr, me)
                if first is not None and first[0] != server.name:
                    out.append(Problem(me[2], f"{server.name}.{var}", f"{value} is also the address of {first[0]} ({first[1]}, {first[2]})"))
    return out


def aws_stacks(ctx: Context) -> list[Problem]:
    """Each AWS stack: a Kubernetes version with pinned add-ons, zones in the network and region, pools named once."""
    out: list[Problem] = []
    for site in ctx.fleet.sites:
        if site.aws:
            out += _aws_stack(site)
    return out


def _aws_stack(site: Site) -> list[Problem]:
    aws = site.aws
    assert aws is not None
    out = []
    version = aws.cluster.kubernetes_version
    if version not in eks.KUBERNETES_VERSIONS:
        pinned = ", ".join(sorted(eks.KUBERNETES_VERSIONS))
        out.append(Problem(site.stack_file, "config.gpufleet:cluster.kubernetesVersion", f"Kubernetes {version} has no pinned EKS add-on versions (pinned: {pinned}; see cloud/versions.py)"))
    azs = set(aws.network.availability_zones)
    for pi, pool in enumerate(aws.node_pools):
        for z in pool.availability_zones or []:
            if z not in azs:
                out.append(Problem(site.stack_file, f"config.gpufleet:nodePools[{pi}].availabilityZones", f"'{z}' is not one of the network's availabilityZones"))
    for z in azs:
        if not z.startswith(str(site.region)):
            out.append(Problem(site.stack_file, "config.gpufleet:network.availabilityZones", f"'{z}' is not in region {site.region}"))
    for name, n in Counter(p.name for p in aws.node_pools).items():
        if n > 1:
            out.append(Problem(site.stack_file, "config.gpufleet:nodePools", f"duplicate node pool name '{name}'"))
    return out


CHECKS: tuple[Callable[[Context], list[Problem]], ...] = (
    unique_names,
    hub_and_residency_sites,
    queues,
    models,
    cidr_overlaps,
    shared_addresses,
    aws_stacks,
    driver_cuda,
)
