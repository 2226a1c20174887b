"""Every key a Helm release sets exists in that chart's own values.yaml.

Helm ignores a key its chart does not read, so a misspelt or stale key is a
setting that silently never happens. For each site the test renders the
example (``gpufleet render``), reads ``sites/<site>/k8s/helm-releases.yaml``
and walks every key of every release's values against the pinned chart's
values.yaml in ``$GPUFLEET_UPSTREAM/charts`` (nested keys; a sub-chart's keys
against the sub-chart's own values.yaml). Below a key the chart declares as an
empty map (``{}``), anything goes: those are free-form maps, and the test
reports which ones the releases use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.core import deep_merge

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = Path(os.environ.get("GPUFLEET_UPSTREAM") or REPO.parent / "shared" / "upstream")

# Sub-charts: (chart, key in its parent's values) -> the sub-chart's values file,
# or None where the sub-chart's values.yaml is not among the upstream files.
SUBCHARTS: dict[tuple[str, str], str | None] = {
    ("gpu-operator", "node-feature-discovery"): "node-feature-discovery-0.19.0",
    ("kubeflow-trainer", "jobset"): "jobset-0.12.0",
    ("kube-prometheus-stack", "grafana"): "grafana-12.11.1",
    # kube-prometheus-stack 88.5.3's Chart.yaml: kube-state-metrics 8.4.0, whose
    # values.yaml is not in $GPUFLEET_UPSTREAM/charts; its `image` keys
    # (registry, repository, tag, sha) are those of the 8.4.0 chart.
    ("kube-prometheus-stack", "kube-state-metrics"): None,
}

# Keys the chart's templates read that its values.yaml does not declare, with where they are read.
TEMPLATE_ONLY = {
    ("gpu-operator", "dcgmExporter.config"): "NVIDIA/gpu-operator v26.7.0 deployments/gpu-operator/templates/clusterpolicy.yaml: "
                                            "`if and (.Values.dcgmExporter.config) (.Values.dcgmExporter.config.name)`",
}

# Free-form maps the releases are expected to fill (the chart declares `{}`).
FREE_FORM = {
    ("gpu-operator", "migManager.config.data"): "the mig-parted ConfigMap's files",
    ("gpu-operator", "devicePlugin.config.data"): "the device plugin's named configurations",
    ("kube-prometheus-stack", "prometheus.prometheusSpec.externalLabels"): "labels added to every series leaving the site",
    ("kube-prometheus-stack", "prometheus.prometheusSpec.storageSpec"): "a prometheus-operator StorageSpec, checked against its CRD",
    ("kube-prometheus-stack", "prometheus.ingress.annotations"): "the ingress controller's annotations",
}


def values_file(chart: str, version: str) -> Path:
    return UPSTREAM / "charts" / f"{chart}-{version}-values.yaml"


def _block(lines: list[str], path: list[str]) -> list[str] | None:
    """The lines of values.yaml under the mapping at ``path`` (found by indentation)."""
    start, end, indent = 0, len(lines), 0
    for seg in path:
        # The block's own keys sit at the indentation of its first key.
        first = next((lines[j] for j in range(start, end) if lines[j].strip() and not lines[j].lstrip().startswith("#")), None)
        if first is None:
            return None
        indent = len(first) - len(first.lstrip())
        for i in range(start, end):
            if re.match(rf"^ {{{indent}}}{re.escape(seg)}:", lines[i]):
                start = i + 1
                end = next((j for j in range(start, end) if lines[j].strip() and not lines[j].lstrip().startswith("#")
                            and len(lines[j]) - len(lines[j].lstrip()) <= indent), end)
                break
        else:
            return None
    return lines[start:end]


def documented(text: str, path: str, key: str) -> bool:
    """True when values.yaml documents ``key`` under ``path`` as a commented-out default (``# key: ...``)."""
    block = _block(text.splitlines(), path.split(".") if path else [])
    return block is not None and any(re.match(rf"^\s*#\s*{re.escape(key)}\s*:", line) for line in block)


def walk(ours: Any, theirs: Any, path: str, chart: str, problems: list[str], free: set[str], text: str = "") -> None:
    if not isinstance(ours, dict):
        return
    for key, value in ours.items():
        here = f"{path}.{key}" if path else str(key)
        if not isinstance(theirs, dict) or key not in theirs:
            if (chart.split(" ")[0], here) in TEMPLATE_ONLY or (text and documented(text, path, str(key))):
                continue
            problems.append(f"{chart}: {here}: no such key in the chart's values.yaml")
            continue
        default = theirs[key]
        if isinstance(default, dict) and not default:
            free.add(here)  # a free-form map: its keys are ours to choose
            continue
        if isinstance(value, dict):
            if default is None:
                continue  # declared without a default (`key:`): a map the chart reads as given
            if not isinstance(default, dict):
                problems.append(f"{chart}: {here}: a map where the chart has {type(default).__name__} {default!r}")
                continue
            walk(value, default, here, chart, problems, free, text)


@pytest.fixture(scope="module")
def releases(fleet, tmp_path_factory) -> dict[str, list[dict]]:
    from gpufleet.render import render

    out = tmp_path_factory.mktemp("render") / "out"
    render(fleet, out)
    found = {}
    for path in sorted((out / "sites").glob("*/k8s/helm-releases.yaml")):
        found[path.parts[-3]] = yaml.safe_load(path.read_text())["releases"]
    assert set(found) == {s.name for s in fleet.sites}
    return found


def test_every_key_a_release_sets_exists_in_its_charts_values(releases):
    problems: list[str] = []
    free: set[tuple[str, str]] = set()
    unchecked: set[tuple[str, str]] = set()
    for site, rels in releases.items():
        for rel in rels:
            chart, values = rel["chart"], dict(rel["values"])
            path = values_file(chart, rel["version"])
            assert path.exists(), f"{site}: {rel['release']}: no upstream values.yaml for {chart} {rel['version']} ({path})"
            upstream = yaml.safe_load(path.read_text())
            for (parent, key), sub in SUBCHARTS.items():
                if parent != chart or key not in values:
                    continue
                sub_values = values.pop(key)
                own = upstream.get(key) if isinstance(upstream.get(key), dict) else {}
                if sub is None:
                    unchecked.add((chart, key))
                    continue
                sub_text = values_file(*sub.rsplit("-", 1)).read_text()
                # A sub-chart's section may also hold the parent's own settings for it (install, ...).
                merged = deep_merge(yaml.safe_load(sub_text), own)
                seen: set[str] = set()
                walk(sub_values, merged, "", f"{chart} ({sub}) {key}", problems, seen, sub_text)
                free |= {(chart, f"{key}.{p}") for p in seen}
            seen = set()
            walk(values, upstream, "", chart, problems, seen, path.read_text())
            free |= {(chart, p) for p in seen}
    assert not problems, f"{len(problems)} keys no chart reads:\n" + "\n".join(sorted(set(problems)))
    assert free <= set(FREE_FORM), f"free-form maps not reviewed: {sorted(free - set(FREE_FORM))}"
    assert unchecked <= {k for k, v in SUBCHARTS.items() if v is None}


def test_a_misspelt_key_is_caught():
    upstream = yaml.safe_load(values_file("kueue", "0.19.2").read_text())
    problems: list[str] = []
    walk({"controllerManager": {"manager": {"imag": {"tag": "x"}}}}, upstream, "", "kueue", problems, set())
    assert problems == ["kueue: controllerManager.manager.imag: no such key in the chart's values.yaml"]
