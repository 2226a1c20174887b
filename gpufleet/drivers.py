"""NVIDIA data-centre driver branches, the CUDA they run, and the images that need it.

:data:`BRANCHES` is NVIDIA's support matrix ("Supported Drivers and CUDA Toolkit
Versions" of the NVIDIA Data Center Drivers documentation): each branch's
designation, the newest CUDA major it runs without the CUDA forward
compatibility package, and its end of life. The editions read:

* docs.nvidia.com/datacenter/tesla/drivers/supported-drivers-and-cuda-toolkit-versions.html
  (edition of August 2025): R535 LTSB, end of life June 2026, CUDA 12; R570 PB,
  February 2026, CUDA 12; R580 LTSB, CUDA 13; "All other previous driver
  branches not listed [...] (such as R575, R565, R560, R550, ...) are end of life."
* .../drivers/615/supported-drivers-and-cuda-toolkit-versions.html: R535 LTSB
  June 2026 CUDA 12; R580 LTSB June 2028 CUDA 13; R595 PB March 2027 CUDA 13;
  R610 NFB August 2026 CUDA 13.
* .../drivers/620/supported-drivers-and-cuda-toolkit-versions.html: R580 LTSB
  June 2028; R595 PB March 2027; R620 LTSB September 2029; all CUDA 13.

An end of life NVIDIA gives as a month is taken as that month's last day. R550
and R575 carry no date in these editions, only "end of life" by August 2025:
that is the date used. R575's CUDA is 12 (its driver is the one CUDA 12.9
ships with); R550's is 12.

:data:`AMI_DRIVER_BRANCH` is the branch the EKS-optimised accelerated AMIs
carry: the AL2023 NVIDIA AMIs moved to the 580 driver for every supported
Kubernetes version in the releases of October and November 2025
(awslabs/amazon-eks-ami, issue 2470 "Containerd2.1 and Nvidia 580 Upgrade
Timeline"; pull requests 2484 for 1.33, 2496 for 1.32, 2503 for 1.31, 2509 for
1.29 and 1.30).

:data:`GPU_IMAGE_CUDA` is the CUDA major of each GPU workload image that
``k8s/versions.py`` pins (it exports the images under the same names):

* vLLM ``vllm/vllm-openai``: CUDA 13 is the default build from v0.20.0 on; the
  unsuffixed tags are the CUDA 13 images (``-cu129`` tags carry CUDA 12.9).
  Sources: vllm-project/vllm issue 42738 ("After v0.20.0, default wheel/docker
  nightly version is cu130") and ai-dynamo/nixl pull request 2140.
* PyTorch ``pytorch/pytorch:<version>-cuda13.0-...``: the CUDA in the tag.

The fleet model refuses a site whose driver branch cannot run an image that
runs there, and warns when a branch is within :data:`EOL_WARNING_DAYS` of its
end of life (:mod:`gpufleet.model.checks`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

EOL_WARNING_DAYS = 183  # six months
DEFAULT_BRANCH = "580"


def _month_end(year: int, month: int) -> dt.date:
    return dt.date(year, month, calendar.monthrange(year, month)[1])


@dataclass(frozen=True)
class Branch:
    name: str  # "580": the number NVIDIA's packages carry (cuda-drivers-580, nvidia-driver-580)
    designation: str  # "long-term support", "production", "new feature"
    cuda_major: int  # newest CUDA major it runs without the forward-compatibility package
    end_of_life: dt.date
    source: str

    @property
    def label(self) -> str:
        return f"R{self.name}"


_V580 = "NVIDIA Data Center Drivers, Supported Drivers and CUDA Toolkit Versions (edition of August 2025)"
_V615 = "NVIDIA Data Center Drivers 615, Supported Drivers and CUDA Toolkit Versions"
_V620 = "NVIDIA Data Center Drivers 620, Supported Drivers and CUDA Toolkit Versions"
_AUG_2025 = dt.date(2025, 8, 4)  # that edition's date; R550 and R575 were end of life by then

BRANCHES: dict[str, Branch] = {
    b.name: b
    for b in (
        Branch("535", "long-term support", 12, _month_end(2026, 6), f"{_V580}; {_V615}"),
        Branch("550", "production", 12, _AUG_2025, f"{_V580} (listed as end of life)"),
        Branch("570", "production", 12, _month_end(2026, 2), _V580),
        Branch("575", "new feature", 12, _AUG_2025, f"{_V580} (listed as end of life)"),
        Branch("580", "long-term support", 13, _month_end(2028, 6), f"{_V615}; {_V620}"),
        Branch("595", "production", 13, _month_end(2027, 3), f"{_V615}; {_V620}"),
        Branch("610", "new feature", 13, _month_end(2026, 8), _V615),
        Branch("620", "long-term support", 13, _month_end(2029, 9), _V620),
    )
}

# EKS node AMI type (cloud/versions.py's AMI_TYPE_GPU) -> the driver branch it carries.
AMI_DRIVER_BRANCH = {"AL2023_x86_64_NVIDIA": "580", "AL2023_ARM_64_NVIDIA": "580"}

# The GPU workload images, by the name k8s/versions.py pins them under, and their CUDA major.
GPU_IMAGE_CUDA = {"VLLM_IMAGE": 13, "PYTORCH_IMAGE": 13}
_CUDA_TAG = re.compile(r"cuda(\d+)\.\d+")


def branch_name(value: str | int) -> str:
    """``"R580"``, ``"r580"``, ``"580"`` or ``580`` -> ``"580"``."""
    return str(value).strip().upper().removeprefix("R")


def image_cuda(name: str, image: str) -> int:
    """The CUDA major of a pinned GPU image; a tag that names its CUDA must agree with the table."""
    major = GPU_IMAGE_CUDA[name]
    m = _CUDA_TAG.search(image)
    if m and int(m.group(1)) != major:
        raise ValueError(f"{name} {image} names CUDA {m.group(1)}, but gpufleet/drivers.py says CUDA {major}")
    return major


def days_to_end_of_life(branch: Branch, today: dt.date) -> int:
    return (branch.end_of_life - today).days
