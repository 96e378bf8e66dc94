"""Soft targets for self-distillation: the teacher's similarity distribution, optionally
diffused over the batch manifold (OBDP, SPEC section 1)."""
from diffusion.soft_targets import at_least_float32, soft_targets

__all__ = ["at_least_float32", "soft_targets"]
