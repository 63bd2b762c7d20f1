"""The batched fused path of `jaxrnn.rnn`: feature-major scans under `vmap`.

``jax.vmap(layer.apply)`` batches a per-example scan. Left to itself, vmap
keeps the batch axis first, so every step multiplies ``(B, H) x (H, G*H)``
and splits gates along the minor axis. Measured on CPU (2 cores, XLA's
YNNPACK dots), the same products laid out feature-major, ``(G*H, H) x (H,
B)`` forward and ``(H, G*H) x (G*H, B)`` backward, take 30% less time, and
the gate blocks become contiguous row blocks. This module holds a batch
feature-major: ``(H, B)`` carries, ``(T, D, B)`` inputs.

`fused_scan` computes values with two `jax.custom_batching.custom_vmap`
scans (forward, and the backward one reached through `_link`'s VJP); under
``vmap`` their rules run the whole batch feature-major, without it they run
the same code on a batch of one. The values are computed on constants
(``stop_gradient``); derivatives come from two zero-valued terms added to
the outputs:

* `_link`, a custom VJP whose backward is the reversed scan. It carries only
  the carry cotangent; each step applies the transpose of the cell's tangent
  hook (`FusedHooks.tangent`, the same linear map the custom JVP path in
  scan.py uses) and one product ``W_h dz_t``, and it emits the
  pre-activation cotangents ``dz_t`` of every step, per example.
* `_anchor`, a custom JVP whose tangent is ``dxs W_x + xs dW_x + db`` and
  ``h_{t-1} dW_h``, the parameters' and inputs' share of the pre-activation
  tangents. JAX transposes it: under ``grad(vmap(...))`` the weight
  gradients ``dW_h = sum_{t,b} h_{t-1} dz_t^T`` and ``dW_x`` are each one
  product over all steps and examples, and under ``vmap(grad(...))`` each
  example gets its own. (Returning per-example weight gradients from a
  batched backward rule instead, to be summed by JAX, measured 2.4x slower
  for the whole training step: XLA does not fold that sum into the
  products.)

Composition: ``grad(vmap(f))``, ``vmap(grad(f))``, ``grad(f)``, ``jit`` and
``remat`` all use the feature-major scans; vmap over parameters (ensembles)
falls back to ``vmap`` of the one-example code. The derivatives are
first-order reverse mode: forward mode (``jax.jvp``, ``jax.jacfwd``,
``jax.hessian``) raises JAX's ``TypeError`` about a ``custom_vjp``
function, and a gradient of a gradient raises a ``TypeError`` naming
``fused_vjp``; ``rnn(..., fused_vjp=False)`` supports both.
"""

from functools import partial

import jax
import jax.numpy as jnp

tree_map = jax.tree_util.tree_map
tree_leaves = jax.tree_util.tree_leaves


def _on_last_axis(mask, like):
  """A scalar ``mask`` as is; ``mask: (B,)`` shaped to broadcast along the
  last axis of ``like``."""
  if mask.ndim == 0:
    return mask
  return jnp.reshape(mask, (1,) * (like.ndim - 1) + mask.shape)


def select(mask, new, old):
  """``where(mask, new, old)`` leafwise; ``mask`` is a scalar (one example)
  or ``(B,)`` (a feature-major batch, on the last axis)."""
  return tree_map(lambda n, o: jnp.where(_on_last_axis(mask, n), n, o), new, old)


def zero_unless(mask, tree):
  """``tree`` with every leaf zeroed where ``mask`` is False (as `select`)."""
  return tree_map(
      lambda v: jnp.where(_on_last_axis(mask, v), v, jnp.zeros((), v.dtype)), tree)


_HIGHER_ORDER = (
    "fused_vjp: the fused backward pass of jaxrnn.rnn (the default for the "
    "built-in elman/lstm/gru cells) gives first-order reverse-mode "
    "derivatives only; for a gradient of a gradient, jax.hessian or "
    "jax.jvp/jacfwd build the layer with rnn(..., fused_vjp=False)")


def _zeros_from(source, shape, dtype):
  """Zeros of ``shape`` that depend on ``source`` (nothing is computed).

  ``jnp.zeros`` under ``vmap`` is unbatched; a custom VJP with an unbatched
  output then receives its cotangent summed over the batch. A sum over an
  empty slice of ``source`` is 0 and batched like ``source``.
  """
  return jnp.broadcast_to(jnp.sum(source[:0]).astype(dtype), shape)


def _trailing(tree):
  """Per-leaf ``a[..., None]``: small parameters broadcast over the batch axis."""
  return tree_map(lambda a: a[..., None], tree)


# Largest batch for which the forward scan projects all steps' inputs in one
# product before the loop (otherwise each step projects its own). CPU, 2
# cores, measured: at B = 1 hoisting cut the LSTM forward from 1.53 to 1.1 ms
# and the Elman one from 0.5 to 0.35 ms at (T, D, H) = (500, 32, 64); at
# B = 8 it cost the LSTM 30%, and at B = 32 it made no difference forward
# and cost 4% in training. The GRU's forward at B = 1 got 2x slower, so its
# hooks opt out (`FusedHooks.hoist_inputs`). GPU (H100, benchmarks/tune.py,
# unroll 1): hoisting at every batch size, the forward took 0.73-0.86x the
# time at B = 8, 32 and 128 and training 0.86-0.94x. Other backends are
# unmeasured: CPU's rule.
HOIST_MAX_BATCH = {"cpu": 1, "gpu": 1 << 30}

# Smallest batch for which the backward scan stacks the pre-activation
# cotangents feature-major, ``(T, G*H, B)``, and transposes them to ``(T, B,
# G*H)`` once after the loop. Below it each step writes its ``dz_t`` already
# transposed, ``(B, G*H)``, a transpose XLA fuses into the step's elementwise
# backward: cheap for narrow batches, slow for wide ones. CPU, 2 cores,
# training step, interleaved medians: at (B, T, D, H) = (128, 50, 256, 512)
# stacking feature-major took the GRU from 463 to 417 ms (three runs: 6-12%
# faster), the LSTM and Elman within 2%; at B = 32 it was within 3%, and at
# B = 8 it cost the GRU 16%. GPU (H100, benchmarks/tune.py, unroll 1): the
# Elman layer at (8, 1000, 64, 128) trained in 0.55x the time feature-major;
# every other point was within 2% either way, B = 1 included: feature-major
# from B = 2. Other backends are unmeasured: CPU's rule.
STACK_FEATURE_MAJOR_MIN_BATCH = {"cpu": 64, "gpu": 2}


def _for_backend(table):
  """``table``'s value for the default backend; unmeasured ones take CPU's."""
  return table.get(jax.default_backend(), table["cpu"])


# ---------------------------------------------------------------------------
# Feature-major scans. Every per-example array has the batch as its LAST axis:
# carry leaves (H, B), xs (T, D, B), valid (T, B), h_mask (H, B) or None.


def _forward(hooks, reverse, unroll, W_x, b_in, W_h, extra, carry, xs, valid,
             h_mask):
  """``(ys: (T, O, B), carry, (hiddens: (T, H, B), residuals))``.

  ``hiddens`` holds ``h_{t-1}`` of every step (before ``h_mask``),
  ``residuals`` what the cell's forward hook keeps for its tangent.
  """
  b_col = None if b_in is None else b_in[:, None]
  ext = _trailing(extra)
  hoist = hooks.hoist_inputs and xs.shape[-1] <= _for_backend(HOIST_MAX_BATCH)
  # Materialise the transposes once: folded into the dots, they would turn
  # the products into slow transposed-operand kernels.
  W_hT = jax.lax.optimization_barrier(W_h.T)
  W_xT = None if hoist else jax.lax.optimization_barrier(W_x.T)
  if hoist:
    # The input projection of every step, bias included, as one product,
    # (T, B, D) x (D, G*H), swapped to (T, G*H, B). At B = 1 the swaps are
    # reshapes and XLA runs one (T, D) x (D, G*H) product with no transposes
    # around it; written as (G*H, D) x (D, T) it transposed xs and the
    # result, and the forward pass at (T, D, H) = (500, 32, 64) was slower
    # (interleaved medians, two runs: LSTM 0.78 -> 0.75 and 1.02 -> 0.82 ms,
    # Elman 0.33 -> 0.31 and 0.36 -> 0.35 ms; training 0.5% slower to 6%
    # faster).
    xs = jnp.swapaxes(jnp.matmul(jnp.swapaxes(xs, 1, 2), W_x), 1, 2)
    if b_col is not None:
      xs = xs + b_col[None]

  def step(c, inp):
    x_t, v_t = inp
    if hoist:
      zx = x_t
    else:
      zx = jnp.matmul(W_xT, x_t)
      if b_col is not None:
        zx = zx + b_col
    h_tm1 = hooks.hidden(c)
    h = h_tm1 if h_mask is None else h_tm1 * h_mask
    new_c, y, res = hooks.forward(ext, c, zx, jnp.matmul(W_hT, h))
    if v_t is not None:
      new_c, y = select(v_t, new_c, c), zero_unless(v_t, y)
    return new_c, (y, h_tm1, res)

  carry, (ys, hiddens, res) = jax.lax.scan(step, carry, (xs, valid),
                                           reverse=reverse, unroll=unroll)
  return ys, carry, (hiddens, res)


def _backward(hooks, reverse, unroll, W_h, extra, valid, h_mask, hiddens, res,
              dys, dfinal):
  """The backward scan: ``(dzx, dzh: (T, B, G*H), dextra: (B, ...), dcarry)``.

  ``dzx`` and ``dzh`` are the cotangents of the input and recurrent
  pre-activations of every step (``dzh`` is None for cells whose step adds
  the two, where they are equal); ``dextra`` is per example.
  """
  batch = hiddens.shape[-1]
  # Per-example copies of the small parameters, so that their cotangents
  # are per example (and masked per example).
  ext = tree_map(lambda e: jnp.broadcast_to(e[..., None], e.shape + (batch,)), extra)
  z_like = jax.ShapeDtypeStruct((W_h.shape[1], batch), hiddens.dtype)
  ext_like = tree_map(lambda e: jax.ShapeDtypeStruct(e.shape, e.dtype), ext)
  carry_like = tree_map(lambda c: jax.ShapeDtypeStruct(c.shape, c.dtype), dfinal)
  into_carry = jax.linear_transpose(hooks.hidden, carry_like)
  feature_major = batch >= _for_backend(STACK_FEATURE_MAJOR_MIN_BATCH)

  def step(dc, inp):
    h_tm1, res_t, v_t, dy_t = inp
    tangent = partial(hooks.tangent, ext, h_tm1, res_t)
    transpose = jax.linear_transpose(tangent, carry_like, z_like, z_like, ext_like)
    dc_direct, dzx, dzh, dext = transpose((dc, dy_t))
    dh = jnp.matmul(W_h, dzh)
    if h_mask is not None:
      dh = dh * h_mask
    (dh_carry,) = into_carry(dh.astype(hiddens.dtype))
    dc_prev = tree_map(jnp.add, dc_direct, dh_carry)
    shared = dzh is dzx
    if v_t is not None:
      dc_prev = select(v_t, dc_prev, dc)
      dzx, dzh, dext = zero_unless(v_t, (dzx, dzh, dext))
    dzh = None if shared else dzh
    if not feature_major:
      # (B, G*H): the weight-gradient products then contract the (T, B)
      # rows in the order the caller's batch-first arrays have them.
      dzx, dzh = tree_map(jnp.transpose, (dzx, dzh))
    return dc_prev, (dzx, dzh, dext)

  dcarry, (dzx, dzh, dext) = jax.lax.scan(
      step, dfinal, (hiddens, res, valid, dys), reverse=not reverse,
      unroll=unroll)
  if feature_major:  # (T, G*H, B) -> (T, B, G*H)
    dzx, dzh = tree_map(lambda a: jnp.swapaxes(a, 1, 2), (dzx, dzh))
  dextra = tree_map(lambda d: jnp.moveaxis(jnp.sum(d, axis=0), -1, 0), dext)
  return dzx, dzh, dextra, dcarry


# ---------------------------------------------------------------------------
# Layout changes between the caller's view and the feature-major one.


def _to_fm(tree, batched):
  """Batched leaves ``(B, ...)`` -> ``(..., B)``; unbatched ``(...)`` -> ``(..., 1)``."""
  if batched:
    return tree_map(lambda a: jnp.moveaxis(a, 0, -1), tree)
  return tree_map(lambda a: a[..., None], tree)


def _from_fm(tree, batched):
  if batched:
    return tree_map(lambda a: jnp.moveaxis(a, -1, 0), tree)
  return tree_map(lambda a: a[..., 0], tree)


def _broadcast_batch(axis_size, args, in_batched):
  """Gives every unbatched per-example argument a leading batch axis."""
  return tree_map(
      lambda b, a: a if b else jnp.broadcast_to(a, (axis_size,) + a.shape),
      tuple(in_batched), tuple(args))


def _batchable(one, batched_impl, num_params):
  """``one`` with a batching rule, differentiable in reverse mode.

  ``one(*args)`` is the one-example function; ``batched_impl(*args)`` the
  same on per-example arguments with a leading batch axis, the first
  ``num_params`` arguments (parameters) unbatched. Under ``vmap`` the rule
  calls ``batched_impl``, or ``vmap(one)`` when a parameter is batched
  (vmap over models).

  The result is wrapped in a `custom_vjp` whose backward pass raises: it
  is reached only by differentiating a gradient (the values here are
  computed on constants; see `fused_scan`), which this path does not
  support.
  """

  def rule(axis_size, in_batched, *args):
    in_batched = tuple(in_batched)
    if any(tree_leaves(in_batched[:num_params])):
      in_axes = tuple(tree_map(lambda b: 0 if b else None, in_batched))
      out = jax.vmap(one, in_axes=in_axes)(*args)
    else:
      per_example = _broadcast_batch(axis_size, args[num_params:],
                                     in_batched[num_params:])
      out = batched_impl(*args[:num_params], *per_example)
    return out, tree_map(lambda _: True, out)

  batchable = jax.custom_batching.custom_vmap(one)
  batchable.def_vmap(rule)

  @jax.custom_vjp
  def fn(*args):
    return batchable(*args)

  def fn_fwd(*args):
    return batchable(*args), args

  def fn_bwd(args, cotangent):
    del args, cotangent
    raise TypeError(_HIGHER_ORDER)

  fn.defvjp(fn_fwd, fn_bwd)
  return fn


# ---------------------------------------------------------------------------
# The batchable scans and the two zero-valued terms that carry derivatives.


def _fwd_fns(hooks, reverse, unroll):
  def impl(batched, W_x, b_in, W_h, extra, carry, xs, valid, h_mask):
    fm = partial(_to_fm, batched=batched)
    ys, carry, (hiddens, res) = _forward(
        hooks, reverse, unroll[0], W_x, b_in, W_h, extra, fm(carry),
        fm(xs), fm(valid), fm(h_mask))
    ys, carry, hiddens, res = _from_fm((ys, carry, hiddens, res), batched)
    if batched and ys.shape[0] > 1:
      # Materialise the (T, O, B) -> (B, T, O) transpose on its own. Left
      # free, XLA fuses the caller's next elementwise op into it and the
      # fused transpose is slow: on CPU, sum(square(.)) of a (128, 50, 512)
      # output took 26 ms with the transpose fused and 6.5 ms without, and
      # the (B, T, D, H) = (128, 50, 256, 512) forward passes got 20 ms
      # faster for each cell (other benchmark shapes unchanged). At B = 1
      # the transpose is a reshape, left alone.
      ys = jax.lax.optimization_barrier(ys)
    return ys, carry, hiddens, res

  return _batchable(partial(impl, False), partial(impl, True), num_params=4)


def _bwd_fns(hooks, reverse, unroll):
  def impl(batched, W_h, extra, valid, h_mask, hiddens, res, dys, dfinal):
    fm = partial(_to_fm, batched=batched)
    dzx, dzh, dextra, dcarry = _backward(
        hooks, reverse, unroll[1], W_h, extra, fm(valid), fm(h_mask),
        fm(hiddens), fm(res), fm(dys), fm(dfinal))
    dz = (dzx,) if dzh is None else (dzx, dzh)
    # (T, B, G*H) -> (B, T, G*H); one example: (T, 1, G*H) -> (T, G*H).
    dz = tree_map((lambda a: jnp.moveaxis(a, 1, 0)) if batched else
                  (lambda a: a[:, 0]), dz)
    if not batched:
      dextra = tree_map(lambda a: a[0], dextra)
    return dz, dextra, _from_fm(dcarry, batched)

  return _batchable(partial(impl, False), partial(impl, True), num_params=2)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _anchor(has_bias, xs, W_x, b_in, h_in, W_h):
  """Zeros ``(T, G*H)`` twice, whose tangents are the pre-activation tangents.

  Primal: no work. Tangent: ``(dxs W_x + xs dW_x + db_in, h_in dW_h)``, the
  parts of the pre-activation tangents that do not go through the
  recurrence. JAX transposes it, so under ``grad(vmap(...))`` the weight
  gradients are each one product contracting batch and time together, and
  under ``vmap(grad(...))`` each example gets its own.
  """
  del has_bias, b_in, h_in, W_h
  zeros = _zeros_from(xs, xs.shape[:-1] + W_x.shape[-1:], xs.dtype)
  return zeros, zeros


@_anchor.defjvp
def _anchor_jvp(has_bias, primals, tangents):
  xs, W_x, b_in, h_in, W_h = primals
  dxs, dW_x, db_in, dh_in, dW_h = tangents
  dzx = jnp.matmul(dxs, W_x) + jnp.matmul(xs, dW_x)
  if has_bias:
    dzx = dzx + jnp.reshape(db_in, (1,) * (dzx.ndim - 1) + db_in.shape)
  dzh = jnp.matmul(dh_in, W_h) + jnp.matmul(h_in, dW_h)
  return _anchor(has_bias, xs, W_x, b_in, h_in, W_h), (dzx, dzh)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _link(hooks, reverse, unroll, zx, zh, extra, carry, W_h, valid, h_mask,
          hiddens, res, ys):
  """Zeros like ``(ys, carry)``; the VJP is the fused backward scan.

  Maps the cotangents of a scan's outputs to those of its pre-activations
  ``zx, zh`` (per step), of ``extra`` and of the initial ``carry``. The
  other arguments are residuals of the forward scan and get no cotangent.
  """
  del hooks, reverse, unroll, zx, zh, extra, W_h, valid, h_mask, hiddens, res
  return (_zeros_from(ys, ys.shape, ys.dtype),
          tree_map(lambda c: _zeros_from(ys, c.shape, c.dtype), carry))


def _link_fwd(hooks, reverse, unroll, zx, zh, extra, carry, W_h, valid, h_mask,
              hiddens, res, ys):
  out = _link(hooks, reverse, unroll, zx, zh, extra, carry, W_h, valid, h_mask,
              hiddens, res, ys)
  return out, (extra, W_h, valid, h_mask, hiddens, res)


def _link_bwd(hooks, reverse, unroll, saved, cotangents):
  extra, W_h, valid, h_mask, hiddens, res = saved
  dys, dfinal = cotangents
  dz, dextra, dcarry = _bwd_fns(hooks, reverse, unroll)(
      W_h, extra, valid, h_mask, hiddens, res, dys, dfinal)
  dzx, dzh = dz if len(dz) == 2 else (dz[0], dz[0])
  # Cotangents of zx, zh, extra, carry; the residual arguments get none.
  return (dzx, dzh, dextra, dcarry) + (None,) * 6


_link.defvjp(_link_fwd, _link_bwd)


def fused_scan(hooks, reverse, unroll, W_x, b_in, W_h, extra, carry, xs, valid,
               h_mask):
  """One example's fused scan: ``(ys: (T, O), carry)``.

  ``hooks``: the cell's `FusedHooks`; ``unroll``: ``(forward, backward)``;
  ``W_x: (D, G*H)``, ``b_in: (G*H,)`` or None, ``W_h: (H, G*H)``, ``extra``
  from ``hooks.split``; ``carry`` the initial carry; ``xs: (T, D)``;
  ``valid: (T,)`` bool or None; ``h_mask: (H,)`` multiplying ``h_{t-1}`` in
  the recurrent product, or None. Batch it with ``jax.vmap``.

  Values come from the feature-major forward scan run on constants
  (``stop_gradient``); derivatives from two zero-valued terms added to
  them: `_link`, whose VJP is the backward scan and yields the
  pre-activation cotangents ``dz`` per step and example, and `_anchor`,
  whose JVP carries the parameters' and inputs' share of the
  pre-activation tangents. The weight gradients are thus JAX's transpose
  of ``h_in dW_h`` and ``xs dW_x``.
  """
  sg = jax.lax.stop_gradient
  ys, final, hiddens, res = _fwd_fns(hooks, reverse, unroll)(
      sg(W_x), sg(b_in), sg(W_h), sg(extra), sg(carry), sg(xs), valid, sg(h_mask))
  h_in = hiddens if h_mask is None else hiddens * h_mask[None]
  zx, zh = _anchor(b_in is not None, xs, W_x, b_in, sg(h_in), W_h)
  dys, dfinal = _link(hooks, reverse, unroll, zx, zh, extra, carry, sg(W_h),
                      valid, sg(h_mask), hiddens, res, ys)
  return ys + dys, tree_map(jnp.add, final, dfinal)
