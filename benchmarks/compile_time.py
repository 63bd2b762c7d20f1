"""Compile time of a training step: 2-layer bidirectional LSTM, jaxrnn vs Flax.

jaxrnn: ``stack(bidirectional(lstm(H), lstm(H)), bidirectional(lstm(H),
lstm(H)))`` vmapped over the batch with per-example ``length``. Flax: two
``nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(H)), nn.RNN(...))`` with
``seq_lengths``. Both steps are ``value_and_grad`` w.r.t. the parameters of
the same masked loss (mean over examples of the sum of squared outputs at
valid steps).

Each measurement uses a freshly built model and train-step function and
starts from ``jax.clear_caches()``, so nothing is reused from an earlier
trace or compilation; jaxrnn and Flax alternate. Reported per library: the
median of ``jax.jit(step).lower(...)`` (tracing and lowering), of
``.compile()`` (XLA), and of their sum, plus the run time of the compiled
step for context.

    python -m benchmarks.compile_time [--repeats 5] [--B 32 --T 100 --D 128 --H 256]
"""

import argparse
import gc
import statistics
import time

import numpy as np

import benchmarks


def _masked_loss(ys, lengths):
  import jax.numpy as jnp
  T = ys.shape[1]
  mask = jnp.arange(T)[None, :] < lengths[:, None]
  return jnp.sum(jnp.where(mask[..., None], jnp.square(ys), 0.0)) / ys.shape[0]


def make_jaxrnn(H, D, seed=0, **rnn_options):
  """Returns ``(params, make_step)``; ``make_step()`` builds a fresh step."""
  import jax
  import jaxrnn

  def net():
    return jaxrnn.stack(
        jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.lstm(H), **rnn_options),
        jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.lstm(H), **rnn_options))

  params = net().init_params(jax.random.key(seed), D)

  def make_step():
    model = net()

    def apply(p, x, length):
      return model.apply(p, x, length=length)[0]

    def loss(p, xs, lengths):
      ys = jax.vmap(apply, in_axes=(None, 0, 0))(p, xs, lengths)
      return _masked_loss(ys, lengths)

    def train_step(p, xs, lengths):
      return jax.value_and_grad(loss)(p, xs, lengths)

    return train_step

  return params, make_step


def make_flax(H, D, B, T, seed=0):
  import jax
  import jax.numpy as jnp
  import flax.linen as nn

  def net():
    class BiLSTM2(nn.Module):
      hidden: int

      @nn.compact
      def __call__(self, xs, lengths):
        for _ in range(2):
          xs = nn.Bidirectional(
              nn.RNN(nn.OptimizedLSTMCell(self.hidden)),
              nn.RNN(nn.OptimizedLSTMCell(self.hidden)))(xs, seq_lengths=lengths)
        return xs

    return BiLSTM2(H)

  params = net().init(jax.random.key(seed), jnp.zeros((B, T, D)),
                      jnp.full((B,), T, jnp.int32))["params"]

  def make_step():
    model = net()

    def loss(p, xs, lengths):
      ys = model.apply({"params": p}, xs, lengths)
      return _masked_loss(ys, lengths)

    def train_step(p, xs, lengths):
      return jax.value_and_grad(loss)(p, xs, lengths)

    return train_step

  return params, make_step


def _measure(make_step, params, xs, lengths):
  import jax
  jax.clear_caches()
  gc.collect()
  step = make_step()
  t0 = time.perf_counter()
  lowered = jax.jit(step).lower(params, xs, lengths)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  return t1 - t0, t2 - t1, compiled


def run(*, B=32, T=100, D=128, H=256, repeats=5, run_repeats=5, verbose=True,
        jaxrnn_options=None):
  import jax
  import jax.numpy as jnp
  try:
    jax.config.update("jax_enable_compilation_cache", False)
  except (AttributeError, KeyError):
    pass

  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.standard_normal((B, T, D), dtype=np.float32))
  lengths = jnp.asarray(rng.integers(T // 2, T + 1, size=B), jnp.int32)
  libs = {
      "jaxrnn": make_jaxrnn(H, D, **(jaxrnn_options or {})),
      "flax": make_flax(H, D, B, T),
  }
  times = {name: {"lower_s": [], "compile_s": [], "total_s": []} for name in libs}
  compiled = {}
  names = list(libs)
  for r in range(repeats):
    for k in range(len(names)):
      name = names[(r + k) % len(names)]
      params, make_step = libs[name]
      lower_s, compile_s, compiled[name] = _measure(make_step, params, xs, lengths)
      times[name]["lower_s"].append(lower_s)
      times[name]["compile_s"].append(compile_s)
      times[name]["total_s"].append(lower_s + compile_s)

  # Run the last compiled step of each: a sanity check and its run time.
  out = {"B": B, "T": T, "D": D, "H": H, "repeats": repeats,
         "jaxrnn_options": dict(jaxrnn_options or {}),
         "model": "2-layer bidirectional LSTM, value_and_grad of a masked loss",
         "results": {}}
  grads = {}
  for name in names:
    params, _ = libs[name]
    loss, g = jax.block_until_ready(compiled[name](params, xs, lengths))
    grads[name] = g
    run_times = []
    for _ in range(run_repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled[name](params, xs, lengths))
      run_times.append(time.perf_counter() - t0)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    res = {k: statistics.median(v) for k, v in times[name].items()}
    res.update({
        "all": times[name],
        "loss": float(loss),
        "num_params": n_params,
        "step_run_ms": 1e3 * statistics.median(run_times),
    })
    out["results"][name] = res
  # jaxrnn's LSTM has two bias vectors (as PyTorch), Flax's one: 4 cells x 4H.
  extra = out["results"]["jaxrnn"]["num_params"] - out["results"]["flax"]["num_params"]
  if extra != 4 * 4 * H:
    out["warning"] = (f"parameter counts differ by {extra}, expected {4 * 4 * H} "
                      "(jaxrnn's second bias vector): the models may differ")
  j, f = out["results"]["jaxrnn"], out["results"]["flax"]
  out["ratio_compile_jaxrnn_over_flax"] = j["compile_s"] / f["compile_s"]
  out["ratio_total_jaxrnn_over_flax"] = j["total_s"] / f["total_s"]
  if verbose:
    print(format_report(out), flush=True)
  return out


def format_report(out):
  opts = "".join(f", jaxrnn {k}={v}" for k, v in out["jaxrnn_options"].items())
  lines = [f"# compile time: {out['model']}, B,T,D,H={out['B']},{out['T']},"
           f"{out['D']},{out['H']}{opts}, median of {out['repeats']} fresh compilations",
           f"{'library':<8}{'lower s':>9}{'compile s':>11}{'total s':>9}"
           f"{'step ms':>10}{'params':>10}"]
  for name, r in out["results"].items():
    lines.append(f"{name:<8}{r['lower_s']:>9.2f}{r['compile_s']:>11.2f}{r['total_s']:>9.2f}"
                 f"{r['step_run_ms']:>10.1f}{r['num_params']:>10}")
  lines.append(f"jaxrnn/flax: compile {out['ratio_compile_jaxrnn_over_flax']:.2f}x, "
               f"lower+compile {out['ratio_total_jaxrnn_over_flax']:.2f}x "
               "(<1: jaxrnn compiles faster)")
  if "warning" in out:
    lines.append("warning: " + out["warning"])
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m benchmarks.compile_time",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--B", type=int, default=32)
  p.add_argument("--T", type=int, default=100)
  p.add_argument("--D", type=int, default=128)
  p.add_argument("--H", type=int, default=256)
  p.add_argument("--jaxrnn-unroll", type=int, default=None,
                 help="jaxrnn unroll= (default: jaxrnn's choice)")
  p.add_argument("--jaxrnn-method", choices=("auto", "sequential", "parallel", "reference"),
                 default=None, help="jaxrnn method= (default: \"auto\")")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  options = {}
  if a.jaxrnn_unroll is not None:
    options["unroll"] = a.jaxrnn_unroll
  if a.jaxrnn_method is not None:
    options["method"] = a.jaxrnn_method
  out = run(B=a.B, T=a.T, D=a.D, H=a.H, repeats=a.repeats, jaxrnn_options=options)
  path = benchmarks.write_json("compile", {"machine": benchmarks.machine_info(),
                                           "compile_time": out}, a.out)
  print(f"# wrote {path}")


if __name__ == "__main__":
  main()
