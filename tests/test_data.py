"""Host-side batching: padding, unpadding and length buckets, against plain loops."""

import numpy as np
import pytest

import jaxrnn


def _sequences(rng, lengths, trailing=(), dtype=np.float32):
  return [rng.standard_normal((n,) + trailing).astype(dtype) for n in lengths]


# ---------------------------------------------------------------------------
# pad_sequences / unpad_sequences


def test_pad_by_hand():
  padded, lengths = jaxrnn.pad_sequences([[1, 2, 3], [4], []], pad_value=-1)
  np.testing.assert_array_equal(padded, [[1, 2, 3], [4, -1, -1], [-1, -1, -1]])
  np.testing.assert_array_equal(lengths, [3, 1, 0])
  assert lengths.dtype == np.int32
  assert np.issubdtype(padded.dtype, np.integer)  # [] does not make it float


@pytest.mark.parametrize("trailing", [(), (3,), (2, 4)])
def test_pad_matches_loop_and_round_trips(trailing):
  rng = np.random.default_rng(0)
  sizes = [4, 0, 7, 1]
  seqs = _sequences(rng, sizes, trailing)
  padded, lengths = jaxrnn.pad_sequences(seqs, max_length=9, pad_value=np.nan)
  assert padded.shape == (4, 9) + trailing and padded.dtype == np.float32
  for i, s in enumerate(seqs):
    for t in range(9):
      if t < sizes[i]:
        np.testing.assert_array_equal(padded[i, t], s[t])
      else:
        assert np.all(np.isnan(padded[i, t]))
  back = jaxrnn.unpad_sequences(padded, lengths)
  assert len(back) == 4
  for got, want in zip(back, seqs):
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
  back[0][...] = 123.0  # copies, not views
  assert not np.any(padded == 123.0)


def test_pad_dtype_and_default_length():
  seqs = [np.arange(3, dtype=np.int16), np.arange(5, dtype=np.int64)]
  padded, lengths = jaxrnn.pad_sequences(seqs)
  assert padded.shape == (2, 5) and padded.dtype == np.int64
  np.testing.assert_array_equal(lengths, [3, 5])
  padded, _ = jaxrnn.pad_sequences(seqs, dtype=np.float32, pad_value=0.5)
  assert padded.dtype == np.float32
  np.testing.assert_array_equal(padded[0], [0, 1, 2, 0.5, 0.5])
  padded, _ = jaxrnn.pad_sequences(seqs, dtype="bfloat16", pad_value=np.nan)
  assert str(padded.dtype) == "bfloat16"
  assert np.isnan(padded[0, 4].astype(np.float32))


def test_pad_never_truncates():
  with pytest.raises(ValueError, match=r"^max_length: sequence 1 has 5 steps"):
    jaxrnn.pad_sequences([np.zeros(2), np.zeros(5)], max_length=4)
  padded, _ = jaxrnn.pad_sequences([np.zeros(2), np.zeros(5)], max_length=5)
  assert padded.shape == (2, 5)


@pytest.mark.parametrize("args, kwargs, error, match", [
    (([np.zeros((2, 3)), np.zeros((4, 2))],), {},
     ValueError, r"^sequences: .*sequence 1 has shape \(4, 2\)"),
    (([],), {}, ValueError, r"^sequences: expected at least one"),
    ((np.zeros((2, 3)),), {}, TypeError, r"^sequences: expected a list"),
    (([np.zeros(())],), {}, ValueError, r"^sequences: sequence 0 is a scalar"),
    (([[1, 2]],), {"pad_value": np.nan},
     ValueError, r"^pad_value: nan cannot be stored in dtype int"),
    (([[1, 2]],), {"pad_value": 1.5}, ValueError, r"^pad_value: 1.5 cannot"),
    (([[1, 2]],), {"pad_value": 300, "dtype": np.uint8}, ValueError, r"^pad_value: 300 cannot"),
    (([[1.0]],), {"pad_value": 1e40, "dtype": np.float32}, ValueError, r"^pad_value:"),
    (([[1, 2]],), {"max_length": -1}, ValueError, r"^max_length: expected an int >= 0"),
    (([[1, 2]],), {"max_length": 2.5}, TypeError, r"^max_length:"),
])
def test_pad_errors(args, kwargs, error, match):
  with pytest.raises(error, match=match):
    jaxrnn.pad_sequences(*args, **kwargs)


@pytest.mark.parametrize("padded, lengths, error, match", [
    (np.zeros((2, 3)), [1, 4], ValueError, r"^lengths: expected integers in \[0, T\] = \[0, 3\]"),
    (np.zeros((2, 3)), [1], ValueError, r"^lengths: expected shape \(2,\)"),
    (np.zeros((2, 3)), [1.0, 2.0], TypeError, r"^lengths: expected integers"),
    (np.zeros((2, 3)), [1, -1], ValueError, r"^lengths: expected non-negative"),
    (np.zeros(3), [1, 1, 1], ValueError, r"^padded: expected shape \(B, T, ...\)"),
])
def test_unpad_errors(padded, lengths, error, match):
  with pytest.raises(error, match=match):
    jaxrnn.unpad_sequences(padded, lengths)


def test_unpad_accepts_jax_arrays():
  import jax.numpy as jnp
  back = jaxrnn.unpad_sequences(jnp.arange(6.0).reshape(2, 3), jnp.array([2, 0]))
  np.testing.assert_array_equal(back[0], [0.0, 1.0])
  assert back[1].shape == (0,)


# ---------------------------------------------------------------------------
# bucket_by_length


def _padded_steps(lengths, batches):
  """Steps in all padded minibatches: sum of batch size times its longest."""
  return sum(len(b) * int(np.max(lengths[b])) for b in batches)


def _skewed_lengths(n=600, seed=0):
  return 1 + np.random.default_rng(seed).geometric(0.02, size=n)


def test_bucket_deterministic_is_sorted_chunks():
  lengths = np.array([5, 1, 9, 2, 8, 1, 3])
  batches = jaxrnn.bucket_by_length(lengths, 3)
  assert [b.tolist() for b in batches] == [[1, 5, 3], [6, 0, 4], [2]]
  batches = jaxrnn.bucket_by_length(lengths, 3, drop_remainder=True)
  assert [b.tolist() for b in batches] == [[1, 5, 3], [6, 0, 4]]  # drops the longest


@pytest.mark.parametrize("drop_remainder", [False, True])
@pytest.mark.parametrize("num_buckets", [1, 4, 16, 1000])
def test_bucket_covers_each_example_once(num_buckets, drop_remainder):
  lengths = _skewed_lengths(203)
  rng = np.random.default_rng(1)
  batches = jaxrnn.bucket_by_length(lengths, 16, num_buckets=num_buckets, rng=rng,
                                    drop_remainder=drop_remainder)
  flat = np.concatenate(batches)
  assert len(set(flat.tolist())) == flat.size
  sizes = [b.size for b in batches]
  if drop_remainder:
    assert sizes == [16] * (203 // 16)
  else:
    assert flat.size == 203 and sorted(sizes)[1:] == [16] * (len(sizes) - 1)
    assert sorted(flat.tolist()) == list(range(203))


def test_bucketing_cuts_padding_on_skewed_lengths():
  lengths = _skewed_lengths()
  rng = np.random.default_rng(2)
  random_batches = np.array_split(rng.permutation(lengths.size), range(32, lengths.size, 32))
  unbucketed = _padded_steps(lengths, random_batches)
  bucketed = _padded_steps(lengths, jaxrnn.bucket_by_length(lengths, 32, rng=rng))
  finer = _padded_steps(lengths, jaxrnn.bucket_by_length(lengths, 32, num_buckets=64, rng=rng))
  fully_sorted = _padded_steps(lengths, jaxrnn.bucket_by_length(lengths, 32))
  total = int(lengths.sum())
  assert total < fully_sorted <= finer < bucketed < unbucketed
  # Random batches are mostly padding here; the default buckets remove most of it.
  assert (unbucketed - total) > 2 * total
  assert (bucketed - total) < 0.5 * total


def test_bucket_rng_shuffles_reproducibly():
  lengths = _skewed_lengths(300)
  a = jaxrnn.bucket_by_length(lengths, 10, rng=np.random.default_rng(5))
  b = jaxrnn.bucket_by_length(lengths, 10, rng=np.random.default_rng(5))
  c = jaxrnn.bucket_by_length(lengths, 10, rng=np.random.default_rng(6))
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  # The batch order is shuffled: not ascending by length.
  maxima = [int(lengths[x].max()) for x in a]
  assert maxima != sorted(maxima)


def test_bucket_random_drop_is_not_always_the_longest():
  lengths = np.arange(10)
  dropped = set()
  for seed in range(20):
    kept = np.concatenate(jaxrnn.bucket_by_length(
        lengths, 4, rng=np.random.default_rng(seed), drop_remainder=True))
    dropped |= set(range(10)) - set(kept.tolist())
  assert len(dropped) > 4


@pytest.mark.parametrize("kwargs, error, match", [
    ({"lengths": [[1, 2]], "batch_size": 2}, ValueError, r"^lengths: expected shape \(B,\)"),
    ({"lengths": [1, 2], "batch_size": 0}, ValueError, r"^batch_size: expected an int >= 1"),
    ({"lengths": [1, 2], "batch_size": 2, "num_buckets": 0}, ValueError, r"^num_buckets:"),
    ({"lengths": [1, 2], "batch_size": 2, "rng": 3},
     TypeError, r"^rng: expected a numpy.random.Generator"),
])
def test_bucket_errors(kwargs, error, match):
  with pytest.raises(error, match=match):
    jaxrnn.bucket_by_length(**kwargs)


def test_pad_a_bucketed_batch_end_to_end():
  rng = np.random.default_rng(3)
  lengths = np.array([3, 9, 4, 8])
  seqs = _sequences(rng, lengths, (2,))
  batches = jaxrnn.bucket_by_length(lengths, 2)
  shapes = [jaxrnn.pad_sequences([seqs[i] for i in b])[0].shape for b in batches]
  assert shapes == [(2, 4, 2), (2, 9, 2)]
