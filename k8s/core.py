"""What every add-on builder returns, and what both engines consume.

An add-on is built once, as plain Kubernetes objects (dicts) plus pinned Helm
charts with their values. The Pulumi program applies a bundle to a site's
cluster through that site's provider; ``gpufleet render`` writes the same bundle
to ``DIR/sites/<site>/k8s/`` for GitOps review.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chart:
    """A Helm chart pinned by exact version, with the values gpufleet sets."""

    release: str
    chart: str
    repository: str
    version: str
    namespace: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class AddonBundle:
    """One add-on for one site: its objects, its charts and extra files.

    ``files`` holds non-Kubernetes artefacts that belong with the add-on in
    review (for example promtool unit tests), keyed by file name.
    """

    name: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``extra`` merged in key by key (dicts recursively),
    for add-on configuration blocks that a fleet overrides in part."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
