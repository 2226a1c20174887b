"""Kubeflow Trainer v2 at every site: the chart and the ``torch-distributed`` runtime.

One ClusterTrainingRuntime, ``torch-distributed``, exists at every site under
the same name and with the same pod template. A TrainJob names the runtime
only; wherever MultiKueue dispatches it, the site supplies its fabric settings
*outside* the template:

* The NCCL and libfabric variables come from the ConfigMap ``gpufleet-fabric``
  in each training namespace (the container's ``envFrom``), whose content is
  the site's own.
* At a site whose GPU pools have EFA, a LimitRange ``gpufleet-efa`` in each
  training namespace gives every container the EFA interfaces of its nodes
  (``vpc.amazonaws.com/efa`` request and limit) unless it asks for them itself.
  So at such a site every container of a training namespace requests EFA;
  run non-GPU work elsewhere.

Why not per-site templates: the hub computes a TrainJob's pod sets from *its*
runtime, and the worker's Kueue finishes a dispatched workload as out of sync
("The prebuilt workload is out of sync with its user job") when the pod sets
it computes from *its* runtime differ in the containers
(``ensurePrebuiltWorkloadInSync``, ``EquivalentToWorkload``,
pkg/controller/jobframework/reconciler.go; ``comparePodTemplate``,
pkg/util/equality/podset.go, at Kueue 0.19.2). The federation lab showed it:
every dispatched TrainJob bounced between "admitted" and "re-dispatch".
The fabric settings per site:

* EFA (AWS): libfabric's EFA provider with GPUDirect RDMA
  (``FI_PROVIDER=efa``, ``FI_EFA_USE_DEVICE_RDMA=1``), and each node requests
  the EFA interfaces of its instance type (``vpc.amazonaws.com/efa``, which
  the EFA device plugin :mod:`k8s.efa` renders on the EFA pools advertises).
* InfiniBand / RoCE (data centres): ``NCCL_IB_HCA`` lists the HCAs of the
  site's GPU servers (``gpufleet_fabric_hcas``); RoCE adds
  ``NCCL_IB_GID_INDEX=3`` (the RoCE v2 GID). The HCAs must be visible in the
  pod (an RDMA device plugin or the network operator on those servers).
* Bootstrap traffic (rendezvous, NCCL's socket setup) uses the pod's own
  interface, ``eth0``, on every fabric.
* The hub runs no training; its runtime exists because Kueue computes a
  TrainJob's pod sets from the runtime before dispatching it.

Gang admission: a TrainJob labelled ``kueue.x-k8s.io/queue-name`` is created
suspended and Kueue admits all of its nodes at once against the queue's
quota (and places them on one InfiniBand block when asked), or none; with
``waitForPodsReady`` (see :mod:`k8s.kueue`) a job whose pods do not all start
is requeued. No scheduler plugin (``podGroupPolicy``) is needed for that.
"""

from __future__ import annotations

from typing import Any

from gpufleet.model import Fleet, Site
from k8s import versions
from k8s.core import AddonBundle, Chart
from k8s.kueue import GPU_TAINT, tolerations

NAMESPACE = "kubeflow-system"
RELEASE = "kubeflow-trainer"
RUNTIME = "torch-distributed"
EFA_RESOURCE = "vpc.amazonaws.com/efa"
ROCE_GID_INDEX = "3"
SHM_SIZE = "64Gi"  # PyTorch data loaders and NCCL's shared-memory transport
TMP_SIZE = "50Gi"  # torchrun's and torch.compile's files, caches under HOME=/tmp
# The training container runs unprivileged. The PyTorch image has no USER (root)
# and installs Python under /opt/conda, world-readable (pytorch/pytorch
# Dockerfile, `official` stage), so any UID can run it; 1000 is the usual first
# unprivileged one. Its root filesystem is read-only: a job writes to /tmp, to
# /dev/shm and to the volumes it mounts (datasets, checkpoints). RDMA needs no
# added capability: the containers inherit an unlimited RLIMIT_MEMLOCK from the
# node (roles/os_baseline sets DefaultLimitMEMLOCK=infinity at data centres).
TRAINING_UID = 1000


def security_context() -> dict[str, Any]:
    """The training container's: unprivileged, nothing added, nothing writable but its volumes."""
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINING_UID,
        "runAsGroup": TRAINING_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def fabric_hcas(site: Site) -> list[str]:
    """HCAs NCCL may use at ``site``: those of its GPU servers on the site's fabric."""
    fabric = site.fabric
    hcas: list[str] = []
    for server in site.servers:
        if server.spec.gpu_count and server.spec.fabric == fabric:
            for hca in server.spec.fabric_hcas:
                if hca not in hcas:
                    hcas.append(hca)
    return hcas


def efa_interfaces(site: Site) -> int:
    """EFA interfaces every EFA GPU node of ``site`` has (the smallest pool's)."""
    counts = [p.efa_interfaces for p in site.node_pools if p.efa and p.accelerator]
    return min(counts) if counts else 0


def nccl_env(site: Site) -> list[dict[str, str]]:
    """NCCL and libfabric settings for the site's fabric."""
    env = {"NCCL_SOCKET_IFNAME": "eth0", "NCCL_DEBUG": "WARN"}
    fabric = site.fabric
    if fabric == "efa":
        env.update({"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "FI_EFA_FORK_SAFE": "1", "NCCL_PROTO": "simple"})
    elif fabric in ("infiniband", "roce"):
        hcas = fabric_hcas(site)
        env.update({"NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": ",".join(hcas)})
        if fabric == "roce":
            env["NCCL_IB_GID_INDEX"] = ROCE_GID_INDEX
    else:
        env["NCCL_IB_DISABLE"] = "1"
    return [{"name": k, "value": v} for k, v in env.items()]


# ------------------------------------------------ federation: one template, site settings beside it

FABRIC_CONFIG = "gpufleet-fabric"  # ConfigMap with the site's NCCL/libfabric variables
EFA_LIMIT_RANGE = "gpufleet-efa"


def training_namespaces(fleet: Fleet) -> list[str]:
    return sorted({t.namespace for t in fleet.teams if t.queues})


def fabric_config(fleet: Fleet, site: Site) -> list[dict[str, Any]]:
    """The site's fabric variables, in every training namespace (the runtime's ``envFrom``)."""
    data = {e["name"]: e["value"] for e in nccl_env(site)}
    labels = {"app.kubernetes.io/part-of": "gpufleet", "gpufleet.io/site": site.name, "gpufleet.io/fabric": site.fabric}
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": FABRIC_CONFIG, "namespace": ns, "labels": labels}, "data": data}
            for ns in training_namespaces(fleet)]


def efa_limit_ranges(fleet: Fleet, site: Site) -> list[dict[str, Any]]:
    """At an EFA site, every training container gets the nodes' EFA interfaces by default."""
    efa = efa_interfaces(site) if site.fabric == "efa" else 0
    if not efa:
        return []
    limit = {"type": "Container", "default": {EFA_RESOURCE: str(efa)}, "defaultRequest": {EFA_RESOURCE: str(efa)}}
    return [{"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": EFA_LIMIT_RANGE, "namespace": ns, "labels": {"app.kubernetes.io/part-of": "gpufleet"}},
             "spec": {"limits": [limit]}} for ns in training_namespaces(fleet)]


def runtime(site: Site) -> dict[str, Any]:
    """The ``torch-distributed`` ClusterTrainingRuntime (torchrun); the same template at
    every site (only its labels name the site)."""
    container: dict[str, Any] = {
        "name": "node",
        "image": versions.PYTORCH_IMAGE,
        # HOME in the writable /tmp: torch, triton and Hugging Face keep their caches under it.
        "env": [{"name": "HOME", "value": "/tmp"}],
        "envFrom": [{"configMapRef": {"name": FABRIC_CONFIG}}],
        "securityContext": security_context(),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec = {
        # torchrun's rendezvous and NCCL need no Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": TRAINING_UID, "runAsGroup": TRAINING_UID, "fsGroup": TRAINING_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "tolerations": tolerations([GPU_TAINT]),
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}}],
    }
    return {
        "apiVersion": versions.TRAINER_API,
        "kind": "ClusterTrainingRuntime",
        "metadata": {
            "name": RUNTIME,
            "labels": {"trainer.kubeflow.org/framework": "torch", "app.kubernetes.io/part-of": "gpufleet", "gpufleet.io/site": site.name, "gpufleet.io/fabric": site.fabric},
        },
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": "node",
                            "template": {
                                "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                                "spec": {"template": {"spec": pod_spec}},
                            },
                        }
                    ]
                }
            },
        },
    }


def chart() -> Chart:
    registry, repository, tag = versions.TRAINER_IMAGE
    js_repo, js_tag, js_digest = versions.JOBSET_IMAGE
    values = {
        "image": {"registry": registry, "repository": repository, "tag": versions.tag_at_digest(tag, versions.TRAINER_IMAGE_DIGEST)},
        # JobSet's own chart values name a staging image pulled Always (k8s/versions.py).
        "jobset": {"install": True, "image": {"repository": js_repo, "tag": versions.tag_at_digest(js_tag, js_digest), "pullPolicy": "IfNotPresent"}},
        # gpufleet ships its own runtime; the chart's examples stay off.
        "runtimes": {"defaultEnabled": False},
    }
    return Chart(RELEASE, versions.TRAINER_CHART, versions.TRAINER_REPOSITORY, versions.TRAINER_VERSION, NAMESPACE, values)


def build(fleet: Fleet, site: Site) -> AddonBundle:
    objs = [runtime(site), *fabric_config(fleet, site), *efa_limit_ranges(fleet, site)]
    return AddonBundle("trainer", objects=objs, charts=[chart()])
