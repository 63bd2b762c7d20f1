"""`mamba` against mambapy 1.2.0's ``MambaBlock``, the authors' code.

The block's weights come through `from_mamba` from its own
``state_dict()``. Its full-sequence forward pass (the parallel scan and the
sequential one) and its ``step`` with its cache ``(h, inputs)`` (the
``MambaState`` ``(conv, ssm)`` transposed) are compared with jaxrnn's layer
and ``cell_apply``. Every method of `jaxrnn.rnn` (the multiply-add scan,
the associative scan, the reference scan) runs under ``jit(vmap)`` with
lengths, reverse over the valid prefix, resets, a given starting carry,
every step's carry and chunked remat, against a Python loop over
``cell_apply`` (`reference.run`'s contract); the gradient of the
associative scan equals that of the reference scan.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from mambapy.mamba import MambaBlock, MambaConfig

import jaxrnn
from jaxrnn.interop import from_mamba
import reference as ref

B, T, D = 3, 7, 4
LENGTHS = np.array([7, 4, 0], np.int32)
RESET = np.zeros((B, T), bool)
RESET[0, [0, 4]] = True  # example 0 starts afresh, then restarts at 4
RESET[1, [2, 3]] = True  # two segment starts in a row
RESET[2, 1] = True  # on padding: no effect
# Two configurations: the defaults' options (a 3-step convolution with a
# bias) and the other options (no convolution window, projection biases, a
# given dt_rank).
CONFIGS = {"window": dict(d_state=3, d_conv=3),
           "biases": dict(d_state=2, d_conv=1, expand=1, dt_rank=2, conv_bias=False, bias=True)}
CELLS = {name: jaxrnn.mamba(D, **config) for name, config in CONFIGS.items()}


@functools.lru_cache(maxsize=None)
def _block(name):
  """mambapy's block for a configuration, with every parameter random."""
  config = dict(CONFIGS[name])
  config["expand_factor"] = config.pop("expand", 2)
  torch.manual_seed(0)
  block = MambaBlock(MambaConfig(d_model=D, n_layers=1, **config))
  with torch.no_grad():
    for value in block.parameters():
      value.copy_(0.5 * torch.randn_like(value))
  return block


def _xs(seed, shape=(B, T, D)):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _step_program(name):
  return jax.jit(jax.vmap(CELLS[name].cell_apply, in_axes=(None, 0, 0)))


@functools.lru_cache(maxsize=None)
def _layer_program(name):
  layer = jaxrnn.rnn(CELLS[name])
  return jax.jit(jax.vmap(layer.apply, in_axes=(None, 0)))


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_and_step_match_mambapy(name):
  block, cell = _block(name), CELLS[name]
  params = from_mamba(block.state_dict())
  xs = _xs(1)
  ys, _ = _layer_program(name)(params, jnp.asarray(xs))
  with torch.no_grad():
    block.config.pscan = True
    parallel = block(torch.from_numpy(xs)).numpy()
    block.config.pscan = False
    sequential = block(torch.from_numpy(xs)).numpy()
    block.config.pscan = True
  np.testing.assert_allclose(ys, parallel, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ys, sequential, rtol=1e-4, atol=1e-4)

  # The step with its cache: h (B, ED, N) is the ssm state, inputs (B, ED,
  # d_conv - 1) the convolution's buffer transposed.
  carry = jax.tree_util.tree_map(lambda c: jnp.zeros((B,) + c.shape, c.dtype),
                                 cell.init_carry())
  width = carry.conv.shape[1]  # d_conv - 1
  cache = (None, torch.zeros(B, carry.conv.shape[2], width))
  for t in range(T):
    carry, y = _step_program(name)(params, carry, jnp.asarray(xs[:, t]))
    with torch.no_grad():
      y_ref, cache = block.step(torch.from_numpy(xs[:, t]), cache)
    # With d_conv = 1 mambapy's step keeps one input too many (its forward
    # pass keeps none): the cache is cut to its d_conv - 1 last entries.
    cache = (cache[0], cache[1][:, :, cache[1].shape[2] - width:])
    np.testing.assert_allclose(y, y_ref.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(carry.ssm, cache[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(carry.conv, cache[1].numpy().transpose(0, 2, 1), rtol=1e-4,
                               atol=1e-4)
  np.testing.assert_allclose(ys[:, -1], y, rtol=1e-4, atol=1e-4)


@functools.lru_cache(maxsize=None)
def _method_program(method, reverse, remat):
  """``((ys, carries), carry)`` of ``rnn(mamba)`` under ``jit(vmap)`` with
  lengths, resets and a starting carry, and the gradient of a loss of them
  in params, inputs and the starting carry."""
  layer = jaxrnn.rnn(CELLS["window"], method=method, reverse=reverse, remat=remat,
                     return_carries=True)
  run = jax.vmap(lambda p, x, n, r, c: layer.apply(p, x, length=n, reset=r, carry=c),
                 in_axes=(None, 0, 0, 0, 0))

  def loss(*args):
    (ys, carries), final = run(*args)
    return sum(jnp.sum(jnp.sin(v)) for v in jax.tree_util.tree_leaves((ys, carries, final)))

  return jax.jit(lambda *args: (run(*args), jax.grad(loss, argnums=(0, 1, 4))(*args)))


def _loop_step(cell):
  """``cell_apply`` for `reference.run`: its output is ``[y, conv, ssm]``
  flattened, so that the loop records every step's carry too."""
  apply = jax.jit(cell.cell_apply)

  def step(params, carry, x):
    carry, y = apply(params, jaxrnn.MambaState(*carry), jnp.asarray(x, jnp.float32))
    return carry, np.concatenate([np.ravel(y), np.ravel(carry.conv), np.ravel(carry.ssm)])

  return step


def _split_outputs(flat, carry):
  """``(ys, carries)`` from `_loop_step`'s outputs."""
  conv, ssm = carry.conv.shape, carry.ssm.shape
  sizes = np.cumsum([D, np.prod(conv)])
  y, c, s = np.split(flat, sizes, axis=-1)
  return y, jaxrnn.MambaState(c.reshape(c.shape[:-1] + conv), s.reshape(s.shape[:-1] + ssm))


def _data():
  cell = CELLS["window"]
  params = from_mamba(_block("window").state_dict())
  xs = _xs(2)
  for b, n in enumerate(LENGTHS):
    xs[b, n:] = np.nan  # padding never reaches a value or a gradient
  carry = ref.random_like(jax.vmap(lambda _: cell.init_carry())(jnp.arange(B)), seed=3)
  return params, xs, carry


# Pairwise: each method forward and reversed, each with and without chunked
# remat once (the carry, convolution buffer included, crosses chunks).
@pytest.mark.parametrize("method, reverse, remat", [
    ("sequential", False, None), ("sequential", True, 3), ("parallel", False, 3),
    ("parallel", True, None), ("reference", False, None), ("reference", True, 2)])
def test_every_method_matches_a_loop_over_cell_apply(method, reverse, remat):
  cell = CELLS["window"]
  params, xs, carry = _data()
  args = (params, jnp.asarray(xs), jnp.asarray(LENGTHS), jnp.asarray(RESET), carry)
  ((ys, carries), final), grads = _method_program(method, reverse, remat)(*args)
  step = _loop_step(cell)
  out_size = D + cell.init_carry().conv.size + cell.init_carry().ssm.size
  for b, n in enumerate(LENGTHS):
    start = jax.tree_util.tree_map(lambda c: np.asarray(c[b]), carry)
    flat, want = ref.run(step, params, xs[b], tuple(start), out_size, n, reverse, RESET[b],
                         initial=tuple(cell.init_carry()))
    want_ys, want_carries = _split_outputs(flat, cell.init_carry())
    ref.assert_tree_close(ys[b], want_ys, rtol=1e-5, atol=1e-5)
    ref.assert_tree_close(jax.tree_util.tree_map(lambda c: c[b], carries), want_carries,
                          rtol=1e-5, atol=1e-5)
    ref.assert_tree_close(jax.tree_util.tree_map(lambda c: c[b], final),
                          jaxrnn.MambaState(*want), rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(grads[1]))) and np.all(np.asarray(grads[1])[2] == 0)
  if method == "parallel" and not reverse:  # one check of the gradient against autodiff
    _, want_grads = _method_program("reference", reverse, None)(*args)
    ref.assert_tree_close(grads, want_grads, rtol=1e-4, atol=1e-4)


def test_bidirectional_and_stack_match_loops():
  cell = CELLS["window"]
  params, xs, _ = _data()
  bi = jaxrnn.bidirectional(cell, cell, method="parallel")
  deep = jaxrnn.stack(jaxrnn.rnn(cell), jaxrnn.rnn(cell, method="parallel", reverse=True))
  apply = jax.jit(jax.vmap(lambda p, q, x, n, r: (bi.apply(p, x, length=n, reset=r)[0],
                                                  deep.apply(q, x, length=n, reset=r)[0]),
                           in_axes=(None, None, 0, 0, 0)))
  params_b = jaxrnn.BidirectionalParams(params, ref.random_like(params, seed=5))
  ys_bi, ys_deep = apply(params_b, (params, params_b.backward), jnp.asarray(xs),
                         jnp.asarray(LENGTHS), jnp.asarray(RESET))
  step = _loop_step(cell)
  zeros = tuple(cell.init_carry())
  out_size = D + cell.init_carry().conv.size + cell.init_carry().ssm.size
  first = lambda flat: _split_outputs(flat, cell.init_carry())[0]
  for b, n in enumerate(LENGTHS):
    fwd, _ = ref.run(step, params, xs[b], zeros, out_size, n, False, RESET[b], initial=zeros)
    bwd, _ = ref.run(step, params_b.backward, xs[b], zeros, out_size, n, True, RESET[b],
                     initial=zeros)
    ref.assert_tree_close(ys_bi[b], np.concatenate([first(fwd), first(bwd)], axis=-1),
                          rtol=1e-5, atol=1e-5)
    deep_b, _ = ref.run(step, params_b.backward, first(fwd), zeros, out_size, n, True,
                        RESET[b], initial=zeros)
    ref.assert_tree_close(ys_deep[b], first(deep_b), rtol=1e-5, atol=1e-5)


def test_from_mamba_reads_arrays_and_names_bad_keys():
  block = _block("biases")
  state = {k: v.numpy() for k, v in block.state_dict().items()}
  params = from_mamba(state)
  assert params.conv_b is None and params.in_proj_b.shape == (2 * D,)
  assert params.conv_w.shape == (1, D) and params.x_proj.shape == (D, 2 + 2 * 2)
  np.testing.assert_array_equal(params.in_proj, state["in_proj.weight"].T)
  cases = [
      ({k: v for k, v in state.items() if k != "A_log"},
       r"state_dict: expected an entry 'A_log'"),
      ({**state, "D": np.zeros(3, np.float32)}, r"^D: expected shape \(4,\)"),
      ({**state, "x_proj.weight": np.zeros((5, 4), np.float32)},
       r"^x_proj.weight: expected shape \(6, 4\)"),
      ({**state, "conv1d.weight": np.zeros((4, 1), np.float32)},
       r"^conv1d.weight: expected 3 axes"),
      ({**state, "dt_layernorm.weight": np.zeros(2, np.float32)},
       r"'dt_layernorm.weight' has no counterpart"),
      ({k: v for k, v in state.items() if k != "out_proj.bias"},
       r"state_dict: expected an entry 'out_proj.bias'"),
  ]
  for bad, message in cases:
    with pytest.raises(ValueError, match=message):
      from_mamba(bad)


def test_bad_arguments_are_named():
  cell = CELLS["window"]
  with pytest.raises(ValueError, match=r"^input_size: mamba\(d_model=4\) expects input_size "
                                       r"equal to d_model=4, got 5$"):
    cell.init_params(jax.random.key(0), 5)
  params = from_mamba(_block("window").state_dict())
  with pytest.raises(ValueError, match=r"^x: cell_apply expects shape \(4,\)"):
    cell.cell_apply(params, cell.init_carry(), jnp.ones(3))
  with pytest.raises(ValueError, match=r"^xs: rnn.apply expects shape \(T, 4\)"):
    jaxrnn.rnn(cell).apply(params, jnp.ones((T, 5)))
  for kwargs, name in ((dict(d_conv=0), "d_conv"), (dict(d_state=0), "d_state"),
                       (dict(expand=-1), "expand"), (dict(dt_rank=0), "dt_rank"),
                       (dict(dt_rank="big"), "dt_rank"), (dict(d_model=0), "d_model")):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
      jaxrnn.mamba(**{"d_model": D, **kwargs})
  with pytest.raises(ValueError, match=r"^params.conv_b: mamba\(d_model=4\) expects shape"):
    jaxrnn.rnn(cell).apply(params._replace(conv_b=None), jnp.ones((T, D)))
  with pytest.raises(ValueError, match=r"^params.out_proj_b: mamba\(d_model=4\) has no"):
    jaxrnn.rnn(cell).apply(params._replace(out_proj_b=jnp.ones(D)), jnp.ones((T, D)))
