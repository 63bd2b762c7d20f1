"""The causal window of a short convolution: each step's last W inputs in
scan order, with lengths, reverse and resets.

A linear cell with a `Window` (`mamba`'s depthwise convolution over time)
computes the coefficients of step t from the last ``W`` entries of
``inputs(zx)`` in scan order, the current one last, instead of from ``zx_t``
alone. Its carry holds the ``W - 1`` entries before the next step (the
buffer) beside the state of the recurrence. One step's window is the
carry's buffer followed by the step's input (`Window.step`, the cell's
``cell_apply``); over a sequence (`Window.run`, the linear engine) the
windows of all steps are gathered at once, in scan order (reversed for a
reversed scan), from the inputs of the same segment and, before its first
step, from the buffer the segment starts with: the carry's at the start of
the sequence, the initial carry's after a reset. Padding is trailing in
time, so leading in a reversed scan, and never enters a window: the buffer
after the last valid step holds the last ``W - 1`` valid inputs (with
entries from the starting buffer where fewer were seen).
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Opened(NamedTuple):
  """A sequence's windows, as `Window.run` hands them to the linear engine."""

  zx: Array  # (T, ...): convolve's output, what coefficients and outputs read
  state: Any  # the carry without its buffer
  initial: Any  # the initial carry without its buffer (None without one)
  buffers: Array  # (T, W - 1, C): the buffer after each step (time order)
  last: Array  # (W - 1, C): the buffer after the last valid step


class Window(NamedTuple):
  """A causal window over ``inputs(zx): (..., C)``, ``W`` entries long.

  ``inputs(zx) -> v`` is the part of the projected inputs that the window
  holds; ``convolve(params, zx, windows) -> zx'`` maps the projected inputs
  and their windows ``(..., W, C)`` (oldest entry first, the current one
  last) to what the cell's ``coefficients`` and ``outputs`` read;
  ``split(carry) -> (buffer, rest)`` and ``join(buffer, rest) -> carry``
  take the buffer ``(W - 1, C)`` out of a carry and put it back (the
  linear engine's ``to_state``/``from_state`` convert the rest). ``W`` is
  one more than the buffer's length.
  """

  inputs: Callable[[Array], Array]
  convolve: Callable[[Any, Array, Array], Array]
  split: Callable[[Any], tuple[Array, Any]]
  join: Callable[[Array, Any], Any]

  def step(self, params, carry, zx_t):
    """One step: ``(zx_t', rest of the carry, buffer after the step)``."""
    buffer, rest = self.split(carry)
    v_t = self.inputs(zx_t)
    window_t = jnp.concatenate([buffer.astype(v_t.dtype), v_t[None]])
    return self.convolve(params, zx_t, window_t), rest, window_t[1:]

  def run(self, params, zx, carry, initial, steps, reverse: bool) -> Opened:
    """Every step's window over ``zx: (T, ...)`` (see the module notes);
    ``steps`` as the engine's `steps.Steps` (``reset`` in scan order)."""
    v = self.inputs(zx)
    buffer, state = self.split(carry)
    buffer = buffer.astype(v.dtype)
    initial_buffer = None
    if initial is not None:
      initial_buffer, initial = self.split(initial)
      initial_buffer = initial_buffer.astype(v.dtype)
    windows = _windows(v, buffer, steps.valid, steps.reset, initial_buffer, reverse)
    return Opened(self.convolve(params, zx, windows), state, initial, windows[:, 1:],
                  _last(windows, buffer, steps.valid, reverse))


def _windows(v, buffer, valid, reset, initial_buffer, reverse):
  """``(T, W, C)``: step t's window, oldest entry first in scan order."""
  num_steps, width = v.shape[0], buffer.shape[0] + 1
  if reverse:  # work in scan order
    v = v[::-1]
    valid = None if valid is None else valid[::-1]
    reset = None if reset is None else reset[::-1]
  # Padding leads a reversed scan: its first valid step is the first of the
  # sequence.
  lead = 0 if valid is None or not reverse else num_steps - jnp.sum(valid.astype(jnp.int32))
  if reset is None and isinstance(lead, int):
    # Every step's window reads the carry's buffer, then the inputs.
    ext = jnp.concatenate([buffer, v])
    windows = jnp.stack([ext[k:k + num_steps] for k in range(width)], axis=1)
  else:
    windows = _gathered(v, buffer, lead, reset, initial_buffer)
  return windows[::-1] if reverse else windows


def _gathered(v, buffer, lead, reset, initial_buffer):
  """`_windows` in scan order where segments start at traced steps: after
  ``lead`` padded steps, and at resets."""
  num_steps, width = v.shape[0], buffer.shape[0] + 1
  s = jnp.arange(num_steps)
  # The scan step where each step's segment starts: the last reset, else
  # the first valid step.
  start = jnp.broadcast_to(jnp.asarray(lead, s.dtype), s.shape)
  after_reset = None
  if reset is not None:
    last_reset = jax.lax.cummax(jnp.where(reset, s, -1))
    after_reset = last_reset >= 0
    start = jnp.where(after_reset, last_reset, start)
  entries = []
  for back in range(width - 1, -1, -1):  # the entry ``back`` steps before s
    if back == 0:
      entries.append(v)
      continue
    shifted = jnp.concatenate([jnp.zeros((back,) + v.shape[1:], v.dtype), v])[:num_steps]
    # Before the segment's start: entry ``W - 1 - (start - q)`` of its buffer.
    q = s - back
    index = jnp.clip(width - 1 - (start - q), 0, width - 2)
    before = jnp.take(buffer, index, axis=0)
    if after_reset is not None:
      before = jnp.where(after_reset[:, None], jnp.take(initial_buffer, index, axis=0), before)
    entries.append(jnp.where((q >= start)[:, None], shifted, before))
  return jnp.stack(entries, axis=1)


def _last(windows, buffer, valid, reverse):
  """The buffer after the last valid step in scan order (``buffer`` when no
  step is valid)."""
  num_steps = windows.shape[0]
  if num_steps == 0:
    return buffer
  if valid is None:
    return windows[0 if reverse else -1, 1:]
  count = jnp.sum(valid.astype(jnp.int32))
  index = 0 if reverse else jnp.maximum(count - 1, 0)
  return jnp.where(count > 0, jax.lax.dynamic_index_in_dim(windows, index, keepdims=False)[1:],
                   buffer)
