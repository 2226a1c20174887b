"""Facts the model keeps for the engines agree with the engines' own pins.

The model refuses what an engine cannot deploy without importing the engine;
these tests (which may import anything) fail when the two drift apart.
"""

from __future__ import annotations

from gpufleet import eks


def test_eks_versions_are_the_rows_of_the_add_on_pins():
    from cloud import versions

    assert set(versions.EKS_ADDON_VERSIONS) == set(eks.KUBERNETES_VERSIONS)
    assert versions.KUBERNETES_VERSIONS is eks.KUBERNETES_VERSIONS  # imported, not copied
