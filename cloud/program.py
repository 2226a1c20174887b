"""The Pulumi program of one site's stack (``pulumi up -s <site>``).

* An ``aws`` site: one ``aws.Provider`` for its region, then :class:`Network`,
  :class:`Cluster`, the managed add-ons and one :class:`NodePool` per pool of
  ``stacks/Pulumi.<site>.yaml``. Outputs: ``clusterName``, ``endpoint``,
  ``kubeconfig`` (secret), ``nodePoolNames``, ``region`` and ``vpcId``.
* A ``datacenter`` site: no AWS resources at all. Its cluster is built by the
  Ansible roles; the stack only applies the fleet add-ons to it, through the
  kubeconfig stored as a secret in the stack config
  (``pulumi config set --secret gpufleet:kubeconfig -s <site> < kubeconfig``).

In both cases the fleet's Kubernetes add-ons (``k8s.site_bundles``) are applied
through a ``kubernetes.Provider`` for that site's cluster, when the ``k8s``
package provides them.
"""

from __future__ import annotations


import importlib
import importlib.util
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi
import pulumi_kubernetes as k8s_provider

from cloud import versions
from cloud.cluster import Addons, Cluster, ClusterArgs
from cloud.context import StackContext
from cloud.network import Network, NetworkArgs
from cloud.nodepools import NodePool, NodePoolArgs, NodeRole
from gpufleet import facts
from gpufleet.model import Fleet, Site

KUBECONFIG_KEY = "kubeconfig"


class ProgramError(Exception):
    """A problem with the stack's inputs, as one ``where: what`` line."""


@dataclass
class SiteResult:
    site: str
    kubernetes_provider: k8s_provider.Provider
    addon_resources: list[pulumi.Resource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)


def time_slicing_labels(fleet: Fleet, site: Site) -> dict[str, dict[str, str]]:
    """Accelerator -> the device-plugin config label its GPU pools carry, where a
    model served at this site shares GPUs by time-slicing (the GPU operator
    add-on publishes the matching configuration; the label is a shared fact,
    gpufleet.facts)."""
    return facts.device_plugin_node_labels(fleet, site)


def cluster_name(fleet: Fleet, site: Site) -> str:
    return f"{fleet.name}-{site.name}"


def build_site(fleet: Fleet, site_name: str, export: bool = True, addons: bool = True) -> SiteResult:
    """Declare every resource of ``site_name``'s stack; export its outputs when ``export``.

    ``addons=False`` leaves out the fleet's Kubernetes add-ons (the cluster and
    its provider only), for tests of the infrastructure alone.
    """
    try:
        site = fleet.site(site_name)
    except KeyError:
        names = ", ".join(s.name for s in fleet.sites)
        raise ProgramError(f"stack '{site_name}': no site of that name in the fleet (sites: {names})") from None
    result = _aws_site(fleet, site, addons) if site.is_aws else _datacenter_site(fleet, site, addons)
    if export:
        for key, value in result.outputs.items():
            pulumi.export(key, value)
    return result


def _aws_site(fleet: Fleet, site: Site, addons: bool) -> SiteResult:
    cfg = site.aws
    assert cfg is not None and site.region
    ctx = StackContext(fleet=fleet.name, site=site.name, region=site.region)
    ctx.create_provider()
    name = cluster_name(fleet, site)
    try:
        addon_versions = versions.addon_versions(cfg.cluster.kubernetes_version)
    except ValueError as exc:
        raise ProgramError(f"{site.stack_file}: config.gpufleet:cluster.kubernetesVersion: {exc}") from None
    if cfg.cluster.endpoint_access == "public-and-private" and not cfg.cluster.public_access_cidrs:
        raise ProgramError(
            f"{site.stack_file}: config.gpufleet:cluster.publicAccessCidrs: required with endpointAccess public-and-private "
            "(without it EKS opens the public endpoint to 0.0.0.0/0); list your office or VPN ranges"
        )
    pools = []
    sharing = time_slicing_labels(fleet, site)
    for i, pool in enumerate(cfg.node_pools):
        try:
            args = NodePoolArgs.from_config(pool, site.name, name, list(cfg.network.availability_zones))
        except ValueError as exc:
            raise ProgramError(f"{site.stack_file}: config.gpufleet:nodePools[{i}].{exc}") from None
        if args.accelerator in sharing:
            args = replace(args, labels={**args.labels, **sharing[args.accelerator]})
        pools.append(args)
    try:
        network = Network(site.name, NetworkArgs.from_config(cfg.network), ctx)
    except ValueError as exc:
        raise ProgramError(f"{site.stack_file}: config.gpufleet:network: {exc}") from None

    private_subnets = [network.private_subnet_ids[z] for z in cfg.network.availability_zones]
    cluster = Cluster(site.name, ClusterArgs.from_config(name, cfg.cluster), private_subnets, ctx)
    base = Addons(f"{site.name}-base", cluster.eks.name, addon_versions, versions.ADDONS_BEFORE_NODES, ctx, depends_on=[cluster.eks])
    role = NodeRole(f"{site.name}-nodes", ctx)
    node_pools = [
        NodePool(
            f"{site.name}-{p.name}",
            p,
            cluster_name=cluster.eks.name,
            cluster_security_group_id=cluster.security_group_id,
            node_role=role,
            subnet_ids=network.private_subnet_ids,
            vpc_id=network.vpc.id,
            ctx=ctx,
            depends_on=base.addons,
        )
        for p in pools
    ]
    node_groups = [np.node_group for np in node_pools]
    late = Addons(f"{site.name}-dns", cluster.eks.name, addon_versions, versions.ADDONS_AFTER_NODES, ctx, depends_on=node_groups)

    provider = k8s_provider.Provider(
        f"k8s-{site.name}",
        kubeconfig=cluster.kubeconfig,
        # Add-ons go on once the nodes and cluster DNS are up.
        opts=pulumi.ResourceOptions(depends_on=[*node_groups, *late.addons]),
    )
    result = SiteResult(site.name, provider)
    result.addon_resources = deploy_addons(fleet, site.name, provider) if addons else []
    result.outputs = {
        "site": site.name,
        "region": site.region,
        "clusterName": cluster.eks.name,
        "endpoint": cluster.eks.endpoint,
        "kubeconfig": cluster.kubeconfig,
        # For add-ons that would otherwise ask the instance metadata service (blocked to pods, see cloud/nodepools.py).
        "vpcId": network.vpc.id,
        "nodePoolNames": pulumi.Output.all(*[ng.node_group_name for ng in node_groups]),
    }
    return result


def _datacenter_site(fleet: Fleet, site: Site, addons: bool) -> SiteResult:
    kubeconfig = pulumi.Config("gpufleet").get_secret(KUBECONFIG_KEY)
    if kubeconfig is None:
        raise ProgramError(
            f"{site.stack_file}: config.gpufleet:{KUBECONFIG_KEY}: not set; the data centre's cluster is reached through it. "
            f"Run: pulumi config set --secret gpufleet:{KUBECONFIG_KEY} -s {site.name} < kubeconfig-{site.name}.yaml"
        )
    provider = k8s_provider.Provider(f"k8s-{site.name}", kubeconfig=kubeconfig)
    result = SiteResult(site.name, provider)
    result.addon_resources = deploy_addons(fleet, site.name, provider) if addons else []
    result.outputs = {"site": site.name}
    return result


def deploy_addons(fleet: Fleet, site_name: str, provider: k8s_provider.Provider) -> list[pulumi.Resource]:
    """Apply the fleet's add-on bundles for ``site_name`` through ``provider``, when ``k8s`` provides them."""
    if importlib.util.find_spec("k8s") is None:
        return []
    site_bundles = getattr(importlib.import_module("k8s"), "site_bundles", None)
    if site_bundles is None or importlib.util.find_spec("k8s.deploy") is None:
        return []
    deploy_bundles = getattr(importlib.import_module("k8s.deploy"), "deploy_bundles", None)
    if deploy_bundles is None:
        return []
    return list(deploy_bundles(site_bundles(fleet, site_name), provider, parent=None))
