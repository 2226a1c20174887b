"""Node pools of one AWS site, as EKS managed node groups with launch templates.

Why managed node groups and not Karpenter:

* Reserved GPU capacity. Capacity Blocks for ML and targeted On-Demand
  Capacity Reservations are attached to a launch template
  (``instanceMarketOptions`` / ``capacityReservationSpecification``) and a
  managed node group with capacity type ``CAPACITY_BLOCK`` scales into them
  the way AWS documents. The p5 pools this fleet trains on are bought that way.
* Nothing has to run inside the cluster before the cluster works. Karpenter is
  itself a pod that needs nodes to run on and its own IAM role (and an SQS
  queue for interruption handling) before it can launch anything; a managed
  node group is an AWS API object that exists as soon as ``pulumi up``
  finishes, so the add-ons applied in the same run have somewhere to land.
* Deterministic bounds. Each pool has a fixed ``minSize``/``maxSize`` and a
  known instance type, which is what the fleet model's quota check counts
  (``maxSize`` x GPUs per node); a Karpenter NodePool's limits are resource
  sums that could be met by many instance shapes.

Every pool gets its own launch template:

* IMDSv2 required, with a hop limit of 1: a token cannot be fetched from a
  pod's network namespace, so pods cannot borrow the node role. Pods that need
  AWS credentials get them from EKS Pod Identity (its agent is a managed
  add-on and runs on the host network, where hop limit 1 suffices).
* Root volume gp3, encrypted, ``diskGib`` in size (model weights and
  container images of GPU workloads are large).
* Tags for instances, volumes and network interfaces: the Auto Scaling group
  starts those, so the provider's default tags never reach them.
* EFA pools (p5, p4d...): one ``efa`` interface per network card up to the
  instance's EFA count, a security group that allows all traffic between its
  members (EFA's requirement), and a ``cluster`` placement group in a single
  availability zone.

GPU pools use the NVIDIA AMI type pinned in :mod:`cloud.versions`, are tainted
``nvidia.com/gpu=true:NoSchedule`` and labelled with site, pool and
accelerator, so only workloads that ask for a GPU land on them. They also
carry ``k8s.amazonaws.com/accelerator``, the label cluster-autoscaler's AWS
provider reads as "this node has GPUs" (``GPULabel``,
cloudprovider/aws/aws_cloud_provider.go), so it waits for the device plugin
instead of adding more nodes while a new node's GPUs are not yet advertised.

Scaling: cluster-autoscaler (:mod:`k8s.autoscaler`) grows and shrinks each
pool between ``minSize`` and ``maxSize`` by setting its Auto Scaling group's
desired capacity. It finds the groups by the tags
``k8s.io/cluster-autoscaler/enabled`` and ``k8s.io/cluster-autoscaler/<cluster>``
(``--node-group-auto-discovery``), and to scale a pool up *from zero* it
builds the node it would get from the group's ``node-template`` tags: labels
(``.../node-template/label/<key>``), taints (``.../node-template/taint/<key>``
= ``value:Effect``) and extended resources (``.../node-template/resources/<name>``,
here the GPUs and the EFA interfaces), beside the CPU, memory and GPU count of
the instance type (``buildNodeFromTemplate``, ``extractLabelsFromAsg``,
``extractTaintsFromAsg``, ``extractAllocatableResourcesFromAsg`` in
cloudprovider/aws/aws_manager.go at cluster-autoscaler-1.33.x). EKS does not
copy a managed node group's tags to its Auto Scaling group, so the tags are
set on the group itself (``aws.autoscaling.Tag``, not propagated to
instances). :func:`autoscaler_node_template` is the one description of that
node, used for the tags and by the federation lab's cluster-autoscaler.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from cloud import versions
from cloud.context import StackContext
from gpufleet.schema import NodePool as NodePoolConfig

IMDS_HOP_LIMIT = 1
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
LABEL_SITE = "gpufleet.io/site"
LABEL_POOL = "gpufleet.io/pool"
LABEL_ACCELERATOR = "gpufleet.io/accelerator"
# cluster-autoscaler's AWS GPU label (aws_cloud_provider.go GPULabel).
LABEL_CA_ACCELERATOR = "k8s.amazonaws.com/accelerator"
GPU_RESOURCE = "nvidia.com/gpu"
EFA_RESOURCE = "vpc.amazonaws.com/efa"
CA_TAG_PREFIX = "k8s.io/cluster-autoscaler/"
CA_TAG_ENABLED = CA_TAG_PREFIX + "enabled"

_EFFECTS = {"NoSchedule": "NO_SCHEDULE", "NoExecute": "NO_EXECUTE", "PreferNoSchedule": "PREFER_NO_SCHEDULE"}
_CAPACITY_TYPES = {"on-demand": "ON_DEMAND", "reserved": "ON_DEMAND", "spot": "SPOT", "capacity-block": "CAPACITY_BLOCK"}
NODE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",  # shell access through Session Manager instead of SSH keys
)


@dataclass(frozen=True)
class NodePoolArgs:
    """One pool, resolved: what the node group and its launch template need."""

    name: str
    node_group_name: str
    instance_types: tuple[str, ...]
    capacity_type: str
    capacity_reservation_id: str | None
    min_size: int
    max_size: int
    disk_gib: int
    zones: tuple[str, ...]
    accelerator: str | None
    efa_interfaces: int
    gpus_per_node: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()

    @property
    def is_gpu(self) -> bool:
        return self.accelerator is not None

    @property
    def ami_type(self) -> str:
        return versions.AMI_TYPE_GPU if self.is_gpu else versions.AMI_TYPE_CPU

    @property
    def eks_capacity_type(self) -> str:
        return _CAPACITY_TYPES[self.capacity_type]

    @property
    def instance_type_in_template(self) -> bool:
        """A reservation is for one instance type, named in the launch template."""
        return self.capacity_reservation_id is not None

    @classmethod
    def from_config(cls, pool: NodePoolConfig, site: str, prefix: str, network_zones: list[str], where: str = "") -> NodePoolArgs:
        zones = list(pool.availability_zones or network_zones)
        if pool.efa:
            if pool.availability_zones is None:
                zones = zones[:1]
            elif len(zones) != 1:
                raise ValueError(
                    f"{where}availabilityZones: an EFA pool sits in one cluster placement group, which lives in one "
                    f"availability zone; list exactly one (got {', '.join(zones)})"
                )
        labels = {LABEL_SITE: site, LABEL_POOL: pool.name}
        if pool.accelerator:
            labels[LABEL_ACCELERATOR] = pool.accelerator
            labels[LABEL_CA_ACCELERATOR] = pool.accelerator
        labels.update(pool.labels)
        taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in pool.taints]
        if pool.accelerator and not any(t["key"] == GPU_TAINT["key"] for t in taints):
            taints.insert(0, dict(GPU_TAINT))
        return cls(
            name=pool.name,
            node_group_name=f"{prefix}-{pool.name}",
            instance_types=tuple(pool.instance_types),
            capacity_type=pool.capacity_type,
            capacity_reservation_id=pool.capacity_reservation_id,
            min_size=pool.min_size,
            max_size=pool.max_size,
            disk_gib=pool.disk_gib,
            zones=tuple(zones),
            accelerator=pool.accelerator,
            efa_interfaces=pool.efa_interfaces,
            gpus_per_node=pool.gpus_per_node,
            labels=labels,
            taints=tuple(taints),
        )


@dataclass(frozen=True)
class NodeTemplate:
    """The node cluster-autoscaler expects a pool to add: what it checks pending pods against."""

    labels: dict[str, str]
    taints: tuple[dict[str, str], ...]
    resources: dict[str, str]  # extended resources beyond the instance type's CPU and memory


def autoscaler_node_template(args: NodePoolArgs) -> NodeTemplate:
    resources: dict[str, str] = {}
    if args.gpus_per_node:
        resources[GPU_RESOURCE] = str(args.gpus_per_node)
    if args.efa_interfaces:
        resources[EFA_RESOURCE] = str(args.efa_interfaces)
    return NodeTemplate(labels=dict(args.labels), taints=tuple(dict(t) for t in args.taints), resources=resources)


def autoscaler_discovery_tags(cluster_name: str) -> dict[str, str]:
    """The tags ``--node-group-auto-discovery=asg:tag=<enabled>,<cluster>`` finds a pool's group by.
    ("owned" is the value EKS itself gives the cluster tag.)"""
    return {CA_TAG_ENABLED: "true", CA_TAG_PREFIX + cluster_name: "owned"}


def autoscaler_template_tags(args: NodePoolArgs) -> dict[str, str]:
    """The ``node-template`` tags cluster-autoscaler builds a pool's node from when it has none."""
    template = autoscaler_node_template(args)
    tags: dict[str, str] = {}
    for key, value in template.labels.items():
        tags[f"{CA_TAG_PREFIX}node-template/label/{key}"] = value
    for t in template.taints:
        tags[f"{CA_TAG_PREFIX}node-template/taint/{t['key']}"] = f"{t['value']}:{t['effect']}"
    for name, value in template.resources.items():
        tags[f"{CA_TAG_PREFIX}node-template/resources/{name}"] = value
    return tags


def _first_asg_name(resources) -> str | None:
    for res in resources or []:
        for group in res.autoscaling_groups or []:
            if group.name:
                return group.name
    return None


class NodeRole(pulumi.ComponentResource):
    """The IAM role every node of the site runs as."""

    def __init__(self, name: str, ctx: StackContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:cloud:NodeRole", name, None, opts)
        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
                }
            ),
            description=f"EKS nodes of {ctx.prefix}",
            opts=ctx.opts(self),
        )
        self.attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-{policy}", role=self.role.name, policy_arn=ctx.managed_policy(policy), opts=ctx.opts(self))
            for policy in NODE_POLICIES
        ]
        self.register_outputs({"arn": self.role.arn})


class NodePool(pulumi.ComponentResource):
    """One managed node group with its launch template (and, for EFA, placement group and security group)."""

    node_group: aws.eks.NodeGroup
    launch_template: aws.ec2.LaunchTemplate

    def __init__(
        self,
        name: str,
        args: NodePoolArgs,
        *,
        cluster_name: pulumi.Input[str],
        cluster_security_group_id: pulumi.Input[str],
        node_role: NodeRole,
        subnet_ids: dict[str, pulumi.Input[str]],
        vpc_id: pulumi.Input[str],
        ctx: StackContext,
        depends_on: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("gpufleet:cloud:NodePool", name, None, opts)
        instance_tags = ctx.tags(args.node_group_name, **{LABEL_POOL: args.name})

        network_interfaces = None
        placement = None
        if args.efa_interfaces:
            efa_sg = aws.ec2.SecurityGroup(
                f"{name}-efa",
                vpc_id=vpc_id,
                description=f"EFA traffic between the nodes of {args.node_group_name}",
                ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="-1", from_port=0, to_port=0, self=True, description="EFA: all traffic from members")],
                egress=[
                    aws.ec2.SecurityGroupEgressArgs(protocol="-1", from_port=0, to_port=0, self=True, description="EFA: all traffic to members"),
                    aws.ec2.SecurityGroupEgressArgs(protocol="-1", from_port=0, to_port=0, cidr_blocks=["0.0.0.0/0"], description="Outbound through the NAT gateway"),
                ],
                tags=ctx.tags(f"{args.node_group_name}-efa"),
                opts=ctx.opts(self),
            )
            pg = aws.ec2.PlacementGroup(
                f"{name}-pg",
                strategy="cluster",
                tags=ctx.tags(f"{args.node_group_name}-pg"),
                opts=ctx.opts(self),
            )
            placement = aws.ec2.LaunchTemplatePlacementArgs(group_name=pg.name)
            # With interfaces in the template, EKS does not add the cluster security group itself.
            groups = [cluster_security_group_id, efa_sg.id]
            network_interfaces = [
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    device_index=0 if card == 0 else 1,
                    network_card_index=card,
                    interface_type="efa",
                    delete_on_termination="true",
                    security_groups=groups,
                    description=f"EFA {card} of {args.node_group_name}",
                )
                for card in range(args.efa_interfaces)
            ]

        market = None
        reservation = None
        if args.capacity_reservation_id:
            reservation = aws.ec2.LaunchTemplateCapacityReservationSpecificationArgs(
                capacity_reservation_target=aws.ec2.LaunchTemplateCapacityReservationSpecificationCapacityReservationTargetArgs(
                    capacity_reservation_id=args.capacity_reservation_id
                )
            )
        if args.capacity_type == "capacity-block":
            market = aws.ec2.LaunchTemplateInstanceMarketOptionsArgs(market_type="capacity-block")

        self.launch_template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            description=f"Nodes of {args.node_group_name}",
            update_default_version=True,
            instance_type=args.instance_types[0] if args.instance_type_in_template else None,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=IMDS_HOP_LIMIT,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=versions.ROOT_DEVICE_NAME,
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=args.disk_gib,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            network_interfaces=network_interfaces,
            placement=placement,
            instance_market_options=market,
            capacity_reservation_specification=reservation,
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=rt, tags=instance_tags)
                for rt in ("instance", "volume", "network-interface")
            ],
            tags=ctx.tags(args.node_group_name),
            opts=ctx.opts(self),
        )

        self.node_group = aws.eks.NodeGroup(
            f"{name}-ng",
            cluster_name=cluster_name,
            node_group_name=args.node_group_name,
            node_role_arn=node_role.role.arn,
            subnet_ids=[subnet_ids[z] for z in args.zones],
            ami_type=args.ami_type,
            capacity_type=args.eks_capacity_type,
            instance_types=None if args.instance_type_in_template else list(args.instance_types),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=args.min_size, max_size=args.max_size, desired_size=args.min_size),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=self.launch_template.id,
                version=self.launch_template.latest_version.apply(str),
            ),
            labels=dict(args.labels),
            taints=[aws.eks.NodeGroupTaintArgs(key=t["key"], value=t["value"] or None, effect=_EFFECTS[t["effect"]]) for t in args.taints],
            tags=ctx.tags(args.node_group_name),
            opts=ctx.opts(
                self,
                depends_on=[*node_role.attachments, *(depends_on or [])],
                # The cluster autoscaler moves desiredSize between min and max; keep ours out of its way.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )
        # cluster-autoscaler's discovery and scale-from-zero tags, on the node group's
        # Auto Scaling group (EKS does not copy node group tags there).
        asg_name = self.node_group.resources.apply(_first_asg_name)
        tags: list[tuple[str, pulumi.Input[str], str]] = [
            ("ca-enabled", CA_TAG_ENABLED, "true"),
            ("ca-cluster", pulumi.Output.from_input(cluster_name).apply(lambda n: CA_TAG_PREFIX + n), "owned"),
        ]
        # Named after the key, so adding or removing one tag leaves the others alone.
        tags += [(f"ca-{hashlib.sha256(k.encode()).hexdigest()[:10]}", k, v) for k, v in sorted(autoscaler_template_tags(args).items())]
        self.autoscaler_tags = [
            aws.autoscaling.Tag(
                f"{name}-{suffix}",
                autoscaling_group_name=asg_name,
                tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                opts=ctx.opts(self),
            )
            for suffix, key, value in tags
        ]
        self.register_outputs({"nodeGroupName": self.node_group.node_group_name})
