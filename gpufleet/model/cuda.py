"""Driver branches against the CUDA of the images that run on them, and against their end of life.

:func:`driver_cuda` (a cross-check) refuses a site whose GPUs run a driver
branch older than the CUDA major of an image that will run there: the vLLM
image on the servers or pools of each model served at the site, the training
image on those of each training queue that dispatches there. Without CUDA's
forward-compatibility package such a pod fails with "CUDA driver version is
insufficient". :func:`driver_warnings` warns about branches within six months
of their end of life (or past it). Facts: :mod:`gpufleet.drivers`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gpufleet import drivers, eks
from gpufleet.errors import Problem
from gpufleet.model.messages import hosts_shown
from gpufleet.model.types import Fleet, Server, Site

VAR = "gpufleet_driver_branch"


@dataclass(frozen=True)
class Need:
    """An image that runs at a site on GPUs of some accelerators, for a queue or a model."""

    image: str  # its name in k8s/versions.py
    user: str  # "queue research-train", "model llama-3-1-8b-instruct"
    accelerators: frozenset[str]

    @property
    def cuda(self) -> int:
        return drivers.GPU_IMAGE_CUDA[self.image]


def needs(fleet: Fleet) -> dict[str, list[Need]]:
    """Site -> the GPU images that will run there."""
    out: dict[str, list[Need]] = {s.name: [] for s in fleet.sites}
    for ref in fleet.queues:
        for s in ref.queue.sites:
            out.get(s, []).append(Need("PYTORCH_IMAGE", f"queue {ref.name}", frozenset(ref.queue.quota)))
    for m in fleet.models:
        for s in m.sites:
            out.get(s, []).append(Need("VLLM_IMAGE", f"model {m.name}", frozenset({m.placement.accelerator})))
    return out


def _images(found: list[Need]) -> str:
    """``PYTORCH_IMAGE (queue a, queue b) and VLLM_IMAGE (model c)``."""
    users: dict[str, list[str]] = {}
    for need in found:
        if need.user not in users.setdefault(need.image, []):
            users[need.image].append(need.user)
    return " and ".join(f"{image} ({', '.join(sorted(u))})" for image, u in sorted(users.items()))


def _fix(cuda: int) -> str:
    branch = drivers.BRANCHES[drivers.DEFAULT_BRANCH]
    if branch.cuda_major < cuda:
        branch = max((b for b in drivers.BRANCHES.values() if b.cuda_major >= cuda), key=lambda b: b.end_of_life)
    return f'set {VAR}: "{branch.name}" ({branch.label}, {branch.designation}, supported until {branch.end_of_life})'


def _server_problems(site: Site, site_needs: list[Need]) -> list[Problem]:
    """Servers whose branch is too old for an image that runs on them: one line per file and branch."""
    short: dict[tuple[str, str], tuple[list[Need], list[str]]] = {}
    for server in site.servers:
        if not server.spec.accelerator:
            continue
        branch = drivers.BRANCHES[server.driver_branch]
        found = [n for n in site_needs if server.spec.accelerator in n.accelerators and branch.cuda_major < n.cuda]
        if found:
            entry = short.setdefault((server.origin.get(VAR, server.file), branch.name), ([], []))
            entry[0].extend(found)
            entry[1].append(server.name)
    out = []
    for (file, name), (found, hosts) in short.items():
        branch, cuda = drivers.BRANCHES[name], max(n.cuda for n in found)
        out.append(Problem(file, VAR, (
            f"driver branch {branch.label} runs CUDA {branch.cuda_major} at most (without the forward-compatibility package), "
            f"but at site {site.name} {_images(found)} need CUDA {cuda} (k8s/versions.py, gpufleet/drivers.py): their pods would fail with "
            f"'CUDA driver version is insufficient' on {len(hosts)} host{'s' if len(hosts) != 1 else ''} ({hosts_shown(hosts)}); {_fix(cuda)}")))
    return out


def _ami_problems(site: Site, site_needs: list[Need]) -> list[Problem]:
    branch = drivers.BRANCHES[site.ami_driver_branch or drivers.DEFAULT_BRANCH]
    pool_accs = {p.accelerator for p in site.node_pools if p.accelerator}
    found = [n for n in site_needs if n.accelerators & pool_accs and branch.cuda_major < n.cuda]
    if not found:
        return []
    return [Problem(site.stack_file, "config.gpufleet:nodePools", (
        f"the GPU node AMI {eks.GPU_AMI_TYPE} carries driver branch {branch.label} (gpufleet/drivers.py), which runs CUDA {branch.cuda_major} at most, "
        f"but {_images(found)} need CUDA {max(n.cuda for n in found)}: use an AMI with a newer driver"))]


def driver_cuda(ctx) -> list[Problem]:  # noqa: ANN001 - checks.Context
    """Every GPU that runs an image has a driver branch new enough for the image's CUDA."""
    out: list[Problem] = []
    for site_name, site_needs in needs(ctx.fleet).items():
        site = ctx.sites.get(site_name)
        if site is None or not site_needs:
            continue
        out += _ami_problems(site, site_needs) if site.aws else _server_problems(site, site_needs)
    return out


def _eol_message(branch: drivers.Branch, today: dt.date) -> str | None:
    days = drivers.days_to_end_of_life(branch, today)
    if days > drivers.EOL_WARNING_DAYS:
        return None
    when = f"reached its end of life on {branch.end_of_life} ({-days} days ago)" if days < 0 else f"reaches its end of life on {branch.end_of_life}, in {days} days"
    plan = drivers.BRANCHES[drivers.DEFAULT_BRANCH]
    return f"driver branch {branch.label} ({branch.designation}) {when}; plan the move to {plan.label} ({plan.designation}, supported until {plan.end_of_life})"


def driver_warnings(fleet: Fleet, today: dt.date) -> list[Problem]:
    """Branches in use within six months of their end of life, or past it: one line per file and branch."""
    by_file: dict[tuple[str, str, str], list[str]] = {}
    for site in fleet.sites:
        if site.aws:
            if any(p.accelerator for p in site.node_pools):
                by_file.setdefault((site.stack_file, "config.gpufleet:nodePools", site.ami_driver_branch or drivers.DEFAULT_BRANCH), [])
            continue
        for server in _gpu_servers(site):
            by_file.setdefault((server.origin.get(VAR, server.file), VAR, server.driver_branch), []).append(server.name)
    out = []
    for (file, path, name), hosts in by_file.items():
        message = _eol_message(drivers.BRANCHES[name], today)
        if message:
            on = f" (on {len(hosts)} host{'s' if len(hosts) != 1 else ''}: {hosts_shown(hosts)})" if hosts else f" (the GPU node AMI {eks.GPU_AMI_TYPE})"
            out.append(Problem(file, path, message + on))
    return sorted(out)


def _gpu_servers(site: Site) -> list[Server]:
    return [s for s in site.servers if s.spec.accelerator]
