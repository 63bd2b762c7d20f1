"""Data-parallel training of a stacked bidirectional RNN on every device there is.

The minibatch is split along its batch axis over a 1-D device mesh; the
parameters and the optimizer state are replicated. One ``jax.jit`` step with
those shardings (`jaxrnn.data_parallel_step`) is partitioned by XLA, which
adds the all-reduce of the gradients. Nothing depends on the backend: the
same script is meant for one CPU, a GPU, several GPUs, a TPU slice or several
hosts (the tests run it on simulated CPU devices).

The task: at every step of a padded, variable-length sequence of scalars,
predict the mean of the WHOLE valid sequence (both directions are needed).
The global minibatch of every step is fixed by the seed, so the losses are
the same, up to float rounding, on any number of devices or processes.

Run:
  python examples/data_parallel.py                # every device JAX sees
  python examples/data_parallel.py --devices 8    # 8 simulated CPU devices
  python examples/data_parallel.py --quick        # 5 steps
  # On each of several hosts (the flags can be left out where
  # jax.distributed.initialize detects the cluster: Cloud TPU, SLURM, ...):
  python examples/data_parallel.py --distributed \\
      --coordinator HOST0:1234 --num-processes 2 --process-id I
"""

import argparse
import os
import time


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--devices", type=int, default=None,
                      help="simulate this many CPU devices (sets XLA_FLAGS and "
                           "JAX_PLATFORMS=cpu before JAX starts); None: the devices JAX sees")
  parser.add_argument("--steps", type=int, default=300, help="training steps")
  parser.add_argument("--batch", type=int, default=64,
                      help="global minibatch size, a multiple of the device count")
  parser.add_argument("--log-every", type=int, default=20, help="steps between loss lines")
  parser.add_argument("--quick", action="store_true",
                      help="5 steps, every one logged (options given still apply)")
  parser.add_argument("--distributed", action="store_true",
                      help="call jax.distributed.initialize() first")
  parser.add_argument("--coordinator", default=None,
                      help="HOST:PORT of process 0; None: detected from the cluster")
  parser.add_argument("--num-processes", type=int, default=None,
                      help="None: detected from the cluster")
  parser.add_argument("--process-id", type=int, default=None,
                      help="None: detected from the cluster")
  args = parser.parse_args(argv)
  if args.quick:
    parser.set_defaults(steps=5, log_every=1)
    args = parser.parse_args(argv)
  return args


if __name__ == "__main__":
  ARGS = parse_args()
  if ARGS.devices:
    # Read once, when JAX starts: so before `import jax`.
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [
        os.environ.get("XLA_FLAGS"),
        f"--xla_force_host_platform_device_count={ARGS.devices}"]))
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxrnn  # noqa: E402

if __name__ == "__main__" and ARGS.distributed:
  # Before anything touches a device (building a model may).
  jax.distributed.initialize(
      coordinator_address=ARGS.coordinator, num_processes=ARGS.num_processes,
      process_id=ARGS.process_id)

MAX_LEN, HIDDEN, SEED = 24, 32, 0

net = jaxrnn.stack(
    jaxrnn.bidirectional(jaxrnn.lstm(HIDDEN), jaxrnn.lstm(HIDDEN)),
    jaxrnn.bidirectional(jaxrnn.gru(HIDDEN), jaxrnn.gru(HIDDEN)),
    jaxrnn.readout(1),
)
optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))


def global_batch(step, batch_size):
  """The whole minibatch of a step, as NumPy arrays (the data pipeline).

  Returns ``xs: (B, MAX_LEN, 1)`` with junk in the padding,
  ``lengths: (B,)`` and ``targets: (B, MAX_LEN, 1)``.
  """
  rng = np.random.default_rng((SEED, step))
  xs = rng.standard_normal((batch_size, MAX_LEN, 1), dtype=np.float32)
  lengths = rng.integers(1, MAX_LEN + 1, size=batch_size).astype(np.int32)
  valid = (np.arange(MAX_LEN)[None, :] < lengths[:, None])[..., None]
  means = np.where(valid, xs, 0).sum(axis=1) / lengths[:, None]
  targets = np.broadcast_to(means[:, None, :], xs.shape).astype(np.float32)
  junk = 100 * rng.standard_normal(xs.shape, dtype=np.float32)
  return np.where(valid, xs, junk), lengths, targets


def process_rows(batch):
  """This process's rows of the global minibatch.

  Every process keeps a different block of rows; a real loader would read
  only those. Which global rows they become does not matter: the loss is a
  mean over the batch.
  """
  count, index = jax.process_count(), jax.process_index()
  rows = batch[1].shape[0] // count
  return tuple(a[index * rows:(index + 1) * rows] for a in batch)


def loss_fn(params, xs, lengths, targets):
  ys, _ = jax.vmap(net.apply, in_axes=(None, 0))(params, xs, length=lengths)
  per_step = jnp.sum((ys - targets) ** 2, axis=-1)  # (B, T)
  return jnp.mean(jaxrnn.sequence_loss(per_step, lengths, reduction="mean"))


def train_step(params, opt_state, xs, lengths, targets):
  loss, grads = jax.value_and_grad(loss_fn)(params, xs, lengths, targets)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def train(mesh, num_steps, batch_size, log_every=1, log=print):
  """Trains on ``mesh``; returns the final params and the loss of every step."""
  if batch_size % jax.process_count():
    raise ValueError(f"batch_size: {batch_size} is not divisible by the "
                     f"{jax.process_count()} processes")
  step = jaxrnn.data_parallel_step(
      train_step, mesh, batch_argnums=(2, 3, 4), donate_argnums=(0, 1))
  params = net.init_params(jax.random.key(SEED), 1)  # the same on every process
  opt_state = optimizer.init(params)
  params, opt_state = jaxrnn.replicate((params, opt_state), mesh)

  losses, start = [], None
  for i in range(1, num_steps + 1):
    batch = jaxrnn.shard_batch(process_rows(global_batch(i, batch_size)), mesh)
    if i == 1:
      xs = batch[0]
      shard = xs.addressable_shards[0].data.shape
      log(f"batch: xs {xs.shape} with {xs.sharding.spec}: "
          f"{len(xs.sharding.device_set)} shards of {shard}, "
          f"{len(xs.addressable_shards)} on this process")
    params, opt_state, loss = step(params, opt_state, *batch)
    losses.append(float(loss))  # replicated: every process can read it
    if i == 1:
      start = time.perf_counter()  # after compilation
      leaf = jax.tree_util.tree_leaves(params)[0]
      log(f"params: replicated={leaf.sharding.is_fully_replicated} "
          f"on {len(leaf.sharding.device_set)} devices")
    if i % log_every == 0 or i in (1, num_steps):
      log(f"step {i:4d}  loss {losses[-1]:.8f}")
  if num_steps > 1:
    per_step = (time.perf_counter() - start) / (num_steps - 1)
    log(f"{1e3 * per_step:.1f} ms per step after the first")
  return params, losses


def main(args):
  """Runs the command line ``args`` (from `parse_args`).

  ``--devices`` and ``--distributed`` act when the script starts, before JAX
  does. Returns the final params and the loss of every step.
  """
  if args.distributed and not jax.distributed.is_initialized():
    raise ValueError("args.distributed: run the script itself, which calls "
                     "jax.distributed.initialize() before building the model")
  log = print if jax.process_index() == 0 else (lambda *a, **k: None)
  devices = jax.devices()
  log(f"processes: {jax.process_count()}, devices: {len(devices)} x "
      f"{devices[0].platform} ({jax.local_device_count()} on this process)")
  mesh = jaxrnn.batch_mesh()
  log(f"mesh: {dict(mesh.shape)}, devices {[d.id for d in mesh.devices.flat]}")
  return train(mesh, args.steps, args.batch, args.log_every, log)


if __name__ == "__main__":
  main(ARGS)
