"""Every AWS-side version pin of the Pulumi program, in one place.

Changing a pin here is a reviewed change to every AWS stack that uses it, and
``gpufleet render`` shows the difference in each ``pulumi-preview.json``.

Where the figures come from:

* AMI types: the ``amiType`` values of the EKS ``CreateNodegroup`` API. The
  NVIDIA variant of Amazon Linux 2023 ships the NVIDIA driver, the container
  toolkit and the EFA driver, so on these nodes the GPU operator's own driver
  container must stay disabled.
* Managed add-on versions: the "latest version for each Kubernetes version"
  tables of the Amazon EKS User Guide (VPC CNI, CoreDNS, kube-proxy, EKS Pod
  Identity Agent). Refresh them with
  ``aws eks describe-addon-versions --kubernetes-version 1.33 --addon-name kube-proxy
  --query 'addons[].addonVersions[0].addonVersion'``.
  A Kubernetes version with no row here is refused with a message naming this
  file, rather than deployed with add-ons built for another version.
"""

from __future__ import annotations

from gpufleet.eks import KUBERNETES_VERSIONS  # noqa: F401 - the versions the rows below must cover

# --------------------------------------------------------------- node AMI types

# The fleet model holds them (gpufleet/eks.py), with the driver branch the GPU
# AMI carries (gpufleet/drivers.py): it checks that branch against the CUDA of
# the images that run on these nodes.
from gpufleet.eks import CPU_AMI_TYPE as AMI_TYPE_CPU  # noqa: E402
from gpufleet.eks import GPU_AMI_TYPE as AMI_TYPE_GPU  # noqa: E402

# Root volume device of the Amazon Linux 2023 EKS AMIs.
ROOT_DEVICE_NAME = "/dev/xvda"

# ----------------------------------------------------------- managed add-ons

# Installed before the node groups (nodes need a CNI and kube-proxy to become Ready).
ADDONS_BEFORE_NODES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
# Installed after the node groups (CoreDNS needs a node to run on).
ADDONS_AFTER_NODES = ("coredns",)

# One row per Kubernetes minor the fleet model accepts (gpufleet/eks.py's
# KUBERNETES_VERSIONS; tests/model/test_engine_facts.py checks they agree).
EKS_ADDON_VERSIONS: dict[str, dict[str, str]] = {
    "1.31": {
        "vpc-cni": "v1.19.2-eksbuild.5",
        "kube-proxy": "v1.31.7-eksbuild.7",
        "coredns": "v1.11.4-eksbuild.2",
        "eks-pod-identity-agent": "v1.3.4-eksbuild.1",
    },
    "1.32": {
        "vpc-cni": "v1.19.2-eksbuild.5",
        "kube-proxy": "v1.32.3-eksbuild.7",
        "coredns": "v1.11.4-eksbuild.2",
        "eks-pod-identity-agent": "v1.3.4-eksbuild.1",
    },
    "1.33": {
        "vpc-cni": "v1.19.6-eksbuild.7",
        "kube-proxy": "v1.33.0-eksbuild.2",
        "coredns": "v1.12.1-eksbuild.2",
        "eks-pod-identity-agent": "v1.3.8-eksbuild.2",
    },
}


def addon_versions(kubernetes_version: str) -> dict[str, str]:
    """The pinned managed add-on versions for a cluster's Kubernetes version."""
    try:
        return EKS_ADDON_VERSIONS[kubernetes_version]
    except KeyError:
        known = ", ".join(sorted(EKS_ADDON_VERSIONS))
        raise ValueError(
            f"no EKS add-on versions are pinned for Kubernetes {kubernetes_version} in cloud/versions.py "
            f"(pinned: {known}); add a row to EKS_ADDON_VERSIONS"
        ) from None
