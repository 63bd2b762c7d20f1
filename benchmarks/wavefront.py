"""The wavefront against the double scan for `jaxrnn.rnn2d`.

``python -m benchmarks.wavefront [--quick]`` (also run by ``make bench``).
For `jaxrnn.lstm2d` at hidden size H over square images of R x R pixels
with D channels, a minibatch of B images (``jax.vmap``), it times
``rnn2d(cell, method="wavefront")`` (R + C - 1 scan steps, one
anti-diagonal each) and ``method="reference"`` (the double scan, R * C
steps) side by side in one process. Each implementation is compiled ahead
of time (the compile time is reported), called once and once more as a
warm-up; then the calls alternate, in a fresh random order each round, and
medians are reported, with the ratio double scan / wavefront (above 1: the
wavefront is faster). Tasks: the forward pass (``fwd``) and forward plus
the gradient with respect to the parameters (``fwd+bwd``) of the mean
squared output. For ``fwd+bwd`` it also times the wavefront with
``remat=False`` (every gate activation stored), the evidence for
``EngineSettings.wavefront_remat``. ``--segments 1,2,4,8`` adds one
wavefront per setting of its scans per ramp
(``EngineSettings.wavefront_segments``), the evidence for that setting.
Writes JSON to ``benchmarks/results/``.
"""

import argparse
import statistics
import sys
import time

import numpy as np

import benchmarks
from benchmarks.peers import Impl
from benchmarks.run import time_interleaved

SIZES = (28, 64)
QUICK_SIZES = (16,)


def build(method, xs, H, task, segments=None, remat=None):
  """One timed implementation, compiled ahead of time (``segments``: the
  wavefront's scans per ramp, None for the library's default; ``remat`` as
  `jaxrnn.rnn2d`'s)."""
  import jax
  import jax.numpy as jnp
  import jaxrnn

  layer = jaxrnn.rnn2d(jaxrnn.lstm2d(H), method=method, remat=remat)
  params = layer.init_params(jax.random.key(0), xs.shape[-1])
  batched = jax.vmap(layer.apply, in_axes=(None, 0))

  def loss(p, x):
    return jnp.mean(jnp.square(batched(p, x)[0]))

  xs = jax.device_put(xs)
  fn = jax.jit(loss if task == "fwd" else jax.value_and_grad(loss))
  overrides = {} if segments is None else {"wavefront_segments": segments}
  with jaxrnn.engine_settings(**overrides):  # the setting is read while tracing
    t0 = time.perf_counter()
    compiled = fn.lower(params, xs).compile()
    compile_s = time.perf_counter() - t0

  def call():
    return jax.block_until_ready(compiled(params, xs))

  name = method + ("" if segments is None else f" segments={segments}") + (
      "" if remat is None else f" remat={remat}")
  return Impl(name, f"rnn2d(lstm2d({H}), method={method!r}, remat={remat})", "jax", call,
              xs.shape[:3] + (H,), note=f"compile_s={compile_s:.3f}")


def run(*, quick=False, sizes=None, B=16, D=1, H=64, tasks=("fwd", "fwd+bwd"),
        segments=(None,), repeats=None):
  sizes = sizes or (QUICK_SIZES if quick else SIZES)
  print(f"# rnn2d(lstm2d({H})): wavefront vs double scan, B={B}, D={D}, float32, "
        f"{benchmarks.cpu_model()}, {benchmarks.available_cores()} cores", flush=True)
  print(f"{'image':>7} {'task':8} {'implementation':26} {'ms':>9} {'ratio':>7} "
        f"{'compile s':>9}")
  points = []
  for R in sizes:
    xs = np.random.default_rng(R).standard_normal((B, R, R, D), dtype=np.float32)
    for task in tasks:
      impls = [build("reference", xs, H, task)]
      impls += [build("wavefront", xs, H, task, segments=k) for k in segments]
      if task == "fwd+bwd":  # the default checkpoints every diagonal on the CPU
        impls.append(build("wavefront", xs, H, task, remat=False))
      records = time_interleaved(
          impls, target_s=0.5 if quick else 3.0, min_repeats=repeats or 3,
          max_repeats=repeats or (5 if quick else 15), warmup=1)
      reference_ms = 1e3 * statistics.median(records[0]["times"])
      for rec in records:
        impl = rec["impl"]
        ms = 1e3 * statistics.median(rec["times"])
        compile_s = float(impl.note.split("=")[1])
        points.append(dict(
            R=R, C=R, B=B, D=D, H=H, task=task, implementation=impl.name,
            median_ms=ms, speedup_over_reference=reference_ms / ms, compile_s=compile_s,
            first_call_s=rec["first_call_s"], loss=rec["loss"],
            times_ms=[1e3 * t for t in rec["times"]]))
        print(f"{R:>3}x{R:<3} {task:8} {impl.name:26} {ms:>9.1f} "
              f"{reference_ms / ms:>6.2f}x {compile_s:>9.2f}", flush=True)
  print("(ratio: double scan (reference) time / this time; > 1 means faster "
        "than the double scan)")
  return {"points": points, "B": B, "D": D, "H": H}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--quick", action="store_true", help="one small image size, few repeats")
  p.add_argument("--sizes", type=lambda s: tuple(int(v) for v in s.split(",")), default=None,
                 help="comma list of image sizes R (R x R images; default 28,64)")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--input-size", type=int, default=1)
  p.add_argument("--hidden", type=int, default=64)
  p.add_argument("--segments", type=lambda s: tuple(int(v) for v in s.split(",")),
                 default=(None,),
                 help="comma list of the wavefront's scans per ramp to compare "
                      "(default: the library's setting only)")
  p.add_argument("--tasks", type=lambda s: tuple(s.split(",")), default=("fwd", "fwd+bwd"))
  p.add_argument("--repeats", type=int, default=None,
                 help="timed calls per implementation (default: by a time target)")
  p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  result = run(quick=args.quick, sizes=args.sizes, B=args.batch, D=args.input_size,
               H=args.hidden, tasks=args.tasks, segments=args.segments,
               repeats=args.repeats)
  payload = {"kind": "jaxrnn-wavefront-benchmark", "wavefront": result,
             "machine": benchmarks.machine_info(), "wall_s": time.perf_counter() - t0}
  path = benchmarks.write_json("wavefront-quick" if args.quick else "wavefront", payload,
                               args.out)
  print(f"# wrote {path}", file=sys.stderr)


if __name__ == "__main__":
  main()
