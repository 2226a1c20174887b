"""The VPC of one AWS site: private subnets for nodes, public subnets for load balancers only.

Layout (for a /16 and three zones)::

    10.40.0.0/16
      private  10.40.0.0/19, 10.40.32.0/19, 10.40.64.0/19     nodes and pods (VPC CNI), internal LBs
      public   10.40.224.0/22, 10.40.228.0/22, 10.40.232.0/22  NAT gateways and internet-facing LBs

The VPC is cut into eighths: one eighth per zone for private subnets (up to six
zones), and the last eighth into small public subnets. Pods take their IPs from
the private subnets, so those get almost all of the space. Nodes never get a
public IP; they reach the internet through a NAT gateway, one per zone by
default (a zone outage does not cut the others off) or a single one
(``natGateways: single``, cheaper, for test sites).

Subnet tags tell the AWS Load Balancer Controller where load balancers may go:
``kubernetes.io/role/elb`` on public subnets, ``kubernetes.io/role/internal-elb``
on private ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from cloud.context import StackContext
from gpufleet.schema import NetworkConfig


@dataclass(frozen=True)
class SubnetPlan:
    zone: str
    private_cidr: str
    public_cidr: str


def plan_subnets(vpc_cidr: str, zones: list[str]) -> list[SubnetPlan]:
    """Private and public subnet CIDRs per availability zone (pure; see the module doc)."""
    vpc = ipaddress.IPv4Network(vpc_cidr)
    if len(zones) > 6:
        raise ValueError(f"at most 6 availability zones fit the subnet layout, got {len(zones)}")
    if vpc.prefixlen > 22:
        raise ValueError(f"{vpc_cidr} is too small for private and public subnets in every zone; use a /22 or larger")
    eighths = list(vpc.subnets(prefixlen_diff=3))
    public = list(eighths[-1].subnets(prefixlen_diff=3))
    return [SubnetPlan(zone, str(eighths[i]), str(public[i])) for i, zone in enumerate(zones)]


@dataclass(frozen=True)
class NetworkArgs:
    vpc_cidr: str
    availability_zones: tuple[str, ...]
    nat_gateways: str = "one-per-az"  # or "single"

    @classmethod
    def from_config(cls, cfg: NetworkConfig) -> NetworkArgs:
        return cls(cfg.vpc_cidr, tuple(cfg.availability_zones), cfg.nat_gateways)


class Network(pulumi.ComponentResource):
    """VPC, subnets, internet and NAT gateways, route tables."""

    vpc: aws.ec2.Vpc
    private_subnet_ids: dict[str, pulumi.Output[str]]  # zone -> subnet id
    public_subnet_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: NetworkArgs, ctx: StackContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:cloud:Network", name, None, opts)
        plan = plan_subnets(args.vpc_cidr, list(args.availability_zones))
        p = ctx.prefix

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,  # the private API endpoint resolves through the VPC's DNS
            tags=ctx.tags(f"{p}-vpc"),
            opts=ctx.opts(self),
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=ctx.tags(f"{p}-igw"), opts=ctx.opts(self))

        public_rt = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=ctx.tags(f"{p}-public"),
            opts=ctx.opts(self),
        )

        self.private_subnet_ids = {}
        self.public_subnet_ids = {}
        nat_ids: dict[str, pulumi.Output[str]] = {}
        for i, sp in enumerate(plan):
            z = sp.zone
            public = aws.ec2.Subnet(
                f"{name}-public-{z}",
                vpc_id=self.vpc.id,
                cidr_block=sp.public_cidr,
                availability_zone=z,
                map_public_ip_on_launch=False,  # only load balancers and NAT gateways live here
                tags=ctx.tags(f"{p}-public-{z}", **{"kubernetes.io/role/elb": "1", "gpufleet:subnet": "public"}),
                opts=ctx.opts(self),
            )
            aws.ec2.RouteTableAssociation(f"{name}-public-{z}", subnet_id=public.id, route_table_id=public_rt.id, opts=ctx.opts(self))
            self.public_subnet_ids[z] = public.id

            if args.nat_gateways == "one-per-az" or i == 0:
                eip = aws.ec2.Eip(f"{name}-nat-{z}", domain="vpc", tags=ctx.tags(f"{p}-nat-{z}"), opts=ctx.opts(self))
                nat = aws.ec2.NatGateway(
                    f"{name}-nat-{z}",
                    allocation_id=eip.id,
                    subnet_id=public.id,
                    tags=ctx.tags(f"{p}-nat-{z}"),
                    opts=ctx.opts(self, depends_on=[igw]),
                )
                nat_ids[z] = nat.id
            nat_id = nat_ids.get(z, nat_ids[plan[0].zone])

            private = aws.ec2.Subnet(
                f"{name}-private-{z}",
                vpc_id=self.vpc.id,
                cidr_block=sp.private_cidr,
                availability_zone=z,
                map_public_ip_on_launch=False,
                tags=ctx.tags(f"{p}-private-{z}", **{"kubernetes.io/role/internal-elb": "1", "gpufleet:subnet": "private"}),
                opts=ctx.opts(self),
            )
            rt = aws.ec2.RouteTable(
                f"{name}-private-{z}",
                vpc_id=self.vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat_id)],
                tags=ctx.tags(f"{p}-private-{z}"),
                opts=ctx.opts(self),
            )
            aws.ec2.RouteTableAssociation(f"{name}-private-{z}", subnet_id=private.id, route_table_id=rt.id, opts=ctx.opts(self))
            self.private_subnet_ids[z] = private.id

        self.register_outputs({"vpcId": self.vpc.id, "privateSubnetIds": list(self.private_subnet_ids.values())})
