"""Peak process memory of one training step on a long sequence.

Model: ``jaxrnn.rnn(jaxrnn.lstm(H), remat=...)`` vmapped over a batch, with
per-example lengths; the step is ``jax.value_and_grad`` w.r.t. the
parameters of a masked loss (``sequence_loss`` of the per-step sum of
squared outputs, mean over valid steps and examples). Defaults: B=8, D=32,
H=128, T=100,000.

Each configuration runs in a fresh subprocess so that the high-water marks
of different configurations do not mix. The child reports:

* ``rss_before_step``: the resident set size once the step is compiled and
  its inputs are in memory (the baseline: interpreter, JAX, XLA, the
  executable, inputs and parameters);
* ``peak_before_step``: the RSS high-water mark at that point (setup and
  compilation);
* ``peak``: the RSS high-water mark after one execution of the step, i.e.
  the peak process memory; ``step_cost = peak - rss_before_step`` is what
  the step itself added;
* XLA's own estimate of the step's temporary buffers
  (``compiled.memory_analysis()``) and the step's run time.

The high-water mark is the kernel's VmHWM of the child (``ru_maxrss`` is
recorded too, but on Linux it inherits the forking parent's RSS). The
parent watches each child's RSS and kills it above ``--cap-gib`` (the
result then says so), so a configuration that needs more memory than the
machine can spare is reported instead of taking the machine down. Without
remat the activation memory grows linearly in T; it is measured at several T
and the growth per 10k steps and a linear extrapolation to the target T are
reported next to the direct measurement.

    python -m benchmarks.memory [--T 100000] [--cap-gib 8] [--quick]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import benchmarks

GIB = 2**30
MIB = 2**20
TARGET_PEAK_GIB = 2.0


# ---------------------------------------------------------------------------
# Child: one configuration.


def _rss_bytes():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes():
  """This process's own RSS high-water mark (VmHWM), or ru_maxrss.

  VmHWM belongs to the process's address space, which exec creates anew.
  ``ru_maxrss`` does not start afresh at exec on Linux: it carries the RSS of
  the process that forked the child (here the benchmark driver, which may
  be large), so it can overstate a small child's peak.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return _maxrss_bytes()


def _maxrss_bytes():
  import resource
  # Linux reports kilobytes (macOS bytes).
  scale = 1 if sys.platform == "darwin" else 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def child(T, B, D, H, remat, seed=0):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import jaxrnn

  result = {"T": T, "B": B, "D": D, "H": H, "remat": remat,
            "rss_after_import": _rss_bytes()}
  layer = jaxrnn.rnn(jaxrnn.lstm(H), remat=remat)
  params = layer.init_params(jax.random.key(seed), D)
  rng = np.random.default_rng(seed)
  xs = jnp.asarray(rng.standard_normal((B, T, D), dtype=np.float32))
  # Ragged batch: the longest example spans all T steps.
  lengths = jnp.asarray(np.linspace(T // 2, T, B).astype(np.int32))

  def loss(p, xs, lengths):
    ys, _ = jax.vmap(lambda p_, x, n: layer.apply(p_, x, length=n),
                     in_axes=(None, 0, 0))(p, xs, lengths)
    per_step = jnp.sum(jnp.square(ys), axis=-1)  # (B, T)
    return jnp.mean(jaxrnn.sequence_loss(per_step, lengths, reduction="mean"))

  step = jax.jit(jax.value_and_grad(loss))
  t0 = time.perf_counter()
  compiled = step.lower(params, xs, lengths).compile()
  result["compile_s"] = time.perf_counter() - t0
  try:
    ma = compiled.memory_analysis()
    result["xla_temp_bytes"] = int(ma.temp_size_in_bytes)
    result["xla_argument_bytes"] = int(ma.argument_size_in_bytes)
    result["xla_output_bytes"] = int(ma.output_size_in_bytes)
  except Exception:  # not every backend reports it
    pass
  result["rss_before_step"] = _rss_bytes()
  result["peak_before_step"] = _hwm_bytes()
  result["ru_maxrss_before_step"] = _maxrss_bytes()
  t0 = time.perf_counter()
  value, grads = jax.block_until_ready(compiled(params, xs, lengths))
  result["step_s"] = time.perf_counter() - t0
  result["loss"] = float(value)
  result["grads_finite"] = bool(all(bool(jnp.all(jnp.isfinite(g)))
                                    for g in jax.tree_util.tree_leaves(grads)))
  result["peak"] = _hwm_bytes()
  result["ru_maxrss"] = _maxrss_bytes()
  result["step_cost"] = result["peak"] - result["rss_before_step"]
  print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------
# Parent.


def measure(T, *, B=8, D=32, H=128, remat=True, cap_gib=8.0, timeout_s=900):
  """Runs one configuration in a fresh subprocess; returns its record."""
  import psutil
  cmd = [sys.executable, "-m", "benchmarks.memory", "--child", "--T", str(T),
         "--B", str(B), "--D", str(D), "--H", str(H),
         "--remat", "1" if remat else "0"]
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  ps = psutil.Process(proc.pid)
  watched_peak, killed = 0, None
  while proc.poll() is None:
    try:
      rss = ps.memory_info().rss
    except psutil.Error:
      rss = 0
    watched_peak = max(watched_peak, rss)
    if rss > cap_gib * GIB:
      killed = f"exceeded the {cap_gib:g} GiB cap (killed at {rss / GIB:.2f} GiB RSS)"
    elif time.perf_counter() - t0 > timeout_s:
      killed = f"timed out after {timeout_s} s"
    if killed:
      proc.kill()
      break
    time.sleep(0.02)
  stdout, stderr = proc.communicate()
  record = {"T": T, "B": B, "D": D, "H": H, "remat": remat,
            "watched_peak": watched_peak, "wall_s": time.perf_counter() - t0}
  for line in stdout.splitlines():
    if line.startswith("RESULT "):
      record.update(json.loads(line[len("RESULT "):]))
  if killed:
    record["error"] = killed
  elif proc.returncode != 0 or "peak" not in record:
    why = "killed by a signal (out of memory?)" if proc.returncode and proc.returncode < 0 \
        else f"exit status {proc.returncode}"
    record["error"] = f"{why}: {stderr.strip()[-600:]}"
  return record


def _fit(records):
  """Least-squares line of step_cost over T: (bytes per step, intercept)."""
  pts = [(r["T"], r["step_cost"]) for r in records if "error" not in r]
  if len(pts) < 2:
    return None
  n = len(pts)
  mt = sum(t for t, _ in pts) / n
  mc = sum(c for _, c in pts) / n
  var = sum((t - mt) ** 2 for t, _ in pts)
  slope = sum((t - mt) * (c - mc) for t, c in pts) / var
  return slope, mc - slope * mt


def default_cap_gib():
  """8 GiB, or half the memory available now if that is less."""
  import psutil
  return round(min(8.0, 0.5 * psutil.virtual_memory().available / GIB), 1)


def run(*, T=100_000, B=8, D=32, H=128, cap_gib=None, quick=False,
        sweep=(10_000, 20_000, 40_000), verbose=True):
  """Measures the remat and plain steps; returns a JSON-able dict."""
  sizes = [t for t in sweep if t < T] + [T]
  if quick:
    configs = [(T, True)]
  else:
    configs = [(t, True) for t in sizes] + [(t, False) for t in sizes]
  if cap_gib is None:
    cap_gib = default_cap_gib()
  if verbose:
    print(f"# memory: jaxrnn LSTM training step, B={B} D={D} H={H}, "
          f"one fresh process per configuration (cap {cap_gib:g} GiB)", flush=True)
  records = []
  for t, remat in configs:
    rec = measure(t, B=B, D=D, H=H, remat=remat, cap_gib=cap_gib)
    records.append(rec)
    if verbose:
      print(format_record(rec), flush=True)

  out = {"B": B, "D": D, "H": H, "T": T, "cap_gib": cap_gib,
         "target_peak_gib": TARGET_PEAK_GIB, "records": records}
  main = next(r for r in records if r["T"] == T and r["remat"])
  out["remat_peak_gib"] = main.get("peak", float("nan")) / GIB
  out["remat_within_target"] = "error" not in main and main["peak"] <= TARGET_PEAK_GIB * GIB
  plain = [r for r in records if not r["remat"]]
  fit = _fit(plain)
  if fit is not None:
    slope, intercept = fit
    out["plain_step_cost_per_10k_steps_mib"] = slope * 10_000 / MIB
    out["plain_step_cost_extrapolated_gib"] = (slope * T + intercept) / GIB
    base = next(r["rss_before_step"] for r in plain if "error" not in r)
    out["plain_peak_extrapolated_gib"] = (slope * T + intercept + base) / GIB
  fit_r = _fit([r for r in records if r["remat"]])
  if fit_r is not None:
    out["remat_step_cost_per_10k_steps_mib"] = fit_r[0] * 10_000 / MIB
  if verbose:
    print(format_summary(out), flush=True)
  return out


def format_record(r):
  name = f"T={r['T']:>7} {'remat' if r['remat'] else 'plain':<6}"
  if "error" in r and "peak" not in r:
    return (f"{name} FAILED: {r['error']} (watched RSS peak "
            f"{r['watched_peak'] / GIB:.2f} GiB)")
  xla = f"{r['xla_temp_bytes'] / MIB:8.0f}" if "xla_temp_bytes" in r else "       ?"
  return (f"{name} peak {r['peak'] / MIB:7.0f} MiB | before step {r['rss_before_step'] / MIB:6.0f} MiB"
          f" (compile hwm {r['peak_before_step'] / MIB:6.0f}) | step cost "
          f"{r['step_cost'] / MIB:7.0f} MiB | XLA temp {xla} MiB | step "
          f"{r['step_s']:6.2f} s | compile {r['compile_s']:5.1f} s"
          + ("" if r["grads_finite"] else " | NON-FINITE GRADS"))


def format_summary(out):
  lines = [f"remat step at T={out['T']}: peak {out['remat_peak_gib']:.2f} GiB "
           f"({'within' if out['remat_within_target'] else 'OVER'} the "
           f"{out['target_peak_gib']:g} GiB target)"]
  if "remat_step_cost_per_10k_steps_mib" in out:
    lines.append(f"remat step cost growth: {out['remat_step_cost_per_10k_steps_mib']:.1f} "
                 "MiB per 10k steps (inputs included)")
  if "plain_step_cost_per_10k_steps_mib" in out:
    lines.append(
        f"plain (no remat) step cost growth: {out['plain_step_cost_per_10k_steps_mib']:.0f} "
        f"MiB per 10k steps -> extrapolated step cost at T={out['T']}: "
        f"{out['plain_step_cost_extrapolated_gib']:.2f} GiB, peak "
        f"{out['plain_peak_extrapolated_gib']:.2f} GiB")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--T", type=int, default=100_000)
  p.add_argument("--B", type=int, default=8)
  p.add_argument("--D", type=int, default=32)
  p.add_argument("--H", type=int, default=128)
  p.add_argument("--cap-gib", type=float, default=None,
                 help="kill a configuration whose RSS passes this (default 8, or "
                      "half the available memory if less)")
  p.add_argument("--quick", action="store_true",
                 help="only the remat step at T (the 2 GiB target check)")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--remat", type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  if a.child:
    child(a.T, a.B, a.D, a.H, bool(a.remat))
    return
  out = run(T=a.T, B=a.B, D=a.D, H=a.H, cap_gib=a.cap_gib, quick=a.quick)
  path = benchmarks.write_json("memory", {"machine": benchmarks.machine_info(),
                                          "memory": out}, a.out)
  print(f"# wrote {path}")


if __name__ == "__main__":
  main()
