"""Load a PyTorch LSTM into jaxrnn, check it, and keep training in JAX.

Builds a 2-layer bidirectional ``torch.nn.LSTM``, converts it with
`jaxrnn.interop.from_torch`, runs both on the same padded minibatch (torch
through ``pack_padded_sequence``), prints the largest difference, then takes
a few jitted SGD steps (optax) on the converted parameters and writes them
back to a torch module with `jaxrnn.interop.to_torch`.

Run: ``python examples/from_torch.py``
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from jaxrnn.interop import carry_from_torch, carry_to_torch, from_torch, to_torch

B, T, D, H = 4, 7, 3, 16


def main():
  torch.manual_seed(0)
  module = torch.nn.LSTM(D, H, num_layers=2, bidirectional=True, batch_first=True)
  layer, params = from_torch(module)

  rng = np.random.default_rng(0)
  xs = rng.normal(size=(B, T, D)).astype(np.float32)
  lengths = np.array([7, 1, 4, 6])
  valid = np.arange(T)[None, :] < lengths[:, None]
  h0 = rng.normal(size=(2 * 2, B, H)).astype(np.float32)
  c0 = rng.normal(size=(2 * 2, B, H)).astype(np.float32)

  # PyTorch: a packed batch.
  packed = pack_padded_sequence(torch.from_numpy(xs), torch.from_numpy(lengths),
                                batch_first=True, enforce_sorted=False)
  with torch.no_grad():
    out, (h_n, c_n) = module(packed, (torch.from_numpy(h0), torch.from_numpy(c0)))
  out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)

  # jaxrnn: one sequence per call, vmapped over the batch.
  def forward(params, xs, lengths, carry):
    run = lambda x, n, c: layer.apply(params, x, length=n, carry=c)  # noqa: E731
    return jax.vmap(run)(xs, lengths, carry)

  carry0 = carry_from_torch(layer, h0, c0)
  ys, final = jax.jit(forward)(params, xs, lengths, carry0)
  jh_n, jc_n = carry_to_torch(layer, final)
  diff = max(
      np.abs(np.asarray(ys)[valid] - out.numpy()[valid]).max(),
      np.abs(np.asarray(jh_n) - h_n.numpy()).max(),
      np.abs(np.asarray(jc_n) - c_n.numpy()).max(),
  )
  print(f"max |jaxrnn - torch| over outputs, h_n, c_n: {diff:.2e}")
  assert diff < 1e-5
  assert np.all(np.asarray(ys)[~valid] == 0)

  # Continue in JAX: regress the outputs at valid steps onto a target.
  target = jnp.asarray(rng.normal(size=(B, T, 2 * H)).astype(np.float32))
  mask = jnp.asarray(valid, jnp.float32)[:, :, None]

  def loss_fn(params):
    ys, _ = forward(params, xs, lengths, carry0)
    return jnp.sum(mask * (ys - target) ** 2) / jnp.sum(mask)

  optimizer = optax.sgd(0.1)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  for i in range(3):
    params, opt_state, loss = step(params, opt_state)
    print(f"step {i}: loss {float(loss):.4f}")

  # Back to PyTorch, bit for bit.
  trained = to_torch(layer, params, batch_first=True)
  w = trained.weight_hh_l1_reverse.detach().numpy()
  assert np.array_equal(w, np.asarray(params[1].backward.W_h).T)
  print("back in torch:", trained)


def parse_args(argv=None):
  """The command line: no options (``--help`` describes the script)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args()
  main()
