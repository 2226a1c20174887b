"""What the fleet model knows about EKS: the Kubernetes versions gpufleet deploys.

``cloud/versions.py`` imports these (its managed add-on pins have one row per
version in :data:`KUBERNETES_VERSIONS`; ``tests/model/test_engine_facts.py``
checks that they agree), so the model refuses an unsupported version without
importing the cloud engine.
"""

from __future__ import annotations

# The Kubernetes minors cloud/versions.py pins managed add-on versions for.
KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33")
