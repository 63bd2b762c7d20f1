"""Speed of jaxrnn against Flax, Equinox, Haiku and PyTorch, then memory and
compile time. ``python -m benchmarks.run --help`` lists the options.

Method, per grid point (cell, (B, T, D, H), task):

1. every implementation is built and called once (compilation for the JAX
   peers) and then ``--warmup`` more times; the last warm-up call estimates
   its time per call;
2. each gets ``clamp(ceil(target / estimate), min_repeats, max_repeats)``
   timed calls; the calls are interleaved (one call of each implementation
   per round) so that drift in the machine's speed hits all alike, in a
   fresh random order each round (seeded) so that no implementation always
   runs right after the same one: a JAX call right after a PyTorch call
   measured 0.35-0.45 ms slower (XLA's worker threads had gone idle), which
   at B = 1 is a third of a call;
3. the median is reported; speed-up = peer median / jaxrnn median (above 1:
   jaxrnn is faster).
"""

import argparse
import gc
import math
import os
import statistics
import sys
import time

import numpy as np

import benchmarks
from benchmarks import peers as peers_lib

SHAPES = (
    (32, 100, 128, 256),
    (8, 1000, 64, 128),
    (128, 50, 256, 512),
    (1, 500, 32, 64),
)
QUICK_SHAPES = (0,)


def _shape_arg(text):
  """Grid indices and/or explicit shapes: "0,2", "32x200x64x128", "1;8,50,16,32"."""
  items = [v.strip() for v in text.replace(";", " ; ").split(";")]
  if len(items) == 1:
    fields = [v for v in text.split(",") if v.strip()]
    if len(fields) == 4 and any(int(v) >= len(SHAPES) for v in fields if v.strip().isdigit()):
      items = [text]  # one explicit B,T,D,H
    else:
      items = fields
  out = []
  for item in items:
    item = item.strip()
    if not item:
      continue
    if item.isdigit():
      index = int(item)
      if not 0 <= index < len(SHAPES):
        raise argparse.ArgumentTypeError(
            f"shape index {index} out of range 0..{len(SHAPES) - 1}")
      out.append(SHAPES[index])
      continue
    try:
      dims = tuple(int(v) for v in item.replace("x", ",").split(","))
    except ValueError:
      dims = ()
    if len(dims) != 4 or min(dims) < 1:
      raise argparse.ArgumentTypeError(
          f"shape {item!r}: expected a grid index or B,T,D,H (or BxTxDxH)")
    out.append(dims)
  return out


def _list_arg(choices):
  def parse(text):
    items = [v.strip() for v in text.split(",") if v.strip()]
    for v in items:
      if v not in choices:
        raise argparse.ArgumentTypeError(f"{v!r} not one of {', '.join(choices)}")
    return items
  return parse


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      prog="python -m benchmarks.run",
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=(
          "Shapes: " + "; ".join(f"{i}: B,T,D,H={','.join(map(str, s))}"
                                 for i, s in enumerate(SHAPES))
          + "\nExamples:\n"
          "  python -m benchmarks.run --quick\n"
          "  python -m benchmarks.run --parts speed --cells lstm --shapes 0 "
          "--tasks fwd+bwd\n"
          "  python -m benchmarks.run --parts speed --shapes 32,200,64,128 "
          "--peers jaxrnn,torch\n"
          "  python -m benchmarks.memory   |   python -m benchmarks.compile_time   |   "
          "python -m benchmarks.parallel"))
  p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                 help="cpu (default): JAX and PyTorch on the CPU; gpu: JAX on "
                      "CUDA, PyTorch on CUDA (cuDNN), plus the jax-cudnn peer "
                      "(jax.experimental.rnn's cuDNN LSTM); parts default to "
                      "speed,parallel,compile (memory measures host RSS)")
  p.add_argument("--quick", action="store_true",
                 help="a subset: shape 0 only, all cells and tasks, a shorter "
                      "timing target, compile time with fewer repeats, and the "
                      "memory part limited to the remat check at T=100k")
  p.add_argument("--parts", type=_list_arg(("speed", "parallel", "memory", "compile")),
                 default=None,
                 help="comma list of speed,parallel,memory,compile (default all)")
  p.add_argument("--cells", type=_list_arg(peers_lib.CELLS), default=None,
                 help="comma list of lstm,gru,elman (default all)")
  p.add_argument("--shapes", type=_shape_arg, default=None,
                 help="grid indices (0..3) and/or explicit B,T,D,H; separate "
                      "several explicit shapes with ';'")
  p.add_argument("--tasks", type=_list_arg(peers_lib.TASKS), default=None,
                 help="comma list of fwd,fwd+bwd (default both)")
  p.add_argument("--peers", type=_list_arg(peers_lib.PEERS), default=None,
                 help="comma list of " + ",".join(peers_lib.PEERS)
                      + " (default all; jaxrnn is always included)")
  p.add_argument("--target-s", type=float, default=None,
                 help="seconds of timed calls per implementation and point "
                      "(default 2.5, 1.0 with --quick)")
  p.add_argument("--min-repeats", type=int, default=5)
  p.add_argument("--max-repeats", type=int, default=30)
  p.add_argument("--max-s-per-impl", type=float, default=20.0,
                 help="cap on timed seconds per implementation and point: a "
                      "call slower than max/min_repeats gets fewer repeats "
                      "(never fewer than 3)")
  p.add_argument("--warmup", type=int, default=2,
                 help="untimed calls after the first (compiling) call")
  p.add_argument("--peer-unroll", type=int, default=None,
                 help="scan unroll for the Flax/Equinox/Haiku peers (default: "
                      "each library's default, 1)")
  p.add_argument("--jaxrnn-unroll", type=int, default=None,
                 help="jaxrnn.rnn(unroll=...) (default: jaxrnn's choice)")
  p.add_argument("--jaxrnn-method", choices=("auto", "sequential", "parallel", "reference"),
                 default=None, help="jaxrnn.rnn(method=...) (default: \"auto\")")
  p.add_argument("--threads", type=int, default=None,
                 help="torch.set_num_threads (default: cores available to "
                      "this process)")
  p.add_argument("--no-sanity", action="store_true",
                 help="skip the jaxrnn-vs-PyTorch numerical check")
  p.add_argument("--verbose", action="store_true",
                 help="also print every implementation's spread")
  p.add_argument("--out", default=None,
                 help="JSON path (default benchmarks/results/bench-<time>.json)")
  args = p.parse_args(argv)

  if args.device == "gpu":
    # Before anything imports JAX (benchmarks/__init__ defaults it to cpu).
    os.environ["JAX_PLATFORMS"] = "cuda"
  if args.parts is None:
    args.parts = (["speed", "parallel", "compile"] if args.device == "gpu"
                  else ["speed", "parallel", "memory", "compile"])
  if args.cells is None:
    args.cells = list(peers_lib.CELLS)
  if args.shapes is None:
    args.shapes = [SHAPES[i] for i in QUICK_SHAPES] if args.quick else list(SHAPES)
  if args.tasks is None:
    args.tasks = list(peers_lib.TASKS)
  if args.peers is None:
    args.peers = [p_ for p_ in peers_lib.PEERS
                  if args.device == "gpu" or p_ not in peers_lib.GPU_ONLY_PEERS]
  if "jaxrnn" not in args.peers:
    args.peers.insert(0, "jaxrnn")
  args.peers = [p_ for p_ in peers_lib.PEERS if p_ in args.peers]
  if args.target_s is None:
    args.target_s = 1.0 if args.quick else 2.5
  if args.min_repeats < 1 or args.max_repeats < args.min_repeats:
    p.error("need 1 <= --min-repeats <= --max-repeats")
  return args


# ---------------------------------------------------------------------------
# Timing.


def _loss_of(result):
  """The loss value from a call's result (a scalar, or (loss, grads))."""
  if isinstance(result, tuple):
    result = result[0]
  try:
    return float(result)
  except (TypeError, ValueError):
    return float("nan")


def call_first(impl):
  """Makes ``impl``'s first call (compilation, for the JAX peers) and keeps
  its time and result in ``impl.first_call`` for `time_interleaved`."""
  t0 = time.perf_counter()
  result = impl.call()
  impl.first_call = (time.perf_counter() - t0, result)


def time_interleaved(impls, *, target_s, min_repeats, max_repeats, warmup,
                     max_s_per_impl=float("inf"), seed=0):
  """Times ``impls`` interleaved, in a random order each round (seeded by
  ``seed``); returns one record per implementation."""
  records = []
  for impl in impls:
    if impl.first_call is None:
      call_first(impl)
    first, result = impl.first_call
    estimate = first
    for _ in range(warmup):
      t0 = time.perf_counter()
      impl.call()
      estimate = time.perf_counter() - t0
    estimate = max(estimate, 1e-6)
    repeats = max(min_repeats, min(max_repeats, math.ceil(target_s / estimate)))
    if repeats * estimate > max_s_per_impl:
      repeats = max(3, min(repeats, int(max_s_per_impl / estimate)))
    records.append(dict(impl=impl, first_call_s=first, repeats=repeats, times=[],
                        loss=_loss_of(result)))

  gc.collect()
  gc_was_enabled = gc.isenabled()
  gc.disable()
  try:
    rounds = max(r["repeats"] for r in records)
    order = np.random.default_rng(seed)
    for _ in range(rounds):
      for k in order.permutation(len(records)):
        rec = records[k]
        if len(rec["times"]) >= rec["repeats"]:
          continue
        t0 = time.perf_counter()
        rec["impl"].call()
        rec["times"].append(time.perf_counter() - t0)
  finally:
    if gc_was_enabled:
      gc.enable()
  return records


def _summary(rec):
  ts = sorted(rec["times"])
  q = np.percentile(ts, [25, 75])
  impl = rec["impl"]
  return {
      "peer": impl.name,
      "class": impl.cls,
      "family": impl.family,
      "median_ms": 1e3 * statistics.median(ts),
      "min_ms": 1e3 * ts[0],
      "p25_ms": 1e3 * q[0],
      "p75_ms": 1e3 * q[1],
      "repeats": len(ts),
      "first_call_s": rec["first_call_s"],
      "loss": rec["loss"],
      "out_shape": list(impl.out_shape),
      "note": impl.note,
      "times_ms": [1e3 * t for t in rec["times"]],
  }


def _jaxrnn_options(args):
  options = {}
  if args.jaxrnn_unroll is not None:
    options["unroll"] = args.jaxrnn_unroll
  if args.jaxrnn_method is not None:
    options["method"] = args.jaxrnn_method
  return options


def run_point(cell, shape, task, args):
  import jax
  B, T, D, H = shape
  rng = np.random.default_rng([B, T, D, H])
  xs = rng.standard_normal((B, T, D), dtype=np.float32)
  jaxrnn_options = _jaxrnn_options(args)

  impls, skipped = [], {}
  for peer in args.peers:
    try:
      impl = peers_lib.build(peer, cell, xs, H, task, peer_unroll=args.peer_unroll,
                             jaxrnn_options=jaxrnn_options, device=args.device)
    except peers_lib.Unavailable as e:
      skipped[peer] = str(e)
      continue
    try:
      call_first(impl)
    except Exception as e:  # a peer broken by its library's version; not jaxrnn
      if peer == "jaxrnn":
        raise
      skipped[peer] = f"failed: {type(e).__name__}: {str(e)[:300]}"
      continue
    impls.append(impl)

  # Sanity: every peer maps (B, T, D) to outputs of the same shape.
  shapes = {impl.name: impl.out_shape for impl in impls}
  if len(set(shapes.values())) != 1 or next(iter(shapes.values())) != (B, T, H):
    raise AssertionError(f"{cell} {shape}: output shapes differ: {shapes}")

  records = time_interleaved(
      impls, target_s=args.target_s, min_repeats=args.min_repeats,
      max_repeats=args.max_repeats, warmup=args.warmup,
      max_s_per_impl=args.max_s_per_impl)
  results = [_summary(r) for r in records]
  del impls, records
  gc.collect()
  jax.clear_caches()

  by_peer = {r["peer"]: r for r in results}
  base = by_peer["jaxrnn"]["median_ms"]
  for r in results:
    r["speedup"] = r["median_ms"] / base
  jax_peers = [r for r in results if r["family"] == "jax" and r["peer"] != "jaxrnn"]
  best = min(jax_peers, key=lambda r: r["median_ms"]) if jax_peers else None
  return {
      "cell": cell, "B": B, "T": T, "D": D, "H": H, "task": task,
      "results": results, "skipped": skipped,
      "best_jax_peer": None if best is None else best["peer"],
      "speedup_vs_best_jax_peer": None if best is None else best["speedup"],
      "nonfinite_loss": [r["peer"] for r in results if not math.isfinite(r["loss"])],
  }


# ---------------------------------------------------------------------------
# Reporting.


def _fmt_ms(ms):
  return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def format_table(points, peer_names):
  cols = [p for p in peer_names if p != "jaxrnn"]
  width = 15
  head = (f"{'cell':<6}{'B,T,D,H':<16}{'task':<8}{'jaxrnn ms':>10} | "
          + "".join(f"{c:<{width}}" for c in cols) + "| best JAX peer")
  lines = [head, "-" * len(head)]
  for pt in points:
    by_peer = {r["peer"]: r for r in pt["results"]}
    row = (f"{pt['cell']:<6}{','.join(str(pt[k]) for k in 'BTDH'):<16}"
           f"{pt['task']:<8}{_fmt_ms(by_peer['jaxrnn']['median_ms']):>10} | ")
    for c in cols:
      r = by_peer.get(c)
      cell_text = "-" if r is None else f"{_fmt_ms(r['median_ms'])} {r['speedup']:.2f}x"
      row += f"{cell_text:<{width}}"
    if pt["best_jax_peer"] is not None:
      row += f"| {pt['best_jax_peer']} {pt['speedup_vs_best_jax_peer']:.2f}x"
    lines.append(row)
  lines.append(
      "Entries: peer median ms, then jaxrnn's speed-up over it (peer/jaxrnn; "
      ">1 means jaxrnn is faster). '-': not run or no such cell.")
  return "\n".join(lines)


def format_verbose(pt):
  lines = [f"{pt['cell']} B,T,D,H={pt['B']},{pt['T']},{pt['D']},{pt['H']} {pt['task']}"]
  for r in pt["results"]:
    lines.append(
        f"  {r['peer']:<9}{r['class']:<22} median {r['median_ms']:9.3f} ms  "
        f"[p25 {r['p25_ms']:.3f}, p75 {r['p75_ms']:.3f}, min {r['min_ms']:.3f}] "
        f"n={r['repeats']:<3} first call {r['first_call_s']:.2f} s"
        + (f"  ({r['note']})" if r["note"] else ""))
  for peer, why in pt["skipped"].items():
    lines.append(f"  {peer:<9}skipped: {why}")
  return "\n".join(lines)


# ---------------------------------------------------------------------------


def setup_threads(args):
  import torch
  threads = args.threads or benchmarks.available_cores()
  torch.set_num_threads(threads)
  return threads


def run_speed(args, payload):
  import jax
  threads = setup_threads(args)
  backend = jax.default_backend()
  print(f"# speed: JAX backend {backend} ({jax.devices()[0].device_kind}), "
        f"torch threads {threads}, cores available {benchmarks.available_cores()}",
        flush=True)
  if backend != args.device:
    raise SystemExit(f"--device {args.device}: JAX runs on {backend!r}; on the CPU "
                     "leave JAX_PLATFORMS unset or 'cpu', for --device gpu install "
                     "a CUDA build of jaxlib")

  if not args.no_sanity and "torch" in args.peers:
    checks = [peers_lib.torch_agreement(c) for c in args.cells]
    payload["torch_agreement"] = checks
    for c in checks:
      ok = c["max_abs_diff_ys"] < 1e-4 and c["max_rel_diff_grad"] < 1e-3
      print(f"# check {c['cell']}: jaxrnn vs torch with identical weights: "
            f"max |dys| {c['max_abs_diff_ys']:.1e}, rel. dloss {c['rel_diff_loss']:.1e}, "
            f"rel. dgrad {c['max_rel_diff_grad']:.1e} -> {'ok' if ok else 'MISMATCH'}",
            flush=True)
      if not ok:
        raise AssertionError(f"jaxrnn and torch disagree for {c['cell']}: {c}")

  skipped_notes = {(p, c): why for (p, c), why in peers_lib.SKIP_REASONS.items()
                   if p in args.peers and c in args.cells}
  for (p, c), why in sorted(skipped_notes.items()):
    print(f"# skip {p} for {c}: {why}")
  for (p, c), note in peers_lib.NOTES.items():
    if p in args.peers and c in args.cells:
      print(f"# note {p} for {c}: {note}")

  points, unavailable = [], set()
  grid = [(c, s, t) for s in args.shapes for c in args.cells for t in args.tasks]
  t_start = time.perf_counter()
  for i, (cell, shape, task) in enumerate(grid):
    pt = run_point(cell, shape, task, args)
    points.append(pt)
    payload["speed"] = points  # keep partial results if interrupted
    elapsed = time.perf_counter() - t_start
    summary = ", ".join(f"{r['peer']} {_fmt_ms(r['median_ms'])}" for r in pt["results"])
    print(f"[{i + 1}/{len(grid)} {elapsed:6.0f}s] {cell} {','.join(map(str, shape))} "
          f"{task}: {summary} (ms)", flush=True)
    for peer, why in pt["skipped"].items():
      if (peer, cell) not in peers_lib.SKIP_REASONS and peer not in unavailable:
        unavailable.add(peer)
        print(f"# skip {peer}: {why}", flush=True)
    if pt["nonfinite_loss"]:
      print(f"    non-finite loss from: {', '.join(pt['nonfinite_loss'])}", flush=True)
    if args.verbose:
      print(format_verbose(pt), flush=True)

  table = format_table(points, args.peers)
  payload["speed_table"] = table
  print()
  print(table, flush=True)
  return points


def main(argv=None):
  args = parse_args(argv)
  payload = {
      "kind": "jaxrnn-benchmark",
      "loadavg_at_start": list(os.getloadavg()),
      "argv": sys.argv[1:] if argv is None else list(argv),
      "options": {k: v for k, v in vars(args).items()},
      "machine": {},
  }
  t0 = time.perf_counter()
  path = None
  try:
    if "speed" in args.parts:
      run_speed(args, payload)
    if "parallel" in args.parts:
      from benchmarks import parallel
      print(flush=True)
      payload["parallel"] = parallel.run(quick=args.quick)
    if "compile" in args.parts:
      from benchmarks import compile_time
      print(flush=True)
      payload["compile_time"] = compile_time.run(repeats=2 if args.quick else 5,
                                                 run_repeats=2 if args.quick else 5,
                                                 jaxrnn_options=_jaxrnn_options(args))
    if "memory" in args.parts:
      from benchmarks import memory
      print(flush=True)
      payload["memory"] = memory.run(quick=args.quick)
  finally:
    payload["machine"] = benchmarks.machine_info()
    payload["wall_s"] = time.perf_counter() - t0
    path = benchmarks.write_json("bench-quick" if args.quick else "bench", payload, args.out)
    print(f"\n# wrote {os.path.relpath(path)} ({payload['wall_s']:.0f} s)", flush=True)
  if payload.get("speed"):
    plot(path)


def plot(path):
  """The speed-up chart of a results file, next to it (needs matplotlib)."""
  import importlib.util
  if importlib.util.find_spec("matplotlib") is None:
    print("# matplotlib is not installed: no chart (pip install -e '.[bench]')", flush=True)
    return
  from benchmarks import plots
  out = plots.plot_file(path)
  print(f"# wrote {os.path.relpath(out)}", flush=True)


if __name__ == "__main__":
  main()
