"""Measures the per-backend engine settings that jaxrnn picks by default.

``rnn(cell)`` reads its loop structure from one small table keyed by
``jax.default_backend()`` (``jaxrnn._src.engine.settings``): steps per
iteration of the forward and the tangent (backward) scan, and whether the
input projection of every step is one product before the loop. A backend
without an entry takes ``UNMEASURED``. This script times the vmapped layer
(``jax.vmap(rnn(cell).apply)``, the same loss as ``benchmarks.run``) with
one setting changed at a time from the current defaults, through
``jaxrnn.engine_settings``, all variants interleaved in one process
(medians after warm-up; see ``benchmarks.run``), and prints each variant's
time over the default's (below 1: the variant is faster). Variants:

* ``fwd_unroll=k``: forward steps per iteration, k in 1, 2, 4, 8, 16;
* ``bwd_unroll=k`` (``fwd+bwd`` only): backward steps per iteration;
* ``hoist=on|off``: the input projection hoisted out of the loop or not;
* ``in_place=on|off``: the forward loop's outputs written by index into a
  carried buffer, or stacked by the scan;
* ``narrow_max_batch=k`` (``fwd`` only, with ``in_place``): the widest batch
  whose inference loop runs the narrow form, k in 0 and the batch size
  (whichever is not the default's side of B);
* ``reference`` (``fwd+bwd`` only): ``method="reference"``, autodiff of the
  plain scan.

Run it on the backend to be measured (``--device gpu`` for CUDA);
``--help`` lists the options. It changes no file: the measured values go
into the table by hand, with the figures in benchmarks/README.md.
"""

import argparse
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


def variants(task, default, batch):
  """``(name, rnn options, engine_settings overrides)`` per variant."""
  fwd, bwd = default.unroll
  out = [("default", {}, {})]
  for k in FWD_UNROLLS:
    if k != fwd:
      out.append((f"fwd_unroll={k}", {}, dict(unroll=(k, bwd))))
  if task != "fwd":
    for k in BWD_UNROLLS:
      if k != bwd:
        out.append((f"bwd_unroll={k}", {}, dict(unroll=(fwd, k))))
    out.append(("reference", dict(method="reference"), {}))
  hoist = not default.hoist_inputs
  out.append((f"hoist={'on' if hoist else 'off'}", {}, dict(hoist_inputs=hoist)))
  in_place = not default.in_place
  out.append((f"in_place={'on' if in_place else 'off'}", {}, dict(in_place=in_place)))
  if task == "fwd" and default.in_place:
    narrow = 0 if batch <= default.narrow_max_batch else batch
    out.append((f"narrow_max_batch={narrow}", {}, dict(narrow_max_batch=narrow)))
  return out


def run_point(cell, shape, task, args):
  import jax
  import jaxrnn
  B, T, D, H = shape
  xs = np.random.default_rng([B, T, D, H]).standard_normal((B, T, D), dtype=np.float32)
  with jaxrnn.engine_settings() as default:
    pass
  impls, names = [], []
  for name, options, kwargs in variants(task, default, B):
    with jaxrnn.engine_settings(**kwargs):
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
          "default_unroll": list(default.unroll),
          "default_hoist": default.hoist_inputs, "default_in_place": default.in_place,
          "default_narrow_max_batch": default.narrow_max_batch,
          "median_ms": medians,
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
