"""The fleet's Kubernetes add-ons, built once per site for Pulumi and for ``gpufleet render``.

``site_bundles(fleet, site_name)`` returns the site's add-on bundles, in the
order they are listed for review:

* ``policy``: namespaces (Pod Security labels), training NetworkPolicies and
  the data-residency admission policy (:mod:`k8s.policy`);
* ``gpu-operator``: where the site has GPUs (:mod:`k8s.gpu_operator`);
* ``kueue``: the chart and the site's queues (:mod:`k8s.kueue`);
* ``multikueue``: at the hub, the federated queues (:mod:`k8s.multikueue`);
* ``trainer``: Kubeflow Trainer and the site's runtime (:mod:`k8s.trainer`);
* ``dispatcher``: at the hub, the on-prem-first MultiKueue dispatcher; at the
  workers, the read-only account it reads them with (:mod:`k8s.dispatcher`);
* ``autoscaler``: cluster-autoscaler at AWS sites (:mod:`k8s.autoscaler`);
* ``efa``: the EFA device plugin at AWS sites with EFA pools (:mod:`k8s.efa`);
* then the bundles of the other add-on packages, when present:
  ``k8s.monitoring.build(fleet, site)`` and ``k8s.serving.build(fleet, site)``
  (each may return a bundle, a list of bundles or None).

``k8s.deploy.deploy_bundles(bundles, provider)`` applies them to a cluster.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from gpufleet.errors import FleetError, Problem
from gpufleet.model.dispatch import DispatchError
from k8s.core import AddonBundle, Chart

__all__ = ["AddonBundle", "Chart", "OPTIONAL_ADDONS", "BundleError", "site_bundles"]

# Add-on packages built by their own modules; each is used when it exists.
OPTIONAL_ADDONS = ("k8s.monitoring", "k8s.serving")


class BundleError(FleetError, ValueError):
    """The fleet cannot be turned into a site's add-ons.

    A :class:`~gpufleet.errors.FleetError`, so the command line prints it as
    one ``where: what`` line instead of a traceback.
    """

    def __init__(self, message: str):
        where, sep, what = message.partition(": ")
        super().__init__([Problem("k8s add-ons", where, what) if sep else Problem("k8s add-ons", "", message)])
        self.message = message


def _optional_builder(module: str):
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ModuleNotFoundError:
        return None
    return getattr(importlib.import_module(module), "build", None)


def _as_list(result: Any, where: str) -> list[AddonBundle]:
    if result is None:
        return []
    items = result if isinstance(result, (list, tuple)) else [result]
    for item in items:
        if not isinstance(item, AddonBundle):
            raise BundleError(f"{where}: returned {type(item).__name__}, not an AddonBundle")
    return list(items)


def site_bundles(fleet, site_name: str) -> list[AddonBundle]:
    """Every add-on bundle for ``site_name``."""
    from k8s import autoscaler, dispatcher, efa, gpu_operator, kueue, multikueue, policy, trainer

    try:
        site = fleet.site(site_name)
    except KeyError:
        known = ", ".join(s.name for s in fleet.sites)
        raise BundleError(f"site '{site_name}': not in the fleet (sites: {known})") from None
    try:
        bundles = [policy.build(fleet, site)]
        bundles += _as_list(gpu_operator.build(fleet, site), "k8s.gpu_operator.build")
        bundles.append(kueue.build(fleet, site))
        if site.name == fleet.hub:
            bundles.append(multikueue.build(fleet))
        bundles.append(trainer.build(fleet, site))
        for build in (dispatcher.build, autoscaler.build, efa.build):
            bundles += _as_list(build(fleet, site), f"{build.__module__}.build")
    except (DispatchError, kueue.KueueError, gpu_operator.GpuOperatorError, policy.PolicyError) as exc:
        raise BundleError(str(exc)) from None
    for module in OPTIONAL_ADDONS:
        build = _optional_builder(module)
        if build is not None:
            bundles += _as_list(build(fleet, site), f"{module}.build")
    names = [b.name for b in bundles]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BundleError(f"site '{site_name}': two add-ons are both named {', '.join(dupes)}")
    return bundles
