"""Generate a large, valid fleet description for benchmarks and scale tests.

``generate(out, scale=1.0)`` writes ``out/stacks/`` and ``out/inventory/`` in the
same layout as the bundled example. At ``scale=1.0`` the fleet has 20 AWS
regions, 50 GPU data centres (plus a small CPU-only hub site) and 10,000 GPU
servers carrying 80,000 GPUs; other scales multiply the region, data-centre and
server counts (``scale=0.5`` is half of each).

The data centres are built like real ones: servers grouped by class (8x H100
HGX, 8x H200 HGX, 8x A100 80GB HGX, 8x L40S PCIe), class settings in
``group_vars/``, rack, InfiniBand block, BMC and address inline per host, a
MIG serving group nested under the H100 class with a group-wide layout, and
a few hosts with their own MIG layout in ``host_vars/``. Queues and served
models reference real capacity, and one residency rule keeps regulated data
in a handful of data centres, so the generated fleet validates cleanly.

Run ``python tests/scale/fleetgen.py OUT [--scale S]``; import it as
``tests.scale.fleetgen`` (the benchmarks and the scale tests do).
"""

from __future__ import annotations

import argparse
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REGIONS = [
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1",
    "sa-east-1", "eu-central-1", "eu-central-2", "eu-west-1", "eu-west-2",
    "eu-west-3", "eu-north-1", "eu-south-1", "eu-south-2", "ap-northeast-1",
    "ap-northeast-2", "ap-northeast-3", "ap-southeast-1", "ap-southeast-2", "ap-south-1",
]

CITIES = [
    "fra", "ber", "muc", "ham", "ams", "par", "lon", "dub", "mad", "mil",
    "sto", "hel", "osl", "cph", "vie", "zrh", "waw", "prg", "bud", "lis",
    "nyc", "iad", "atl", "chi", "dal", "den", "phx", "lax", "sfo", "sea",
    "yyz", "yul", "gru", "scl", "bog", "mex", "tyo", "osa", "sel", "sin",
    "hkg", "syd", "mel", "bom", "del", "blr", "dxb", "jnb", "tlv", "ist",
]


@dataclass(frozen=True)
class ServerClass:
    group: str
    server_class: str
    accelerator: str
    gpus: int
    fabric: str
    hcas: int
    busbw: int
    share: float  # share of a data centre's GPU servers


CLASSES = [
    ServerClass("hgx_h100", "hgx-h100-8", "h100-80gb", 8, "infiniband", 8, 360, 0.40),
    ServerClass("hgx_h200", "hgx-h200-8", "h200-141gb", 8, "infiniband", 8, 370, 0.20),
    ServerClass("hgx_a100", "hgx-a100-8", "a100-80gb", 8, "infiniband", 4, 180, 0.15),
    ServerClass("l40s_8x", "l40s-8", "l40s", 8, "roce", 2, 20, 0.25),
]

# Hosts in the H100 class's MIG serving group (a nested group with its own layout).
MIG_GROUP_SHARE = 0.05
MIG_GROUP_LAYOUT = [{"devices": "all", "profiles": {"2g.20gb": 3}}]
# Hosts with a per-host layout in host_vars (half MIG, half whole for training).
HOST_MIG_SHARE = 0.02
HOST_MIG_LAYOUTS = {
    "h100-80gb": [{"devices": [0, 1, 2, 3], "profiles": {"1g.10gb": 7}}],
    "h200-141gb": [{"devices": [0, 1], "profiles": {"3g.71gb": 2}}],
    "a100-80gb": [{"devices": [0, 1, 2, 3], "profiles": {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 1}}],
}


@dataclass
class Summary:
    regions: int
    datacenters: int
    gpu_servers: int
    cpu_servers: int
    gpus: int
    host_vars_files: int

    def line(self) -> str:
        return (
            f"{self.regions} AWS regions, {self.datacenters} data centres (+1 hub), "
            f"{self.gpu_servers} GPU servers, {self.gpus} GPUs, {self.cpu_servers} CPU servers"
        )


def _dump(path: Path, data: Any, header: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, default_flow_style=None, width=200)
    path.write_text(header + text)


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _region_site(region: str) -> str:
    parts = region.split("-")
    return f"aws-{parts[0]}{parts[1][0]}{parts[1][-1] if parts[1] in ('northeast', 'southeast') else ''}{parts[2]}"


def generate(out: str | Path, scale: float = 1.0, seed: int = 7) -> Summary:
    """Write a fleet of the given scale under ``out`` (replacing stacks/ and inventory/ there)."""
    out = Path(out)
    rng = random.Random(seed)
    n_regions = max(1, min(len(REGIONS), round(20 * scale)))
    n_dcs = max(2, round(50 * scale))
    n_servers = max(n_dcs * 8, round(10_000 * scale))
    for sub in ("stacks", "inventory"):
        shutil.rmtree(out / sub, ignore_errors=True)
    stacks = out / "stacks"

    # ---------------------------------------------------------------- data centres
    sites: list[dict] = [
        {
            "name": "hub",
            "kind": "datacenter",
            "location": "Management cluster",
            "inventory": "inventory/hub",
            "kubernetes_version": "1.33",
            "api_endpoint": "k8s-api.hub.example.internal",
            "node_cidr": "10.200.0.0/24",
            "pod_cidr": "10.201.0.0/16",
        }
    ]
    _write_hub(out / "inventory" / "hub")
    _dump(stacks / "Pulumi.hub.yaml", {"config": {"gpufleet:site": "hub"}})

    capacity: dict[str, dict[str, int]] = {}  # site -> accelerator -> whole GPUs
    mig_sites: dict[tuple[str, str], list[str]] = {}  # (accelerator, profile) -> sites
    summary = Summary(n_regions, n_dcs, 0, 0, 0, 0)
    dc_names = []
    for i, per_dc in enumerate(_split(n_servers, n_dcs)):
        city = CITIES[i % len(CITIES)]
        name = f"dc-{city}{i // len(CITIES) + 1}"
        dc_names.append(name)
        sites.append(
            {
                "name": name,
                "kind": "datacenter",
                "location": f"{city.upper()} data centre {i // len(CITIES) + 1}",
                "inventory": f"inventory/{name}",
                "kubernetes_version": "1.33",
                "api_endpoint": f"k8s-api.{name}.example.internal",
                "node_cidr": f"10.{i}.0.0/18",
                "pod_cidr": f"10.{50 + i}.0.0/16",
            }
        )
        cap, migs = _write_datacenter(out / "inventory" / name, name, i, per_dc, rng, summary)
        capacity[name] = cap
        for key in migs:
            mig_sites.setdefault(key, []).append(name)
        _dump(stacks / f"Pulumi.{name}.yaml", {"config": {"gpufleet:site": name}})

    # ----------------------------------------------------------------- AWS regions
    region_sites = []
    for i, region in enumerate(REGIONS[:n_regions]):
        site = _region_site(region)
        region_sites.append(site)
        sites.append({"name": site, "kind": "aws", "region": region})
        training = i % 2 == 0
        pools: list[dict] = [
            {"name": "system", "instanceTypes": ["m7i.2xlarge"], "capacityType": "on-demand", "minSize": 2, "maxSize": 6, "diskGib": 100},
            {"name": "serving-l40s", "instanceTypes": ["g6e.12xlarge"], "capacityType": "on-demand", "minSize": 1, "maxSize": 8 + i % 5, "diskGib": 500,
             "labels": {"gpufleet.io/workload": "serving"}},
            {"name": "serving-l4", "instanceTypes": ["g6.2xlarge", "g6.4xlarge"], "capacityType": "spot", "minSize": 0, "maxSize": 20, "diskGib": 200},
        ]
        cap = {"l40s": 4 * (8 + i % 5), "l4": 20}
        if training:
            pools.append(
                {"name": "train-h100", "instanceTypes": ["p5.48xlarge"], "capacityType": "capacity-block",
                 "capacityReservationId": f"cr-0{i:016x}", "minSize": 0, "maxSize": 8, "diskGib": 2000, "efa": True,
                 "availabilityZones": [f"{region}a"], "labels": {"gpufleet.io/workload": "training"}}
            )
            cap["h100-80gb"] = 64
        capacity[site] = cap
        _dump(
            stacks / f"Pulumi.{site}.yaml",
            {
                "config": {
                    "gpufleet:site": site,
                    "aws:region": region,
                    "gpufleet:network": {"vpcCidr": f"10.{100 + i}.0.0/16", "availabilityZones": [f"{region}{z}" for z in "abc"]},
                    "gpufleet:cluster": {"kubernetesVersion": "1.33", "endpointAccess": "private"},
                    "gpufleet:nodePools": pools,
                }
            },
        )

    # ------------------------------------------------------- residency, teams, models
    regulated = dc_names[: max(1, n_dcs // 10)]
    residency = [{"data_class": "regulated", "description": "Contracted data kept on own hardware in named data centres.", "sites": regulated}]
    teams = []
    accs = [c.accelerator for c in CLASSES if c.accelerator != "l40s"]
    for t in range(max(2, round(20 * scale))):
        queues = []
        for q, acc in enumerate(accs[:2] if t % 2 else accs[1:]):
            pool = regulated if t == 0 else [*rng.sample(dc_names, min(3, n_dcs)), *(rng.sample(region_sites, 1) if acc == "h100-80gb" else [])]
            have = sum(capacity[s].get(acc, 0) for s in pool)
            if have == 0:
                continue
            queue = {"name": f"team{t:02d}-{acc.split('-')[0]}-{q}", "priority": 100 + t, "sites": pool, "quota": {acc: max(1, have // 2)}}
            if t == 0:
                queue["data_class"] = "regulated"
            queues.append(queue)
        teams.append({"name": f"team{t:02d}", "namespace": f"team{t:02d}", "queues": queues})

    l40s_sites = [s for s in [*dc_names, *region_sites] if capacity[s].get("l40s")]
    models = [
        {"name": "llama-3-1-70b-instruct", "source": "meta-llama/Llama-3.1-70B-Instruct", "parameters_b": 70.6, "quantization": "fp8",
         "context_length": 16384, "kv_cache_gib": 40, "placement": {"accelerator": "l40s", "gpus": 4}, "sites": l40s_sites, "replicas": 2},
        {"name": "llama-3-1-8b-instruct", "source": "meta-llama/Llama-3.1-8B-Instruct", "parameters_b": 8.0, "context_length": 8192,
         "kv_cache_gib": 4, "placement": {"accelerator": "l4", "gpus": 1}, "sites": region_sites, "replicas": 2},
        {"name": "llama-3-1-405b-instruct", "source": "meta-llama/Llama-3.1-405B-Instruct-FP8", "parameters_b": 405, "quantization": "fp8",
         "context_length": 32768, "kv_cache_gib": 200, "placement": {"accelerator": "h200-141gb", "gpus": 8},
         "sites": [s for s in dc_names if capacity[s].get("h200-141gb", 0) >= 8][:10], "replicas": 1},
    ]
    for (acc, prof), where in sorted(mig_sites.items()):
        allowed = [s for s in where if s in regulated] or where[:5]
        models.append(
            {"name": f"notes-{acc.split('-')[0]}-{prof.replace('.', '-').replace('+', '')}", "source": "s3://acme-models/clinical-notes-8b-awq",
             "parameters_b": 8.0 if prof != "1g.10gb" else 3.0, "quantization": "awq", "context_length": 8192,
             "kv_cache_gib": 4, "placement": {"accelerator": acc, "mig_profile": prof}, "sites": allowed, "replicas": 2,
             **({"data_class": "regulated"} if set(allowed) <= set(regulated) else {})}
        )
    models = [m for m in models if m["sites"]]

    fleet = {"name": "scale-test", "hub": "hub", "sites": sites, "residency": residency, "teams": teams, "models": models}
    _dump(stacks / "fleet.yaml", fleet, "# Generated by tests/scale/fleetgen.py; regenerate rather than edit.\n")
    summary.regions = n_regions
    return summary


def _write_hub(root: Path) -> None:
    _dump(root / "group_vars" / "all.yml", {"gpufleet_site": "hub", "ansible_user": "ansible", "gpufleet_server_class": "cpu-control-plane", "gpufleet_pool": "control-plane"})
    hosts = {f"hub-cp-0{n}": {"ansible_host": f"10.200.0.{10 + n}", "gpufleet_rack": "m01", "gpufleet_bmc_address": f"10.202.0.{10 + n}"} for n in (1, 2, 3)}
    _dump(root / "hosts.yml", {"all": {"children": {"control_plane": {"hosts": hosts}}}})


def _write_datacenter(root: Path, site: str, index: int, n_servers: int, rng: random.Random, summary: Summary) -> tuple[dict[str, int], set[tuple[str, str]]]:
    capacity: dict[str, int] = {}
    migs: set[tuple[str, str]] = set()
    short = site.removeprefix("dc-")
    counts = [round(n_servers * c.share) for c in CLASSES]
    counts[0] += n_servers - sum(counts)
    gv = root / "group_vars"
    _dump(gv / "all.yml", {"gpufleet_site": site, "ansible_user": "ansible", "ansible_python_interpreter": "/usr/bin/python3"})
    _dump(gv / "control_plane.yml", {"gpufleet_server_class": "cpu-control-plane", "gpufleet_pool": "control-plane"})
    # Settings shared by every GPU class, overridden per class below.
    _dump(gv / "gpu.yml", {"gpufleet_pool": "training", "gpufleet_nvswitch": False, "gpufleet_mig_layout": []})

    def addr(n: int) -> str:
        return f"10.{index}.{n // 250}.{n % 250 + 2}"

    cp = {f"{short}-cp-0{n}": {"ansible_host": addr(n), "gpufleet_rack": "a01", "gpufleet_bmc_address": f"10.{index}.32.{n + 2}"} for n in (1, 2, 3)}
    summary.cpu_servers += 3
    gpu_children: dict[str, Any] = {}
    host_no = 10
    for cls, count in zip(CLASSES, counts):
        if count <= 0:
            continue
        class_vars = {
            "gpufleet_server_class": cls.server_class,
            "gpufleet_accelerator": cls.accelerator,
            "gpufleet_gpu_count": cls.gpus,
            "gpufleet_fabric": cls.fabric,
            "gpufleet_fabric_interface": "bond0",
            "gpufleet_fabric_hcas": [f"mlx5_{k}" for k in range(cls.hcas)],
            "gpufleet_acceptance_busbw_gbps": cls.busbw,
        }
        if cls.accelerator != "l40s":
            class_vars["gpufleet_nvswitch"] = True
        else:
            class_vars["gpufleet_pool"] = "serving"
        _dump(gv / f"{cls.group}.yml", class_vars)
        hosts: dict[str, dict] = {}
        mig_hosts: dict[str, dict] = {}
        whole = 0
        for k in range(count):
            name = f"{short}-{cls.group.split('_')[-1]}-{k + 1:04d}"
            rack = f"r{(host_no // 4):03d}"
            hv = {"ansible_host": addr(host_no), "gpufleet_rack": rack, "gpufleet_bmc_address": f"10.{index}.{32 + host_no // 250}.{host_no % 250 + 2}"}
            if cls.fabric == "infiniband":
                hv["gpufleet_ib_block"] = f"ib-{host_no // 128:02d}"
            host_no += 1
            roll = rng.random()
            if cls.group == "hgx_h100" and roll < MIG_GROUP_SHARE:
                mig_hosts[name] = hv
                migs.add(("h100-80gb", "2g.20gb"))
                continue
            layout = HOST_MIG_LAYOUTS.get(cls.accelerator) if roll > 1 - HOST_MIG_SHARE else None
            if layout:
                _dump(root / "host_vars" / f"{name}.yml", {"gpufleet_pool": "serving", "gpufleet_mig_layout": layout})
                summary.host_vars_files += 1
                used = {d for g in layout for d in g["devices"]}
                whole += cls.gpus - len(used)
                migs.update((cls.accelerator, p) for g in layout for p in g["profiles"])
            else:
                whole += cls.gpus
            hosts[name] = hv
        body: dict[str, Any] = {"hosts": hosts}
        if mig_hosts:
            body["children"] = {f"{cls.group}_mig": {"hosts": mig_hosts}}
            _dump(gv / f"{cls.group}_mig.yml", {"gpufleet_pool": "serving", "gpufleet_mig_layout": MIG_GROUP_LAYOUT})
        gpu_children[cls.group] = body
        capacity[cls.accelerator] = capacity.get(cls.accelerator, 0) + whole
        summary.gpu_servers += count
        summary.gpus += count * cls.gpus
    inventory = {"all": {"children": {"control_plane": {"hosts": cp}, "gpu": {"children": gpu_children}}}}
    _dump(root / "hosts.yml", inventory, f"# {site}: generated by tests/scale/fleetgen.py.\n")
    return capacity, migs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/scale/fleetgen.py", description="Generate a large fleet description.")
    parser.add_argument("out", type=Path, help="folder to write stacks/ and inventory/ into")
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 20 regions, 50 data centres, 10,000 GPU servers")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    summary = generate(args.out, args.scale, args.seed)
    print(f"{args.out}: {summary.line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
