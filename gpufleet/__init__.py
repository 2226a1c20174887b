"""gpufleet: one hybrid GPU fleet from one description."""

__version__ = "0.1.0"
