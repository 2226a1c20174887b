"""What the monitoring builders need from the fleet model, and per-site context.

The builders only read a few attributes of the fleet model, described by the
protocols below, so any object with those attributes works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence


class SiteLike(Protocol):
    name: str
    kind: str  # "aws" or "datacenter"


class ModelLike(Protocol):
    name: str
    sites: Sequence[str]


class FleetLike(Protocol):
    name: str
    hub: str
    sites: Sequence[SiteLike]
    models: Sequence[ModelLike]


@dataclass(frozen=True)
class SiteContext:
    """One site's view of the fleet, plus the merged configuration."""

    fleet: str
    site: str
    kind: str
    hub: str
    sites: tuple[tuple[str, str], ...]  # (name, kind) of every site
    models: tuple[str, ...]  # models served at this site (the hub: every model)
    cfg: dict[str, Any]
    has_gpus: bool = True

    @property
    def is_hub(self) -> bool:
        return self.site == self.hub

    @property
    def release(self) -> str:
        return self.cfg["chart"]["release"]

    @property
    def namespace(self) -> str:
        return self.cfg["chart"]["namespace"]

    @property
    def cloud_sites(self) -> list[str]:
        return [name for name, kind in self.sites if kind == "aws"]

    def selector(self, target: str, *extra: str) -> str:
        """Label matchers (without braces) for one scrape target's series.

        On the hub, Prometheus also stores every site's remote-written series,
        which carry a `site` label; the hub's own series do not (external
        labels are only added on the way out). Rules on the hub therefore only
        look at series without a `site` label, so that each site's alerts and
        recorded costs are evaluated once, at that site.
        """
        matchers = [f'job="{self.cfg["targets"][target]["job"]}"', *extra]
        if self.is_hub:
            matchers.append('site=""')
        return ", ".join(matchers)


def site_context(fleet: FleetLike, site: SiteLike | str, cfg: dict[str, Any]) -> SiteContext:
    name = site if isinstance(site, str) else site.name
    by_name = {s.name: s for s in fleet.sites}
    if name not in by_name:
        raise ValueError(f"site {name!r} is not one of the fleet's sites: {sorted(by_name)}")
    if fleet.hub not in by_name:
        raise ValueError(f"hub {fleet.hub!r} is not one of the fleet's sites: {sorted(by_name)}")
    kind = by_name[name].kind
    # A site object that can list its accelerators says whether it has GPUs;
    # otherwise every site but the hub (a management cluster) is taken to.
    accelerators = getattr(by_name[name], "accelerators", None)
    has_gpus = bool(list(accelerators())) if callable(accelerators) else name != fleet.hub
    if kind not in ("aws", "datacenter"):
        raise ValueError(f"site {name!r} has unknown kind {kind!r}")
    return SiteContext(
        fleet=fleet.name,
        site=name,
        kind=kind,
        hub=fleet.hub,
        sites=tuple((s.name, s.kind) for s in fleet.sites),
        # The hub's dashboards show every site, so every model.
        models=tuple(m.name for m in fleet.models if name in m.sites or name == fleet.hub),
        cfg=cfg,
        has_gpus=has_gpus,
    )
