"""The fleet model: fleet.yaml, the Pulumi stack files and the inventories, typed, validated and cross-checked.

The package, by concern:

* :mod:`gpufleet.model.types`: the resolved fleet (:class:`Fleet`, :class:`Site`,
  :class:`Server`, :class:`QueueRef`);
* :mod:`gpufleet.model.loading`: :func:`load_fleet`, reading each input file;
* :mod:`gpufleet.model.servers`: a data centre's servers from its inventory;
* :mod:`gpufleet.model.messages`: pydantic's errors as ``file: key.path: message`` lines;
* :mod:`gpufleet.model.checks`: the cross-checks, one function each;
* :mod:`gpufleet.model.cuda`: driver branches against the images' CUDA and their end of life;
* :mod:`gpufleet.model.sizing`: a served model's memory need and what its placement offers.

Everything an engine needs is importable from here. The model imports no
engine (``cloud/``, ``k8s/``): facts the engines share with it live in
``gpufleet/`` (:mod:`gpufleet.eks`, :mod:`gpufleet.names`, :mod:`gpufleet.mig`,
:mod:`gpufleet.catalog`, :mod:`gpufleet.drivers`).
"""

from gpufleet.catalog import INSTANCE_TYPES
from gpufleet.errors import FleetError, Problem
from gpufleet.model.checks import cross_check
from gpufleet.model.loading import load_fleet
from gpufleet.model.messages import validation_problems
from gpufleet.model.sizing import (
    BYTES_PER_PARAM,
    GPU_MEMORY_UTILIZATION,
    RUNTIME_OVERHEAD_GIB,
    gpus_by_accelerator,
    model_weights_gib,
    replica_memory_gib,
    replica_memory_need_gib,
)
from gpufleet.model.types import DEFAULT_FLEET, Fleet, QueueRef, Server, Site
from gpufleet.schema import Team

# The name the economics loaders import (gpufleet/economics/demand.py, prices.py).
_validation_problems = validation_problems

__all__ = [
    "BYTES_PER_PARAM",
    "DEFAULT_FLEET",
    "GPU_MEMORY_UTILIZATION",
    "INSTANCE_TYPES",
    "RUNTIME_OVERHEAD_GIB",
    "Fleet",
    "FleetError",
    "Problem",
    "QueueRef",
    "Server",
    "Site",
    "Team",
    "cross_check",
    "gpus_by_accelerator",
    "load_fleet",
    "model_weights_gib",
    "replica_memory_gib",
    "replica_memory_need_gib",
    "validation_problems",
]
