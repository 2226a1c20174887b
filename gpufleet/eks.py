"""What the fleet model knows about EKS: the Kubernetes versions gpufleet deploys, and the node AMI types.

``cloud/versions.py`` imports these (its managed add-on pins have one row per
version in :data:`KUBERNETES_VERSIONS`; ``tests/model/test_engine_facts.py``
checks that they agree), so the model refuses an unsupported version without
importing the cloud engine.
"""

from __future__ import annotations

# The Kubernetes minors cloud/versions.py pins managed add-on versions for.
KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33")

# Node AMI types: the amiType values of the EKS CreateNodegroup API. The NVIDIA
# variant of Amazon Linux 2023 ships the NVIDIA driver (its branch is in
# gpufleet/drivers.py), the container toolkit and the EFA driver, so on these
# nodes the GPU operator's own driver container must stay disabled.
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
CPU_AMI_TYPE = "AL2023_x86_64_STANDARD"
