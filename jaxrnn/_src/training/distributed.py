"""Data-parallel training with ``jax.sharding``: one mesh axis over the batch.

The minibatch is split along its leading axis across the devices of a mesh
axis; parameters and optimizer state are replicated on every device. A
training step jit-compiled with those shardings as its ``in_shardings`` and
replicated ``out_shardings`` is partitioned by XLA, which inserts the
gradient all-reduce itself: there is no hand-written communication. The same
code runs on one CPU, one or several GPUs, a TPU slice, and several hosts
after ``jax.distributed.initialize()``, where every process passes its own
slice of the batch to `shard_batch`.
"""

import inspect
import numbers
from typing import Any, Callable, Optional, Sequence, Union

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def _check_mesh(mesh: Any) -> Mesh:
  if not isinstance(mesh, Mesh):
    raise TypeError(
        f"mesh: expected a jax.sharding.Mesh (see jaxrnn.batch_mesh), got "
        f"{type(mesh).__name__}")
  return mesh


def _check_axis_name(axis_name: Any, mesh: Mesh) -> str:
  if not isinstance(axis_name, str):
    raise TypeError(
        f"axis_name: expected a str, got {type(axis_name).__name__} {axis_name!r}")
  if axis_name not in mesh.axis_names:
    raise ValueError(
        f"axis_name: {axis_name!r} is not an axis of mesh, whose axes are "
        f"{tuple(mesh.axis_names)}")
  return axis_name


def batch_mesh(devices: Optional[Sequence[jax.Device]] = None, *,
               axis_name: str = "batch") -> Mesh:
  """A 1-D device mesh whose only axis splits the minibatch.

  Args:
    devices: the devices to use, in mesh order; ``None`` takes every device
      of every process (``jax.devices()``) in the order
      ``jax.experimental.mesh_utils.create_device_mesh`` picks, which follows
      the physical interconnect on TPUs.
    axis_name: the name of the mesh axis.

  Returns:
    A ``jax.sharding.Mesh`` of shape ``{axis_name: len(devices)}``. Its axis
    type is JAX's default "auto" one: shardings are given at the jit
    boundary and XLA propagates them through the step.

  Example:
    >>> import jax, jaxrnn
    >>> mesh = jaxrnn.batch_mesh(jax.devices()[:1])
    >>> mesh.axis_names, mesh.devices.shape
    (('batch',), (1,))
  """
  if not isinstance(axis_name, str):
    raise TypeError(
        f"axis_name: expected a str, got {type(axis_name).__name__} {axis_name!r}")
  if devices is None:
    every = jax.devices()
    grid = mesh_utils.create_device_mesh((len(every),), every)
  else:
    devices = list(devices)
    if not devices:
      raise ValueError("devices: expected at least one device, got none")
    for i, device in enumerate(devices):
      if not isinstance(device, jax.Device):
        raise TypeError(
            f"devices: expected jax.Device entries, got {type(device).__name__} "
            f"at index {i}")
    if len(set(devices)) != len(devices):
      raise ValueError(f"devices: every device may appear once, got {devices}")
    grid = np.empty((len(devices),), dtype=object)
    grid[:] = devices
  return Mesh(grid, (axis_name,))


def _local_slices(mesh: Mesh, axis_name: str) -> int:
  """How many positions along ``axis_name`` hold devices of this process."""
  axis = mesh.axis_names.index(axis_name)
  process = jax.process_index()
  return len({index[axis] for index, device in np.ndenumerate(mesh.devices)
              if device.process_index == process})


def shard_batch(tree: Any, mesh: Mesh, *, axis_name: str = "batch") -> Any:
  """Splits every leaf's leading (batch) axis across a mesh axis.

  Row block ``k`` of each leaf goes to the devices at position ``k`` of
  ``axis_name`` (replicated over any other mesh axes). On one process,
  ``tree`` is the whole minibatch. On several processes (after
  ``jax.distributed.initialize()``) each process passes only ITS rows, and
  the result is the global array assembled by
  ``jax.make_array_from_process_local_data``: its batch size is the sum of
  the processes' batch sizes.

  Args:
    tree: a pytree of arrays (NumPy or JAX), each ``(B, ...)`` with the batch
      on axis 0, e.g. ``(xs: (B, T, D), lengths: (B,), targets: (B, T, O))``.
      ``B`` is this process's batch size and must be a multiple of the
      number of batch slices this process holds (on one process: the number
      of devices along ``axis_name``); nothing is padded or dropped.
    mesh: the device mesh, e.g. from `batch_mesh`.
    axis_name: the mesh axis the batch is split along.

  Returns:
    The same pytree of ``jax.Array``s, each with sharding
    ``NamedSharding(mesh, PartitionSpec(axis_name))`` and shape
    ``(global B, ...)``.

  Raises:
    ValueError: if a leaf is a scalar or its batch size is not divisible.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> mesh = jaxrnn.batch_mesh(jax.devices()[:1])
    >>> xs, lengths = jaxrnn.shard_batch((jnp.ones((4, 5, 3)), jnp.array([5, 2, 1, 0])), mesh)
    >>> xs.sharding.spec == jax.sharding.PartitionSpec("batch"), xs.shape, lengths.shape
    (True, (4, 5, 3), (4,))
  """
  mesh = _check_mesh(mesh)
  axis_name = _check_axis_name(axis_name, mesh)
  parts = _local_slices(mesh, axis_name)
  if parts == 0:
    raise ValueError(
        f"mesh: holds no device of this process (process {jax.process_index()})")
  where = (f"the {parts} devices of mesh axis {axis_name!r}"
           if jax.process_count() == 1 else
           f"the {parts} slices of mesh axis {axis_name!r} held by process "
           f"{jax.process_index()}")
  leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
  if not leaves_with_paths:
    raise ValueError("tree: expected at least one array, got an empty pytree")
  for path, leaf in leaves_with_paths:
    name = "tree" + jax.tree_util.keystr(path)
    shape = np.shape(leaf)
    if not shape:
      raise ValueError(
          f"tree: every leaf needs a leading batch axis, got a scalar at {name}")
    if shape[0] % parts:
      raise ValueError(
          f"tree: batch size {shape[0]} (leading axis of {name}, shape "
          f"{tuple(shape)}) is not divisible by {where}; pad or trim the batch "
          f"to a multiple of {parts}")
  sharding = NamedSharding(mesh, PartitionSpec(axis_name))
  return jax.make_array_from_process_local_data(sharding, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a full copy of every leaf on every device of ``mesh``.

  For parameters and optimizer state. On several processes every process
  must pass the same values (e.g. from the same random key).

  Args:
    tree: a pytree of arrays of any shapes.
    mesh: the device mesh, e.g. from `batch_mesh`.

  Returns:
    The same pytree of ``jax.Array``s with sharding
    ``NamedSharding(mesh, PartitionSpec())``.

  Example:
    >>> import jax, jaxrnn
    >>> mesh = jaxrnn.batch_mesh(jax.devices()[:1])
    >>> params = jaxrnn.replicate(jaxrnn.lstm(4).init_params(jax.random.key(0), 3), mesh)
    >>> params.W_h.sharding.is_fully_replicated
    True
  """
  mesh = _check_mesh(mesh)
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def _check_argnums(argnums: Any, num_args: int, name: str) -> tuple[int, ...]:
  if isinstance(argnums, numbers.Integral) and not isinstance(argnums, bool):
    argnums = (argnums,)
  if not isinstance(argnums, (tuple, list)) or not all(
      isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in argnums):
    raise TypeError(f"{name}: expected an int or a tuple of ints, got {argnums!r}")
  out = []
  for i in argnums:
    if not -num_args <= i < num_args:
      raise ValueError(
          f"{name}: index {i} is out of range for a step_fn with {num_args} "
          "positional parameters")
    out.append(int(i) % num_args)
  return tuple(out)


def data_parallel_step(
    step_fn: Callable[..., Any],
    mesh: Mesh,
    *,
    batch_argnums: Union[int, Sequence[int]],
    axis_name: str = "batch",
    donate_argnums: Union[int, Sequence[int]] = (),
) -> Callable[..., Any]:
  """``jax.jit`` of a training step with data-parallel shardings.

  The positional arguments listed in ``batch_argnums`` are split along their
  leading axis over ``axis_name``; every other argument and every output is
  replicated. Gradients of a loss averaged over the batch therefore come out
  replicated, and XLA inserts the all-reduce that sums the per-device
  contributions. Arrays placed by `shard_batch` and `replicate` are used
  where they are. On one process, NumPy arrays and arrays on a single device
  are moved to these shardings on the call (several processes need
  `shard_batch` and `replicate`); an array already split in another way
  over several devices raises JAX's ``ValueError``.

  Args:
    step_fn: a function of positional array arguments (pytrees of arrays),
      e.g. ``step(params, opt_state, xs, lengths, targets) -> (params,
      opt_state, loss)``. Every positional parameter is passed on each call;
      bind other values with ``functools.partial``. Every output is
      replicated, so return reduced values (losses, metrics, parameters),
      not per-example arrays.
    mesh: the device mesh, e.g. from `batch_mesh`.
    batch_argnums: the positions of the minibatch arguments, each a pytree
      of ``(global B, ...)`` arrays.
    axis_name: the mesh axis the batch is split along.
    donate_argnums: positions whose buffers the step may reuse for its
      outputs (typically params and optimizer state), as in ``jax.jit``.

  Returns:
    The ``jax.jit``-wrapped step (compiled on its first call), called like
    ``step_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> net = jaxrnn.rnn(jaxrnn.elman(4))
    >>> def loss_fn(params, xs, lengths):
    ...   ys, _ = jax.vmap(net.apply, in_axes=(None, 0))(params, xs, length=lengths)
    ...   return jnp.mean(jaxrnn.sequence_loss(jnp.sum(ys ** 2, axis=-1), lengths))
    >>> mesh = jaxrnn.batch_mesh(jax.devices()[:1])
    >>> step = jaxrnn.data_parallel_step(
    ...     jax.value_and_grad(loss_fn), mesh, batch_argnums=(1, 2))
    >>> params = jaxrnn.replicate(net.init_params(jax.random.key(0), 3), mesh)
    >>> batch = jaxrnn.shard_batch((jnp.ones((4, 6, 3)), jnp.array([6, 3, 1, 0])), mesh)
    >>> loss, grads = step(params, *batch)
    >>> loss.shape, grads.W_h.sharding.is_fully_replicated
    ((), True)
  """
  if not callable(step_fn):
    raise TypeError(f"step_fn: expected a callable, got {type(step_fn).__name__}")
  mesh = _check_mesh(mesh)
  axis_name = _check_axis_name(axis_name, mesh)
  try:
    kinds = [p.kind for p in inspect.signature(step_fn).parameters.values()]
  except (TypeError, ValueError):
    raise TypeError("step_fn: its signature cannot be read; wrap it in a "
                    "function with named parameters") from None
  if inspect.Parameter.VAR_POSITIONAL in kinds:
    raise TypeError(
        "step_fn: expected a fixed number of positional parameters, got *args; "
        "wrap it in a function with named parameters")
  num_args = sum(k in (inspect.Parameter.POSITIONAL_ONLY,
                       inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds)
  batch_argnums = _check_argnums(batch_argnums, num_args, "batch_argnums")
  donate_argnums = _check_argnums(donate_argnums, num_args, "donate_argnums")
  if not batch_argnums:
    raise ValueError("batch_argnums: expected at least one minibatch argument, got none")
  batched = NamedSharding(mesh, PartitionSpec(axis_name))
  replicated = NamedSharding(mesh, PartitionSpec())
  in_shardings = tuple(batched if i in batch_argnums else replicated
                       for i in range(num_args))
  return jax.jit(step_fn, in_shardings=in_shardings, out_shardings=replicated,
                 donate_argnums=donate_argnums)
