"""Every NVIDIA driver branch the fleet model knows (gpufleet/drivers.py)
derives the roles' variables, and the roles that build for the driver's CUDA
(nccl, dcgm) find a pinned release for it.

The branch table lives in gpufleet/drivers.py only: a server on any branch
the schema accepts gets ``gpufleet_driver_branch`` and ``gpufleet_driver_cuda``
(the CUDA major the branch runs) from ``gpufleet render``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_kit import BIN, ROOT, ansible_env
from gpufleet import drivers
from gpufleet.baremetal_vars import host_variables
from gpufleet.model import load_fleet


@functools.cache
def _derive(name: str) -> dict:
    """The derived variables of the example fleet's first GPU server on driver branch ``name``."""
    fleet = load_fleet(ROOT / "stacks" / "fleet.yaml")
    site = fleet.site("dc-fra")
    server = next(s for s in site.servers if s.spec.accelerator)
    on_branch = dataclasses.replace(server, spec=server.spec.model_copy(update={"driver_branch": name}))
    return host_variables(fleet, site, on_branch)


@pytest.mark.parametrize("name", sorted(drivers.BRANCHES))
def test_every_branch_derives_its_cuda(name):
    hv = _derive(name)
    assert hv["gpufleet_driver_branch"] == name
    assert hv["gpufleet_driver_cuda"] == drivers.BRANCHES[name].cuda_major


def test_a_server_without_a_branch_gets_the_default():
    fleet = load_fleet(ROOT / "stacks" / "fleet.yaml")
    site = fleet.site("dc-fra")
    server = next(s for s in site.servers if s.spec.accelerator and "driver_branch" not in s.spec.model_fields_set)
    hv = host_variables(fleet, site, server)
    assert hv["gpufleet_driver_branch"] == drivers.DEFAULT_BRANCH
    assert hv["gpufleet_driver_cuda"] == drivers.BRANCHES[drivers.DEFAULT_BRANCH].cuda_major


def test_the_roles_pin_a_release_for_every_branch(tmp_path: Path):
    """nccl's and dcgm's defaults, evaluated by Ansible on each branch's
    derived variables: a CUDA toolkit of the branch's major and an NCCL
    release pinned for it, the DCGM package of that major."""
    hosts = {f"r{name}": {**{k: v for k, v in hv.items() if k.startswith("gpufleet_driver_")},
                          "ansible_connection": "local", "ansible_python_interpreter": str(BIN / "python")}
             for name, hv in ((n, _derive(n)) for n in drivers.BRANCHES)}
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    play = [{
        "name": "Resolve the CUDA pins",
        "hosts": "all",
        "gather_facts": False,
        "vars_files": [str(ROOT / "roles" / "nccl" / "defaults" / "main.yml"), str(ROOT / "roles" / "dcgm" / "defaults" / "main.yml")],
        "tasks": [{"name": "Write what the defaults resolve to", "ansible.builtin.copy": {
            "dest": str(tmp_path / "{{ inventory_hostname }}.json"), "mode": "0644",
            "content": "{{ {'nccl_cuda_version': nccl_cuda_version, 'nccl_version': nccl_version, 'dcgm_cuda_major': dcgm_cuda_major} | to_json }}"}}],
    }]
    book = tmp_path / "pins.yml"
    book.write_text(yaml.safe_dump(play, sort_keys=False))
    res = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(book)], cwd=tmp_path,
                         env=ansible_env(tmp_path), capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    pins = {h: json.loads((tmp_path / f"{h}.json").read_text()) for h in hosts}
    for name, branch in drivers.BRANCHES.items():
        got = pins[f"r{name}"]
        assert got["nccl_cuda_version"].split(".")[0] == str(branch.cuda_major), (name, got)
        assert got["nccl_version"], f"R{name}: no NCCL release pinned for CUDA {got['nccl_cuda_version']} (roles/nccl/defaults/main.yml)"
        assert got["dcgm_cuda_major"] == str(branch.cuda_major), (name, got)
