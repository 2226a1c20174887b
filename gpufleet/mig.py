"""MIG profiles per GPU model, layout checks, and the mig-parted configuration.

The profile table mirrors the GPU operator's default mig-parted configuration
(the authority on which profiles exist on which GPU; the tests compare the two).
A layout fits a GPU when no profile exceeds its per-GPU maximum and the
instances together use at most 7 compute slices and 8 memory slices. NVIDIA's
placement rules are stricter for a few mixes; mig-parted reports those at apply
time and the ``mig`` role's assertion catches them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

COMPUTE_SLICES = 7
MEMORY_SLICES = 8


@dataclass(frozen=True)
class MigProfile:
    name: str  # e.g. "3g.40gb" or "1g.10gb+me"
    compute: int  # compute slices (the "Ng")
    memory_slices: int  # eighths of the GPU's memory
    memory_gib: int  # the memory figure in the profile's name
    max_per_gpu: int


def _profiles(total_gib: int, rows: list[tuple[str, int, int]]) -> dict[str, MigProfile]:
    out: dict[str, MigProfile] = {}
    for name, memory_slices, max_per_gpu in rows:
        m = re.fullmatch(r"(\d)g\.(\d+)gb(\+me)?", name)
        assert m, name
        out[name] = MigProfile(name, int(m.group(1)), memory_slices, int(m.group(2)), max_per_gpu)
    return out


_80GB = [("1g.10gb", 1, 7), ("1g.10gb+me", 1, 1), ("1g.20gb", 2, 4), ("2g.20gb", 2, 3), ("3g.40gb", 4, 2), ("4g.40gb", 4, 1), ("7g.80gb", 8, 1)]

MIG_PROFILES: dict[str, dict[str, MigProfile]] = {
    "h100-80gb": _profiles(80, _80GB),
    "a100-80gb": _profiles(80, _80GB),
    "a100-40gb": _profiles(40, [("1g.5gb", 1, 7), ("1g.5gb+me", 1, 1), ("1g.10gb", 2, 4), ("2g.10gb", 2, 3), ("3g.20gb", 4, 2), ("4g.20gb", 4, 1), ("7g.40gb", 8, 1)]),
    "h200-141gb": _profiles(141, [("1g.18gb", 1, 7), ("1g.18gb+me", 1, 1), ("1g.35gb", 2, 4), ("2g.35gb", 2, 3), ("3g.71gb", 4, 2), ("4g.71gb", 4, 1), ("7g.141gb", 8, 1)]),
}


def layout_problems(accelerator: str, profiles: Mapping[str, int]) -> list[str]:
    """Why ``profiles`` (profile -> count, on one GPU) does not fit, if it does not."""
    table = MIG_PROFILES.get(accelerator)
    if table is None:
        return [f"{accelerator} does not support MIG"]
    problems = []
    compute = memory = 0
    for name, count in profiles.items():
        prof = table.get(name)
        if prof is None:
            from gpufleet.errors import did_you_mean

            problems.append(f"MIG profile '{name}' does not exist on {accelerator}{did_you_mean(name, table)}; valid: {', '.join(table)}")
            continue
        if count > prof.max_per_gpu:
            problems.append(f"at most {prof.max_per_gpu} x {name} fit on one {accelerator}, not {count}")
        compute += prof.compute * count
        memory += prof.memory_slices * count
    if not problems and (compute > COMPUTE_SLICES or memory > MEMORY_SLICES):
        problems.append(
            f"layout {dict(profiles)} needs {compute} compute and {memory} memory slices; "
            f"one {accelerator} has {COMPUTE_SLICES} and {MEMORY_SLICES}"
        )
    return problems


def config_name(layout: list[dict]) -> str:
    """The mig-parted config name a layout is published under (the node label value)."""
    if not layout:
        return "all-disabled"
    parts = []
    for group in layout:
        devices = group["devices"]
        dev = "all" if devices == "all" else "-".join(str(d) for d in devices)
        prof = "_".join(f"{n}x{p.replace('+', '')}" for p, n in sorted(group["profiles"].items()))
        parts.append(f"{dev}_{prof or 'enabled'}")
    return "gpufleet-" + "--".join(parts)


def mig_parted_config(layouts: Mapping[str, list[dict]], gpu_count: int | None = None) -> dict:
    """A mig-parted v1 configuration with one named config per layout.

    GPUs a layout does not name stay whole (MIG disabled), so a half-MIG server
    keeps its other GPUs for training.
    """
    configs: dict[str, list[dict]] = {"all-disabled": [{"devices": "all", "mig-enabled": False}]}
    for name, layout in layouts.items():
        entries = []
        named: set[int] = set()
        for group in layout:
            devices = group["devices"]
            if devices != "all":
                named.update(devices)
            entries.append({"devices": devices, "mig-enabled": True, "mig-devices": dict(group["profiles"])})
        if gpu_count and named:
            rest = [i for i in range(gpu_count) if i not in named]
            if rest:
                entries.append({"devices": rest, "mig-enabled": False})
        configs[name] = entries or [{"devices": "all", "mig-enabled": False}]
    return {"version": "v1", "mig-configs": configs}


# --------------------------------------------------------------- exact placement
#
# Where each GPU instance profile may start, in memory slices (0-7), as the
# NVIDIA Multi-Instance GPU User Guide lists them for A100 and H100/H200
# ("Supported MIG Profiles", the placement column that `nvidia-smi mig -lgipp`
# prints as {starts}:size). The 40 GB, 80 GB and 141 GB parts share the same
# geometry; only the memory in the names differs.
_STARTS_BY_SHAPE: dict[tuple[int, int], tuple[int, ...]] = {
    # (compute slices, memory slices) -> allowed start slices
    (1, 1): (0, 1, 2, 3, 4, 5, 6),
    (1, 2): (0, 2, 4, 6),
    (2, 2): (0, 2, 4),
    (3, 4): (0, 4),
    (4, 4): (0,),
    (7, 8): (0,),
}


def placement(accelerator: str, profiles: Mapping[str, int]) -> dict[str, list[int]] | None:
    """Start slices for every instance of ``profiles`` on one GPU, or None when they cannot all be placed.

    Exact under NVIDIA's placement rules (above) and the 7 compute slices. On
    the profile tables in this module it accepts exactly the layouts that
    :func:`layout_problems` accepts (a test checks every combination), so the
    slice-count check is exact too; this gives the start slices as well.
    """
    table = MIG_PROFILES.get(accelerator)
    if table is None or any(p not in table for p in profiles):
        return None
    if sum(table[p].compute * n for p, n in profiles.items()) > COMPUTE_SLICES:
        return None
    if any(n > table[p].max_per_gpu for p, n in profiles.items()):
        return None
    items = sorted((p for p, n in profiles.items() for _ in range(n)), key=lambda p: (-table[p].memory_slices, p))
    starts: list[int] = []

    def fit(i: int, used: int) -> bool:
        if i == len(items):
            return True
        prof = table[items[i]]
        for s in _STARTS_BY_SHAPE[(prof.compute, prof.memory_slices)]:
            mask = ((1 << prof.memory_slices) - 1) << s
            if s + prof.memory_slices <= MEMORY_SLICES and not used & mask:
                starts.append(s)
                if fit(i + 1, used | mask):
                    return True
                starts.pop()
        return False

    if not fit(0, 0):
        return None
    out: dict[str, list[int]] = {}
    for p, s in zip(items, starts):
        out.setdefault(p, []).append(s)
    return out


def gpu_layouts(accelerator: str, maximal: bool = True) -> list[dict[str, int]]:
    """Every layout of one GPU that NVIDIA's placement rules allow (profile -> count).

    With ``maximal`` only those to which no further instance can be added
    (a layout with room left over is never cheaper than one without).
    """
    import itertools

    table = MIG_PROFILES.get(accelerator)
    if table is None:
        return []
    names = sorted(table)
    valid: list[dict[str, int]] = []
    for counts in itertools.product(*(range(table[n].max_per_gpu + 1) for n in names)):
        layout = {n: k for n, k in zip(names, counts) if k}
        if layout and placement(accelerator, layout) is not None:
            valid.append(layout)
    if not maximal:
        return valid

    def grows(layout: dict[str, int]) -> bool:
        return any(placement(accelerator, {**layout, n: layout.get(n, 0) + 1}) is not None for n in names)

    return [layout for layout in valid if not grows(layout)]
