"""Sequential scan vs associative scan for the linear-recurrence cells.

``python -m benchmarks.parallel [--quick]`` (also a part of
``python -m benchmarks.run --parts parallel``). For `jaxrnn.min_gru`,
`jaxrnn.min_lstm`, `jaxrnn.lru` and `jaxrnn.rg_lru` at batch B, input D
(H for the RG-LRU, whose input size is its hidden size) and hidden H, it
times ``rnn(cell, method="sequential")`` and ``method="parallel"`` side by
side (interleaved, medians after warm-up, one process) over a range of
sequence lengths T, forward and forward+backward, prints the parallel
speed-up per T and the crossover (the shortest T from which the parallel
method stays faster), and writes JSON. The crossover is what
``parallel_min_steps`` in ``jaxrnn._src.engine.settings`` records for
``method="auto"``.
"""

import argparse
import statistics
import sys
import time

import numpy as np

import benchmarks
from benchmarks.run import time_interleaved
from benchmarks.peers import Impl

CELLS = ("min_gru", "min_lstm", "lru", "rg_lru")
# Cells whose input size must equal their hidden size.
SQUARE = ("rg_lru",)
LENGTHS = (16, 32, 64, 128, 256, 1024, 4096)
QUICK_LENGTHS = (16, 64, 256)


def build(cell_name, method, xs, H, task):
  import jax
  import jax.numpy as jnp
  import jaxrnn

  cell = getattr(jaxrnn, cell_name)(H)
  layer = jaxrnn.rnn(cell, method=method)
  params = layer.init_params(jax.random.key(0), xs.shape[-1])
  batched = jax.vmap(layer.apply, in_axes=(None, 0))

  def loss(p, x):
    return jnp.mean(jnp.square(batched(p, x)[0]))

  fn = jax.jit(loss if task == "fwd" else jax.value_and_grad(loss))
  xs = jax.device_put(xs)

  def call():
    return jax.block_until_ready(fn(params, xs))

  return Impl(method, f"rnn({cell_name}, method={method!r})", "jax", call, xs.shape)


def run(*, quick=False, B=16, D=64, H=128, cells=CELLS, lengths=None, tasks=("fwd", "fwd+bwd")):
  lengths = lengths or (QUICK_LENGTHS if quick else LENGTHS)
  print(f"# parallel vs sequential scan: B={B}, D={D}, H={H}, float32, "
        f"{benchmarks.cpu_model()}, {benchmarks.available_cores()} cores", flush=True)
  print(f"{'cell':9} {'task':8} " + " ".join(f"{'T=' + str(t):>9}" for t in lengths))
  points, crossovers = [], {}
  for cell in cells:
    for task in tasks:
      ratios = []
      for T in lengths:
        size = H if cell in SQUARE else D
        xs = np.random.default_rng(T).standard_normal((B, T, size), dtype=np.float32)
        impls = [build(cell, m, xs, H, task) for m in ("sequential", "parallel")]
        records = time_interleaved(impls, target_s=0.3 if quick else 1.5, min_repeats=3,
                                   max_repeats=10 if quick else 30, warmup=1)
        med = {r["impl"].name: 1e3 * statistics.median(r["times"]) for r in records}
        ratio = med["sequential"] / med["parallel"]
        ratios.append(ratio)
        points.append(dict(cell=cell, task=task, B=B, T=T, D=D, H=H,
                           sequential_ms=med["sequential"], parallel_ms=med["parallel"],
                           parallel_speedup=ratio))
      cross = next((T for k, T in enumerate(lengths)
                    if all(r > 1 for r in ratios[k:])), None)
      crossovers[f"{cell}/{task}"] = cross
      print(f"{cell:9} {task:8} " + " ".join(f"{r:8.2f}x" for r in ratios)
            + f"   crossover: {cross if cross else 'none'}", flush=True)
  print("(each entry: sequential time / parallel time; > 1 means the "
        "associative scan is faster)")
  return {"points": points, "crossovers": crossovers, "B": B, "D": D, "H": H}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=None)
  p.add_argument("--cells", nargs="+", choices=CELLS, default=CELLS)
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  payload = {"kind": "jaxrnn-parallel-benchmark",
             "parallel": run(quick=args.quick, cells=tuple(args.cells))}
  payload["machine"] = benchmarks.machine_info()
  payload["wall_s"] = time.perf_counter() - t0
  path = benchmarks.write_json("parallel-quick" if args.quick else "parallel", payload, args.out)
  print(f"# wrote {path}", file=sys.stderr)


if __name__ == "__main__":
  main()
