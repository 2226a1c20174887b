"""What a served model's replica needs, and what its placement offers (vLLM's memory budget)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gpufleet import mig
from gpufleet.catalog import ACCELERATORS
from gpufleet.schema import ServedModel

if TYPE_CHECKING:
    from gpufleet.model.types import Server

GPU_MEMORY_UTILIZATION = 0.9  # share of GPU memory vLLM may use (its default)
RUNTIME_OVERHEAD_GIB = 1.0  # per GPU: CUDA context, activations, CUDA graphs
BYTES_PER_PARAM = {"none": 2.0, "fp8": 1.0, "int8": 1.0, "awq": 0.5, "gptq": 0.5}


def model_weights_gib(model: ServedModel) -> float:
    return model.parameters_b * 1e9 * BYTES_PER_PARAM[model.quantization] / 2**30


def replica_memory_need_gib(model: ServedModel) -> float:
    gpus = model.placement.gpus
    return model_weights_gib(model) + model.kv_cache_gib + RUNTIME_OVERHEAD_GIB * gpus


def replica_memory_gib(model: ServedModel) -> float:
    """Memory a replica's placement offers to vLLM."""
    p = model.placement
    if p.mig_profile:
        prof = mig.MIG_PROFILES.get(p.accelerator, {}).get(p.mig_profile)
        return (float(prof.memory_gib) if prof else 0.0) * GPU_MEMORY_UTILIZATION
    # Replicas time-sliced onto one GPU share its memory as well as its cores.
    return ACCELERATORS[p.accelerator].memory_gib * p.gpus * GPU_MEMORY_UTILIZATION / (model.time_slicing or 1)


def gpus_by_accelerator(servers: Iterable[Server]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for s in servers:
        if s.spec.accelerator:
            out[s.spec.accelerator] += s.spec.gpu_count
    return dict(out)
