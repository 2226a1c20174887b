"""``gpufleet optimize --write``: edit the fleet files to match a proposal.

Edits, with ruamel.yaml's round-trip mode (comments, key order and flow style
kept, so the result is a reviewable diff):

* ``stacks/fleet.yaml``: each optimised model's placement, quantization,
  sites, replicas (each site's peak count: ``replicas`` the most common one,
  ``replicas_at`` the sites that differ; the per-site peak and off-peak counts
  are written as a comment) and KV-cache allowance; each queue's sites (the sites the proposal trains it at
  join its dispatch order, data centres first) and quota (at most the whole
  GPUs left at its sites);
* ``stacks/Pulumi.<site>.yaml``: GPU node pools sized to the proposal (minSize
  the off-peak nodes, maxSize the peak nodes), new pools for new instance or
  capacity types, and pools the proposal does not use removed;
* the inventory: ``gpufleet_mig_layout`` in ``host_vars/<host>.yml``.

Everything is written into a copy first and loaded with the fleet model there;
only a copy that validates replaces the files, so a failed run changes nothing.
"""

from __future__ import annotations

import io
import math
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from gpufleet.catalog import INSTANCE_TYPES
from gpufleet.errors import FleetError, Problem

from .optimize import MIG_BLOCK, Proposal


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _load(path: Path):
    return _yaml().load(path.read_text())


def _dump(data, path: Path) -> None:
    buf = io.StringIO()
    _yaml().dump(data, buf)
    path.write_text(buf.getvalue())


def apply(fleet, proposal: Proposal) -> list[str]:  # noqa: ANN001
    """Write the proposal into the fleet's files; returns the files changed (relative to the project root)."""
    from gpufleet.model import load_fleet

    root = Path(fleet.root)
    rel_fleet = Path(fleet.path).resolve().relative_to(root.resolve())
    stacks_rel = rel_fleet.parent
    with tempfile.TemporaryDirectory(prefix="gpufleet-write-") as tmpdir:
        tmp = Path(tmpdir)
        parts = {stacks_rel} | {Path(str(s.spec.inventory)) for s in fleet.sites if s.spec.inventory}
        for part in parts:
            shutil.copytree(root / part, tmp / part)
        changed: set[Path] = set()
        _write_inventories(fleet, proposal, tmp, changed)
        capacity = _write_stacks(fleet, proposal, tmp / stacks_rel, changed, stacks_rel)
        _write_fleet(fleet, proposal, tmp / rel_fleet, capacity, changed, rel_fleet)
        try:
            load_fleet(tmp / rel_fleet)
        except FleetError as exc:
            raise FleetError([Problem(p.file.replace(str(tmp) + "/", ""), p.path, f"the proposal does not validate: {p.message}") for p in exc.problems]) from None
        for rel in sorted(changed):
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            staged = dest.with_name(f".{dest.name}.gpufleet-tmp")
            shutil.copyfile(tmp / rel, staged)
            staged.replace(dest)
        return [str(p) for p in sorted(changed)]


# ------------------------------------------------------------------- inventory


def _write_inventories(fleet, proposal: Proposal, tmp: Path, changed: set[Path]) -> dict[tuple[str, str], int]:  # noqa: ANN001
    by_class: dict[tuple[str, str], list[dict[str, int]]] = defaultdict(list)
    for row in proposal.mig_layouts:
        by_class[(row["site"], row["server_class"])].extend([row["profiles"]] * row["gpus"])
    mig_gpus: dict[tuple[str, str], int] = {}
    for site in fleet.sites:
        if site.is_aws or not site.spec.inventory:
            continue
        inv = Path(str(site.spec.inventory))
        classes: dict[str, list] = defaultdict(list)
        for s in site.servers:
            if s.spec.gpu_count and s.spec.accelerator:
                classes[s.spec.server_class].append(s)
        for cls, servers in classes.items():
            gpus = list(by_class.get((site.name, cls), []))
            mig_gpus[(site.name, cls)] = len(gpus)
            # servers that already carry MIG first, so an unchanged layout stays where it is
            order = sorted(servers, key=lambda s: (not s.spec.mig_layout, s.name))
            for s in order:
                take = min(len(gpus), s.spec.gpu_count)
                mine, gpus = gpus[:take], gpus[take:]
                groups: list[dict[str, Any]] = []
                for idx, lay in enumerate(mine):
                    if groups and groups[-1]["profiles"] == lay and groups[-1]["devices"][-1] == idx - 1:
                        groups[-1]["devices"].append(idx)
                    else:
                        groups.append({"devices": [idx], "profiles": dict(sorted(lay.items()))})
                current = [g.model_dump() for g in s.spec.mig_layout]
                wanted = [{"devices": "all" if len(g["devices"]) == s.spec.gpu_count else g["devices"], "profiles": g["profiles"]} for g in groups]
                if _same_layout(current, wanted, s.spec.gpu_count):
                    continue
                _set_host_layout(tmp, inv, s.name, wanted, changed)
    return mig_gpus


def _same_layout(a: list[dict], b: list[dict], gpus: int) -> bool:
    def per_gpu(layout: list[dict]) -> list[dict]:
        out: list[dict] = [{} for _ in range(gpus)]
        for g in layout:
            devs = range(gpus) if g["devices"] == "all" else g["devices"]
            for d in devs:
                out[d] = dict(g["profiles"])
        return out

    return per_gpu(a) == per_gpu(b)


def _set_host_layout(tmp: Path, inv: Path, host: str, layout: list[dict], changed: set[Path]) -> None:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    rel = inv / "host_vars" / f"{host}.yml"
    path = tmp / rel
    data = _load(path) if path.exists() else None
    if data is None:
        data = CommentedMap()
    seq = CommentedSeq()
    for g in layout:
        item = CommentedMap()
        if g["devices"] == "all":
            item["devices"] = "all"
        else:
            devs = CommentedSeq(g["devices"])
            devs.fa.set_flow_style()
            item["devices"] = devs
        prof = CommentedMap(g["profiles"])
        item["profiles"] = prof
        seq.append(item)
    if not layout:
        seq.fa.set_flow_style()
    data["gpufleet_mig_layout"] = seq
    path.parent.mkdir(parents=True, exist_ok=True)
    _dump(data, path)
    changed.add(rel)


# ---------------------------------------------------------------------- stacks


def _pool_name(existing: set[str], workload: str, acc: str, cap: str) -> str:
    base = f"{workload}-{acc.split('-')[0]}" + ("" if cap == "on-demand" else f"-{cap.replace('savings-plan', 'sp').replace('capacity-block', 'cb')}")
    name, n = base, 2
    while name in existing:
        name, n = f"{base}-{n}", n + 1
    existing.add(name)
    return name


def _write_stacks(fleet, proposal: Proposal, stacks: Path, changed: set[Path], stacks_rel: Path) -> dict[tuple[str, str], int]:  # noqa: ANN001
    """Returns whole GPUs per (site, accelerator) at each AWS site after the edit (pools at maxSize)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    capacity: dict[tuple[str, str], int] = defaultdict(int)
    for site in fleet.sites:
        if not site.is_aws:
            continue
        mine = [p for p in proposal.pools if p["site"] == site.name]
        path = stacks / f"Pulumi.{site.name}.yaml"
        data = _load(path)
        pools = data["config"]["gpufleet:nodePools"]
        names = {str(p["name"]) for p in pools}
        used: set[int] = set()
        out_changed = False
        for want in mine:
            it, cap = want["instance_type"], want["capacity_type"]
            stack_cap = "on-demand" if cap == "savings-plan" else cap
            training = bool(want.get("training"))
            lo = 0 if training else int(want["nodes_offpeak"])
            hi = max(1, int(want["nodes_peak"]), lo)
            match = None
            for pi, p in enumerate(pools):
                if pi in used or it not in list(p["instanceTypes"]) or p.get("capacityType", "on-demand") != stack_cap:
                    continue
                labels = p.get("labels") or {}
                if (labels.get("gpufleet.io/pricing") == "savings-plan") != (cap == "savings-plan"):
                    continue
                match = pi
                break
            if match is None:
                acc = str(INSTANCE_TYPES[it].accelerator)
                new = CommentedMap()
                new["name"] = _pool_name(names, "train" if training else "serving", acc, cap)
                types = CommentedSeq([it])
                types.fa.set_flow_style()
                new["instanceTypes"] = types
                new["capacityType"] = stack_cap
                new["minSize"] = lo
                new["maxSize"] = hi
                new["diskGib"] = 2000 if training else 500
                labels = CommentedMap()
                labels["gpufleet.io/workload"] = "training" if training else "serving"
                if cap == "savings-plan":
                    labels["gpufleet.io/pricing"] = "savings-plan"
                new["labels"] = labels
                if training and INSTANCE_TYPES[it].efa_interfaces:
                    new["efa"] = True
                    azs = CommentedSeq([site.aws.network.availability_zones[0]])
                    azs.fa.set_flow_style()
                    new["availabilityZones"] = azs
                pools.append(new)
                used.add(len(pools) - 1)
                out_changed = True
            else:
                used.add(match)
                p = pools[match]
                if p["minSize"] != lo or p["maxSize"] != hi:
                    p["minSize"], p["maxSize"] = lo, hi
                    out_changed = True
        for pi in sorted(range(len(pools)), reverse=True):
            p = pools[pi]
            acc = INSTANCE_TYPES[str(p["instanceTypes"][0])].accelerator
            if acc and pi not in used:
                del pools[pi]  # a GPU pool the proposal does not use
                out_changed = True
        for p in pools:
            it = INSTANCE_TYPES[str(p["instanceTypes"][0])]
            if it.accelerator:
                capacity[(site.name, it.accelerator)] += int(p["maxSize"]) * it.gpus
        if out_changed:
            _dump(data, path)
            changed.add(stacks_rel / path.name)
    return capacity


# ----------------------------------------------------------------------- fleet


def _write_fleet(fleet, proposal: Proposal, path: Path, capacity: dict[tuple[str, str], int], changed: set[Path], rel: Path) -> None:  # noqa: ANN001
    from ruamel.yaml.comments import CommentedSeq

    from .perf import GPU_MEMORY_UTILIZATION, RUNTIME_OVERHEAD_GIB

    data = _load(path)
    rows_by_model: dict[str, list[dict]] = defaultdict(list)
    for r in proposal.serving:
        rows_by_model[r["model"]].append(r)
    for m in data.get("models") or []:
        name = str(m["name"])
        rows = rows_by_model.get(name)
        place = proposal.placements.get(name)
        if not rows or not place:
            continue
        per_site: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in rows:
            per_site[r["site"]][0] += r["replicas_peak"]
            per_site[r["site"]][1] += r["replicas_offpeak"]
        sites = [s for s in m["sites"] if per_site.get(str(s), [0])[0] > 0] + [s for s in per_site if s not in [str(x) for x in m["sites"]] and per_site[s][0] > 0]
        seq = CommentedSeq(sites)
        seq.fa.set_flow_style()
        m["sites"] = seq
        m["quantization"] = place["quantization"]
        p = m["placement"]
        p["accelerator"] = place["accelerator"]
        if place["mig_profile"]:
            p["mig_profile"] = place["mig_profile"]
            if "gpus" in p:
                del p["gpus"]
        else:
            p["gpus"] = place["tensor_parallel"]
            if "mig_profile" in p:
                del p["mig_profile"]
        if "time_slicing" in m:
            _delete_key(m, "time_slicing")
        last = _write_replicas(m, {str(s): per_site[str(s)][0] for s in sites})
        kv = max(r["kv_cache_gib"] for r in rows)
        room = min(r["memory_offered_gib"] - r["weights_gib"] - RUNTIME_OVERHEAD_GIB * (1 if place["mig_profile"] else place["tensor_parallel"]) for r in rows)
        m["kv_cache_gib"] = max(0.5, math.floor(min(max(kv, 1.0), room) * 10) / 10)
        comment = "gpufleet optimize: replicas peak/off-peak per site: " + ", ".join(f"{s} {v[0]}/{v[1]}" for s, v in sorted(per_site.items()))
        _eol_comment(m, last, comment)
        _ = GPU_MEMORY_UTILIZATION
    # queues: sites the proposal trains at, data centres first; quota at most the whole GPUs there
    kinds = {s.name: s.kind for s in fleet.sites}
    whole: dict[tuple[str, str], int] = defaultdict(int, capacity)
    mig_by_class: dict[tuple[str, str], int] = defaultdict(int)
    for row in proposal.mig_layouts:
        mig_by_class[(row["site"], row["accelerator"])] += row["gpus"]
    for site in fleet.sites:
        if not site.is_aws:
            for s in site.servers:
                if s.spec.accelerator and s.spec.gpu_count:
                    whole[(site.name, s.spec.accelerator)] += s.spec.gpu_count
            for (sname, acc), n in mig_by_class.items():
                if sname == site.name:
                    whole[(sname, acc)] -= n
    trained: dict[str, list[str]] = defaultdict(list)
    for r in proposal.training:
        if r["site"] not in trained[r["queue"]]:
            trained[r["queue"]].append(r["site"])
    for team in data.get("teams") or []:
        for q in team.get("queues") or []:
            name = str(q["name"])
            sites = [str(s) for s in q["sites"]]
            new_sites = [s for s in trained.get(name, []) if s not in sites]
            if new_sites:
                order = sites + new_sites
                merged = sorted(order, key=lambda s: (kinds.get(s) != "datacenter", order.index(s)))
                seq = CommentedSeq(merged)
                seq.fa.set_flow_style()
                q["sites"] = seq
                sites = merged
            if trained.get(name):
                # a site left with none of the queue's accelerators drops out of its dispatch order
                keep = [s for s in sites if any(whole.get((s, str(a)), 0) > 0 for a in q["quota"])]
                if keep and keep != sites:
                    seq = CommentedSeq(keep)
                    seq.fa.set_flow_style()
                    q["sites"] = seq
                    sites = keep
            quota = q["quota"]
            for acc in list(quota):
                have = sum(whole.get((s, str(acc)), 0) for s in sites)
                if int(quota[acc]) > have:
                    if have > 0:
                        quota[acc] = have
                    elif len(quota) > 1:
                        del quota[acc]
    _dump(data, path)
    changed.add(rel)


def _write_replicas(m, peak: dict[str, int]) -> str:  # noqa: ANN001 - a ruamel CommentedMap
    """``replicas``: the most common peak count over the model's sites (of equal
    ones, the smallest); ``replicas_at``: the sites whose count differs, in site
    order, right after it (removed when none differs). Returns the last of the
    two keys written: the one the comment after them belongs to."""
    from ruamel.yaml.comments import CommentedMap

    counts = Counter(peak.values())
    default = min(counts, key=lambda n: (-counts[n], n))
    m["replicas"] = default
    differ = {s: n for s, n in peak.items() if n != default}
    if not differ:
        if "replicas_at" in m:
            _delete_key(m, "replicas_at")
        return "replicas"
    at = CommentedMap(differ)
    at.fa.set_flow_style()
    if "replicas_at" in m:
        m["replicas_at"] = at
    else:
        m.insert(list(m).index("replicas") + 1, "replicas_at", at)
        tok = m.ca.items.pop("replicas", None)  # what followed replicas now follows replicas_at
        if tok is not None:
            m.ca.items["replicas_at"] = tok
    return "replicas_at"


def _delete_key(m, key: str) -> None:  # noqa: ANN001 - a ruamel CommentedMap
    """Delete ``key``; the comment or blank lines after it move to the key before it."""
    keys = list(m)
    tok = m.ca.items.pop(key, None)
    i = keys.index(key)
    del m[key]
    if tok and i > 0 and len(tok) > 2 and tok[2] is not None:
        prev = keys[i - 1]
        old = m.ca.items.get(prev)
        if old is None or len(old) < 3 or old[2] is None:
            m.ca.items[prev] = [None, None, tok[2], None]


def _eol_comment(m, key: str, text: str) -> None:  # noqa: ANN001
    """An end-of-line comment on ``key``, keeping what followed the old one (blank lines, comments)."""
    tok = m.ca.items.get(key)
    rest = ""
    if tok and len(tok) > 2 and tok[2] is not None:
        value = tok[2].value
        rest = value[value.index("\n") + 1 :] if "\n" in value else ""
        if not value.lstrip().startswith("#"):
            rest = value[value.index("\n") + 1 :] if "\n" in value else ""
    m.yaml_add_eol_comment(text, key)
    if rest:
        m.ca.items[key][2].value = m.ca.items[key][2].value.rstrip("\n") + "\n" + rest
