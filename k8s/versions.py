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

# --- Kueue
KUEUE_CHART = "kueue"
KUEUE_REPOSITORY = "oci://registry.k8s.io/kueue/charts"
KUEUE_VERSION = "0.19.2"
KUEUE_IMAGE = ("registry.k8s.io/kueue/kueue", "v0.19.2")
KUEUE_API = "kueue.x-k8s.io/v1beta2"
KUEUE_CONFIG_API = "config.kueue.x-k8s.io/v1beta2"

# --- Kubeflow Trainer v2 (with JobSet as its chart dependency)
TRAINER_CHART = "kubeflow-trainer"
TRAINER_REPOSITORY = "oci://ghcr.io/kubeflow/charts"
TRAINER_VERSION = "2.3.0"
TRAINER_IMAGE = ("ghcr.io", "kubeflow/trainer/trainer-controller-manager", "v2.3.0")
TRAINER_API = "trainer.kubeflow.org/v1alpha1"
# The training container of the runtimes; a TrainJob may set its own image.
PYTORCH_IMAGE = "pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime"

# ===================================================== monitoring (k8s/monitoring)

# --- kube-prometheus-stack: the CRDs the tests validate against come from this
# exact release (prometheus-operator v0.93.1).
KUBE_PROMETHEUS_STACK_CHART = "kube-prometheus-stack"
KUBE_PROMETHEUS_STACK_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
KUBE_PROMETHEUS_STACK_VERSION = "88.5.3"
