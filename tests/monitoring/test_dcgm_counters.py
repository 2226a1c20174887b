"""The dcgm-exporter counters file, checked against upstream's counter list."""

from __future__ import annotations

import csv
import io
import re

import pytest

from k8s.monitoring import build, dcgm

from .conftest import FLEET, upstream_dir

UPSTREAM_CSV = "nvidia/dcgm-exporter-default-counters.csv"


def _upstream() -> dict[str, set[str]]:
    """Every field upstream lists, commented out or not, with its type(s)."""
    path = upstream_dir() / UPSTREAM_CSV
    if not path.is_file():
        pytest.fail(f"{path} not found: set GPUFLEET_UPSTREAM to the upstream data folder")
    fields: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^#?\s*(DCGM_\w+)\s*,\s*(\w+)\s*,", line)
        if m:
            fields.setdefault(m.group(1), set()).add(m.group(2))
    return fields


def _commented_upstream() -> set[str]:
    path = upstream_dir() / UPSTREAM_CSV
    return {m.group(1) for m in re.finditer(r"^#\s*(DCGM_\w+)\s*,", path.read_text(), re.M)}


def test_every_enabled_counter_exists_upstream_with_its_type() -> None:
    upstream = _upstream()
    assert len(upstream) > 40, "upstream list looks truncated"
    for field, kind, _ in dcgm.COUNTERS:
        assert field in upstream, f"{field} is not a dcgm-exporter counter"
        assert kind in upstream[field], f"{field}: type {kind}, upstream says {upstream[field]}"


def test_error_counters_are_on() -> None:
    enabled = {f for f, _, _ in dcgm.COUNTERS}
    for group in ("XID_ERRORS", "ECC_SBE_VOL", "ECC_DBE_VOL", "ECC_SBE_AGG", "ECC_DBE_AGG", "ROW_REMAP_FAILURE", "NVLINK_CRC_FLIT", "NVLINK_CRC_DATA", "NVLINK_REPLAY", "NVLINK_RECOVERY"):
        assert any(group in f for f in enabled), group
    assert set(dcgm.ERROR_COUNTERS) <= enabled
    # The point of the file: upstream's defaults leave these off.
    off_upstream = _commented_upstream() & set(dcgm.ERROR_COUNTERS)
    assert {f for f in dcgm.ERROR_COUNTERS if "ECC" in f or "NVLINK" in f} <= off_upstream


def test_csv_is_well_formed() -> None:
    text = dcgm.counters_csv()
    rows = [r for r in csv.reader(io.StringIO(text)) if r and not r[0].startswith("#")]
    assert len(rows) == len(dcgm.COUNTERS)
    assert all(len(r) == 3 for r in rows), "a help text must not contain a comma"
    fields = [r[0].strip() for r in rows]
    assert len(fields) == len(set(fields))
    assert {r[1].strip() for r in rows} <= {"gauge", "counter", "label"}


def test_configmap_ships_on_gpu_sites_only() -> None:
    for site in FLEET.sites:
        [bundle] = build(FLEET, site.name)
        cms = [o for o in bundle.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == dcgm.CONFIGMAP_NAME]
        if site.name == FLEET.hub:
            assert cms == []
        else:
            [cm] = cms
            assert cm["metadata"]["namespace"] == "gpu-operator"
            assert cm["data"] == {dcgm.CSV_KEY: dcgm.counters_csv()}
