"""Exact weight loading from the authors' code of today's recurrences.

Each converter takes the reference's own parameters, under its own names,
and returns the params of the jaxrnn cell that computes the same function
(tested against the installed reference packages).
"""

from typing import Any

import jax.numpy as jnp

from jaxrnn._src.cells.mamba import MambaParams
from jaxrnn._src.cells.rg_lru import RGLRUParams
from jaxrnn._src.interop.flax import _get, _unwrap
from jaxrnn._src.interop.torch import _to_jax


# ---------------------------------------------------------------------------
# RG-LRU: recurrentgemma's ``RGLRU`` (Flax linen).


def from_recurrentgemma(params: Any) -> RGLRUParams:
  """`jaxrnn.RGLRUParams` from the params of recurrentgemma's ``RGLRU``.

  Args:
    params: the ``RGLRU`` module's params, ``{"a_param": (H,), "input_gate":
      {"w": (K, H/K, H/K), "b": (K, H/K)}, "a_gate": {"w", "b"}}`` (or the
      variables ``{"params": ...}``), recurrentgemma 1.0.1's names.

  Returns:
    `jaxrnn.RGLRUParams` for ``jaxrnn.rg_lru(H, num_heads=K)``:
    ``W_a, b_a = a_gate``, ``W_i, b_i = input_gate``, nothing transposed.

  Raises:
    ValueError: naming the first missing or misshapen key.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> from jaxrnn.interop import from_recurrentgemma
    >>> gate = {"w": jnp.zeros((2, 2, 2)), "b": jnp.zeros((2, 2))}
    >>> p = from_recurrentgemma({"a_param": jnp.ones(4), "input_gate": gate,
    ...                          "a_gate": gate})
    >>> p.W_i.shape
    (2, 2, 2)
  """
  params = _unwrap(params)
  a_param = _get(params, "a_param")
  if a_param.ndim != 1:
    raise ValueError(f"params: expected 'a_param' of shape (H,), got shape {a_param.shape}")
  H = a_param.shape[0]
  w = _get(params, "a_gate", "w")
  if w.ndim != 3 or w.shape[0] * w.shape[1] != H or w.shape[1] != w.shape[2]:
    raise ValueError(f"params: expected 'a_gate/w' of shape (K, H/K, H/K) with H={H}, "
                     f"got shape {w.shape}")
  K, d, _ = w.shape
  expected = {("a_gate", "w"): (K, d, d), ("a_gate", "b"): (K, d),
              ("input_gate", "w"): (K, d, d), ("input_gate", "b"): (K, d)}
  arrays = {}
  for path, shape in expected.items():
    arrays[path] = _get(params, *path)
    if arrays[path].shape != shape:
      raise ValueError(f"params: expected {'/'.join(path)!r} of shape {shape} (H={H}, K={K}), "
                       f"got shape {arrays[path].shape}")
  return RGLRUParams(a_param, arrays["a_gate", "w"], arrays["a_gate", "b"],
                     arrays["input_gate", "w"], arrays["input_gate", "b"])


# ---------------------------------------------------------------------------
# Mamba: mambapy's ``MambaBlock`` and mamba_ssm's ``Mamba`` (PyTorch).

_MAMBA_KEYS = ("in_proj.weight", "conv1d.weight", "x_proj.weight", "dt_proj.weight",
               "dt_proj.bias", "A_log", "D", "out_proj.weight")
# conv1d.bias with conv_bias=True; the projections' biases with bias=True.
_MAMBA_OPTIONAL_KEYS = ("conv1d.bias", "in_proj.bias", "out_proj.bias")


def from_mamba(state_dict: Any) -> MambaParams:
  """`jaxrnn.MambaParams` from the state dict of a Mamba block.

  Args:
    state_dict: ``module.state_dict()`` of mambapy's ``MambaBlock`` or of
      mamba_ssm's ``Mamba`` (torch tensors, or NumPy arrays under the same
      keys), with ``D = d_model``, ``ED`` inner channels, ``W = d_conv``,
      ``R = dt_rank`` and ``N = d_state``: ``in_proj.weight (2ED, D)``,
      ``conv1d.weight (ED, 1, W)``, ``conv1d.bias (ED,)`` (absent without
      a convolution bias), ``x_proj.weight (R + 2N, ED)``,
      ``dt_proj.weight (ED, R)``, ``dt_proj.bias (ED,)``, ``A_log (ED,
      N)``, ``D (ED,)``, ``out_proj.weight (D, ED)``, and with biases in
      the projections (``bias=True``) ``in_proj.bias (2ED,)`` and
      ``out_proj.bias (D,)``.

  Returns:
    `jaxrnn.MambaParams` for ``jaxrnn.mamba(D, d_state=N, d_conv=W,
    expand=ED // D, dt_rank=R, conv_bias=..., bias=...)``, in the state
    dict's dtypes: the ``nn.Linear`` weights transposed (used as ``x @
    W``), ``conv_w = conv1d.weight[:, 0, :].T`` (PyTorch's kernel order:
    ``conv_w[-1]`` weights the current step), the rest as they are.

  Raises:
    ValueError: naming the first missing, misshapen or unknown key
      (mambapy's ``inner_layernorms`` have no counterpart in `mamba`).

  Example:
    >>> import jax, jax.numpy as jnp, torch, jaxrnn
    >>> from mambapy.mamba import MambaBlock, MambaConfig
    >>> from jaxrnn.interop import from_mamba
    >>> block = MambaBlock(MambaConfig(d_model=8, n_layers=1, d_state=4))
    >>> params = from_mamba(block.state_dict())
    >>> xs = torch.randn(1, 5, 8)
    >>> layer = jaxrnn.rnn(jaxrnn.mamba(8, d_state=4))
    >>> ys, _ = jax.jit(layer.apply)(params, jnp.asarray(xs[0]))
    >>> bool(jnp.allclose(ys, block(xs)[0].detach().numpy(), atol=1e-5))
    True
  """
  if not hasattr(state_dict, "keys"):
    raise TypeError(f"state_dict: expected a mapping of names to tensors, got "
                    f"{type(state_dict).__name__}")
  known = _MAMBA_KEYS + _MAMBA_OPTIONAL_KEYS
  unknown = sorted(set(state_dict.keys()) - set(known))
  if unknown:
    raise ValueError(f"state_dict: {unknown[0]!r} has no counterpart in jaxrnn.mamba "
                     f"(expected the keys {list(known)})")

  def get(key, rank):
    if key not in state_dict:
      raise ValueError(f"state_dict: expected an entry {key!r}, got keys "
                       f"{sorted(state_dict.keys())}")
    array = _to_jax(state_dict[key], key)
    if array.ndim != rank:
      raise ValueError(f"{key}: expected {rank} axes, got shape {tuple(array.shape)}")
    return array

  (ED, N), R = get("A_log", 2).shape, get("dt_proj.weight", 2).shape[1]
  W, D = get("conv1d.weight", 3).shape[2], get("out_proj.weight", 2).shape[0]
  shapes = {"in_proj.weight": (2 * ED, D), "conv1d.weight": (ED, 1, W),
            "x_proj.weight": (R + 2 * N, ED), "dt_proj.weight": (ED, R),
            "dt_proj.bias": (ED,), "A_log": (ED, N), "D": (ED,), "out_proj.weight": (D, ED),
            "conv1d.bias": (ED,), "in_proj.bias": (2 * ED,), "out_proj.bias": (D,)}
  arrays: dict[str, Any] = {}
  for key in known:
    if key in _MAMBA_OPTIONAL_KEYS and key not in state_dict:
      arrays[key] = None
      continue
    arrays[key] = get(key, len(shapes[key]))
    if arrays[key].shape != shapes[key]:
      raise ValueError(f"{key}: expected shape {shapes[key]} (ED={ED}, N={N} from A_log, "
                       f"R={R}, W={W}, D={D}), got shape {tuple(arrays[key].shape)}")
  if ED % D:
    raise ValueError(f"A_log: expected ED = expand * D inner channels (D={D}), got ED={ED}")
  if (arrays["in_proj.bias"] is None) != (arrays["out_proj.bias"] is None):
    missing = "in_proj.bias" if arrays["in_proj.bias"] is None else "out_proj.bias"
    raise ValueError(f"state_dict: expected an entry {missing!r} (the projections have "
                     "biases together: MambaConfig.bias)")
  return MambaParams(
      in_proj=arrays["in_proj.weight"].T, conv_w=arrays["conv1d.weight"][:, 0, :].T,
      conv_b=arrays["conv1d.bias"], x_proj=arrays["x_proj.weight"].T,
      dt_proj_w=arrays["dt_proj.weight"].T, dt_proj_b=arrays["dt_proj.bias"],
      A_log=arrays["A_log"], D=arrays["D"], out_proj=arrays["out_proj.weight"].T,
      in_proj_b=arrays["in_proj.bias"], out_proj_b=arrays["out_proj.bias"])
