"""What every component of one AWS stack shares: its region's provider and tags.

A stack manages exactly one region through one explicit ``aws.Provider``; no
resource ever falls back to Pulumi's default provider (which would read
``aws:region`` from wherever the program happens to run). The provider carries
the fleet's tags as ``defaultTags``, so every taggable resource gets them;
:meth:`StackContext.tags` is for the places default tags do not reach
(instances, volumes and network interfaces started by an Auto Scaling group).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

TAG_FLEET = "gpufleet:fleet"
TAG_SITE = "gpufleet:site"
TAG_MANAGED_BY = "gpufleet:managed-by"


def partition_of(region: str) -> str:
    """The AWS partition a region belongs to (for ARNs of AWS-managed policies)."""
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws"


@dataclass
class StackContext:
    fleet: str
    site: str
    region: str
    provider: aws.Provider | None = field(default=None, repr=False)

    @property
    def base_tags(self) -> dict[str, str]:
        return {TAG_FLEET: self.fleet, TAG_SITE: self.site, TAG_MANAGED_BY: "pulumi"}

    @property
    def partition(self) -> str:
        return partition_of(self.region)

    @property
    def prefix(self) -> str:
        """Prefix of physical names: unique per fleet and site within an account."""
        return f"{self.fleet}-{self.site}"

    def managed_policy(self, name: str) -> str:
        return f"arn:{self.partition}:iam::aws:policy/{name}"

    def tags(self, name: str | None = None, **extra: str) -> dict[str, str]:
        out = dict(self.base_tags)
        if name:
            out["Name"] = name
        out.update(extra)
        return out

    def create_provider(self, parent: pulumi.Resource | None = None) -> aws.Provider:
        self.provider = aws.Provider(
            f"aws-{self.region}",
            region=self.region,
            default_tags=aws.ProviderDefaultTagsArgs(tags=self.base_tags),
            opts=pulumi.ResourceOptions(parent=parent),
        )
        return self.provider

    def opts(self, parent: pulumi.Resource, **kwargs) -> pulumi.ResourceOptions:
        """Options for an AWS resource: always this stack's provider."""
        if self.provider is None:
            raise RuntimeError("the stack's aws.Provider must be created before any AWS resource")
        return pulumi.ResourceOptions(parent=parent, provider=self.provider, **kwargs)
