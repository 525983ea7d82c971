"""rmsprop_jax: RMSprop as a pure-functional optax GradientTransformation.

The full optimizer is :func:`rmsprop`; :func:`scale_by_rmsprop` is its preconditioner alone;
:mod:`rmsprop_jax.compat` holds presets that reproduce PyTorch, Keras 3 and TF1 exactly;
:mod:`rmsprop_jax.formats` holds the state formats (unbiased bfloat16, block-wise 8-bit,
factored, bitsandbytes' 8-bit).
"""

from rmsprop_jax import compat, formats
from rmsprop_jax.alias import rmsprop
from rmsprop_jax.transform import (
    MomentumState,
    ScaleByCenteredRmsPropState,
    ScaleByRmsPropState,
    ScheduleCountState,
    add_decoupled_weight_decay,
    momentum_buffer,
    scale_by_learning_rate,
    scale_by_rmsprop,
)

__version__ = "0.2.0.dev0"

__all__ = [
    "MomentumState",
    "ScaleByCenteredRmsPropState",
    "ScaleByRmsPropState",
    "ScheduleCountState",
    "add_decoupled_weight_decay",
    "compat",
    "formats",
    "momentum_buffer",
    "rmsprop",
    "scale_by_learning_rate",
    "scale_by_rmsprop",
]
