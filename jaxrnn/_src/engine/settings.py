"""The engine's per-backend defaults: one small typed table.

The measured values come from ``python -m benchmarks.tune`` and
``benchmarks.parallel`` (the evidence, with the figures, is in
``benchmarks/README.md``) and, for the wavefront, ``benchmarks.wavefront``
(``docs/two_d.md``). An entry never measured on its backend says so beside
it. Backends that were never measured take ``UNMEASURED``. Read the table
through `current`, which honours `engine_settings` overrides.
"""

import contextlib
import contextvars
import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Callable, Iterator, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from jaxrnn._src import checks


class EngineSettings(NamedTuple):
  """How the loops of `jaxrnn.rnn` and `jaxrnn.rnn2d` run where an option is None.

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
      evaluates a cell of the linear family (`min_gru`, `min_lstm`, `lru`,
      `rg_lru`, `mamba`, `linear_cell`) with ``jax.lax.associative_scan``,
      and `mlstm` with its chunkwise form (``method="parallel"``): an
      int for every such cell, a mapping from a cell's kind (``kind`` in
      its ``config``) to an int or None for each (kinds absent: never), or
      None: never. Where a backend's default gives a cell no crossover, none
      was found or none was measured (benchmarks/README.md).
    parallel_derivatives: whether a layer that ``method="auto"`` runs by
      the associative scan is also differentiated by it (True), or by the
      multiply-add scan (False: a custom JVP, so the forward pass alone
      takes the associative scan).
    wavefront_remat: the diagonals per checkpointed chunk of `jaxrnn.rnn2d`'s
      wavefront when its ``remat`` is None (1: every diagonal; the backward
      pass keeps each diagonal's carries and recomputes its gates); None:
      nothing checkpointed.
    wavefront_segments: the scans per ramp of the wavefront (its diagonals
      grow, then shrink: each scan is only as wide as its diagonals).
    wavefront_min_width: the narrowest image side (``min(R, C)``) whose
      ramps are cut into ``wavefront_segments`` scans; narrower images run
      one scan.
  """

  unroll: tuple[int, int]
  hoist_inputs: bool
  in_place: bool
  narrow_max_batch: int
  parallel_min_steps: Union[None, int, Mapping[str, Optional[int]]]
  parallel_derivatives: bool
  wavefront_remat: Optional[int]
  wavefront_segments: int
  wavefront_min_width: int


# For backends never measured: no unroll, no hoisting, outputs stacked by the
# scan, never the associative scan, nothing checkpointed in the wavefront,
# and its scans per ramp as on the CPU. wavefront_min_width=16, here and
# below, is a choice, not a measurement.
UNMEASURED = EngineSettings(unroll=(1, 1), hoist_inputs=False, in_place=False,
                            narrow_max_batch=0, parallel_min_steps=None,
                            parallel_derivatives=True, wavefront_remat=None,
                            wavefront_segments=4, wavefront_min_width=16)
DEFAULTS: dict[str, EngineSettings] = {
    # Measured on 2 CPU cores.
    "cpu": EngineSettings(unroll=(4, 1), hoist_inputs=False, in_place=True,
                          narrow_max_batch=4, parallel_min_steps=MappingProxyType(
                              {"rg_lru": 256, "mlstm": 1}),
                          parallel_derivatives=False, wavefront_remat=1,
                          wavefront_segments=4, wavefront_min_width=16),
    # Measured on one H100, with the engine before this one: unroll and
    # hoist_inputs. The rest not measured: UNMEASURED's (outputs stacked, as
    # the H100 figures were taken; never the associative scan; nothing
    # checkpointed in the wavefront).
    "gpu": UNMEASURED._replace(unroll=(4, 4), hoist_inputs=True),
}

_OVERRIDES: contextvars.ContextVar[dict] = contextvars.ContextVar(
    "jaxrnn_engine_settings", default={})


# The table's backends as `jax.lax.platform_dependent` names the platforms.
_PLATFORMS = {"cpu": ("cpu",), "gpu": ("cuda", "rocm")}


def parallel_min_steps(settings: EngineSettings, kind: str) -> Optional[int]:
  """``settings.parallel_min_steps`` for the cell of kind ``kind``."""
  value = settings.parallel_min_steps
  return value.get(kind) if isinstance(value, Mapping) else value


def current() -> EngineSettings:
  """The settings in force for JAX's default backend."""
  return DEFAULTS.get(jax.default_backend(), UNMEASURED)._replace(**_OVERRIDES.get())


def fit_unroll(unroll: Optional[tuple[int, int]], settings: EngineSettings, num_steps: Any
               ) -> tuple[int, int]:
  """``(forward, backward)`` steps per iteration for a loop of ``num_steps``:
  ``unroll`` (None: ``settings.unroll``), each cut to the sequence. A
  symbolic ``num_steps`` (from ``jax.export``) runs one step per
  iteration: ``lax.scan`` cannot unroll a loop of symbolic length."""
  unroll = settings.unroll if unroll is None else unroll
  if not isinstance(num_steps, int):
    return (1, 1)
  return (max(1, min(unroll[0], num_steps)), max(1, min(unroll[1], num_steps)))


def _per_platform() -> dict[str, EngineSettings]:
  """The settings in force per platform, keyed as `jax.lax.platform_dependent`
  takes its branches: each platform of the table, and ``"default"`` for the
  others (`engine_settings` overrides applied to all)."""
  overrides = _OVERRIDES.get()
  settings = {platform: DEFAULTS[backend]._replace(**overrides)
              for backend, platforms in _PLATFORMS.items() for platform in platforms}
  return {**settings, "default": UNMEASURED._replace(**overrides)}


def _all_equal(values) -> bool:
  # By ==, not by hashing: parallel_min_steps may be a mapping.
  values = list(values)
  return all(v == values[0] for v in values[1:])


def by_platform(fn: Callable[..., Any], *args: Any) -> Any:
  """``fn(settings, *args)`` with the settings of the platform the program
  is lowered for.

  Where the platforms' settings differ, each is traced and
  ``jax.lax.platform_dependent`` chooses when lowering: a program lowered
  for one platform keeps its branch alone, and one exported for several
  (``jax.export`` with ``platforms=("cpu", "cuda", "tpu")``) runs each
  platform's own loop. ``fn`` must return the same shapes for every
  settings. Under ``vmap`` the choice (a ``cond``) returns its outputs
  batch-major; `laid_out_as_by_platform` gives other values that layout.
  """
  settings = _per_platform()
  if _all_equal(settings.values()):
    return fn(settings["default"], *args)
  return jax.lax.platform_dependent(
      *args, **{platform: functools.partial(fn, s) for platform, s in settings.items()})


def laid_out_as_by_platform(*values: Any) -> tuple:
  """``values``, laid out under ``vmap`` as `by_platform` lays out its
  outputs in the settings in force: through the same kind of choice (of
  identities) where it branches, unchanged where it does not.

  A custom JVP rule whose primal is a `by_platform` returns its outputs
  through this: under ``vmap`` JAX may take the rule's output batch axes
  from the primal's, so the two must agree.
  """
  settings = _per_platform()
  if _all_equal(settings.values()):
    return values
  # Times one: a branch that returned its inputs would be forwarded around
  # the cond, keeping their layout.
  same = lambda *v: jax.tree_util.tree_map(lambda a: a * jnp.ones((), a.dtype), v)
  return jax.lax.platform_dependent(*values, **{platform: same for platform in settings})


@contextlib.contextmanager
def engine_settings(**overrides) -> Iterator[EngineSettings]:
  """Overrides the engine's per-backend defaults while tracing in this block.

  Settings are read when a function is traced, so the override applies to
  calls traced (or jit-compiled for the first time) inside the block.

  Args:
    **overrides: fields of `EngineSettings`: ``unroll=(forward,
      backward)``, ``hoist_inputs=bool``, ``in_place=bool``,
      ``narrow_max_batch=int >= 0``, ``parallel_min_steps=positive int or
      None``, ``wavefront_remat=positive int or None``,
      ``wavefront_segments=positive int``, ``wavefront_min_width=positive
      int``.

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
  if isinstance(overrides.get("parallel_min_steps"), Mapping):
    for kind, steps in overrides["parallel_min_steps"].items():
      if steps is not None:
        checks.check_positive_int(steps, f"parallel_min_steps[{kind!r}]")
    overrides["parallel_min_steps"] = MappingProxyType(dict(overrides["parallel_min_steps"]))
  if "parallel_derivatives" in overrides:
    checks.check_bool(overrides["parallel_derivatives"], "parallel_derivatives")
  optional = ("parallel_min_steps", "wavefront_remat")  # None allowed
  for name in optional + ("wavefront_segments", "wavefront_min_width"):
    if isinstance(overrides.get(name), Mapping) and name == "parallel_min_steps":
      continue
    if name in overrides and not (overrides[name] is None and name in optional):
      checks.check_positive_int(overrides[name], name)
  token = _OVERRIDES.set({**_OVERRIDES.get(), **overrides})
  try:
    yield current()
  finally:
    _OVERRIDES.reset(token)
