"""The training runtime per site fabric, and the TrainJob examples."""

from __future__ import annotations

import py_compile
from pathlib import Path

import pytest
import yaml

from k8s import multikueue, trainer
from k8s_harness import named, objects_of
from tests.schemas import assert_valid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "training"


def _runtime(bundles, site):
    return named(objects_of(bundles[site], "ClusterTrainingRuntime"), trainer.RUNTIME)


def _node_container(runtime):
    job = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert job["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    (container,) = job["template"]["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "node"
    return container


def _env(container):
    return {e["name"]: e["value"] for e in container["env"]}


def _fabric(bundles, site, namespace="team-research"):
    """The site's fabric variables: the ConfigMap the runtime's envFrom names."""
    (ref,) = _node_container(_runtime(bundles, site))["envFrom"]
    cm = next(o for o in objects_of(bundles[site], "ConfigMap") if o["metadata"]["name"] == ref["configMapRef"]["name"] and o["metadata"]["namespace"] == namespace)
    return cm["data"]


def test_every_site_has_the_runtime_under_the_same_name(bundles):
    for site in bundles:
        runtime = _runtime(bundles, site)
        assert runtime["spec"]["mlPolicy"]["torch"] == {}
        assert runtime["metadata"]["labels"]["gpufleet.io/site"] == site


def test_efa_site_runtime_uses_libfabric_efa_and_requests_the_interfaces(bundles, fleet):
    env = _fabric(bundles, "aws-euc1")
    assert env["FI_PROVIDER"] == "efa" and env["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert env["NCCL_SOCKET_IFNAME"] == "eth0"
    pool = next(p for p in fleet.site("aws-euc1").node_pools if p.efa)
    (lr,) = [o for o in objects_of(bundles["aws-euc1"], "LimitRange") if o["metadata"]["namespace"] == "team-research"]
    (limit,) = lr["spec"]["limits"]
    assert limit["type"] == "Container"
    assert limit["default"]["vpc.amazonaws.com/efa"] == limit["defaultRequest"]["vpc.amazonaws.com/efa"] == str(pool.efa_interfaces) == "32"
    assert "NCCL_IB_HCA" not in env


def test_infiniband_site_runtime_lists_the_servers_hcas(bundles, fleet):
    env = _fabric(bundles, "dc-fra")
    hgx = next(s for s in fleet.site("dc-fra").servers if s.spec.server_class == "hgx-h100-8")
    assert env["NCCL_IB_HCA"].split(",") == hgx.spec.fabric_hcas
    assert env["NCCL_IB_DISABLE"] == "0"
    assert "NCCL_IB_GID_INDEX" not in env  # InfiniBand, not RoCE
    assert "FI_PROVIDER" not in env


def test_roce_adds_the_gid_index(fleet_variant):
    variant = fleet_variant(lambda data: None)
    site = variant.site("dc-fra")
    for server in site.servers:
        if server.spec.fabric == "infiniband":
            server.spec = server.spec.model_copy(update={"fabric": "roce"})
    env = {e["name"]: e["value"] for e in trainer.nccl_env(site)}
    assert site.fabric == "roce"
    assert env["NCCL_IB_GID_INDEX"] == "3"
    assert env["NCCL_IB_HCA"].startswith("mlx5_0,mlx5_1")


def test_the_cpu_only_hub_runtime_disables_infiniband(bundles, fleet):
    env = _fabric(bundles, fleet.hub)
    assert env["NCCL_IB_DISABLE"] == "1"


def test_trainer_chart_is_pinned_without_its_sample_runtimes(bundles):
    chart = bundles["dc-fra"]["trainer"].charts[0]
    assert chart.version == "2.3.0" and chart.repository == "oci://ghcr.io/kubeflow/charts"
    assert chart.values["runtimes"]["defaultEnabled"] is False
    assert chart.values["image"]["tag"] == "v2.3.0"


# ---------------------------------------------------------------------- examples


def _example_docs():
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_examples_validate_against_the_crds_and_kubernetes_schemas():
    docs = _example_docs()
    assert {d["kind"] for _, d in docs} == {"TrainJob", "PersistentVolumeClaim"}
    assert_valid([d for _, d in docs])


def test_example_train_jobs_use_a_queue_the_hub_has_and_the_fleet_runtime(bundles, fleet):
    hub = objects_of(bundles[fleet.hub])
    jobs = [d for _, d in _example_docs() if d["kind"] == "TrainJob"]
    assert {j["metadata"]["name"] for j in jobs} == {"llama-sft-ddp", "llama-distill-8b-to-1b"}
    for job in jobs:
        labels = job["metadata"]["labels"]
        lq = named([o for o in hub if o["kind"] == "LocalQueue"], labels["kueue.x-k8s.io/queue-name"])
        assert lq["metadata"]["namespace"] == job["metadata"]["namespace"]
        assert named([o for o in hub if o["kind"] == "WorkloadPriorityClass"], labels["kueue.x-k8s.io/priority-class"])
        assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": trainer.RUNTIME}
        assert "managedBy" not in job["spec"]  # Kueue sets it for MultiKueue queues


def test_example_jobs_fit_the_nodes_of_every_site_they_can_be_dispatched_to(fleet):
    from gpufleet.catalog import INSTANCE_TYPES

    plan = {p["name"]: p for p in multikueue.dispatch_plan(fleet)}
    for job in (d for _, d in _example_docs() if d["kind"] == "TrainJob"):
        gpus = job["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"]
        assert job["spec"]["trainer"]["numProcPerNode"] == gpus
        for step in plan[job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]]["steps"]:
            site = fleet.site(step["site"])
            per_node = [p.gpus_per_node for p in site.node_pools if p.accelerator == "h100-80gb"] + [
                s.whole_gpus for s in site.servers if s.spec.accelerator == "h100-80gb" and s.whole_gpus == s.spec.gpu_count
            ]
            assert per_node and max(per_node) >= gpus, site.name
            for pool in site.node_pools:
                if pool.accelerator == "h100-80gb":
                    it = INSTANCE_TYPES[pool.instance_types[0]]
                    cpu = int(job["spec"]["trainer"]["resourcesPerNode"]["requests"]["cpu"])
                    assert cpu <= it.vcpus


def test_example_jobs_mount_the_scripts_they_run():
    for job in (d for _, d in _example_docs() if d["kind"] == "TrainJob"):
        script = Path(job["spec"]["trainer"]["command"][-1]).name
        assert (EXAMPLES / script).is_file(), script
        pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert job["spec"]["trainer"]["command"][-1].startswith(mounts["scripts"] + "/")
        assert {v["name"]: v for v in pod["volumes"]}["scripts"]["configMap"]["name"] == "train-scripts"


@pytest.mark.parametrize("script", ["finetune_ddp.py", "distill.py"])
def test_training_scripts_compile(script, tmp_path):
    py_compile.compile(str(EXAMPLES / script), cfile=str(tmp_path / "out.pyc"), doraise=True)
