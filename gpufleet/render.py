"""``gpufleet render``: write what each engine will do, for GitOps review.

Layout of ``DIR``::

    plan.json, plan.md
    sites/<site>/pulumi-preview.json    resources the Pulumi program declares (offline, mock engine)
    sites/<site>/k8s/<addon>.yaml       Kubernetes objects of each add-on
    sites/<site>/k8s/helm-releases.yaml pinned Helm charts and their values
    sites/<dc>/ansible/                 inventory and host variables (data centres)

The output is written to a temporary folder beside ``DIR`` and moved into place
only when every site rendered, so a failed run never leaves a half-written
directory behind: rerunning is always safe.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from gpufleet.errors import FleetError, Problem
from gpufleet.model import Fleet
from gpufleet.plan import build_plan
from gpufleet.report import to_json, to_markdown

MARKER = "plan.json"


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def dump_all(objs: list[Any]) -> str:
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def _optional(module: str, attr: str) -> Callable[..., Any] | None:
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), attr, None)


def write_k8s(fleet: Fleet, site: str, out: Path) -> list[str]:
    site_bundles = _optional("k8s", "site_bundles")
    if site_bundles is None:
        return []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    releases = []
    for bundle in site_bundles(fleet, site):
        if bundle.objects:
            (out / f"{bundle.name}.yaml").write_text(dump_all(bundle.objects))
            written.append(f"{bundle.name}.yaml")
        for chart in bundle.charts:
            releases.append(
                {"release": chart.release, "chart": chart.chart, "repository": chart.repository, "version": chart.version, "namespace": chart.namespace, "addon": bundle.name, "values": chart.values}
            )
        for name, text in bundle.files.items():
            path = out / bundle.name / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if releases:
        (out / "helm-releases.yaml").write_text(dump_yaml({"releases": releases}))
        written.append("helm-releases.yaml")
    return written


DERIVED_INVENTORY = "gpufleet-derived.yml"


def write_ansible(fleet: Fleet, site_name: str, out: Path) -> None:
    """``out/inventory/``: the site's inventory plus one more inventory source
    holding what gpufleet derives per host, so that
    ``ansible-playbook -i out/inventory baremetal/site.yml`` sees both."""
    from gpufleet.baremetal_vars import host_variables

    site = fleet.site(site_name)
    inv = out / "inventory"
    shutil.copytree(fleet.root / str(site.spec.inventory), inv, dirs_exist_ok=True)
    hosts = {server.name: host_variables(fleet, site, server) for server in site.servers}
    (inv / DERIVED_INVENTORY).write_text(
        "# Derived from the fleet model by `gpufleet render`; do not edit (edit the fleet instead).\n" + dump_yaml({"all": {"hosts": hosts}})
    )
    (out / "README.md").write_text(
        f"# {site.name}: Ansible inputs\n\n"
        f"`inventory/` is `{site.spec.inventory}` plus `{DERIVED_INVENTORY}`, the variables gpufleet derives\n"
        "from the whole fleet (API endpoint, pod network, extra node labels and taints, mig-parted configuration).\n\n"
        f"    gpufleet baremetal preflight --inventory {out / 'inventory'}\n"
        f"    gpufleet baremetal apply --inventory {out / 'inventory'}\n"
    )


def render(fleet: Fleet, out_dir: Path, progress: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MARKER).is_file())):
        raise FleetError([Problem(str(out_dir), "", "exists and is not a gpufleet render output; choose an empty or new folder")])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        plan = build_plan(fleet)
        (tmp / "plan.json").write_text(to_json(plan))
        (tmp / "plan.md").write_text(to_markdown(plan))
        preview = _optional("cloud.preview", "preview_site")
        summary: dict[str, Any] = {s.name: {} for s in fleet.sites}
        if preview is not None:
            # Each preview is a separate interpreter running the real program under
            # the mock engine; run them side by side.
            progress(f"running {len(fleet.sites)} Pulumi programs under the mock engine")
            with ThreadPoolExecutor(max_workers=max(1, min(len(fleet.sites), os.cpu_count() or 1))) as pool:
                names = [s.name for s in fleet.sites]
                previews = dict(zip(names, pool.map(lambda name: preview(str(fleet.path), name), names)))
            for name, resources in previews.items():
                sdir = tmp / "sites" / name
                sdir.mkdir(parents=True)
                (sdir / "pulumi-preview.json").write_text(json.dumps({"stack": name, "resources": resources}, indent=2, sort_keys=True) + "\n")
                summary[name]["pulumi_resources"] = len(resources)
        for site in fleet.sites:
            sdir = tmp / "sites" / site.name
            sdir.mkdir(parents=True, exist_ok=True)
            entry = summary[site.name]
            progress(f"{site.name}: building Kubernetes add-ons")
            entry["k8s_files"] = write_k8s(fleet, site.name, sdir / "k8s")
            if not site.is_aws:
                progress(f"{site.name}: writing Ansible inventory and host variables")
                write_ansible(fleet, site.name, sdir / "ansible")
                entry["ansible_hosts"] = len(site.servers)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
