"""Decoding speed: `jaxrnn.beam_search` and `jaxrnn.as_cell` against their baselines.

``python -m benchmarks.decoding [--quick]``. The decoder is a 2-layer LSTM
language model, ``stack(rnn(lstm(H)), rnn(lstm(H)), readout(V))`` on
embedded tokens (embedding size H), H = 256, V = 1,000, B = 16 examples,
T = 50 steps, float32; ``step(carry, token)`` embeds the token, runs one
step of ``as_cell(decoder)`` and returns ``log_softmax`` of the logits.
Two comparisons, each timed interleaved in one process
(`benchmarks.run.time_interleaved`: a warm-up, then one call of each
implementation per round in a random order, medians):

- search: ``jax.jit(jax.vmap(beam_search(step, ..., beam_size=K,
  max_length=T)))`` over the B examples, against the same ``step`` on K
  hypotheses per example (B * K in all) for T steps with no search (each
  hypothesis fed its own argmax), the beam's layout without its top-k and
  gathers. Target: beam search / no search <= 1.3.
- stepping: ``as_cell(decoder).cell_apply`` under ``lax.scan`` over T
  teacher-forced inputs, against ``decoder.apply`` on the same sequence,
  both vmapped over the B examples, logits out. Target: as_cell /
  apply <= 1.1.

Diagnostics beside them (not targets): the same loops with a step that
calls each LSTM's ``cell_apply`` and the readout directly (``direct``),
which is what stepping costs without running each layer's sequence engine
on a one-step sequence, as `as_cell` does; `as_cell`'s scan unrolled by 4
(the CPU engine's own forward unroll); and the two LSTM layers alone, a
scan of their ``cell_apply`` against their ``apply`` (what is left when no
readout runs per step). Every implementation's outputs are checked
against the others' before timing. Writes JSON to
``benchmarks/results/decoding-<time>.json``.
"""

import argparse
import statistics
import sys
import time

import numpy as np

import benchmarks
from benchmarks.peers import Impl
from benchmarks.run import time_interleaved

FULL = dict(B=16, T=50, H=256, V=1000, beam=8)
QUICK = dict(B=4, T=10, H=32, V=50, beam=4)
TARGETS = {"search": 1.3, "stepping": 1.1}
START, END = 0, 1  # the first token fed, and the token that ends a hypothesis


def build_decoder(H, V):
  """The decoder, its params with an embedding, and its two one-step
  functions ``(carry, x) -> (carry, logits)``: `as_cell`'s and the direct one."""
  import jax
  import jaxrnn

  decoder = jaxrnn.stack(jaxrnn.rnn(jaxrnn.lstm(H)), jaxrnn.rnn(jaxrnn.lstm(H)),
                         jaxrnn.readout(V))
  k_embed, k_net = jax.random.split(jax.random.key(0))
  params = {"embed": 0.3 * jax.random.normal(k_embed, (V, H)),
            "net": decoder.init_params(k_net, H)}
  cell = jaxrnn.as_cell(decoder)
  layers = dict(decoder.config)["layers"]
  cells = [dict(layer.config)["cell"] for layer in layers[:-1]]
  readout = layers[-1]

  def direct(net_params, carry, x):
    # Each LSTM's own step, then the readout: no sequence engine per step.
    carries = []
    for lstm, p, c in zip(cells, net_params[:-1], carry[:-1]):
      c, x = lstm.cell_apply(p, c, x)
      carries.append(c)
    ys, _ = readout.apply(net_params[-1], x[None])
    return tuple(carries) + (carry[-1],), ys[0]

  return decoder, params, {"as_cell": cell.cell_apply, "direct": direct}, cell.init_carry


def search_impls(one_step, init_carry, params, B, T, beam):
  """``beam_search`` and its no-search baseline for one step function."""
  import jax
  import jax.numpy as jnp
  import jaxrnn

  def step(params, carry, token):
    carry, logits = one_step(params["net"], carry, params["embed"][token])
    return carry, jax.nn.log_softmax(logits)

  carries = jax.tree_util.tree_map(lambda c: jnp.broadcast_to(c, (B,) + c.shape), init_carry())

  @jax.jit
  def searched(params, carries):
    def one(carry):
      return jaxrnn.beam_search(lambda c, t: step(params, c, t), carry, START,
                                beam_size=beam, max_length=T, end_token=END)
    return jax.vmap(one)(carries)

  @jax.jit
  def rolled_out(params, carries):
    def one(carry):  # ``beam`` hypotheses, each fed its own argmax
      carry = jax.tree_util.tree_map(lambda c: jnp.broadcast_to(c, (beam,) + c.shape), carry)

      def body(state, _):
        carry, token = state
        carry, log_probs = jax.vmap(lambda c, t: step(params, c, t))(carry, token)
        token = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
        return (carry, token), token

      _, tokens = jax.lax.scan(body, (carry, jnp.full((beam,), START, jnp.int32)), None,
                               length=T)
      return tokens.T  # (beam, T)
    return jax.vmap(one)(carries)

  return ({"fn": searched, "args": (params, carries)},
          {"fn": rolled_out, "args": (params, carries)})


def stepping_impls(decoder, steps, init_carry, params, B, T, V):
  """``decoder.apply`` and a ``lax.scan`` of each one-step function over the
  same teacher-forced inputs, logits ``(B, T, V)`` out; then the diagnostics:
  `as_cell`'s scan unrolled by 4 (the CPU engine's forward unroll), and the
  two LSTM layers alone (``apply`` against a scan of their ``cell_apply``)."""
  import jax
  import jaxrnn

  tokens = jax.random.randint(jax.random.key(1), (B, T), 0, V)
  lstms = jaxrnn.stack(*dict(decoder.config)["layers"][:-1])
  cells = [dict(layer.config)["cell"] for layer in dict(lstms.config)["layers"]]

  def lstm_steps(net_params, carry, x):
    carries = []
    for lstm, p, c in zip(cells, net_params, carry):
      c, x = lstm.cell_apply(p, c, x)
      carries.append(c)
    return tuple(carries), x

  def applied(layer, take):
    @jax.jit
    def fn(params, tokens):
      return jax.vmap(lambda xs: layer.apply(take(params["net"]), xs)[0])(
          params["embed"][tokens])
    return fn

  def scanned(one_step, carry, take, unroll=1):
    @jax.jit
    def fn(params, tokens):
      def one(xs):
        _, ys = jax.lax.scan(lambda c, x: one_step(take(params["net"]), c, x), carry(), xs,
                             unroll=unroll)
        return ys
      return jax.vmap(one)(params["embed"][tokens])
    return fn

  whole, lstm_part = (lambda p: p), (lambda p: p[:-1])
  fns = {"apply": applied(decoder, whole)}
  for name, one_step in steps.items():
    fns[name] = scanned(one_step, init_carry, whole)
  fns["as_cell_unroll4"] = scanned(steps["as_cell"], init_carry, whole, unroll=4)
  fns["lstms_apply"] = applied(lstms, lstm_part)
  fns["lstms_direct"] = scanned(lstm_steps, lstms.init_carry, lstm_part)
  return {name: {"fn": fn, "args": (params, tokens)} for name, fn in fns.items()}


def _impl(name, cls, spec):
  import jax
  fn, args = spec["fn"], spec["args"]
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  spec["compile_s"] = time.perf_counter() - t0
  spec["result"] = jax.block_until_ready(compiled(*args))

  def call():
    return jax.block_until_ready(compiled(*args))

  shape = jax.tree_util.tree_leaves(spec["result"])[0].shape
  return Impl(name, cls, "jax", call, shape)


def check_agreement(search, stepping):
  """Every implementation computes the same numbers, or raises."""
  ys = {name: np.asarray(spec["result"]) for name, spec in stepping.items()}
  diffs = {name: float(np.max(np.abs(y - ys["lstms_apply" if name.startswith("lstms")
                                           else "apply"])))
           for name, y in ys.items()}
  if max(diffs.values()) > 1e-3:
    raise AssertionError(f"the stepped logits differ from decoder.apply's: {diffs}")
  for name, (searched, rolled) in search.items():
    tokens, scores = (np.asarray(a) for a in searched["result"])
    if not (np.all(np.isfinite(scores[:, 0])) and np.all(np.diff(scores, axis=1) <= 1e-5)):
      raise AssertionError(f"{name}: beam scores not finite and descending")
  as_cell_tokens = np.asarray(search["as_cell"][0]["result"][0])
  direct_tokens = np.asarray(search["direct"][0]["result"][0])
  return {"stepping_max_abs_diff": diffs,
          "beam_tokens_agree": bool(np.array_equal(as_cell_tokens, direct_tokens))}


def run(*, quick=False, target_s=None):
  import jax

  sizes = QUICK if quick else FULL
  B, T, H, V, beam = (sizes[k] for k in ("B", "T", "H", "V", "beam"))
  print(f"# decoding: stack(rnn(lstm({H})), rnn(lstm({H})), readout({V})), {B} examples, "
        f"{T} steps, beam {beam}, float32; {benchmarks.cpu_model()}, "
        f"{benchmarks.available_cores()} cores, {jax.default_backend()}", flush=True)
  if quick:
    print("# --quick: tiny sizes, a check that the script runs; its figures are not "
          "meaningful", flush=True)
  decoder, params, steps, init_carry = build_decoder(H, V)
  search = {name: search_impls(one_step, init_carry, params, B, T, beam)
            for name, one_step in steps.items()}
  stepping = stepping_impls(decoder, steps, init_carry, params, B, T, V)

  groups = {
      "search": [
          _impl("beam_search", f"beam_search, beam {beam} (as_cell)", search["as_cell"][0]),
          _impl("no_search", f"{B}*{beam} hypotheses, argmax (as_cell)", search["as_cell"][1]),
          _impl("beam_search_direct", f"beam_search, beam {beam} (direct)",
                search["direct"][0]),
          _impl("no_search_direct", f"{B}*{beam} hypotheses, argmax (direct)",
                search["direct"][1]),
      ],
      "stepping": [
          _impl("apply", "decoder.apply", stepping["apply"]),
          _impl("as_cell", "as_cell under lax.scan", stepping["as_cell"]),
          _impl("direct", "direct cells under lax.scan", stepping["direct"]),
          _impl("as_cell_unroll4", "as_cell under lax.scan, unroll 4",
                stepping["as_cell_unroll4"]),
          _impl("lstms_apply", "the 2 LSTMs: apply", stepping["lstms_apply"]),
          _impl("lstms_direct", "the 2 LSTMs: cell_apply scan", stepping["lstms_direct"]),
      ],
  }
  compile_s = {name: spec["compile_s"] for name, spec in
               [("beam_search", search["as_cell"][0]), ("no_search", search["as_cell"][1]),
                ("beam_search_direct", search["direct"][0]),
                ("no_search_direct", search["direct"][1])] + list(stepping.items())}
  agreement = check_agreement(search, stepping)

  target_s = target_s or (0.3 if quick else 3.0)
  medians, samples = {}, {}
  for group, impls in groups.items():
    records = time_interleaved(impls, target_s=target_s, min_repeats=5,
                               max_repeats=10 if quick else 40, warmup=2)
    for rec in records:
      medians[rec["impl"].name] = 1e3 * statistics.median(rec["times"])
      samples[rec["impl"].name] = [1e3 * t for t in rec["times"]]

  ratios = {
      "search": medians["beam_search"] / medians["no_search"],
      "search_direct": medians["beam_search_direct"] / medians["no_search_direct"],
      "stepping": medians["as_cell"] / medians["apply"],
      "stepping_direct": medians["direct"] / medians["apply"],
      "stepping_unroll4": medians["as_cell_unroll4"] / medians["apply"],
      "lstms_direct": medians["lstms_direct"] / medians["lstms_apply"],
  }
  rows = [
      ("search", "beam_search (as_cell)", "beam_search", "no_search", "search"),
      ("search", f"no search, {B}*{beam} hypotheses", "no_search", None, None),
      ("search", "beam_search (direct)", "beam_search_direct", "no_search_direct",
       "search_direct"),
      ("search", "no search (direct)", "no_search_direct", None, None),
      ("stepping", "as_cell under lax.scan", "as_cell", "apply", "stepping"),
      ("stepping", "direct cells under lax.scan", "direct", "apply", "stepping_direct"),
      ("stepping", "as_cell under lax.scan, unroll 4", "as_cell_unroll4", "apply",
       "stepping_unroll4"),
      ("stepping", "decoder.apply", "apply", None, None),
      ("stepping", "the 2 LSTMs: cell_apply scan", "lstms_direct", "lstms_apply",
       "lstms_direct"),
      ("stepping", "the 2 LSTMs: apply", "lstms_apply", None, None),
  ]
  print(f"{'part':9} {'implementation':32} {'median ms':>10} {'compile s':>9} "
        f"{'ratio':>6}  target")
  for group, label, name, base, ratio in rows:
    text = f"{ratios[ratio]:6.2f}" if ratio else " " * 6
    target = (f"<= {TARGETS[group]} ({'met' if ratios[ratio] <= TARGETS[group] else 'MISSED'})"
              if ratio in TARGETS else ("(diagnostic)" if ratio else ""))
    print(f"{group:9} {label:32} {medians[name]:10.2f} {compile_s[name]:9.1f} {text}  "
          f"{target}".rstrip())
  print("(ratio: the row's median over its baseline's, interleaved in one process: "
        "beam search over no search, stepping over decoder.apply, the LSTMs' scan over "
        "their apply)", flush=True)
  return {"sizes": sizes, "medians_ms": medians, "ratios": ratios, "targets": TARGETS,
          "compile_s": compile_s, "agreement": agreement, "times_ms": samples}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes, in seconds: a check that the script runs, its figures "
                      "are not meaningful")
  parser.add_argument("--target-s", type=float, default=None,
                      help="seconds of timed calls per implementation (None: 3, or 0.3 "
                      "with --quick)")
  parser.add_argument("--out", metavar="PATH", default=None,
                      help="the JSON file (None: benchmarks/results/decoding-<time>.json)")
  args = parser.parse_args(argv)
  t0 = time.perf_counter()
  payload = {"kind": "jaxrnn-decoding-benchmark", "argv": sys.argv[1:] if argv is None
             else list(argv)}
  payload["decoding"] = run(quick=args.quick, target_s=args.target_s)
  payload["machine"] = benchmarks.machine_info()
  payload["wall_s"] = time.perf_counter() - t0
  path = benchmarks.write_json("decoding-quick" if args.quick else "decoding", payload,
                               args.out)
  print(f"# wrote {path} ({payload['wall_s']:.0f} s)", file=sys.stderr)
  return payload


if __name__ == "__main__":
  main()
