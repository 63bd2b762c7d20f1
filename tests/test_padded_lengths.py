"""Batches that compile once: `pad_sequences(pad_to_multiple=, pad_lengths=)`.

A jitted step compiles once per padded shape. Rounding each batch's padded
length up to a multiple, or to the next of a few allowed lengths, bounds the
number of compilations over an epoch; the capitalisation demo's epoch is the
end-to-end check (counted with ``chex.assert_max_traces``).
"""

import pathlib
import runpy

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _sequences(lengths, feature=2):
  rng = np.random.default_rng(0)
  return [rng.standard_normal((n, feature)).astype(np.float32) for n in lengths]


@pytest.mark.parametrize("lengths, multiple, expected_T", [
    ([3, 1], 4, 4),
    ([4, 1], 4, 4),
    ([5, 1], 4, 8),
    ([0, 0], 4, 4),  # at least one multiple: an all-empty batch is no new shape
    ([7], 1, 7),
])
def test_pad_to_multiple_rounds_T_up(lengths, multiple, expected_T):
  seqs = _sequences(lengths)
  padded, lens = jaxrnn.pad_sequences(seqs, pad_to_multiple=multiple, pad_value=-1.0)
  assert padded.shape == (len(lengths), expected_T, 2)
  assert lens.tolist() == lengths
  for row, seq in zip(padded, seqs):
    np.testing.assert_array_equal(row[:len(seq)], seq)
    assert np.all(row[len(seq):] == -1.0)


@pytest.mark.parametrize("lengths, allowed, expected_T", [
    ([3, 1], (2, 8, 32), 8),
    ([8, 1], (2, 8, 32), 8),
    ([9], (2, 8, 32), 32),
    ([1], (2, 8, 32), 2),
    ([0], (0, 8), 0),
])
def test_pad_lengths_picks_the_smallest_allowed(lengths, allowed, expected_T):
  padded, lens = jaxrnn.pad_sequences(_sequences(lengths), pad_lengths=allowed)
  assert padded.shape == (len(lengths), expected_T, 2)
  assert lens.tolist() == lengths


@pytest.mark.parametrize("kwargs, error, match", [
    ({"pad_lengths": (2, 4)}, ValueError,
     r"^pad_lengths: a sequence has 5 steps, more than the largest padded length 4"),
    ({"pad_lengths": (4, 2, 8)}, ValueError, r"^pad_lengths: expected strictly increasing"),
    ({"pad_lengths": (4, 4, 8)}, ValueError, r"^pad_lengths: expected strictly increasing"),
    ({"pad_lengths": ()}, ValueError, r"^pad_lengths: expected at least one length"),
    ({"pad_lengths": 8}, TypeError, r"^pad_lengths: expected a sorted sequence of ints"),
    ({"pad_lengths": (4, 8.0)}, TypeError, r"^pad_lengths: expected an int, got float"),
    ({"pad_to_multiple": 0}, ValueError, r"^pad_to_multiple: expected an int >= 1, got 0"),
    ({"pad_to_multiple": 2.0}, TypeError, r"^pad_to_multiple: expected an int"),
    ({"pad_to_multiple": 4, "max_length": 8}, ValueError,
     r"^pad_to_multiple: expected at most one of max_length, pad_to_multiple and "
     r"pad_lengths, got max_length and pad_to_multiple"),
    ({"pad_to_multiple": 4, "pad_lengths": (8,)}, ValueError,
     r"^pad_lengths: expected at most one of"),
])
def test_padding_option_errors(kwargs, error, match):
  with pytest.raises(error, match=match):
    jaxrnn.pad_sequences(_sequences([5, 2]), **kwargs)


def test_a_bucketed_epoch_pads_to_few_lengths():
  """Every batch of an epoch pads to an allowed length, however many lengths occur."""
  lengths = np.random.default_rng(1).integers(1, 100, size=500)
  seqs = _sequences(lengths, feature=1)
  batches = jaxrnn.bucket_by_length(lengths, 16, rng=np.random.default_rng(2))
  allowed = (16, 32, 64, 100)
  shapes = {jaxrnn.pad_sequences([seqs[i] for i in b], pad_lengths=allowed)[0].shape[1]
            for b in batches}
  longest = {int(lengths[b].max()) for b in batches}
  assert shapes <= set(allowed) and len(longest) > 2 * len(allowed)
  by_multiple = {jaxrnn.pad_sequences([seqs[i] for i in b], pad_to_multiple=25)[0].shape[1]
                 for b in batches}
  assert by_multiple <= {25, 50, 75, 100}


def test_a_capitalisation_epoch_compiles_once_per_padded_length():
  """The demo's batches: a jitted training step over a whole epoch traces at
  most once per padded length (3 here), not once per batch length (more than
  6 distinct longest lengths). The epoch is a prefix of the demo's training
  text (26 batches): enough lengths, few steps to run."""
  capitalise = runpy.run_path(str(EXAMPLES / "capitalise.py"))
  config = capitalise["Config"](max_length=96, pad_multiple=32, batch_size=32)
  train_texts, _ = capitalise["split_topics"](config.held_out)
  pieces = [p for t in train_texts for p in capitalise["paragraphs"](t, config.max_length)]
  examples = [capitalise["encode"](p) for p in capitalise["take_prefix"](pieces, 60_000)]
  padded_lengths = range(config.pad_multiple, config.max_length + 1, config.pad_multiple)

  net = capitalise["build"]("unidirectional", 4)
  params = jax.jit(lambda key: capitalise["init_params"](net, key, 4))(jax.random.key(0))
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(params)

  def step(params, opt_state, ids, labels, lengths):
    loss, grads = jax.value_and_grad(
        lambda p: capitalise["loss_fn"](net, p, ids, labels, lengths))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(step, n=len(padded_lengths)))
  seen, longest = set(), set()
  for ids, labels, lengths in capitalise["batches"](examples, config, np.random.default_rng(0)):
    chex.assert_shape([ids, labels], (config.batch_size, None))
    params, opt_state, loss = step(params, opt_state, ids, labels, lengths)
    seen.add(ids.shape[1])
    longest.add(int(np.max(lengths)))
  assert np.isfinite(float(loss))
  assert seen == set(padded_lengths) and len(longest) > 2 * len(padded_lengths)
  # One batch of a new padded length is one trace too many: the counter is live.
  with pytest.raises(AssertionError, match="retrac|traced"):
    step(params, opt_state, jnp.zeros((config.batch_size, 200), jnp.int32),
         jnp.zeros((config.batch_size, 200), jnp.int32), lengths)
