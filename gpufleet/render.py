"""``gpufleet render``: write what each engine will do, for GitOps review.

Layout of ``DIR``::

    plan.json, plan.md
    sites/<site>/pulumi-preview.json    resources the Pulumi program declares (offline, mock engine)
    sites/<site>/k8s/<addon>.yaml       Kubernetes objects of each add-on
    sites/<site>/k8s/helm-releases.yaml pinned Helm charts and their values
    sites/<dc>/ansible/                 inventory and host variables (data centres)
    .gpufleet-render                    written last: what gpufleet wrote here (see gpufleet.outdir)

The output is built in a marked temporary folder beside ``DIR`` and swapped in
only when every site rendered; ``DIR`` itself is replaced only when it is an
earlier, unchanged render (:mod:`gpufleet.outdir`). An interrupted render
(SIGINT, SIGTERM) stops its preview processes and removes its temporary
folder; a killed one (SIGKILL) leaves a marked folder the next render removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from cloud.preview import Previews
from gpufleet import outdir
from gpufleet.baremetal_vars import host_variables
from gpufleet.model import Fleet
from gpufleet.plan import build_plan
from gpufleet.report import to_json, to_markdown
from gpufleet.safe_yaml import VaultValue
from k8s import site_bundles

MARKER = outdir.MARKER


class Interrupted(BaseException):
    """The render got SIGINT or SIGTERM; it stopped its child processes and removed its temporary folder."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _vault_presenter(dumper: yaml.SafeDumper, data: VaultValue) -> yaml.Node:
    # The same ciphertext, tagged as Ansible reads it: never a plaintext secret.
    return dumper.represent_scalar("!vault", data.ciphertext, style="|")


_Dumper.add_representer(str, _str_presenter)
_Dumper.add_representer(VaultValue, _vault_presenter)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def dump_all(objs: list[Any]) -> str:
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def write_k8s(fleet: Fleet, site: str, out: Path) -> list[str]:
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
    site = fleet.site(site_name)
    inv = out / "inventory"
    # Only what Ansible reads as this inventory (the files the model's reader
    # read: hosts files, group_vars/ and host_vars/ variable files), never
    # dotfiles, vault password files, keys or scripts lying beside them. Files
    # are copied byte for byte, so vaulted values stay the same ciphertext.
    source = fleet.root / str(site.spec.inventory)
    inv.mkdir(parents=True, exist_ok=True)
    for rel in site.inventory_files:
        (inv / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, inv / rel)
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


def _inputs(fleet: Fleet) -> outdir.Inputs:
    inventories = tuple((fleet.root / str(s.spec.inventory)).absolute() for s in fleet.sites if not s.is_aws and s.spec.inventory)
    return outdir.Inputs(stacks=fleet.path.parent.absolute(), project=fleet.root.absolute(), inventories=inventories)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted`, so cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the folders are renamed (delivered right after)."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)


def _previews(fleet: Fleet) -> dict[str, list[dict[str, Any]]]:
    """Each site's offline preview, side by side; all of them stopped if one fails or the render is interrupted."""
    runs = Previews()
    names = [s.name for s in fleet.sites]
    pool = ThreadPoolExecutor(max_workers=max(1, min(len(names), os.cpu_count() or 1)))
    try:
        futures = {name: pool.submit(runs.run, str(fleet.path), name) for name in names}
        return {name: f.result() for name, f in futures.items()}
    except BaseException:
        runs.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _write(fleet: Fleet, tmp: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    plan = build_plan(fleet)
    (tmp / "plan.json").write_text(to_json(plan))
    (tmp / "plan.md").write_text(to_markdown(plan))
    summary: dict[str, Any] = {s.name: {} for s in fleet.sites}
    # Each preview is a separate interpreter running the real program under the mock engine.
    progress(f"running {len(fleet.sites)} Pulumi programs under the mock engine")
    for name, resources in _previews(fleet).items():
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
    return summary


def render(fleet: Fleet, out_dir: Path, progress: Callable[[str], None] = lambda _msg: None, warn: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Render ``fleet`` into ``out_dir``; refuse (FleetError) a folder gpufleet may not replace."""
    shown = str(out_dir)
    out = Path(os.path.abspath(out_dir))
    inputs = _inputs(fleet)
    outdir.check_target(out, inputs, shown)
    with _stop_on_signals():
        for stale in outdir.remove_stale(out):
            warn(f"removed {stale}, left by an earlier render that was killed")
        tmp = outdir.new_folder(out)
        try:
            summary = _write(fleet, tmp, progress)
            outdir.finish(tmp, fleet.path)
            with _signals_held():
                for message in outdir.swap(tmp, out, inputs, shown):
                    warn(message)
        except BaseException:
            if tmp.exists():
                outdir.remove_tmp(tmp)
            raise
    return summary
