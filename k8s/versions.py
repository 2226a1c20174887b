"""Every Helm chart and container image version the Kubernetes add-ons use.

One module, so that an upgrade is one reviewed diff and ``gpufleet render``
shows its effect on every site. Versions are exact: no ranges, no ``latest``.
Each add-on owns a section below; a new section is appended at the end and
existing ones keep their order.

Where the pins come from (each upstream's release tag):

* NVIDIA GPU operator: chart ``gpu-operator`` from https://helm.ngc.nvidia.com/nvidia,
  release v26.7.0 (its CRDs are the ones the tests validate against).
* Kueue: chart ``kueue`` from ``oci://registry.k8s.io/kueue/charts``, release
  v0.19.2 (API ``kueue.x-k8s.io/v1beta2``). 0.19 is the first release whose
  incremental MultiKueue dispatcher follows the order of the MultiKueueConfig's
  cluster list (feature gate MultiKueueIncrementalDispatcherRespectConfigOrder,
  beta and on by default) and accepts a step size
  (MultiKueueIncrementalDispatcherConfig); earlier releases sort the clusters
  by name, which would put ``aws-*`` before ``dc-*``.
* Kubeflow Trainer v2: chart ``kubeflow-trainer`` from ``oci://ghcr.io/kubeflow/charts``,
  release v2.3.0 (API ``trainer.kubeflow.org/v1alpha1``); it installs JobSet
  0.12.0 as a chart dependency.
"""

from __future__ import annotations

# ===================================================== federation (k8s/ core add-ons)

# --- NVIDIA GPU operator
GPU_OPERATOR_CHART = "gpu-operator"
GPU_OPERATOR_REPOSITORY = "https://helm.ngc.nvidia.com/nvidia"
GPU_OPERATOR_VERSION = "v26.7.0"
# Images the ClusterPolicy runs, pinned here rather than left to the chart's defaults.
GPU_OPERATOR_IMAGES = {
    "toolkit": ("nvcr.io/nvidia/k8s", "container-toolkit", "v1.20.0"),
    "devicePlugin": ("nvcr.io/nvidia", "k8s-device-plugin", "v0.20.0"),
    "gfd": ("nvcr.io/nvidia", "k8s-device-plugin", "v0.20.0"),
    "migManager": ("nvcr.io/nvidia/cloud-native", "k8s-mig-manager", "v0.15.0"),
    "dcgmExporter": ("nvcr.io/nvidia/k8s", "dcgm-exporter", "4.6.0-4.8.3-distroless"),
}
# Their digests, as the operator's own release pins them: NVIDIA/gpu-operator
# v26.7.0 (10ee5b3), bundle/manifests/gpu-operator-certified.clusterserviceversion.yaml,
# spec.relatedImages. The ClusterPolicy takes them as `version: <tag>@<digest>`
# (api/nvidia/v1/clusterpolicy_types.go imagePath: repository/image:version).
GPU_OPERATOR_DIGESTS = {
    "toolkit": "sha256:f8c647d581f7c8b178efdb7e6c94f5fb6eb12ebc05e2157fa314d327560fcb7a",
    "devicePlugin": "sha256:a61ba9fd8efb82f3a79f877f7580e02c1e8e7593f62473644bc9c79e315c3312",
    "gfd": "sha256:a61ba9fd8efb82f3a79f877f7580e02c1e8e7593f62473644bc9c79e315c3312",
    "migManager": "sha256:cab2cf9deafc9602da69d0832a82958a7687f22f4a2f19674099dc9a5c4ea8e2",
    "dcgmExporter": "sha256:613ab03c11d442fd960ff515f547e9921537454a712d08160bc8f677f89f1c35",
}
# The operator itself, which also runs the validator. The release bundle names
# only ghcr.io/nvidia/gpu-operator:main-latest, and no public record of the
# v26.7.0 digest was found: pinned by tag; resolve it with
# `crane digest nvcr.io/nvidia/gpu-operator:v26.7.0` and add it here.
GPU_OPERATOR_OPERATOR_IMAGE = ("nvcr.io/nvidia", "gpu-operator", "v26.7.0", None)
# Node Feature Discovery, the operator chart's sub-chart (0.19.0); the digest as
# recorded by a public project that verifies it against registry.k8s.io.
NFD_IMAGE = ("registry.k8s.io/nfd/node-feature-discovery", "v0.19.0",
             "sha256:aa5be8691e4d5876d8a774063b37e1430c75e09468ba98d8bd07f6deec1f1756")


def tag_at_digest(tag: str, digest: str | None) -> str:
    """``tag@digest`` for an image value that takes a tag, or the tag alone where no digest is known."""
    return f"{tag}@{digest}" if digest else tag


# --- Kueue
KUEUE_CHART = "kueue"
KUEUE_REPOSITORY = "oci://registry.k8s.io/kueue/charts"
KUEUE_VERSION = "0.19.2"
KUEUE_IMAGE = ("registry.k8s.io/kueue/kueue", "v0.19.2")
# No public record of the v0.19.2 image's digest was found: pinned by tag;
# resolve it with `crane digest registry.k8s.io/kueue/kueue:v0.19.2`.
KUEUE_IMAGE_DIGEST: str | None = None
KUEUE_API = "kueue.x-k8s.io/v1beta2"
KUEUE_CONFIG_API = "config.kueue.x-k8s.io/v1beta2"

# --- Kubeflow Trainer v2 (with JobSet as its chart dependency)
TRAINER_CHART = "kubeflow-trainer"
TRAINER_REPOSITORY = "oci://ghcr.io/kubeflow/charts"
TRAINER_VERSION = "2.3.0"
TRAINER_IMAGE = ("ghcr.io", "kubeflow/trainer/trainer-controller-manager", "v2.3.0")
# No public record of the v2.3.0 image's digest was found: pinned by tag;
# resolve it with `crane digest ghcr.io/kubeflow/trainer/trainer-controller-manager:v2.3.0`.
TRAINER_IMAGE_DIGEST: str | None = None
# JobSet, the Trainer chart's dependency: its chart's values name a staging
# image (us-central1-docker.pkg.dev/k8s-staging-images/jobset/jobset:main,
# pulled Always), so the release image is set explicitly. No public record of
# its digest was found: pinned by tag.
JOBSET_IMAGE = ("registry.k8s.io/jobset/jobset", "v0.12.0", None)
TRAINER_API = "trainer.kubeflow.org/v1alpha1"
# The training container of the runtimes; a TrainJob may set its own image.
# The digest is that of the multi-architecture index of the tag, as recorded by
# several independent public projects that pin it.
PYTORCH_IMAGE = "docker.io/pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime@sha256:db80a41f8428644cebcb3d75b0b62df334ab6c0e75785951eb25f48bfbd42407"

# --- gpufleet's on-prem-first MultiKueue dispatcher (k8s/dispatcher): its code is
# a ConfigMap, run by the stock Python image (standard library only). The digest
# is that of the multi-architecture index of python:3.11.14-slim-bookworm, as
# recorded by several independent public projects that pin the same tag.
DISPATCHER_PYTHON_IMAGE = "docker.io/library/python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d"

# --- cluster-autoscaler for the EKS managed node groups (k8s/autoscaler). The
# minor follows Kubernetes (1.33); 1.33.0 is the release nearest to the commit
# the federation lab builds (tests/fedlab: ClusterAutoscalerVersion 1.33.0).
# No public record of this image's digest was found; resolve it with
# `crane digest registry.k8s.io/autoscaling/cluster-autoscaler:v1.33.0` and pin
# it here before deploying (README, "Deploying for real").
CLUSTER_AUTOSCALER_VERSION = "v1.33.0"
CLUSTER_AUTOSCALER_IMAGE = f"registry.k8s.io/autoscaling/cluster-autoscaler:{CLUSTER_AUTOSCALER_VERSION}"

# --- AWS EFA device plugin (k8s/efa), for EFA node pools only: the image of
# aws/eks-charts stable/aws-efa-k8s-device-plugin v0.5.30 (appVersion v0.5.20).
# It lives in each region's EKS ECR registry (account below, per the EKS user
# guide "View Amazon container image registries for Amazon EKS add-ons"). No
# public record of the v0.5.20 digest was found (the only published one is for
# v0.3.3, from 2021); resolve it with `crane digest` (ECR credentials needed)
# and pin it here before deploying.
EFA_DEVICE_PLUGIN_VERSION = "v0.5.20"
EFA_DEVICE_PLUGIN_DIGEST: str | None = None
EKS_ECR_ACCOUNT = "602401143452"
# Regions whose EKS registry is another account (EKS user guide, as above).
EKS_ECR_ACCOUNTS = {
    "af-south-1": "877085696533",
    "ap-east-1": "800184023465",
    "ap-southeast-3": "296578399912",
    "ap-south-2": "900889452093",
    "ap-southeast-4": "491585149902",
    "ap-southeast-5": "151610086707",
    "ap-southeast-6": "333609536671",
    "ap-southeast-7": "121268973566",
}

# ===================================================== monitoring (k8s/monitoring)

# --- kube-prometheus-stack: the CRDs the tests validate against come from this
# exact release (prometheus-operator v0.93.1).
KUBE_PROMETHEUS_STACK_CHART = "kube-prometheus-stack"
KUBE_PROMETHEUS_STACK_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
KUBE_PROMETHEUS_STACK_VERSION = "88.5.3"
# The images the release runs, set through its values with their digests (the
# chart appends `@sha256:<sha>`). Tags are the chart's own (values.yaml and
# Chart.yaml at kube-prometheus-stack-88.5.3: appVersion v0.93.1, sub-chart
# kube-state-metrics 8.4.0 = v2.20.0). Digests of the multi-architecture
# indexes as a public image audit of the same releases recorded them; `None`
# where no public record was found (resolve with `crane digest` and add it).
KUBE_PROMETHEUS_STACK_IMAGES = {
    "prometheus": ("quay.io", "prometheus/prometheus", "v3.14.0-distroless", "50c707e96da5ade383cb1707790576480485e93de06aa60ad8802cb5f744bd0a"),
    "alertmanager": ("quay.io", "prometheus/alertmanager", "v0.34.0", "690c7b525f4367aa91f73e2f91c632206d32e97c6384bdbf2fb7a861b420340d"),
    "operator": ("quay.io", "prometheus-operator/prometheus-operator", "v0.93.1", "e52bb28fd41c98dd407c7a8cba8bdcfe7eabd7447e250afaf1fe7bb816dedbff"),
    "config-reloader": ("quay.io", "prometheus-operator/prometheus-config-reloader", "v0.93.1", "428f088fe6fe07ab138bda92113664b04848a1dc408e4d3680a60ecdb55d1a65"),
    "kube-state-metrics": ("registry.k8s.io", "kube-state-metrics/kube-state-metrics", "v2.20.0", "42cfe3723a5f058171c627537fb57a3ea0f26e4380fa18555a95cb1a1b4cfc5b"),
    # The admission webhook's certificate job; a digest was found only for 1.8.8.
    "webhook-certgen": ("ghcr.io", "jkroepke/kube-webhook-certgen", "1.8.7", None),
}
# Left to their charts' defaults, with no digest: node-exporter v1.12.1 (the
# public records of its digest disagree with each other), Grafana and its
# dashboard sidecar (quay.io/kiwigrid/k8s-sidecar 2.10.1; no public record).


# ===================================================== serving (k8s/serving)
#
# Images pinned by exact tag AND by the digest of their multi-architecture
# index, so a moved tag cannot change what runs. Where each digest was read:
# - vLLM v0.24.0: the index digest of vllm/vllm-openai:v0.24.0, as recorded
#   by several independent deployments (x86-64 and arm64 hosts alike).
# - LiteLLM v1.103.0: the index digest of ghcr.io/berriai/litellm:v1.103.0
#   (the Docker Hub mirror carries the same digest). The Python package the
#   tests run is locked to the same version, by hash, in uv.lock.
# - Valkey 8.1.10: the index digest of valkey/valkey:8.1.10-alpine.
# Re-check a digest with `crane digest IMAGE:TAG` (or `docker buildx
# imagetools inspect IMAGE:TAG`) before bumping a tag.
VLLM_VERSION = "v0.24.0"
VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.24.0@sha256:251eba5cc7c12fed0b75da22a9240e582b1c9e39f6fbc064f86781b963bd814f"

LITELLM_VERSION = "1.103.0"
LITELLM_IMAGE = "ghcr.io/berriai/litellm:v1.103.0@sha256:bd089afdcd35b894b14a93f9743cdc8b591f82da1a38dd43a010a7b0c9de5fd7"
# PyPI releases of LiteLLM that carried a credential stealer (March 2026). The
# lock must never resolve to them; tests/serving/test_serving_supply_chain.py checks it.
LITELLM_COMPROMISED = ("1.82.7", "1.82.8")

VALKEY_VERSION = "8.1.10"
VALKEY_IMAGE = "docker.io/valkey/valkey:8.1.10-alpine@sha256:081c2f5cb575efc901aa80ff9cdbd1ec6a301682fd35e1ebb4b0990a4a4a8507"

# prometheus-adapter serves vllm:num_requests_waiting on the custom metrics API
# for the queue-depth autoscaler.
PROMETHEUS_ADAPTER_CHART = "prometheus-adapter"
PROMETHEUS_ADAPTER_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
PROMETHEUS_ADAPTER_CHART_VERSION = "4.13.0"
# Its image (the chart's appVersion); no public record of the digest was found.
PROMETHEUS_ADAPTER_IMAGE = ("registry.k8s.io/prometheus-adapter/prometheus-adapter", "v0.12.0", None)

# The LeaderWorkerSet API the multi-node vLLM groups use (kubernetes-sigs/lws).
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"


# ===================================================== federation lab (tests/fedlab)
#
# The upstream Go modules `make fedlab` builds (tests/fedlab/build.py) to run
# the federation on real control planes. Each entry: the module and exact
# version, the binaries (name -> package), build tags and -ldflags (``{...}``
# is filled by the build from the module's own metadata: {version}, {major},
# {minor}, {commit}, {date}). They equal the production pins above and the
# roles' Kubernetes pin (roles/k8s_node/defaults/main.yml); tests/fedlab
# checks that they do.
#
# ``wrapper``: the module has replace directives, so `go install` refuses it
# and the build generates a small module that requires it:
# - "staging": replace each k8s.io/<staging> module by the v0.<minor>.<patch>
#   release of this Kubernetes version (what the module replaces by ./staging).
# - "own-replaces": repeat the module's own versioned replace directives; its
#   local ones get the versions in ``local``.
# ``sums``: go.sum lines of modules the checksum database does not know
# (a master-branch pseudo-version), read from the module proxy's download.
FEDLAB_KUBERNETES_VERSION = "v1.33.5"
_KUBE_VERSION_LDFLAGS = " ".join(
    f"-X {pkg}.{var}={{{key}}}"
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    for var, key in (("gitVersion", "version"), ("gitMajor", "major"), ("gitMinor", "minor"),
                     ("gitCommit", "commit"), ("gitTreeState", "tree"), ("buildDate", "date"))
)
FEDLAB_GO_MODULES = {
    "kubernetes": {
        "module": "k8s.io/kubernetes",
        "version": FEDLAB_KUBERNETES_VERSION,
        "binaries": {
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            # kustomize (`kubectl kustomize`) for the upstream install manifests
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        },
        "tags": "selinux,notest",
        "ldflags": _KUBE_VERSION_LDFLAGS,
        "wrapper": "staging",
    },
    # Kubernetes 1.33 runs etcd 3.5 (kubeadm's SupportedEtcdVersion: 1.31-1.33 -> 3.5.x).
    "etcd": {
        "module": "go.etcd.io/etcd/server/v3",
        "version": "v3.5.24",
        "binaries": {"etcd": "go.etcd.io/etcd/server/v3"},
        "tags": "",
        "ldflags": "-X go.etcd.io/etcd/api/v3/version.GitSHA={commit}",
        "wrapper": "plain",
    },
    "kwok": {
        "module": "sigs.k8s.io/kwok",
        "version": "v0.8.0",
        "binaries": {"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
        "tags": "",
        "ldflags": "-X sigs.k8s.io/kwok/pkg/consts.Version={version}",
    },
    # cluster-autoscaler with the kwok cloud provider as its only provider.
    # The proxy refuses the cluster-autoscaler-1.33.x release commits; this is
    # the master commit 1959f5f61f6c of 2025-06-13 (ClusterAutoscalerVersion
    # "1.33.0", built against Kubernetes v1.33.1).
    "cluster-autoscaler": {
        "module": "k8s.io/autoscaler/cluster-autoscaler",
        "version": "v0.0.0-20250613073258-1959f5f61f6c",
        "binaries": {"cluster-autoscaler": "k8s.io/autoscaler/cluster-autoscaler"},
        "tags": "kwok",
        "ldflags": "",
        "wrapper": "own-replaces",
        "local": {"k8s.io/autoscaler/cluster-autoscaler/apis": "v0.0.0-20240830133931-adfbe7e45277"},
        "sums": [
            "k8s.io/autoscaler/cluster-autoscaler v0.0.0-20250613073258-1959f5f61f6c h1:gGUthCoel/TlD1fh33foTFCs1n75w8sqmpD3qf2zqk4=",
            "k8s.io/autoscaler/cluster-autoscaler v0.0.0-20250613073258-1959f5f61f6c/go.mod h1:/1vry++ARaSAifwfBxWxGejNkgroz+/N8HyI0Xo7F8U=",
        ],
    },
    "kueue": {
        "module": "sigs.k8s.io/kueue",
        "version": "v" + KUEUE_VERSION,
        "binaries": {"kueue": "sigs.k8s.io/kueue/cmd/kueue"},
        "tags": "",
        "ldflags": "-X sigs.k8s.io/kueue/pkg/version.GitVersion={version} -X sigs.k8s.io/kueue/pkg/version.GitCommit={commit}",
    },
    # JobSet as the Trainer chart installs it (its dependency at 0.12.0).
    "jobset": {
        "module": "sigs.k8s.io/jobset",
        "version": "v0.12.0",
        "binaries": {"jobset": "sigs.k8s.io/jobset"},
        "tags": "",
        "ldflags": "-X sigs.k8s.io/jobset/pkg/version.GitVersion={version} -X sigs.k8s.io/jobset/pkg/version.GitCommit={commit}",
    },
    "trainer": {
        "module": "github.com/kubeflow/trainer/v2",
        "version": "v" + TRAINER_VERSION,
        "binaries": {"trainer-controller-manager": "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager"},
        "tags": "",
        "ldflags": "",
    },
}


# ===================================================== CUDA of the GPU workload images (gpufleet/drivers.py)
#
# The CUDA major each GPU workload image above needs (VLLM_IMAGE, PYTORCH_IMAGE)
# lives in the fleet model, which refuses a site whose driver branch cannot run
# it without importing this module. Bump the entry there with the image tag;
# tests/model/test_drivers.py checks every GPU workload image here has one.
from gpufleet.drivers import GPU_IMAGE_CUDA  # noqa: E402,F401
