"""The typed schemas of gpufleet's three inputs (pydantic v2, strict).

* :class:`FleetSpec` is ``stacks/fleet.yaml``: fleet-wide policy.
* :class:`AwsStackConfig` / :class:`DatacenterStackConfig` are the ``gpufleet:``
  keys of ``stacks/Pulumi.<site>.yaml`` (Pulumi's camelCase convention).
* :class:`ServerVars` is the ``gpufleet_*`` variables of one inventory host.

Unknown keys are errors (with a "did you mean" hint from the loader); types
are strict, so ``kubernetes_version: 1.30`` (a float) is refused rather than
silently becoming "1.3"; numbers must be finite (no ``.nan``, ``.inf``); and
every name that reaches a cluster (namespaces, node labels and taints, the API
endpoint) must be one the cluster accepts (:mod:`gpufleet.names`).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from gpufleet import drivers, names
from gpufleet.catalog import ACCELERATORS, INSTANCE_TYPES

Name = Annotated[str, Field(pattern=r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$", description="DNS label: lower case, digits and '-'")]
KubeVersion = Annotated[str, Field(pattern=r"^1\.(2[89]|3[0-9])$", description="Kubernetes minor version, e.g. \"1.33\"")]
Quantization = Literal["none", "fp8", "awq", "gptq", "int8"]


def _cidr(value: str) -> str:
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IPv4 network in CIDR notation: {exc}") from None
    return value


def _accelerator(value: str) -> str:
    if value not in ACCELERATORS:
        from gpufleet.errors import did_you_mean

        raise ValueError(f"unknown accelerator '{value}'{did_you_mean(value, ACCELERATORS)}; known: {', '.join(ACCELERATORS)}")
    return value


def _instance_type(value: str) -> str:
    if value not in INSTANCE_TYPES:
        from gpufleet.errors import did_you_mean

        raise ValueError(f"unknown instance type '{value}'{did_you_mean(value, INSTANCE_TYPES)}")
    return value


def _check(check) -> AfterValidator:  # noqa: ANN001 - a names.* function: value -> reason or None
    def validate(value: str) -> str:
        reason = check(value)
        if reason:
            raise ValueError(reason)
        return value

    return AfterValidator(validate)


def _node_label_value(value: str) -> str:
    reason = names.label_value(value)
    if reason:
        raise ValueError(f"{reason} (got {value!r:.40}; it becomes a node label)")
    return value


def _namespace(value: str) -> str:
    owner = names.reserved_namespace(value)
    if owner:
        raise ValueError(f"namespace '{value}' belongs to {owner}; give the team a namespace of its own")
    return value


def _endpoint(value: str) -> str:
    """A host name or IP address, as kubeadm's controlPlaneEndpoint host: gpufleet adds the port."""
    fix = "give the host name or address only (gpufleet adds :6443)"
    scheme, sep, rest = value.partition("://")
    if sep:
        raise ValueError(f"'{value}' has a scheme ({scheme}://); {fix}")
    if "/" in value:
        raise ValueError(f"'{value}' has a path; {fix}")
    try:
        ipaddress.ip_address(value.strip("[]"))
        return value
    except ValueError:
        pass
    host, colon, port = value.rpartition(":")
    if colon and port.isdigit() and host.count(":") == 0:
        raise ValueError(f"'{value}' has a port (:{port}); {fix}")
    if names.node_name(value.lower().rstrip(".")):
        raise ValueError(f"'{value}' is not a host name or an IP address")
    return value


def _branch(value: str) -> str:
    name = drivers.branch_name(value)
    if name not in drivers.BRANCHES:
        from gpufleet.errors import did_you_mean

        known = ", ".join(b.label for b in drivers.BRANCHES.values())
        raise ValueError(f"unknown NVIDIA driver branch '{value}'{did_you_mean(name, drivers.BRANCHES)}; gpufleet/drivers.py knows {known}")
    return name


Cidr = Annotated[str, AfterValidator(_cidr)]
# "580", "R580" or 580: the branch NVIDIA's packages are named after.
DriverBranch = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v), AfterValidator(_branch)]
LabelKey = Annotated[str, _check(names.user_label_key)]
LabelValue = Annotated[str, _check(names.label_value)]
NodeLabelValue = Annotated[str, AfterValidator(_node_label_value)]
TaintText = Annotated[str, _check(names.taint)]
AcceleratorId = Annotated[str, AfterValidator(_accelerator)]
InstanceTypeName = Annotated[str, AfterValidator(_instance_type)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------- fleet.yaml


class SiteSpec(Strict):
    name: Name
    kind: Literal["aws", "datacenter"]
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    location: str | None = None
    inventory: str | None = None
    kubernetes_version: KubeVersion | None = None
    api_endpoint: Annotated[str, AfterValidator(_endpoint)] | None = None
    node_cidr: Cidr | None = None
    pod_cidr: Cidr | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> SiteSpec:
        if self.kind == "aws":
            if not self.region:
                raise ValueError("an aws site needs a region")
            for key in ("inventory", "node_cidr", "pod_cidr", "api_endpoint"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' belongs to datacenter sites; an aws site's network is in its Pulumi stack")
        else:
            missing = [k for k in ("location", "inventory", "kubernetes_version", "api_endpoint", "node_cidr") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a datacenter site needs {', '.join(missing)}")
            if self.region is not None:
                raise ValueError("'region' belongs to aws sites; use 'location' for a data centre")
        return self


class ResidencyRule(Strict):
    data_class: Name
    description: str = ""
    sites: list[Name] = Field(min_length=1)


class Queue(Strict):
    name: Name
    priority: int = Field(0, ge=0, le=1_000_000)
    sites: list[Name] = Field(min_length=1, description="worker sites in dispatch order")
    quota: dict[AcceleratorId, Annotated[int, Field(gt=0)]] = Field(min_length=1)
    data_class: Name | None = None
    borrowing_limit_percent: int = Field(50, ge=0, le=100)


class Team(Strict):
    name: Name
    namespace: Annotated[Name, AfterValidator(_namespace)]
    queues: list[Queue] = Field(default_factory=list)


class Placement(Strict):
    accelerator: AcceleratorId
    gpus: int = Field(1, ge=1, le=64)
    mig_profile: str | None = None

    @model_validator(mode="after")
    def _mig_single(self) -> Placement:
        if self.mig_profile is not None and self.gpus != 1:
            raise ValueError("a replica on a MIG slice uses exactly one slice: leave gpus at 1")
        return self


class ServedModel(Strict):
    name: Name
    source: str = Field(min_length=1, description="Hugging Face repository, or an object-store path s3://bucket/prefix (required for a data class with a residency rule)")
    parameters_b: float = Field(gt=0, le=2000, description="parameters, in billions")
    quantization: Quantization = "none"
    context_length: int = Field(ge=256, le=1_048_576)
    kv_cache_gib: float = Field(gt=0, description="KV-cache memory allowance per replica, GiB")
    placement: Placement
    sites: list[Name] = Field(min_length=1)
    replicas: int = Field(1, ge=1, le=1000, description="replicas at each site not in replicas_at")
    replicas_at: dict[Name, Annotated[int, Field(gt=0, le=1000)]] = Field(default_factory=dict, description="replicas at the sites named here (each one of the model's sites); replicas elsewhere")
    data_class: Name | None = None
    time_slicing: int | None = Field(None, ge=1, le=16, description="replicas sharing one GPU by time-slicing")
    prefix_caching: bool = True
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    record_feedback: bool = False
    pii: bool = False

    def replicas_for(self, site: str) -> int:
        """The replicas this model runs at ``site``: ``replicas_at[site]``, else ``replicas``."""
        return self.replicas_at.get(site, self.replicas)

    @property
    def from_object_store(self) -> bool:
        """Weights given as an object-store path (s3://bucket/prefix), not a Hugging Face repository."""
        return self.source.startswith("s3://")


class FleetSpec(Strict):
    name: Name
    hub: Name
    sites: list[SiteSpec] = Field(min_length=1)
    residency: list[ResidencyRule] = Field(default_factory=list)
    teams: list[Team] = Field(default_factory=list)
    models: list[ServedModel] = Field(default_factory=list)


# ------------------------------------------------------------ Pulumi.<site>.yaml


class Camel(Strict):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False, alias_generator=to_camel, populate_by_name=True)


class NetworkConfig(Camel):
    vpc_cidr: Cidr
    availability_zones: list[str] = Field(min_length=2, max_length=6)
    nat_gateways: Literal["one-per-az", "single"] = "one-per-az"


LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]


class ClusterConfig(Camel):
    kubernetes_version: KubeVersion
    endpoint_access: Literal["private", "public-and-private"] = "private"
    public_access_cidrs: list[Cidr] = Field(default_factory=list)
    log_types: list[LogType] = Field(default_factory=lambda: ["api", "audit", "authenticator", "controllerManager", "scheduler"])
    admin_principal_arns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _public(self) -> ClusterConfig:
        if self.endpoint_access == "public-and-private" and not self.public_access_cidrs:
            raise ValueError("endpointAccess public-and-private needs publicAccessCidrs (without them EKS opens the public endpoint to 0.0.0.0/0)")
        if self.endpoint_access == "private" and self.public_access_cidrs:
            raise ValueError("publicAccessCidrs needs endpointAccess: public-and-private")
        if "0.0.0.0/0" in self.public_access_cidrs:
            raise ValueError("publicAccessCidrs must not include 0.0.0.0/0; list your office or VPN ranges")
        return self


class Taint(Camel):
    key: LabelKey
    value: LabelValue = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodePool(Camel):
    name: Name
    instance_types: list[InstanceTypeName] = Field(min_length=1)
    capacity_type: Literal["on-demand", "spot", "reserved", "capacity-block"] = "on-demand"
    capacity_reservation_id: str | None = Field(None, pattern=r"^cr-[0-9a-f]{8,17}$")
    min_size: int = Field(ge=0, le=1000)
    max_size: int = Field(ge=1, le=1000)
    disk_gib: int = Field(100, ge=20, le=16384)
    labels: dict[LabelKey, Annotated[LabelValue, Field(min_length=1)]] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    efa: bool = False
    availability_zones: list[str] | None = None

    @model_validator(mode="after")
    def _pool(self) -> NodePool:
        if self.min_size > self.max_size:
            raise ValueError(f"minSize {self.min_size} is larger than maxSize {self.max_size}")
        accs = {INSTANCE_TYPES[t].accelerator for t in self.instance_types}
        if len(accs) > 1:
            raise ValueError(f"instance types carry different accelerators ({', '.join(sorted(str(a) for a in accs))}); use one pool per accelerator")
        gpus = {INSTANCE_TYPES[t].gpus for t in self.instance_types}
        if len(gpus) > 1:
            raise ValueError("instance types in one pool must carry the same number of GPUs")
        if self.capacity_type in ("reserved", "capacity-block"):
            if not self.capacity_reservation_id:
                raise ValueError(f"capacityType {self.capacity_type} needs capacityReservationId")
            if len(self.instance_types) != 1:
                raise ValueError("a reservation is for one instance type: list exactly one")
        elif self.capacity_reservation_id:
            raise ValueError("capacityReservationId is only for capacityType reserved or capacity-block")
        if self.efa:
            if self.availability_zones is not None and len(self.availability_zones) != 1:
                raise ValueError("an EFA pool sits in one cluster placement group, in one availability zone: list exactly one in availabilityZones")
            no_efa = [t for t in self.instance_types if INSTANCE_TYPES[t].efa_interfaces == 0]
            if no_efa:
                raise ValueError(f"efa: true, but {', '.join(no_efa)} does not support EFA")
        return self

    @property
    def accelerator(self) -> str | None:
        return INSTANCE_TYPES[self.instance_types[0]].accelerator

    @property
    def gpus_per_node(self) -> int:
        return INSTANCE_TYPES[self.instance_types[0]].gpus

    @property
    def efa_interfaces(self) -> int:
        return min(INSTANCE_TYPES[t].efa_interfaces for t in self.instance_types) if self.efa else 0


class AwsStackConfig(Camel):
    site: Name
    network: NetworkConfig
    cluster: ClusterConfig
    node_pools: list[NodePool] = Field(min_length=1)


class DatacenterStackConfig(Camel):
    site: Name
    kubeconfig: Any = None  # set with `pulumi config set --secret`; never read here


# ----------------------------------------------------------- inventory host vars


class MigGroup(Strict):
    devices: Literal["all"] | list[Annotated[int, Field(ge=0, le=15)]]
    profiles: dict[str, Annotated[int, Field(ge=1, le=7)]]


class ServerVars(Strict):
    """The ``gpufleet_*`` variables of one host, prefix removed."""

    site: Name
    server_class: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$"), AfterValidator(_node_label_value)]
    pool: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$"), AfterValidator(_node_label_value)]
    rack: NodeLabelValue
    bmc_address: str
    ib_block: NodeLabelValue | None = None
    accelerator: AcceleratorId | None = None
    gpu_count: int = Field(0, ge=0, le=16)
    nvswitch: bool = False
    fabric: Literal["infiniband", "roce", "efa", "tcp"] = "tcp"
    fabric_interface: str | None = None
    fabric_hcas: list[str] = Field(default_factory=list)
    acceptance_busbw_gbps: float | None = Field(None, gt=0)
    driver_branch: DriverBranch = drivers.DEFAULT_BRANCH
    mig_layout: list[MigGroup] = Field(default_factory=list)
    node_taints: list[TaintText] = Field(default_factory=list)

    @model_validator(mode="after")
    def _gpu(self) -> ServerVars:
        if (self.accelerator is None) != (self.gpu_count == 0):
            raise ValueError("gpufleet_accelerator and gpufleet_gpu_count go together (both set for a GPU server, neither for a CPU server)")
        if self.mig_layout and self.accelerator is None:
            raise ValueError("gpufleet_mig_layout on a server without GPUs")
        if self.fabric in ("infiniband", "roce") and not self.fabric_hcas:
            raise ValueError(f"fabric {self.fabric} needs gpufleet_fabric_hcas (the HCA names NCCL uses)")
        return self


def camel_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


