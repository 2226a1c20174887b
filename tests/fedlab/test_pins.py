"""The federation lab builds what production pins (no lab needed)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from k8s import versions

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = Path(os.environ.get("GPUFLEET_UPSTREAM", ROOT.parent / "shared" / "upstream"))


def test_lab_kubernetes_is_the_fleet_version():
    roles = yaml.safe_load((ROOT / "roles/k8s_node/defaults/main.yml").read_text())
    cp = yaml.safe_load((ROOT / "roles/k8s_control_plane/defaults/main.yml").read_text())
    assert versions.FEDLAB_KUBERNETES_VERSION == "v" + roles["k8s_node_kubernetes_version"] == "v" + cp["k8s_control_plane_kubernetes_version"]
    fleet = yaml.safe_load((ROOT / "stacks/fleet.yaml").read_text())
    minors = {s["kubernetes_version"] for s in fleet["sites"] if "kubernetes_version" in s}
    assert minors == {".".join(versions.FEDLAB_KUBERNETES_VERSION.lstrip("v").split(".")[:2])}


def test_lab_controllers_are_the_chart_releases():
    m = versions.FEDLAB_GO_MODULES
    assert m["kueue"]["version"] == "v" + versions.KUEUE_VERSION == versions.KUEUE_IMAGE[1]
    assert m["trainer"]["version"] == "v" + versions.TRAINER_VERSION == versions.TRAINER_IMAGE[2]
    # JobSet: the release the Trainer chart installs as its dependency.
    assert (UPSTREAM / "charts" / f"jobset-{m['jobset']['version'].lstrip('v')}-values.yaml").exists()


def test_every_component_is_pinned_exactly():
    for name, spec in versions.FEDLAB_GO_MODULES.items():
        assert spec["version"].startswith("v") and "latest" not in spec["version"], name
        assert spec["binaries"], name
