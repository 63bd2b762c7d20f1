"""The engine's per-backend defaults: one small typed table.

The values were measured with ``python -m benchmarks.tune`` (the evidence,
with the figures, is in ``benchmarks/README.md``). Backends that were never
measured take ``UNMEASURED``. Read the table through `current`, which honours
`engine_settings` overrides.
"""

import contextlib
import contextvars
from typing import Iterator, NamedTuple, Optional

import jax


class EngineSettings(NamedTuple):
  """How the time loop of `jaxrnn.rnn` runs when an option is left at None.

  Attributes:
    unroll: ``(forward, backward)`` steps per iteration of the forward scan
      and of the tangent scan (whose transpose is the backward pass).
    hoist_inputs: project every step's input (``x_t W_x + b``) in one
      product before the loop (True) or inside each step (False).
    in_place: the forward loop writes its outputs by index into a carried
      buffer, one step at a time, and, when nothing is differentiated
      (inference), reads its inputs the same way and both in blocks of up
      to ``unroll[0]`` steps (True), so that under ``vmap`` they stay
      batch-major and no transposes surround the loop; or lets the scan
      take and stack them time-major (False), which ``vmap`` transposes.
    narrow_max_batch: with ``in_place``, the widest batch (the size of the
      innermost ``vmap``; an unbatched call counts as one) whose forward
      pass, when nothing is differentiated, runs the narrow form of the loop
      instead: the input projection hoisted, inputs and outputs stacked
      time-major and one step per iteration. 0: never.
    parallel_min_steps: the shortest sequence for which ``method="auto"``
      evaluates a linear-recurrence cell (`min_gru`, `min_lstm`, `lru`)
      with ``jax.lax.associative_scan``; None: never.
  """

  unroll: tuple[int, int]
  hoist_inputs: bool
  in_place: bool
  narrow_max_batch: int
  parallel_min_steps: Optional[int]


DEFAULTS: dict[str, EngineSettings] = {
    "cpu": EngineSettings(unroll=(4, 1), hoist_inputs=False, in_place=True,
                          narrow_max_batch=4, parallel_min_steps=None),
    "gpu": EngineSettings(unroll=(4, 4), hoist_inputs=True, in_place=False,
                          narrow_max_batch=0, parallel_min_steps=256),
}
UNMEASURED = EngineSettings(unroll=(1, 1), hoist_inputs=False, in_place=False,
                            narrow_max_batch=0, parallel_min_steps=256)

_OVERRIDES: contextvars.ContextVar[dict] = contextvars.ContextVar(
    "jaxrnn_engine_settings", default={})


def current() -> EngineSettings:
  """The settings in force for JAX's default backend."""
  return DEFAULTS.get(jax.default_backend(), UNMEASURED)._replace(**_OVERRIDES.get())


@contextlib.contextmanager
def engine_settings(**overrides) -> Iterator[EngineSettings]:
  """Overrides the engine's per-backend defaults while tracing in this block.

  Settings are read when a function is traced, so the override applies to
  calls traced (or jit-compiled for the first time) inside the block.

  Args:
    **overrides: fields of `EngineSettings`: ``unroll=(forward,
      backward)``, ``hoist_inputs=bool``, ``in_place=bool``,
      ``narrow_max_batch=int``, ``parallel_min_steps=int or None``.

  Yields:
    The settings in force inside the block.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.rnn(jaxrnn.lstm(4))
    >>> params = layer.init_params(jax.random.key(0), 3)
    >>> with jaxrnn.engine_settings(unroll=(1, 1), hoist_inputs=True) as s:
    ...   ys, _ = layer.apply(params, jnp.ones((5, 3)))
    >>> s.unroll, ys.shape
    ((1, 1), (5, 4))
  """
  unknown = set(overrides) - set(EngineSettings._fields)
  if unknown:
    raise TypeError(
        f"engine_settings: expected fields of EngineSettings "
        f"{EngineSettings._fields}, got {sorted(unknown)}")
  unroll = overrides.get("unroll")
  if unroll is not None and (
      not isinstance(unroll, tuple) or len(unroll) != 2
      or any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in unroll)):
    raise ValueError(
        f"unroll: expected a pair of positive ints (forward, backward), got {unroll!r}")
  for name in ("hoist_inputs", "in_place"):
    if name in overrides and not isinstance(overrides[name], bool):
      raise TypeError(f"{name}: expected a bool, got {overrides[name]!r}")
  narrow = overrides.get("narrow_max_batch", 0)
  if isinstance(narrow, bool) or not isinstance(narrow, int) or narrow < 0:
    raise ValueError(f"narrow_max_batch: expected an int >= 0, got {narrow!r}")
  token = _OVERRIDES.set({**_OVERRIDES.get(), **overrides})
  try:
    yield current()
  finally:
    _OVERRIDES.reset(token)
