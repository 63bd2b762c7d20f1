"""Truncated backpropagation through time (TBPTT) over chunks of long sequences.

A long batch ``(B, T, ...)`` is cut into chunks of ``chunk_length`` steps.
Each chunk gets its own forward pass, gradient and optimizer update; the
final carry of a chunk starts the next one through ``jax.lax.stop_gradient``,
so memory is bounded by one chunk and gradients flow back at most
``chunk_length`` steps. Rows whose sequence ends can start a new one at a
chunk boundary (`reset_carry`).

The optimizer is anything optax-like: a value with ``init(params)`` and
``update(updates, state, params) -> (updates, state)``; optax itself is not
imported.
"""

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = Any
Carry = Any
LossFn = Callable[[Params, Carry, Any], tuple[Array, Carry]]


def _check_chunk_length(chunk_length: Any) -> int:
  if isinstance(chunk_length, bool) or not isinstance(chunk_length, numbers.Integral):
    raise TypeError(
        f"chunk_length: expected a positive int, got {type(chunk_length).__name__}")
  if chunk_length <= 0:
    raise ValueError(f"chunk_length: expected a positive int, got {chunk_length}")
  return int(chunk_length)


def split_chunks(xs: Any, chunk_length: int, *, pad_value: Any = 0) -> Any:
  """Cuts a batch of sequences into time chunks, chunk-major for ``lax.scan``.

  ``T`` need not be a multiple of ``chunk_length``: the last chunk is padded
  with ``pad_value``; `chunk_lengths` gives the valid steps of every chunk.

  Args:
    xs: ``(B, T, ...)`` array, batch first, time second; or a pytree of such
      arrays sharing ``B`` and ``T`` (e.g. ``(inputs, targets)``).
    chunk_length: steps per chunk, ``L``.
    pad_value: the value of the padded steps of the last chunk.

  Returns:
    ``(num_chunks, B, L, ...)`` with ``num_chunks = ceil(T / L)`` (a pytree
    of them for a pytree ``xs``); chunk ``k`` holds steps
    ``k L, ..., k L + L - 1``.

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> chunks = jaxrnn.split_chunks(jnp.arange(10).reshape(2, 5), 2)
    >>> chunks.shape
    (3, 2, 2)
    >>> chunks[2]
    Array([[4, 0],
           [9, 0]], dtype=int32)
  """
  chunk_length = _check_chunk_length(chunk_length)
  leaves = jax.tree_util.tree_leaves(xs)
  if not leaves:
    raise ValueError("xs: expected an array of shape (B, T, ...), got no arrays")
  shapes = [np.shape(leaf) for leaf in leaves]
  for shape in shapes:
    if len(shape) < 2:
      raise ValueError(f"xs: expected shape (B, T, ...), got shape {shape}")
    if shape[:2] != shapes[0][:2]:
      raise ValueError(
          f"xs: every array needs the same (B, T), got shapes {shapes}")
  batch, num_steps = shapes[0][:2]
  num_chunks = max(1, -(-num_steps // chunk_length))

  def split(x):
    x = jnp.asarray(x)
    pad = num_chunks * chunk_length - num_steps
    if pad:
      widths = [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)
      x = jnp.pad(x, widths, constant_values=jnp.asarray(pad_value, x.dtype))
    x = x.reshape((batch, num_chunks, chunk_length) + x.shape[2:])
    return jnp.swapaxes(x, 0, 1)

  return jax.tree_util.tree_map(split, xs)


def chunk_lengths(lengths: Array, chunk_length: int, num_chunks: int) -> Array:
  """The valid steps of every chunk, from the sequences' lengths.

  ``chunk_lengths[k, b] = clip(lengths[b] - k L, 0, L)``: full chunks, then
  the partial chunk holding a sequence's end, then zeros (the layers pass
  the carry through unchanged where ``length == 0``).

  Args:
    lengths: ``(B,)`` integers, the valid steps of every sequence.
    chunk_length: steps per chunk, ``L``.
    num_chunks: the number of chunks, as made by `split_chunks`.

  Returns:
    ``(num_chunks, B)`` int32.

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> jaxrnn.chunk_lengths(jnp.array([5, 2, 0]), 2, 3)
    Array([[2, 2, 0],
           [2, 0, 0],
           [1, 0, 0]], dtype=int32)
  """
  chunk_length = _check_chunk_length(chunk_length)
  if isinstance(num_chunks, bool) or not isinstance(num_chunks, numbers.Integral) or (
      num_chunks <= 0):
    raise ValueError(f"num_chunks: expected a positive int, got {num_chunks!r}")
  if np.ndim(lengths) != 1:
    raise ValueError(f"lengths: expected shape (B,), got shape {tuple(np.shape(lengths))}")
  dtype = jnp.result_type(lengths)
  if not jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
    raise TypeError(f"lengths: expected integers, got dtype {dtype}")
  starts = chunk_length * jnp.arange(num_chunks, dtype=jnp.int32).reshape(num_chunks, 1)
  lengths = jnp.asarray(lengths, jnp.int32).reshape(1, -1)
  return jnp.clip(lengths - starts, 0, chunk_length)


def _check_reset(carry: Carry, reset_shape: tuple, reset_dtype: Any, initial: Carry) -> None:
  """Checks `reset_carry`'s arguments from their shapes and dtypes alone."""
  structure = jax.tree_util.tree_structure(carry)
  if jax.tree_util.tree_structure(initial) != structure:
    raise TypeError(
        f"initial: expected a carry structured like carry ({structure}), got "
        f"{jax.tree_util.tree_structure(initial)}")
  if len(reset_shape) != 1:
    raise ValueError(f"reset: expected shape (B,), got shape {tuple(reset_shape)}")
  if reset_dtype != jnp.bool_:
    raise TypeError(f"reset: expected booleans, got dtype {reset_dtype}")
  batch = reset_shape[0]
  paths = jax.tree_util.tree_flatten_with_path(carry)[0]
  for (path, leaf), init in zip(paths, jax.tree_util.tree_leaves(initial)):
    if np.shape(leaf) != (batch,) + np.shape(init):
      raise ValueError(
          f"initial: leaf {jax.tree_util.keystr(path) or '(root)'} has shape "
          f"{np.shape(init)} but carry's is {np.shape(leaf)}; expected carry "
          f"leaves (B, ...) = {(batch,) + np.shape(init)} for ONE example's "
          "initial carry and reset of shape (B,)")


def reset_carry(carry: Carry, reset: Array, initial: Carry) -> Carry:
  """Restarts the carries of the rows flagged in ``reset``.

  ``carry[b] = initial if reset[b] else carry[b]``, leaf by leaf, with
  ``initial`` broadcast over the batch explicitly.

  Args:
    carry: a batched carry: a pytree whose leaves have shape ``(B, ...)``.
    reset: ``(B,)`` booleans, True where a new sequence starts.
    initial: ONE example's carry (leaves of shape ``(...)``, no batch axis),
      e.g. ``layer.init_carry()``; structured like ``carry``.

  Returns:
    The carry, structured like ``carry``, leaves ``(B, ...)``.

  Example:
    >>> import jax.numpy as jnp, jaxrnn
    >>> carry = jaxrnn.LSTMState(h=jnp.ones((3, 2)), c=jnp.ones((3, 2)))
    >>> new = jaxrnn.reset_carry(carry, jnp.array([False, True, False]),
    ...                          jaxrnn.lstm(2).init_carry())
    >>> new.h
    Array([[1., 1.],
           [0., 0.],
           [1., 1.]], dtype=float32)
  """
  _check_reset(carry, np.shape(reset), jnp.result_type(reset), initial)
  batch = np.shape(reset)[0]

  def select(leaf, init):
    leaf = jnp.asarray(leaf)
    flags = jnp.reshape(reset, (batch,) + (1,) * (leaf.ndim - 1))
    init = jnp.broadcast_to(jnp.asarray(init, leaf.dtype)[None], leaf.shape)
    return jnp.where(flags, init, leaf)

  return jax.tree_util.tree_map(select, carry, initial)


def _check_optimizer(optimizer: Any) -> None:
  if not (callable(getattr(optimizer, "init", None)) and
          callable(getattr(optimizer, "update", None))):
    hint = ""
    if isinstance(optimizer, numbers.Number):
      hint = ("; cut the sequences first with split_chunks(xs, chunk_length) "
              "and pass the chunks to the returned function")
    raise TypeError(
        "optimizer: expected an optax-like GradientTransformation with init "
        f"and update, got {type(optimizer).__name__}{hint}")


def _apply_updates(params: Params, updates: Any) -> Params:
  """``params + updates`` leaf by leaf, keeping each param's dtype (as optax)."""
  return jax.tree_util.tree_map(
      lambda p, u: None if p is None else jnp.asarray(p + u).astype(jnp.result_type(p)),
      params, updates, is_leaf=lambda x: x is None)


def _check_loss_fn_output(out: Any, carry: Carry) -> None:
  """Checks ``loss_fn``'s ``(loss, new_carry)`` from its shapes alone."""
  carry_structure = jax.tree_util.tree_structure(carry)
  if not (isinstance(out, tuple) and len(out) == 2):
    raise TypeError(
        f"loss_fn: must return (loss, new_carry), got {type(out).__name__}")
  loss, new_carry = out
  if np.shape(loss) != () or not jnp.issubdtype(loss.dtype, jnp.floating):
    raise ValueError(
        "loss_fn: must return a scalar floating loss, got shape "
        f"{tuple(np.shape(loss))} dtype {loss.dtype}; reduce over the batch "
        "(e.g. jnp.mean)")
  if jax.tree_util.tree_structure(new_carry) != carry_structure:
    raise TypeError(
        "loss_fn: must return (loss, new_carry) with new_carry structured like "
        f"carry ({carry_structure}), got {jax.tree_util.tree_structure(new_carry)}")
  for got, want in zip(jax.tree_util.tree_leaves(new_carry), jax.tree_util.tree_leaves(carry)):
    if np.shape(got) != np.shape(want) or got.dtype != jnp.result_type(want):
      raise TypeError(
          "loss_fn: new_carry must have the shapes and dtypes of carry, got "
          f"{got.dtype}{list(np.shape(got))} for {jnp.result_type(want)}"
          f"{list(np.shape(want))}")


class TBPTTState(NamedTuple):
  """What a TBPTT update carries from one chunk to the next."""

  params: Params
  opt_state: Any
  carry: Carry  # leaves (B, ...), gradient stopped


def tbptt_step(loss_fn: LossFn, optimizer: Any) -> Callable[..., tuple]:
  """One TBPTT update: the gradient of one chunk, then one optimizer step.

  The carry that enters the chunk is a constant (``jax.lax.stop_gradient``)
  and so is the carry that leaves it: gradients never cross a chunk
  boundary. Use it to drive the chunks from Python (data arriving as a
  stream); `tbptt` scans it over a whole batch of chunks.

  Args:
    loss_fn: ``loss_fn(params, carry, chunk) -> (loss, new_carry)`` with a
      scalar ``loss``, ``carry`` the batched carry entering the chunk and
      ``new_carry`` the one leaving it (structured alike).
    optimizer: an ``optax.GradientTransformation`` (anything with
      ``update(grads, state, params) -> (updates, state)``).

  Returns:
    ``step(params, opt_state, carry, chunk) -> (params, opt_state,
    new_carry, loss)``, a pure function to ``jax.jit``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, jaxrnn
    >>> layer = jaxrnn.rnn(jaxrnn.elman(4))
    >>> def loss_fn(params, carry, chunk):
    ...   xs, targets = chunk                                    # (B, L, 1), (B, L, 4)
    ...   ys, carry = jax.vmap(layer.apply, in_axes=(None, 0))(params, xs, carry=carry)
    ...   return jnp.mean((ys - targets) ** 2), carry
    >>> optimizer = optax.sgd(0.1)
    >>> step = jax.jit(jaxrnn.tbptt_step(loss_fn, optimizer))
    >>> params = layer.init_params(jax.random.key(0), 1)
    >>> opt_state, carry = optimizer.init(params), jnp.zeros((2, 4))
    >>> xs, targets = jaxrnn.split_chunks((jnp.ones((2, 9, 1)), jnp.zeros((2, 9, 4))), 3)
    >>> for chunk in zip(xs, targets):                           # 3 chunks of 3 steps
    ...   params, opt_state, carry, loss = step(params, opt_state, carry, chunk)
    >>> carry.shape
    (2, 4)

  References:
    Williams, R. J. and Peng, J. (1990). An efficient gradient-based
    algorithm for on-line training of recurrent network trajectories.
    Neural Computation 2(4), 490-501.
  """
  if not callable(loss_fn):
    raise TypeError(f"loss_fn: expected a callable, got {type(loss_fn).__name__}")
  _check_optimizer(optimizer)
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def step(params, opt_state, carry, chunk):
    carry = jax.lax.stop_gradient(carry)
    _check_loss_fn_output(jax.eval_shape(loss_fn, params, carry, chunk), carry)
    (loss, new_carry), grads = value_and_grad(params, carry, chunk)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = _apply_updates(params, updates)
    return params, opt_state, jax.lax.stop_gradient(new_carry), loss

  return step


def tbptt(loss_fn: LossFn, optimizer: Any) -> Callable[..., tuple]:
  """Truncated BPTT over a batch of chunks, one optimizer update per chunk.

  For ``k = 0, ..., num_chunks - 1`` (a ``jax.lax.scan``):

  1. rows with ``reset[k]`` restart from ``initial`` (`reset_carry`);
  2. ``(loss_k, carry), grads = value_and_grad(loss_fn)(params,
     stop_gradient(carry), chunks[k])``;
  3. ``params, opt_state`` take one ``optimizer`` step with ``grads``.

  Gradients flow back within a chunk only (at most ``chunk_length`` steps);
  the forward pass still carries the state across the whole sequence. With
  one chunk covering all ``T`` steps this is plain BPTT and one update.

  Args:
    loss_fn: ``loss_fn(params, carry, chunk) -> (loss, new_carry)``: a scalar
      loss of one chunk (leaves of ``chunks`` without the leading axis, e.g.
      ``(xs: (B, L, D), targets, lengths: (B,))``) starting from the batched
      ``carry``; ``new_carry`` is the carry after the chunk.
    optimizer: an ``optax.GradientTransformation`` (anything with
      ``update(grads, state, params) -> (updates, state)``).

  Returns:
    ``run(params, opt_state, carry, chunks, reset=None, initial=None) ->
    (params, opt_state, carry, losses)``, a pure function to ``jax.jit``:

    * ``carry``: the batched carry entering chunk 0 (leaves ``(B, ...)``);
    * ``chunks``: a pytree whose leaves have ``num_chunks`` on axis 0, as
      made by `split_chunks` and `chunk_lengths`;
    * ``reset``: ``None`` or ``(num_chunks, B)`` booleans, True where row
      ``b`` starts a new sequence at chunk ``k`` (``reset[0]`` applies to the
      incoming ``carry``);
    * ``initial``: ONE example's carry to restart from (e.g.
      ``layer.init_carry()``); ``None`` means zeros;
    * returns the updated params and optimizer state, the carry after the
      last chunk (gradient stopped; pass it to the next call to continue the
      sequences) and ``losses: (num_chunks,)``, each chunk's loss before its
      update.

  Example:
    >>> import jax, jax.numpy as jnp, optax, jaxrnn
    >>> layer = jaxrnn.stack(jaxrnn.rnn(jaxrnn.elman(8)), jaxrnn.readout(1))
    >>> def loss_fn(params, carry, chunk):
    ...   xs, targets, lengths = chunk              # (B, L, 1), (B, L, 1), (B,)
    ...   ys, carry = jax.vmap(layer.apply, in_axes=(None, 0))(
    ...       params, xs, length=lengths, carry=carry)
    ...   per_step = jnp.sum((ys - targets) ** 2, axis=-1)    # (B, L)
    ...   return jnp.mean(jaxrnn.sequence_loss(per_step, lengths)), carry
    >>> xs = jax.random.normal(jax.random.key(1), (4, 40, 1))       # (B, T, 1)
    >>> targets, lengths = jnp.cumsum(xs, axis=1), jnp.array([40, 31, 7, 40])
    >>> chunks = jaxrnn.split_chunks((xs, targets), 16)            # 16 + 16 + 8 steps
    >>> chunks = chunks + (jaxrnn.chunk_lengths(lengths, 16, 3),)
    >>> optimizer = optax.adam(1e-2)
    >>> run = jax.jit(jaxrnn.tbptt(loss_fn, optimizer))
    >>> params = layer.init_params(jax.random.key(0), 1)
    >>> opt_state = optimizer.init(params)
    >>> carry = jax.tree.map(lambda c: jnp.zeros((4,) + c.shape), layer.init_carry())
    >>> params, opt_state, carry, losses = run(params, opt_state, carry, chunks)
    >>> losses.shape                                     # one loss per chunk
    (3,)

  References:
    Williams, R. J. and Peng, J. (1990). An efficient gradient-based
    algorithm for on-line training of recurrent network trajectories.
    Neural Computation 2(4), 490-501.
  """
  step = tbptt_step(loss_fn, optimizer)

  def run(params, opt_state, carry, chunks, reset=None, initial=None):
    leaves = jax.tree_util.tree_leaves(chunks)
    if not leaves:
      raise ValueError("chunks: expected arrays with num_chunks on axis 0, got none")
    num_chunks = np.shape(leaves[0])[0] if np.ndim(leaves[0]) else None
    for leaf in leaves:
      if np.ndim(leaf) == 0 or np.shape(leaf)[0] != num_chunks:
        raise ValueError(
            "chunks: every leaf needs the same leading axis num_chunks, got shapes "
            f"{[tuple(np.shape(x)) for x in leaves]}")
    if initial is None:
      initial = jax.tree_util.tree_map(
          lambda c: jnp.zeros(np.shape(c)[1:], jnp.result_type(c)), carry)
    if reset is not None:
      batch = np.shape(jax.tree_util.tree_leaves(carry)[0])[0] if (
          jax.tree_util.tree_leaves(carry)) else None
      if np.shape(reset) != (num_chunks, batch):
        raise ValueError(
            f"reset: expected shape (num_chunks, B) = {(num_chunks, batch)}, got "
            f"{tuple(np.shape(reset))}")
      # Check once, outside the scan, so that errors name the caller's data.
      _check_reset(carry, np.shape(reset)[1:], jnp.result_type(reset), initial)

    def body(state, xs):
      chunk, reset_k = xs
      carry = state.carry
      if reset_k is not None:
        carry = reset_carry(carry, reset_k, initial)
      params, opt_state, carry, loss = step(state.params, state.opt_state, carry, chunk)
      return TBPTTState(params, opt_state, carry), loss

    state = TBPTTState(params, opt_state, jax.lax.stop_gradient(carry))
    state, losses = jax.lax.scan(body, state, (chunks, reset))
    return state.params, state.opt_state, state.carry, losses

  return run
