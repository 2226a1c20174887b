"""The resolved fleet: sites with their servers or node pools, queues, models."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gpufleet import drivers, eks, mig
from gpufleet.errors import Problem
from gpufleet.schema import AwsStackConfig, FleetSpec, NodePool, Queue, ServedModel, ServerVars, SiteSpec, Team

DEFAULT_FLEET = Path("stacks/fleet.yaml")


@dataclass
class Server:
    name: str
    site: str
    groups: list[str]
    ansible_host: str | None
    spec: ServerVars
    ansible_port: int | None = None
    file: str = ""  # the hosts file that lists it
    origin: dict[str, str] = field(default_factory=dict)  # ansible_host, gpufleet_bmc_address, gpufleet_driver_branch -> the file that sets it

    @property
    def mig_gpus(self) -> int:
        n = 0
        for group in self.spec.mig_layout:
            n += self.spec.gpu_count if group.devices == "all" else len(set(group.devices))
        return min(n, self.spec.gpu_count)

    @property
    def whole_gpus(self) -> int:
        return self.spec.gpu_count - self.mig_gpus

    @property
    def mig_slices(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for group in self.spec.mig_layout:
            gpus = self.spec.gpu_count if group.devices == "all" else len(set(group.devices))
            for prof, count in group.profiles.items():
                out[prof] += count * gpus
        return out

    @property
    def mig_config(self) -> str:
        return mig.config_name([g.model_dump() for g in self.spec.mig_layout])

    @property
    def driver_branch(self) -> str:
        """The NVIDIA driver branch the server runs: ``gpufleet_driver_branch`` (default R580), as ``"580"``."""
        return self.spec.driver_branch


@dataclass
class Site:
    spec: SiteSpec
    stack_file: str
    aws: AwsStackConfig | None = None
    servers: list[Server] = field(default_factory=list)
    inventory_files: list[str] = field(default_factory=list)  # what the inventory reader read, relative to it

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def is_aws(self) -> bool:
        return self.spec.kind == "aws"

    @property
    def region(self) -> str | None:
        return self.spec.region

    @property
    def kubernetes_version(self) -> str:
        return self.aws.cluster.kubernetes_version if self.aws else str(self.spec.kubernetes_version)

    @property
    def node_pools(self) -> list[NodePool]:
        return list(self.aws.node_pools) if self.aws else []

    @property
    def ami_driver_branch(self) -> str | None:
        """The driver branch of the GPU node AMI at an AWS site (None at a data centre)."""
        return drivers.AMI_DRIVER_BRANCH[eks.GPU_AMI_TYPE] if self.aws else None

    @property
    def fabric(self) -> str:
        """The GPU-to-GPU fabric NCCL uses across nodes at this site."""
        if self.aws:
            return "efa" if any(p.efa for p in self.aws.node_pools) else "tcp"
        fabrics = {s.spec.fabric for s in self.servers if s.spec.gpu_count}
        for f in ("infiniband", "roce", "efa"):
            if f in fabrics:
                return f
        return "tcp"

    def gpu_capacity(self) -> Counter[str]:
        """Whole GPUs per accelerator: servers' non-MIG GPUs, or pools at max size."""
        out: Counter[str] = Counter()
        if self.aws:
            for pool in self.aws.node_pools:
                if pool.accelerator:
                    out[pool.accelerator] += pool.max_size * pool.gpus_per_node
        for s in self.servers:
            if s.spec.accelerator and s.whole_gpus:
                out[s.spec.accelerator] += s.whole_gpus
        return out

    def mig_capacity(self) -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for s in self.servers:
            for prof, count in s.mig_slices.items():
                out[(str(s.spec.accelerator), prof)] += count
        return out

    def accelerators(self) -> set[str]:
        return set(self.gpu_capacity()) | {a for a, _ in self.mig_capacity()}


@dataclass
class QueueRef:
    team: Team
    queue: Queue

    @property
    def name(self) -> str:
        return self.queue.name

    @property
    def namespace(self) -> str:
        return self.team.namespace


@dataclass
class Fleet:
    root: Path
    spec: FleetSpec
    sites: list[Site]
    path: Path = DEFAULT_FLEET  # the fleet.yaml this fleet was loaded from
    warnings: list[Problem] = field(default_factory=list)  # worth acting on, not wrong: validate prints them

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hub(self) -> str:
        return self.spec.hub

    @property
    def teams(self) -> list[Team]:
        return list(self.spec.teams)

    @property
    def queues(self) -> list[QueueRef]:
        return [QueueRef(t, q) for t in self.spec.teams for q in t.queues]

    @property
    def models(self) -> list[ServedModel]:
        return list(self.spec.models)

    @property
    def residency(self):
        return list(self.spec.residency)

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def allowed_sites(self, data_class: str | None) -> list[str] | None:
        """Sites allowed to hold ``data_class``; None when unrestricted."""
        if data_class is None:
            return None
        for rule in self.spec.residency:
            if rule.data_class == data_class:
                return list(rule.sites)
        return []

    def worker_sites(self) -> list[str]:
        return [s.name for s in self.sites if s.name != self.hub]
