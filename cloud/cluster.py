"""The EKS control plane of one AWS site.

* API endpoint private by default: ``endpointAccess: private`` (the default)
  leaves only the endpoint inside the VPC, so ``pulumi up`` must run from a
  host that reaches the VPC (a runner inside it, a VPN or a transit gateway).
  ``public-and-private`` opens the public endpoint to ``publicAccessCidrs`` only.
* Authentication mode ``API``: access is granted by EKS access entries, not by
  the ``aws-auth`` ConfigMap. Each ``adminPrincipalArns`` entry gets an access
  entry with the cluster-admin access policy. The identity that runs
  ``pulumi up`` keeps the creator's admin entry, because the same run applies
  the fleet add-ons to the new cluster.
* Kubernetes secrets are envelope-encrypted with a customer-managed KMS key
  that rotates yearly.
* Control-plane logs go to a log group created beforehand, so its retention is
  ours rather than "never expire".
* cluster-autoscaler (:mod:`k8s.autoscaler`) gets AWS credentials through EKS
  Pod Identity: an IAM role that only the ServiceAccount
  ``kube-system/cluster-autoscaler`` of this cluster can assume (a pod
  identity association), with the permissions of cluster-autoscaler's
  "full features" policy (cloudprovider/aws/README.md at
  cluster-autoscaler-1.33.x). Changing a group's size or terminating its
  instances is allowed only on Auto Scaling groups tagged
  ``k8s.io/cluster-autoscaler/<this cluster>=owned`` (cloud/nodepools.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from cloud.context import StackContext
from gpufleet.schema import ClusterConfig

CLUSTER_ADMIN_POLICY = "arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
LOG_RETENTION_DAYS = 90
# The ServiceAccount k8s/autoscaler.py runs cluster-autoscaler as.
AUTOSCALER_NAMESPACE = "kube-system"
AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
AUTOSCALER_READ_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLaunchConfigurations",
    "autoscaling:DescribeScalingActivities",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:GetInstanceTypesFromInstanceRequirements",
    "eks:DescribeNodegroup",
)
AUTOSCALER_WRITE_ACTIONS = ("autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup")


def autoscaler_policy(cluster_name: str) -> str:
    """cluster-autoscaler's IAM policy; writes only to this cluster's tagged groups."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": list(AUTOSCALER_READ_ACTIONS), "Resource": "*"},
                {
                    "Effect": "Allow",
                    "Action": list(AUTOSCALER_WRITE_ACTIONS),
                    "Resource": "*",
                    "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}},
                },
            ],
        }
    )


@dataclass(frozen=True)
class ClusterArgs:
    name: str
    kubernetes_version: str
    endpoint_public: bool
    public_access_cidrs: tuple[str, ...]
    log_types: tuple[str, ...]
    admin_principal_arns: tuple[str, ...]

    @classmethod
    def from_config(cls, name: str, cfg: ClusterConfig) -> ClusterArgs:
        return cls(
            name=name,
            kubernetes_version=cfg.kubernetes_version,
            endpoint_public=cfg.endpoint_access == "public-and-private",
            public_access_cidrs=tuple(cfg.public_access_cidrs),
            log_types=tuple(cfg.log_types),
            admin_principal_arns=tuple(cfg.admin_principal_arns),
        )


def _assume_role_policy(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": ["sts:AssumeRole", "sts:TagSession"]}],
        }
    )


def kubeconfig(cluster_name: str, region: str, endpoint: str, ca_data: str) -> str:
    """A kubeconfig that authenticates with the caller's AWS credentials (``aws eks get-token``)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region, "--output", "json"],
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
        },
        indent=2,
    )


class Cluster(pulumi.ComponentResource):
    """EKS cluster, its IAM role, KMS key, log group and access entries."""

    eks: aws.eks.Cluster
    kubeconfig: pulumi.Output[str]
    security_group_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: ClusterArgs,
        subnet_ids: list[pulumi.Input[str]],
        ctx: StackContext,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("gpufleet:cloud:Cluster", name, None, opts)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=_assume_role_policy("eks.amazonaws.com"),
            description=f"EKS control plane of {args.name}",
            opts=ctx.opts(self),
        )
        attach = aws.iam.RolePolicyAttachment(
            f"{name}-role-cluster-policy",
            role=role.name,
            policy_arn=ctx.managed_policy("AmazonEKSClusterPolicy"),
            opts=ctx.opts(self),
        )
        key = aws.kms.Key(
            f"{name}-secrets",
            description=f"Envelope encryption of Kubernetes secrets in {args.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=ctx.opts(self),
        )
        aws.kms.Alias(f"{name}-secrets", name=f"alias/{args.name}-secrets", target_key_id=key.key_id, opts=ctx.opts(self))
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/eks/{args.name}/cluster",
            retention_in_days=LOG_RETENTION_DAYS,
            opts=ctx.opts(self),
        )

        self.eks = aws.eks.Cluster(
            f"{name}-eks",
            name=args.name,
            version=args.kubernetes_version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=args.endpoint_public,
                public_access_cidrs=list(args.public_access_cidrs) if args.endpoint_public else None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=True,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(args.log_types),
            # The managed add-ons (cloud/versions.py) replace the self-managed defaults.
            bootstrap_self_managed_addons=False,
            tags=ctx.tags(args.name),
            opts=ctx.opts(self, depends_on=[attach, log_group]),
        )

        for i, arn in enumerate(args.admin_principal_arns):
            entry = aws.eks.AccessEntry(
                f"{name}-admin-{i}",
                cluster_name=self.eks.name,
                principal_arn=arn,
                type="STANDARD",
                opts=ctx.opts(self),
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-admin-{i}",
                cluster_name=self.eks.name,
                principal_arn=arn,
                policy_arn=CLUSTER_ADMIN_POLICY.format(partition=ctx.partition),
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=ctx.opts(self, depends_on=[entry]),
            )

        # cluster-autoscaler's AWS identity (EKS Pod Identity; the agent is a managed add-on).
        self.autoscaler_role = aws.iam.Role(
            f"{name}-autoscaler",
            assume_role_policy=_assume_role_policy("pods.eks.amazonaws.com"),
            description=f"cluster-autoscaler of {args.name}",
            opts=ctx.opts(self),
        )
        aws.iam.RolePolicy(
            f"{name}-autoscaler",
            role=self.autoscaler_role.id,
            policy=autoscaler_policy(args.name),
            opts=ctx.opts(self),
        )
        self.autoscaler_identity = aws.eks.PodIdentityAssociation(
            f"{name}-autoscaler",
            cluster_name=self.eks.name,
            namespace=AUTOSCALER_NAMESPACE,
            service_account=AUTOSCALER_SERVICE_ACCOUNT,
            role_arn=self.autoscaler_role.arn,
            opts=ctx.opts(self),
        )

        self.security_group_id = self.eks.vpc_config.apply(lambda v: v.cluster_security_group_id)
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(self.eks.name, self.eks.endpoint, self.eks.certificate_authority.apply(lambda ca: ca.data)).apply(
                lambda a: kubeconfig(a[0], ctx.region, a[1], a[2])
            )
        )
        self.register_outputs({"name": self.eks.name, "endpoint": self.eks.endpoint})


class Addons(pulumi.ComponentResource):
    """EKS managed add-ons at the versions pinned in cloud/versions.py."""

    def __init__(
        self,
        name: str,
        cluster_name: pulumi.Input[str],
        versions: dict[str, str],
        addon_names: tuple[str, ...],
        ctx: StackContext,
        depends_on: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("gpufleet:cloud:Addons", name, None, opts)
        self.addons = [
            aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=cluster_name,
                addon_name=addon,
                addon_version=versions[addon],
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="PRESERVE",
                opts=ctx.opts(self, depends_on=list(depends_on or [])),
            )
            for addon in addon_names
        ]
        self.register_outputs({})
