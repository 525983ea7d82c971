"""An independent float64 NumPy re-derivation of RMSprop, written from the papers' equations.

It shares no code with rmsprop_jax: every test that compares against it checks the library's
update rule, not a copy of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class RmspropConfig:
  learning_rate: float | Callable[[Any], float] = 1e-3
  decay: float = 0.9
  eps: float = 1e-8
  eps_in_sqrt: bool = False
  initial_scale: float = 0.0
  centered: bool = False
  momentum: float | None = None
  nesterov: bool = False
  bias_correction: bool = False
  weight_decay: float = 0.0

  def lr_at(self, step: int) -> float:
    if callable(self.learning_rate):
      return float(self.learning_rate(step))
    return self.learning_rate


class NumpyRmsprop:
  """RMSprop on a dict of float64 arrays; ``step`` returns the parameter update."""

  def __init__(self, config: RmspropConfig, params: dict[str, np.ndarray]):
    self.config = config
    self.t = 0
    self.nu = {k: np.full(np.shape(v), config.initial_scale, np.float64) for k, v in params.items()}
    self.mu = {k: np.zeros(np.shape(v), np.complex128 if np.iscomplexobj(v) else np.float64)
               for k, v in params.items()}
    self.buffer: dict[str, np.ndarray] = {k: np.zeros_like(self.mu[k]) for k in params}

  def step(self, grads: dict[str, np.ndarray], params: dict[str, np.ndarray]):
    c = self.config
    lr = c.lr_at(self.t)
    self.t += 1
    updates = {}
    for k, g in grads.items():
      g = np.asarray(g, np.complex128 if np.iscomplexobj(g) else np.float64)
      self.nu[k] = c.decay * self.nu[k] + (1 - c.decay) * np.abs(g) ** 2
      nu = self.nu[k]
      if c.centered:
        self.mu[k] = c.decay * self.mu[k] + (1 - c.decay) * g
        mu = self.mu[k]
      if c.bias_correction:
        nu = nu / (1 - c.decay ** self.t)
        if c.centered:
          mu = mu / (1 - c.decay ** self.t)
      variance = np.maximum(nu - np.abs(mu) ** 2, 0.0) if c.centered else nu
      with np.errstate(divide="ignore", invalid="ignore"):
        if c.eps_in_sqrt:
          scaled = g / np.sqrt(variance + c.eps)
        else:
          scaled = g / (np.sqrt(variance) + c.eps)
      # eps = 0: a zero gradient on a zero second moment moves nothing (instead of 0/0).
      scaled = np.where((g == 0) & (variance == 0), 0.0, scaled)
      step = -lr * scaled
      if c.momentum is not None:
        self.buffer[k] = c.momentum * self.buffer[k] + step
        step = step + c.momentum * self.buffer[k] if c.nesterov else self.buffer[k]
      step = step - lr * c.weight_decay * np.asarray(params[k])
      updates[k] = step
    return updates


def quadratic_problem(seed: int = 0, dim: int = 4, steps: int = 100):
  """A closed-loop test problem: noisy gradients of 0.5 ||A x - b||^2 + 0.1 sum(sin x).

  The gradient at step t is the exact gradient plus a fixed noise vector noise[t] ~ N(0, 1).
  The noise keeps the problem out of the noiseless regime near the minimum where RMSprop's
  sign-like steps oscillate and float32 rounding differences between two correct
  implementations grow chaotically, which would make trajectory comparisons meaningless.

  Returns:
    (a, b, x0, noise, grad) with grad(x, t) -> float32 gradient.
  """
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(dim + 2, dim)).astype(np.float32)
  b = rng.normal(size=(dim + 2,)).astype(np.float32)
  x0 = rng.normal(size=(dim,)).astype(np.float32)
  noise = rng.normal(size=(steps, dim)).astype(np.float32)

  def grad(x: np.ndarray, t: int) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (a.T @ (a @ x - b) + 0.1 * np.cos(x) + noise[t]).astype(np.float32)

  return a, b, x0, noise, grad
