"""Two commits of jaxrnn side by side in one process, on the benchmark grid.

``python -m benchmarks.compare_commits OLD [--new REF] [--quick]`` exports the
package of commit ``OLD`` (and of ``REF``; default: the working tree) into a
temporary folder under another package name, builds the same vmapped layer
with each, and times them interleaved in a random order each round
(`benchmarks.run.time_interleaved`). The working tree's layer is built
twice, compiled separately: the ratio between those two copies is the noise
of two runs of the same code, printed beside each ratio.

Prints, per grid point, the median times and ``new / old`` (below 1: the
new commit is faster) and writes the JSON record under benchmarks/results/.
"""

import argparse
import importlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np

import benchmarks
from benchmarks import run as run_lib
from benchmarks.peers import Impl

CELLS = ("lstm", "gru", "elman")
TASKS = ("fwd", "fwd+bwd")


def export(ref: str, name: str, into: str) -> str:
  """Writes commit ``ref``'s package into ``into/name`` as package ``name``.

  ``ref`` is a git revision, ``WORKTREE``, or a folder that holds a
  ``jaxrnn/`` package (for a machine without the repository's history).
  """
  target = os.path.join(into, name)
  if os.path.isdir(os.path.join(ref, "jaxrnn")):
    shutil.copytree(os.path.join(ref, "jaxrnn"), target,
                    ignore=shutil.ignore_patterns("__pycache__"))
  elif ref == "WORKTREE":
    shutil.copytree("jaxrnn", target, ignore=shutil.ignore_patterns("__pycache__"))
  else:
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True,
                          capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", root, "archive", ref, "jaxrnn"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    os.rename(os.path.join(into, "jaxrnn"), target)
  pattern = re.compile(r"\bjaxrnn\b(?=[._ \n])")
  for folder, _, files in os.walk(target):
    for file in files:
      if file.endswith(".py"):
        path = os.path.join(folder, file)
        with open(path) as f:
          text = f.read()
        with open(path, "w") as f:
          f.write(pattern.sub(name, text))
  return name


def build(package, label, cell, xs, H, task):
  import jax
  import jax.numpy as jnp
  jaxrnn = importlib.import_module(package)
  layer = jaxrnn.rnn(getattr(jaxrnn, cell)(H))
  params = layer.init_params(jax.random.key(0), xs.shape[-1])
  batched = jax.vmap(layer.apply, in_axes=(None, 0))

  def loss(p, x):
    return jnp.sum(jnp.square(batched(p, x)[0]))

  fn = jax.jit(loss if task == "fwd" else jax.value_and_grad(loss))

  def call():
    return jax.block_until_ready(fn(params, xs))

  return Impl(label, package, "jax", call, None)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("old", help="the older commit (any git revision)")
  parser.add_argument("--new", default="WORKTREE",
                      help="the newer commit (default: the working tree)")
  parser.add_argument("--quick", action="store_true", help="shape 0 only")
  parser.add_argument("--shapes", type=run_lib._shape_arg, default=None,
                      help="grid indices and/or B,T,D,H shapes (default: the grid)")
  parser.add_argument("--cells", default=",".join(CELLS))
  parser.add_argument("--target-s", type=float, default=1.5,
                      help="seconds of timed calls per implementation and point")
  parser.add_argument("--out", default=None,
                      help="JSON path (default benchmarks/results/compare_commits-<time>.json)")
  args = parser.parse_args(argv)
  import jax

  shapes = args.shapes or (run_lib.SHAPES[:1] if args.quick else run_lib.SHAPES)
  tmp = tempfile.mkdtemp(prefix="jaxrnn-compare-")
  sys.path.insert(0, tmp)
  old = export(args.old, "jaxrnn_old", tmp)
  new = export(args.new, "jaxrnn_new", tmp)
  rows = []
  print(f"old = {args.old}, new = {args.new}; {jax.default_backend()}, "
        f"{benchmarks.cpu_model()}")
  print(f"{'cell':6} {'B, T, D, H':18} {'task':8} {'old ms':>8} {'new ms':>8} "
        f"{'new/old':>8} {'new/new':>8}")
  for shape in shapes:
    B, T, D, H = shape
    xs = jax.device_put(np.random.default_rng(0).standard_normal((B, T, D)).astype(np.float32))
    for cell in args.cells.split(","):
      for task in TASKS:
        impls = [build(old, "old", cell, xs, H, task),
                 build(new, "new", cell, xs, H, task),
                 build(new, "new-again", cell, xs, H, task)]
        records = run_lib.time_interleaved(
            impls, target_s=args.target_s, min_repeats=5, max_repeats=200, warmup=2)
        ms = {r["impl"].name: 1e3 * statistics.median(r["times"]) for r in records}
        losses = {r["impl"].name: r["loss"] for r in records}
        row = dict(cell=cell, shape=shape, task=task, ms=ms, losses=losses,
                   new_over_old=ms["new"] / ms["old"],
                   noise=ms["new-again"] / ms["new"])
        rows.append(row)
        print(f"{cell:6} {str(shape):18} {task:8} {ms['old']:8.2f} {ms['new']:8.2f} "
              f"{row['new_over_old']:8.2f} {row['noise']:8.2f}", flush=True)
  path = benchmarks.write_json("compare_commits", dict(
      old=args.old, new=args.new, machine=benchmarks.machine_info(), rows=rows),
      args.out)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
