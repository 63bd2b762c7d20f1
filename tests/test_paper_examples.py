"""The paper-style examples: the adding problem and digits read row by row."""

import json
import pathlib
import runpy

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def adding():
  return runpy.run_path(str(EXAMPLES / "adding_problem.py"))


@pytest.fixture(scope="module")
def make_batch(adding):
  """The example's make_batch, one compiled program per shape (eagerly, each
  of its ops would compile on its own)."""
  return jax.jit(adding["make_batch"], static_argnums=(1, 2))


@pytest.fixture(scope="module")
def image_rows():
  return runpy.run_path(str(EXAMPLES / "image_rows.py"))


@pytest.mark.parametrize("length", [2, 51, 100])
def test_adding_batch_matches_numpy(make_batch, length):
  xs, targets = make_batch(jax.random.key(3), 2000, length)
  xs, targets = np.asarray(xs), np.asarray(targets)
  assert xs.shape == (2000, length, 2) and targets.shape == (2000,)
  values, markers = xs[:, :, 0], xs[:, :, 1]
  assert np.all((values >= 0.0) & (values < 1.0))
  assert np.all((markers == 0.0) | (markers == 1.0))
  half = length // 2
  firsts, seconds = [], []
  for n in range(xs.shape[0]):
    (where,) = np.nonzero(markers[n])
    assert len(where) == 2, f"sequence {n} has markers at {where}"
    first, second = where
    assert 0 <= first < half <= second < length
    firsts.append(first)
    seconds.append(second)
    np.testing.assert_allclose(targets[n], values[n, first] + values[n, second],
                               rtol=1e-6)
  # Marker positions cover each half entirely.
  assert sorted(set(firsts)) == list(range(half))
  assert sorted(set(seconds)) == list(range(half, length))


def test_adding_batch_rejects_a_length_without_room_for_two_markers(adding):
  with pytest.raises(ValueError, match=r"^length: expected at least 2 steps \(one per "
                     r"marker\), got 1$"):
    adding["make_batch"](jax.random.key(0), 4, 1)


def test_adding_baseline_mse(make_batch):
  # Predicting 1 = E[u1 + u2] gives Var(u1 + u2) = 2/12; the sampling
  # standard error at 20,000 sequences is about 0.0014.
  _, targets = make_batch(jax.random.key(4), 20_000, 30)
  baseline = float(np.mean((1.0 - np.asarray(targets)) ** 2))
  assert abs(baseline - 1.0 / 6.0) < 0.006


@pytest.mark.slow
def test_adding_quick_run_learns(adding, tmp_path, capsys):
  path = tmp_path / "adding.json"
  rows = adding["main"](["--quick", "--json", str(path)])
  out = capsys.readouterr().out
  assert "baseline" in out and "solved" in out
  assert [row["cell"] for row in rows] == ["lstm", "gru", "elman"]
  saved = json.loads(path.read_text())["rows"]
  assert [row["test_mse"] for row in saved] == pytest.approx([row["test_mse"] for row in rows])
  for row in rows:
    # Training lowers the held-out error of every cell from its initial value.
    assert row["test_mse"] < 0.5 * row["initial_test_mse"], row
  for row in rows[:2]:
    # At the quick setting's length (T = 10) the gated cells solve the task:
    # the baseline is about 0.167.
    assert row["T"] == 10 and row["baseline_mse"] > 0.1, row
    assert row["test_mse"] < 0.05, row


def test_image_sequences_read_rows_and_pixels(image_rows):
  images = np.arange(2 * 64, dtype=np.float32).reshape(2, 8, 8)
  rows = image_rows["as_sequences"](images, "rows")
  pixels = image_rows["as_sequences"](images, "pixels")
  assert rows.shape == (2, 8, 8) and pixels.shape == (2, 64, 1)
  for n in range(2):
    for r in range(8):
      np.testing.assert_array_equal(rows[n, r], images[n, r, :])
      for c in range(8):
        assert pixels[n, 8 * r + c, 0] == images[n, r, c]


def test_image_split_is_a_partition_of_the_digits(image_rows):
  train_x, train_y, test_x, test_y = image_rows["load_split"](0)
  digits = load_digits()
  assert train_x.shape == (1297, 8, 8) and test_x.shape == (500, 8, 8)
  assert float(train_x.max()) == 1.0 and float(train_x.min()) == 0.0
  # Every image appears exactly once, with its label, across the two splits.
  ours = sorted((x.tobytes(), int(y)) for x, y in zip(
      np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])))
  theirs = sorted(((x / 16.0).astype(np.float32).tobytes(), int(y))
                  for x, y in zip(digits.images, digits.target))
  assert ours == theirs


@pytest.mark.slow
def test_image_quick_run_beats_chance(image_rows, capsys):
  rows = image_rows["main"](["--quick"])
  assert "test accuracy" in capsys.readouterr().out
  (row,) = rows
  assert row["setting"] == "rows" and row["T"] == 8
  # Chance is 10%; an untrained network is near it.
  assert row["initial_test_accuracy"] < 0.3, row
  assert row["test_accuracy"] > 0.7, row
  assert row["test_loss"] < 0.5 * row["initial_test_loss"], row
