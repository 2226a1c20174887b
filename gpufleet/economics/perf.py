"""The performance model: sustainable output tokens/s of one replica at an SLO.

A replica is a model at a quantization on ``tensor_parallel`` whole GPUs of one
accelerator, or on one MIG slice. Two sources, in this order:

1. **Measured**: points recorded by ``gpufleet calibrate`` from ``vllm bench
   serve`` result files (:mod:`.calibrate`). The figure is the highest measured
   output throughput among the runs whose p95 TTFT and p95 TPOT met the SLO;
   its provenance names the result file and its SHA-256.
2. **Roofline**: from the catalogue (HBM bandwidth, dense tensor throughput at
   the quantization's compute precision, GPU memory), the model's weights and
   KV cache, and the efficiency factors below. A decode step reads the weights
   once and every running sequence's KV cache, or is bound by its FLOPs,
   whichever is slower; prefill of each request is compute-bound and takes its
   share of the GPU's time. The largest batch whose p95 TPOT and TTFT meet the
   SLO, and whose KV cache fits in memory, gives the throughput.

Every figure carries its provenance. No figure here was measured on a GPU by
this project (see README, "Economics").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gpufleet import mig
from gpufleet.catalog import ACCELERATORS

# --- stated efficiency factors (roofline) ---------------------------------------
BANDWIDTH_EFFICIENCY = 0.80  # share of peak HBM bandwidth decode kernels reach (75-85 % is typical for GEMV-bound decode)
COMPUTE_EFFICIENCY = 0.55  # share of dense tensor peak a prefill reaches (model FLOPs utilisation)
TPOT_P95_OVER_MEAN = 1.2  # p95 time per output token over the mean step time (batch composition jitter)
TTFT_P95_OVER_PREFILL = 3.0  # p95 time to first token over one request's prefill time (queueing under load)
ALLREDUCE_LATENCY_S = {"nvswitch": 8e-6, "pcie": 25e-6}  # per all-reduce of one decode step's activations
STEP_OVERHEAD_S = 0.003  # scheduler, sampling and kernel launches per decode step (CUDA graphs on)
MAX_BATCH = 512
# --- memory, as the fleet model checks it (gpufleet.model) ----------------------
GPU_MEMORY_UTILIZATION = 0.9
RUNTIME_OVERHEAD_GIB = 1.0
BYTES_PER_PARAM = {"none": 2.0, "fp8": 1.0, "int8": 1.0, "awq": 0.5, "gptq": 0.5}
COMPUTE_PRECISION = {"none": "fp16", "fp8": "fp8", "int8": "int8", "awq": "fp16", "gptq": "fp16"}
KV_BYTES = 2  # FP16/BF16 KV cache


@dataclass(frozen=True)
class Architecture:
    """What the KV cache and the step time need beyond the parameter count."""

    layers: int
    kv_heads: int
    head_dim: int

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * KV_BYTES  # K and V, every layer


def default_architecture(parameters_b: float) -> Architecture:
    """Llama 3 family shapes (grouped-query attention, 8 KV heads of 128) by size."""
    for limit, layers in ((10, 32), (20, 40), (40, 64), (100, 80)):
        if parameters_b <= limit:
            return Architecture(layers, 8, 128)
    return Architecture(126, 8, 128)


@dataclass(frozen=True)
class ReplicaShape:
    accelerator: str
    mig_profile: str | None
    quantization: str
    tensor_parallel: int

    @property
    def gpus(self) -> int:
        return self.tensor_parallel if self.mig_profile is None else 1

    def label(self) -> str:
        where = f"MIG {self.mig_profile} of {self.accelerator}" if self.mig_profile else f"{self.tensor_parallel} x {self.accelerator}"
        return f"{where}, {self.quantization}"


@dataclass(frozen=True)
class Workload:
    parameters_b: float
    input_tokens: float
    output_tokens: float
    ttft_p95_s: float
    tpot_p95_ms: float
    architecture: Architecture | None = None

    @property
    def arch(self) -> Architecture:
        return self.architecture or default_architecture(self.parameters_b)


@dataclass
class Estimate:
    tokens_per_s: float  # sustainable output tokens/s per replica at the SLO; 0 when it cannot meet it
    batch: int
    tpot_p95_ms: float
    ttft_p95_s: float
    weights_gib: float
    kv_cache_gib: float  # KV memory the chosen batch needs (what fleet.yaml's kv_cache_gib must allow)
    memory_offered_gib: float
    provenance: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def feasible(self) -> bool:
        return self.tokens_per_s > 0


def weights_gib(parameters_b: float, quantization: str) -> float:
    return parameters_b * 1e9 * BYTES_PER_PARAM[quantization] / 2**30


def memory_offered_gib(shape: ReplicaShape) -> float:
    if shape.mig_profile:
        prof = mig.MIG_PROFILES[shape.accelerator][shape.mig_profile]
        return prof.memory_gib * GPU_MEMORY_UTILIZATION
    return ACCELERATORS[shape.accelerator].memory_gib * shape.tensor_parallel * GPU_MEMORY_UTILIZATION


def _device(shape: ReplicaShape) -> tuple[float, float]:
    """Bandwidth (bytes/s) and dense FLOP/s of one GPU or slice at the shape's compute precision."""
    acc = ACCELERATORS[shape.accelerator]
    precision = COMPUTE_PRECISION[shape.quantization]
    flops = acc.dense_tflops(precision) or acc.dense_tflops("fp16")
    bw, fl = acc.hbm_gbps * 1e9, flops * 1e12
    if shape.mig_profile:
        prof = mig.MIG_PROFILES[shape.accelerator][shape.mig_profile]
        bw *= prof.memory_slices / mig.MEMORY_SLICES
        fl *= prof.compute / mig.COMPUTE_SLICES
    return bw, fl


def roofline(shape: ReplicaShape, w: Workload) -> Estimate:
    acc = ACCELERATORS[shape.accelerator]
    tp = shape.gpus
    arch = w.arch
    wg = weights_gib(w.parameters_b, shape.quantization)
    offered = memory_offered_gib(shape)
    prov = {
        "source": "roofline",
        "catalogue": f"{acc.product}: {acc.hbm_gbps:g} GB/s, {acc.dense_tflops(COMPUTE_PRECISION[shape.quantization]) or acc.dense_tflops('fp16'):g} dense TFLOPS",
        "efficiency": {"step_overhead_s": STEP_OVERHEAD_S, "bandwidth": BANDWIDTH_EFFICIENCY, "compute": COMPUTE_EFFICIENCY, "tpot_p95_over_mean": TPOT_P95_OVER_MEAN, "ttft_p95_over_prefill": TTFT_P95_OVER_PREFILL},
    }
    kv_free_gib = offered - wg - RUNTIME_OVERHEAD_GIB * tp
    seq_tokens = w.input_tokens + w.output_tokens
    seq_gib = seq_tokens * arch.kv_bytes_per_token / 2**30
    if kv_free_gib < seq_gib:
        return Estimate(0.0, 0, math.inf, math.inf, wg, 0.0, offered, prov, f"weights {wg:.1f} GiB + runtime leave {kv_free_gib:.1f} GiB for the KV cache; one sequence needs {seq_gib:.2f} GiB")
    max_batch = min(MAX_BATCH, int(kv_free_gib / seq_gib))
    bw, fl = _device(shape)
    bw_eff, fl_eff = bw * BANDWIDTH_EFFICIENCY, fl * COMPUTE_EFFICIENCY
    weight_bytes = wg * 2**30 / tp
    params = w.parameters_b * 1e9
    link = "nvswitch" if acc.nvswitch else "pcie"
    comm = STEP_OVERHEAD_S + (0.0 if tp == 1 else 2 * arch.layers * ALLREDUCE_LATENCY_S[link])
    ctx_avg = w.input_tokens + w.output_tokens / 2
    prefill = max(2 * params * w.input_tokens / tp / fl_eff, weight_bytes / bw_eff) + comm

    def at(batch: int) -> tuple[float, float, float]:
        t_mem = (weight_bytes + batch * ctx_avg * arch.kv_bytes_per_token / tp) / bw_eff
        t_fl = 2 * params * batch / tp / fl_eff
        step = max(t_mem, t_fl) + comm
        rate = batch / step
        tokens = rate / (1 + rate * prefill / w.output_tokens)  # time shared with the requests' prefills
        busy = tokens * prefill / w.output_tokens  # share of time spent in prefill
        tpot = TPOT_P95_OVER_MEAN * step / max(1e-9, 1 - busy)
        ttft = TTFT_P95_OVER_PREFILL * prefill + step
        return tokens, tpot, ttft

    best: tuple[int, float, float, float] | None = None
    lo, hi = 1, max_batch
    # TPOT grows with the batch: binary search the largest batch within the SLO.
    tokens, tpot, ttft = at(1)
    if tpot * 1000 > w.tpot_p95_ms or ttft > w.ttft_p95_s:
        reason = f"even at batch 1 p95 TPOT {tpot * 1000:.0f} ms / TTFT {ttft:.2f} s exceed the SLO ({w.tpot_p95_ms:g} ms / {w.ttft_p95_s:g} s)"
        return Estimate(0.0, 0, tpot * 1000, ttft, wg, 0.0, offered, prov, reason)
    best = (1, tokens, tpot, ttft)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        tokens, tpot, ttft = at(mid)
        if tpot * 1000 <= w.tpot_p95_ms and ttft <= w.ttft_p95_s:
            lo, best = mid, (mid, tokens, tpot, ttft)
        else:
            hi = mid - 1
    batch, tokens, tpot, ttft = best
    kv = batch * seq_gib
    return Estimate(tokens, batch, tpot * 1000, ttft, wg, kv, offered, prov)


def estimate(shape: ReplicaShape, w: Workload, model: str | None = None, calibration: Any = None) -> Estimate:
    """Measured figure where the calibration file has one for this model and shape, else the roofline."""
    base = roofline(shape, w)
    if calibration is not None and model is not None:
        measured = calibration.lookup(model, shape, w)
        if measured is not None:
            tokens, prov = measured
            base.tokens_per_s = tokens
            base.provenance = prov
            base.reason = "" if tokens > 0 else "no measured run met the SLO"
    return base
