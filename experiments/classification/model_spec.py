"""The model a classification config names, as a hashable spec, and its variables.

``spec = ModelSpec(name, input_shape, num_classes, kwargs)`` describes a model of
:mod:`experiments.classification.models`; it is hashable, so it can be a static jit argument.
``graphdef = model_graphdef(spec)`` builds the model's structure without allocating weights and
``params, model_state = init_variables(spec, key)`` its variables (vmap over keys for several
seeds). :func:`model_spec` makes the spec a config asks for, shaped to its data set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

import jax
import ml_collections
from flax import nnx

from experiments.classification import data as data_lib
from experiments.classification import models


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A hashable description of a model: what :func:`.models.build_model` takes.

  Attributes:
    name: one of :data:`experiments.classification.models.MODELS`.
    input_shape: ``(height, width, channels)``.
    num_classes: number of classes.
    kwargs: the model's keyword arguments as sorted ``(name, value)`` pairs (tuples for
      sequences), so that the spec can be a static jit argument.
  """

  name: str
  input_shape: tuple[int, int, int]
  num_classes: int
  kwargs: tuple[tuple[str, Any], ...] = ()

  @classmethod
  def create(
      cls, name: str, input_shape: Any, num_classes: int, kwargs: Mapping[str, Any] | None = None
  ) -> ModelSpec:
    """Builds a spec from plain values (lists become tuples)."""
    frozen = tuple(
        sorted((key, tuple(value) if isinstance(value, list) else value)
               for key, value in (kwargs or {}).items())
    )
    shape = tuple(int(size) for size in input_shape)
    return cls(name, shape, int(num_classes), frozen)  # type: ignore[arg-type]

  def build(self, key: jax.Array | int) -> nnx.Module:
    """The initialised module, with weights drawn from ``key``."""
    return models.build_model(
        self.name, self.input_shape, self.num_classes, rngs=nnx.Rngs(params=key),
        **dict(self.kwargs),
    )


def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """``nnx.split(model, nnx.Param, ...)``: graph, parameters and the rest (batch statistics).

  Two filters give exactly three parts; flax types the result as two or more.
  """
  return cast(tuple[nnx.GraphDef, nnx.State, nnx.State], nnx.split(model, nnx.Param, ...))


def model_graphdef(spec: ModelSpec) -> nnx.GraphDef:
  """The static structure of ``spec``'s model, built without allocating its weights."""
  graphdef, _, _ = split_params(nnx.eval_shape(lambda: spec.build(0)))
  return graphdef


def init_variables(spec: ModelSpec, key: jax.Array) -> tuple[nnx.State, nnx.State]:
  """``(params, model_state)`` of a freshly initialised model; vmap over ``key`` for seeds."""
  _, params, model_state = split_params(spec.build(key))
  return params, model_state


def model_spec(config: ml_collections.ConfigDict, dataset: data_lib.Dataset) -> ModelSpec:
  """The :class:`ModelSpec` a config asks for, shaped to the data set."""
  kwargs = config.model_kwargs.to_dict() if config.model_kwargs else {}
  return ModelSpec.create(config.model, dataset.image_shape, dataset.num_classes, kwargs)
