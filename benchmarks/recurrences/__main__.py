"""``python -m benchmarks.recurrences``: see the package's docstring."""

import argparse
import importlib
import statistics
import sys
import time

import benchmarks
from benchmarks.run import _loss_of, call_first, time_interleaved

CELLS = ("rg_lru", "mamba", "slstm", "mlstm")
# The targets: reference time / jaxrnn time, at least.
TARGETS = {"rg_lru": 1.0, "mamba": 1.5, "slstm": 1.5, "mlstm": 1.0}
GRID = ((8, 2048), (32, 256))
QUICK_GRID = ((2, 128),)
TASKS = ("fwd", "fwd+bwd")
SLOW_S = 30.0


def run(cells, grid, hidden, *, quick):
  import torch
  torch.set_num_threads(benchmarks.available_cores())
  print(f"# today's recurrences vs their reference code: H={hidden}, float32, "
        f"{benchmarks.cpu_model()}, {benchmarks.available_cores()} cores", flush=True)
  print(f"{'cell':7} {'task':8} {'B':>3} {'T':>5} {'jaxrnn ms':>10} {'peer':>22} "
        f"{'peer ms':>9} {'speed-up':>8} {'target':>6}")
  points = []
  for cell in cells:
    module = importlib.import_module(f"benchmarks.recurrences.{cell}")
    for B, T in grid:
      for task in TASKS:
        impls = module.impls(task, B, T, hidden)
        for impl in impls:
          call_first(impl)
        losses = [_loss_of(impl.first_call[1]) for impl in impls]
        scale = max(abs(losses[0]), 1.0)
        for impl, loss in zip(impls[1:], losses[1:]):
          if abs(loss - losses[0]) > 2e-3 * scale:
            raise AssertionError(f"{cell} {task} B={B} T={T}: {impl.name}'s loss {loss} "
                                 f"differs from jaxrnn's {losses[0]}")
        # A PyTorch peer compiles nothing, so a first call over SLOW_S seconds
        # (xlstm's fwd+bwd at T = 2048: minutes) is its measurement.
        slow = [i for i in impls[1:] if i.family == "torch" and i.first_call[0] > SLOW_S]
        timed = [i for i in impls if i not in slow]
        records = time_interleaved(timed, target_s=0.5 if quick else 4.0, min_repeats=3,
                                   max_repeats=10 if quick else 20, warmup=1,
                                   max_s_per_impl=60.0)
        med = {r["impl"].name: 1e3 * statistics.median(r["times"]) for r in records}
        med.update({i.name: 1e3 * i.first_call[0] for i in slow})
        ours = med["jaxrnn"]
        for impl in impls[1:]:
          speedup = med[impl.name] / ours
          points.append(dict(cell=cell, task=task, B=B, T=T, H=hidden, peer=impl.name,
                             peer_class=impl.cls, jaxrnn_ms=ours, peer_ms=med[impl.name],
                             speedup=speedup, target=TARGETS[cell]))
          ok = "" if speedup >= TARGETS[cell] else "  (below target)"
          ok += "  (peer: one call)" if impl in slow else ""
          print(f"{cell:7} {task:8} {B:3d} {T:5d} {ours:10.1f} {impl.name:>22} "
                f"{med[impl.name]:9.1f} {speedup:7.2f}x {TARGETS[cell]:5.1f}x{ok}", flush=True)
        del impls, records
  return points


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--quick", action="store_true", help="one small grid point")
  p.add_argument("--cells", nargs="+", choices=CELLS, default=CELLS)
  p.add_argument("--hidden", type=int, default=None, help="default 256 (32 with --quick)")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  hidden = args.hidden or (32 if args.quick else 256)
  t0 = time.perf_counter()
  points = run(args.cells, QUICK_GRID if args.quick else GRID, hidden, quick=args.quick)
  payload = {"kind": "jaxrnn-recurrences-benchmark", "points": points,
             "machine": benchmarks.machine_info(), "wall_s": time.perf_counter() - t0}
  path = benchmarks.write_json("recurrences-quick" if args.quick else "recurrences", payload,
                               args.out)
  print(f"# wrote {path}", file=sys.stderr)


if __name__ == "__main__":
  main()
