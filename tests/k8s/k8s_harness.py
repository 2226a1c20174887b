"""Run ``deploy_bundles`` under Pulumi's mock engine and record what it declares."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s


@dataclass
class Declared:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str  # the provider reference, "<urn>::<id>"
    depends_on: list[str] = field(default_factory=list)  # names of the resources it waits for


@dataclass
class DeployRun:
    provider_urn: str = ""
    resources: list[Declared] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)  # names deploy_bundles returned

    def by_name(self, name: str) -> Declared:
        return next(r for r in self.resources if r.name == name)

    def of_type(self, typ: str) -> list[Declared]:
        return [r for r in self.resources if r.typ == typ]


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, run: DeployRun):
        self.run = run

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if not args.typ.startswith("pulumi:providers:"):
            self.run.resources.append(Declared(args.typ, args.name, dict(args.inputs), args.provider or ""))
        return [f"{args.name}-id", args.inputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def run_deploy(bundles, provider_name: str = "k8s-site", call=None, **kwargs) -> DeployRun:
    """Declare ``bundles`` through a fresh Kubernetes provider and record every resource.

    ``call(provider)``, when given, declares the resources instead (and returns them)."""
    from k8s.deploy import deploy_bundles

    # Pulumi's test runtime runs on the thread's event loop; a test that ran
    # asyncio.Runner before (the gateway tests do) leaves none set.
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    run = DeployRun()
    pulumi.runtime.set_mocks(_Mocks(run), preview=False)
    deps: dict[str, list[str]] = {}

    @pulumi.runtime.test
    def program():
        def record(args: pulumi.ResourceTransformationArgs):
            deps[args.name] = [d._name for d in (args.opts.depends_on or [])]  # noqa: SLF001 - test introspection
            return None

        pulumi.runtime.register_stack_transformation(record)
        provider = k8s.Provider(provider_name, kubeconfig="unused-under-mocks")
        resources = call(provider) if call else deploy_bundles(bundles, provider, **kwargs)
        run.returned = [r._name for r in resources]  # noqa: SLF001
        return pulumi.Output.all(provider.urn, *[r.urn for r in resources]).apply(lambda urns: setattr(run, "provider_urn", urns[0]))

    program()
    for r in run.resources:
        r.depends_on = deps.get(r.name, [])
    return run


def objects_of(bundles_of_site: dict, kind: str | None = None) -> list[dict[str, Any]]:
    """Objects of one site's bundles ({name: bundle}), of one kind if given."""
    return [o for b in bundles_of_site.values() for o in b.objects if kind is None or o["kind"] == kind]


def named(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objs if o["metadata"]["name"] == name)
