"""Trace-time argument checks and the dtype policy shared by cells and layers.

Every check here looks only at static information (Python types, shapes and
dtypes), so it raises while a function is traced and costs nothing at run
time.
"""

import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np


def _check_number(value: Any, name: str, kind: type, what: str, ok) -> Any:
  """Returns ``value`` if it is a non-bool ``kind`` for which ``ok`` holds."""
  if isinstance(value, bool) or not isinstance(value, kind):
    raise TypeError(f"{name}: expected {what}, got {type(value).__name__} {value!r}")
  if not ok(value):
    raise ValueError(f"{name}: expected {what}, got {value}")
  return value


def check_positive_int(value: Any, name: str) -> int:
  """Returns ``value`` if it is a positive Python int, else raises."""
  return int(_check_number(value, name, numbers.Integral, "a positive int", lambda v: v > 0))


def check_heads(hidden_size: Any, num_heads: Any) -> tuple[int, int]:
  """``(hidden_size, num_heads)`` as ints if both are positive and the heads
  divide the hidden size, else raises ValueError naming the argument."""
  H = check_positive_int(hidden_size, "hidden_size")
  K = check_positive_int(num_heads, "num_heads")
  if H % K:
    raise ValueError(f"hidden_size: expected a multiple of num_heads={K}, got {H}")
  return H, K


def check_bool(value: Any, name: str) -> bool:
  """Returns ``value`` if it is a Python bool, else raises TypeError."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
  return bool(value)


def check_positive_float(value: Any, name: str) -> float:
  """Returns ``value`` as a float if it is a real number > 0, else raises."""
  return float(_check_number(value, name, numbers.Real, "a positive number", lambda v: v > 0))


def check_rate(value: Any, name: str) -> float:
  """Returns ``value`` as a float if it is a probability in [0, 1)."""
  return float(_check_number(value, name, numbers.Real, "a rate in [0, 1)",
                             lambda v: 0 <= v < 1))


def check_params(params: Any, expected_type: type, owner: str) -> None:
  """Raises TypeError unless ``params`` is an instance of ``expected_type``."""
  if not isinstance(params, expected_type):
    raise TypeError(
        f"params: {owner} expects {expected_type.__name__}, got "
        f"{describe(params)}; were these params made by another cell or layer?"
    )


def check_array_shape(value: Any, expected: tuple, name: str, owner: str):
  """Raises ValueError unless ``value`` has exactly the shape ``expected``."""
  shape = np.shape(value)
  if tuple(shape) != tuple(expected):
    raise ValueError(
        f"{name}: {owner} expects shape {tuple(expected)}, got shape {tuple(shape)}"
    )


def check_input_matrix(value: Any, columns: int, name: str, owner: str) -> None:
  """Raises ValueError unless ``value`` has the shape ``(input_size, columns)``."""
  if value.ndim != 2 or value.shape[1] != columns:
    raise ValueError(f"{name}: {owner} expects shape (input_size, {columns}), got "
                     f"{tuple(value.shape)}")


def init_args(input_size: Any, dtype: Any) -> tuple:
  """``init_params``' ``(input_size, dtype)``: the size checked, the dtype defaulted."""
  return (check_positive_int(input_size, "input_size"),
          default_float() if dtype is None else jnp.dtype(dtype))


def check_input_size_equals(input_size: int, size: int, name: str, owner: str) -> None:
  """Raises ValueError unless ``input_size`` (checked by `init_args`) is
  ``size``, for a cell whose input size is one of its own sizes, ``name``."""
  if input_size != size:
    raise ValueError(f"input_size: {owner} expects input_size equal to {name}={size}, "
                     f"got {input_size}")


def check_optional_array(value: Any, expected: tuple, name: str, owner: str, *,
                         present: bool, what: str) -> None:
  """Checks an optional parameter: an array of shape ``expected`` when the
  option is ``present``, None when it is not (``what`` names the option)."""
  if not present:
    if value is not None:
      raise ValueError(f"{name}: {owner} has no {what}, got an array")
    return
  if value is None:
    raise ValueError(f"{name}: {owner} expects shape {tuple(expected)}, got None")
  check_array_shape(value, expected, name, owner)


def check_floating(value: Any, name: str) -> None:
  dtype = jnp.result_type(value)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating-point array, got dtype {dtype}")


def check_sequence(xs: Any, input_size: Optional[int], owner: str,
                   input_ndim: int = 1) -> None:
  """Checks that ``xs`` is one sequence of shape ``(T, input_size)``.

  With ``input_ndim > 1`` each step is itself an array (e.g. a feature map
  ``(height, width, channels)``) and ``xs`` has rank ``1 + input_ndim``;
  ``input_size`` is then the size of the last axis.
  """
  shape = np.shape(xs)
  if len(shape) != 1 + input_ndim:
    want = "(T, input_size)" if input_ndim == 1 else (
        "(T, " + ", ".join(f"d{k}" for k in range(input_ndim - 1)) + ", channels)")
    hint = ("; apply works on ONE sequence: for a minibatch use "
            "jax.vmap(layer.apply, in_axes=(None, 0)) (and vmap `length` too)"
            if len(shape) == 2 + input_ndim else "")
    raise ValueError(
        f"xs: {owner} expects shape {want}, got shape {tuple(shape)} "
        f"(rank {len(shape)}){hint}"
    )
  if input_size is not None and shape[-1] != input_size:
    want = f"(T, {input_size})" if input_ndim == 1 else f"(T, ..., {input_size})"
    raise ValueError(
        f"xs: {owner} expects shape {want} to match its params' "
        f"input_size={input_size}, got shape {tuple(shape)}"
    )
  check_floating(xs, "xs")


def check_length(length: Any, num_steps: int, name: str = "length", bound: str = "T"
                 ) -> Optional[jax.Array]:
  """Validates ``length`` and returns it as an int32 scalar array (or None).

  A ``length`` known at trace time (a Python or NumPy integer) outside
  ``[0, T]`` raises ValueError; a traced ``length`` is clamped to ``[0, T]``.
  ``bound`` names ``T = num_steps`` in messages.
  """
  if length is None:
    return None
  if isinstance(length, bool):
    raise TypeError(f"{name}: expected an integer scalar, got bool")
  if not isinstance(length, numbers.Integral):
    if not hasattr(length, "dtype") or not hasattr(length, "shape"):
      raise TypeError(
          f"{name}: expected an integer scalar, got {type(length).__name__}"
      )
    if not jnp.issubdtype(length.dtype, jnp.integer):
      raise TypeError(
          f"{name}: expected an integer scalar, got dtype {length.dtype}"
      )
    if np.shape(length) != ():
      raise ValueError(
          f"{name}: expected a scalar (one sequence), got shape "
          f"{tuple(np.shape(length))}; for a minibatch, vmap over `{name}` "
          "together with `xs`"
      )
  if not isinstance(length, jax.core.Tracer) and not 0 <= int(length) <= num_steps:
    raise ValueError(
        f"{name}: expected an integer in [0, {bound}] = [0, {num_steps}], got {int(length)}"
    )
  if isinstance(length, numbers.Integral):
    return jnp.asarray(int(length), dtype=jnp.int32)
  return jnp.clip(length, 0, num_steps).astype(jnp.int32)


def check_carry(carry: Any, reference: Any, owner: str, name: str = "carry") -> None:
  """Checks that ``carry`` has the structure and shapes of ``reference``."""
  ref_struct = jax.tree_util.tree_structure(reference)
  struct = jax.tree_util.tree_structure(carry)
  if struct != ref_struct:
    raise TypeError(
        f"{name}: {owner} expects a carry structured like {ref_struct}, got {struct}"
    )
  for got, want in zip(jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(reference)):
    if np.shape(got) != np.shape(want):
      raise ValueError(
          f"{name}: {owner} expects leaves of shape {np.shape(want)}, got "
          f"{np.shape(got)}; a carry is for ONE example (vmap for a minibatch)"
      )


def describe(value: Any) -> str:
  """What ``value`` is, for error messages: an array's shape and dtype, or a type."""
  if hasattr(value, "shape") and hasattr(value, "dtype"):
    return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
  return type(value).__name__


def check_entries(value: Any, n: int, name: str, owner: str) -> None:
  """Raises TypeError unless ``value`` is a tuple (or list) of ``n`` entries, one
  per layer; a NamedTuple (one cell's or layer's params or carry) is not one."""
  fields = getattr(type(value), "_fields", None)
  if not isinstance(value, (tuple, list)) or fields is not None or len(value) != n:
    got = (describe(value) if not isinstance(value, (tuple, list)) else f"{len(value)} entries"
           if fields is None else f"{type(value).__name__} with {len(value)} fields")
    raise TypeError(f"{name}: {owner} expects a tuple of {n} entries, got {got}")


# The dtype policy.


def default_float() -> np.dtype:
  """float32, or float64 when ``jax_enable_x64`` is on (as jax's initializers).

  Computed without creating an array, so building cells and layers never
  starts a backend (``jax.distributed.initialize`` must come first).
  """
  return np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def accumulation_dtype(*dtypes) -> np.dtype:
  """The dtype in which products accumulate and gates are computed.

  16-bit floats (bfloat16, float16) accumulate in float32; otherwise the
  promoted dtype of the operands is used.
  """
  dtype = jnp.result_type(*dtypes)
  return jnp.dtype(jnp.float32) if jnp.finfo(dtype).bits < 32 else dtype


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """``x @ w`` under the library's dtype policy.

  With 16-bit weights, ``x`` is cast to the weights' dtype and the product
  accumulates in float32 (``preferred_element_type``), so the result is
  float32. Otherwise the operands are promoted as usual.
  """
  if jnp.finfo(w.dtype).bits < 32:
    return jnp.matmul(x.astype(w.dtype), w, preferred_element_type=jnp.float32)
  return jnp.matmul(x, w)


def block_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """``x`` times the block-diagonal matrix with blocks ``w: (K, i, j)``.

  ``x: (..., K * i)``, block k of its last axis times ``w[k]``; returns
  ``(..., K, j)``, each block's product on its own axis (callers lay the
  blocks out). The dtype policy of `matmul`.
  """
  K, i, _ = w.shape
  x = jnp.reshape(x, jnp.shape(x)[:-1] + (K, i))
  if jnp.finfo(w.dtype).bits < 32:
    return jnp.einsum("...ki,kij->...kj", x.astype(w.dtype), w,
                      preferred_element_type=jnp.float32)
  return jnp.einsum("...ki,kij->...kj", x, w)
