"""Measures the per-backend settings that jaxrnn picks when they are left to it.

``rnn(cell)`` without ``unroll`` reads its loop structure from tables keyed
by ``jax.default_backend()``: steps per scan iteration
(``scan.DEFAULT_UNROLL_BATCHED``, ``scan.DEFAULT_UNROLL``), whether the
forward scan projects every step's input in one product before the loop
(``fused_batch.HOIST_MAX_BATCH``) and how the backward scan stacks the
pre-activation cotangents (``fused_batch.STACK_FEATURE_MAJOR_MIN_BATCH``).
A backend without an entry takes CPU's values. This script times the
vmapped layer (``jax.vmap(rnn(cell).apply)``, the same loss as
``benchmarks.run``) with one of those settings changed at a time from the
current defaults, all variants interleaved in one process (medians after
warm-up; see ``benchmarks.run``), and prints each variant's time over the
default's (below 1: the variant is faster). Variants:

* ``fwd_unroll=k``: forward steps per iteration, k in 1, 2, 4, 8, 16;
* ``bwd_unroll=k`` (``fwd+bwd`` only): backward steps per iteration;
* ``hoist=on|off``: the input projection hoisted out of the loop or not
  (the GRU's hooks opt out of hoisting, so it has no such variant);
* ``stack=fm|bm`` (``fwd+bwd`` only): cotangents stacked feature-major or
  batch-major;
* ``plain, unroll=k`` (``fwd+bwd`` only): ``fused_vjp=False`` (autodiff of
  the scan), k steps per iteration.

Run it on the backend to be measured (``--device gpu`` for CUDA);
``--help`` lists the options. It changes no file: the
measured values go into the tables by hand, with the figures.
"""

import argparse
import contextlib
import gc
import os
import statistics
import sys

import numpy as np

import benchmarks
from benchmarks import peers as peers_lib
from benchmarks import run as run_lib

FWD_UNROLLS = (1, 2, 4, 8, 16)
BWD_UNROLLS = (1, 2, 4, 8, 16)
PLAIN_UNROLLS = (1, 4)
_HUGE = 1 << 30


@contextlib.contextmanager
def overrides(backend, kind, *, batched_unroll=None, plain_unroll=None,
              hoist=None, feature_major=None):
  """Sets jaxrnn's tables for ``backend`` (and ``kind``) inside the block."""
  from jaxrnn._src import fused_batch, scan
  saved = []

  def put(table, key, value):
    saved.append((table, key, key in table, table.get(key)))
    table[key] = value

  try:
    if batched_unroll is not None:
      per_kind = dict(scan.DEFAULT_UNROLL_BATCHED.get(backend, {}))
      per_kind[kind] = batched_unroll
      put(scan.DEFAULT_UNROLL_BATCHED, backend, per_kind)
    if plain_unroll is not None:
      put(scan.DEFAULT_UNROLL, backend, plain_unroll)
    if hoist is not None:
      put(fused_batch.HOIST_MAX_BATCH, backend, _HUGE if hoist else 0)
    if feature_major is not None:
      put(fused_batch.STACK_FEATURE_MAJOR_MIN_BATCH, backend, 1 if feature_major else _HUGE)
    yield
  finally:
    for table, key, existed, value in reversed(saved):
      if existed:
        table[key] = value
      else:
        del table[key]


def variants(cell, task, num_steps, default_unroll):
  """``(name, rnn_options, override_kwargs)`` for one grid point."""
  fwd, bwd = default_unroll
  out = [("default", {}, {})]
  for k in FWD_UNROLLS:
    if k != fwd and k <= num_steps:
      out.append((f"fwd_unroll={k}", {}, dict(batched_unroll=(k, bwd))))
  if task == "fwd+bwd":
    for k in BWD_UNROLLS:
      if k != bwd and k <= num_steps:
        out.append((f"bwd_unroll={k}", {}, dict(batched_unroll=(fwd, k))))
    out.append(("stack=fm", {}, dict(feature_major=True)))
    out.append(("stack=bm", {}, dict(feature_major=False)))
    for k in PLAIN_UNROLLS:
      out.append((f"plain, unroll={k}", {"fused_vjp": False}, dict(plain_unroll=(k, k))))
  if cell != "gru":
    out.append(("hoist=on", {}, dict(hoist=True)))
    out.append(("hoist=off", {}, dict(hoist=False)))
  return out


def run_point(cell, shape, task, args):
  import jax
  from jaxrnn._src import scan
  backend = jax.default_backend()
  B, T, D, H = shape
  xs = np.random.default_rng([B, T, D, H]).standard_normal((B, T, D), dtype=np.float32)
  default = scan.default_unroll(T, cell)
  impls, names = [], []
  for name, options, kwargs in variants(cell, task, T, default):
    with overrides(backend, cell, **kwargs):
      impl = peers_lib.build_jaxrnn(cell, xs, H, task, **options)
      impl.name = name
      run_lib.call_first(impl)  # traces and compiles under the override
    impls.append(impl)
    names.append(name)
  records = run_lib.time_interleaved(
      impls, target_s=args.target_s, min_repeats=args.min_repeats,
      max_repeats=args.max_repeats, warmup=args.warmup)
  medians = {r["impl"].name: 1e3 * statistics.median(r["times"]) for r in records}
  losses = {r["impl"].name: r["loss"] for r in records}
  del impls, records
  gc.collect()
  jax.clear_caches()
  base = medians["default"]
  # Every variant computes the same function: a loss that differs is a bug.
  ref = losses["default"]
  bad = [n for n, v in losses.items() if not np.isclose(v, ref, rtol=1e-3)]
  return {"cell": cell, "B": B, "T": T, "D": D, "H": H, "task": task,
          "default_unroll": list(default), "median_ms": medians,
          "ratio_to_default": {n: m / base for n, m in medians.items()},
          "loss_mismatch": bad}


def format_point(pt):
  head = (f"{pt['cell']} {pt['B']},{pt['T']},{pt['D']},{pt['H']} {pt['task']}: "
          f"default {pt['median_ms']['default']:.3g} ms "
          f"(unroll {tuple(pt['default_unroll'])})")
  ratios = sorted(pt["ratio_to_default"].items(), key=lambda kv: kv[1])
  body = ", ".join(f"{n} {r:.2f}" for n, r in ratios if n != "default")
  extra = f"\n    LOSS MISMATCH: {pt['loss_mismatch']}" if pt["loss_mismatch"] else ""
  return f"{head}\n    {body}{extra}"


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m benchmarks.tune",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  p.add_argument("--cells", type=run_lib._list_arg(peers_lib.CELLS),
                 default=list(peers_lib.CELLS))
  p.add_argument("--shapes", type=run_lib._shape_arg, default=list(run_lib.SHAPES),
                 help="as for benchmarks.run (default: the whole grid)")
  p.add_argument("--tasks", type=run_lib._list_arg(peers_lib.TASKS),
                 default=list(peers_lib.TASKS))
  p.add_argument("--target-s", type=float, default=0.5)
  p.add_argument("--min-repeats", type=int, default=10)
  p.add_argument("--max-repeats", type=int, default=50)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
  args = p.parse_args(argv)
  if args.device == "gpu":
    os.environ["JAX_PLATFORMS"] = "cuda"  # before JAX is imported

  import jax
  print(f"# tune: JAX backend {jax.default_backend()} ({jax.devices()[0].device_kind})",
        flush=True)
  payload = {"kind": "jaxrnn-tune", "argv": sys.argv[1:] if argv is None else list(argv),
             "points": []}
  try:
    for shape in args.shapes:
      for cell in args.cells:
        for task in args.tasks:
          pt = run_point(cell, shape, task, args)
          payload["points"].append(pt)
          print(format_point(pt), flush=True)
  finally:
    payload["machine"] = benchmarks.machine_info()
    path = benchmarks.write_json("tune", payload, args.out)
    print(f"# wrote {os.path.relpath(path)}", flush=True)


if __name__ == "__main__":
  main()
