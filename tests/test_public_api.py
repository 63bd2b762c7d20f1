"""The public API: exactly these names, all importable."""

import importlib
import typing

import pytest

import jaxrnn

# The NamedTuple types: params, carries, cells and layers.
NAMED_TUPLES = {
    "BidirectionalCarry",
    "BidirectionalParams",
    "Cell",
    "ConvLSTMParams",
    "Elman2DParams",
    "ElmanParams",
    "EngineSettings",
    "GRUParams",
    "LRUParams",
    "LRUState",
    "LSTM2DParams",
    "LSTMParams",
    "LSTMState",
    "Layer",
    "LayerNormParams",
    "LearnedCarryParams",
    "MGUParams",
    "MLSTMParams",
    "MLSTMState",
    "MambaParams",
    "MambaState",
    "MinGRUParams",
    "MinLSTMParams",
    "ReNetCarry",
    "ReNetParams",
    "ReadoutParams",
    "RGLRUParams",
    "SLSTMParams",
    "SLSTMState",
}
EXPECTED = NAMED_TUPLES | {
    # cells
    "conv_lstm",
    "elman",
    "elman2d",
    "gru",
    "linear_cell",
    "lru",
    "lstm",
    "lstm2d",
    "mamba",
    "mgu",
    "min_gru",
    "min_lstm",
    "mlstm",
    "rg_lru",
    "slstm",
    # layers and losses
    "bidirectional",
    "multidirectional",
    "readout",
    "renet",
    "rnn",
    "rnn2d",
    "stack",
    "sequence_loss",
    # connectionist temporal classification
    "ctc_beam_search",
    "ctc_greedy_decode",
    "ctc_loss",
    # decoding
    "as_cell",
    "beam_search",
    # the engine's tuning
    "engine_settings",
    # training toolkit
    "bucket_by_length",
    "pad_sequences",
    "unpad_sequences",
    "classification_loss",
    "labelling_loss",
    "language_model_loss",
    "last_step",
    "per_step_cross_entropy",
    "pooled",
    "chunk_lengths",
    "reset_carry",
    "split_chunks",
    "tbptt",
    "tbptt_step",
    "latest_step",
    "restore_checkpoint",
    "save_checkpoint",
    # scale-out
    "batch_mesh",
    "data_parallel_step",
    "replicate",
    "shard_batch",
}


def test_all_lists_exactly_the_public_names():
  assert len(jaxrnn.__all__) == len(set(jaxrnn.__all__))
  assert set(jaxrnn.__all__) == EXPECTED


def test_every_public_name_is_importable():
  module = importlib.import_module("jaxrnn")
  for name in EXPECTED:
    value = getattr(module, name)
    if name in NAMED_TUPLES:
      assert isinstance(value, type) and issubclass(value, tuple)
      assert hasattr(value, "_fields")
    else:
      assert callable(value)
  namespace = {}
  exec("from jaxrnn import *", namespace)
  assert EXPECTED <= set(namespace)


def test_no_other_public_attributes():
  """Besides __all__, only submodules and dunders are visible (the
  framework adapters jaxrnn.flax, jaxrnn.nnx and jaxrnn.equinox load on
  first use)."""
  extra = {n for n in dir(jaxrnn) if not n.startswith("_")} - EXPECTED
  for name in extra:
    assert type(getattr(jaxrnn, name)).__name__ == "module", name


def test_version():
  assert isinstance(jaxrnn.__version__, str)
  assert jaxrnn.__version__.count(".") >= 1


def test_documented_fields():
  # The user's contract only: the engine's hooks live in a private registry.
  assert jaxrnn.Cell._fields == ("init_params", "init_carry", "cell_apply", "hidden_size",
                                 "output_size", "config", "input_ndim")
  assert jaxrnn.EngineSettings._fields == (
      "unroll", "hoist_inputs", "in_place", "narrow_max_batch", "parallel_min_steps",
      "parallel_derivatives",
      "wavefront_remat", "wavefront_segments", "wavefront_min_width")
  assert jaxrnn.Layer._fields[:3] == ("init_params", "apply", "init_carry")
  assert jaxrnn.LSTMState._fields == ("h", "c")
  assert jaxrnn.ReadoutParams._fields == ("W_hy", "b_y")
  assert jaxrnn.BidirectionalParams._fields == ("forward", "backward")
  assert jaxrnn.BidirectionalCarry._fields == ("forward", "backward")
  for params in (jaxrnn.ElmanParams, jaxrnn.GRUParams, jaxrnn.LSTMParams):
    assert params._fields[:4] == ("W_x", "W_h", "b_x", "b_h")
  assert isinstance(jaxrnn.Cell, type) and issubclass(jaxrnn.Cell, tuple)
  assert typing.get_type_hints(jaxrnn.Cell)  # annotated NamedTuple


@pytest.mark.parametrize("overrides, error, message", [
    (dict(unrol=(1, 1)), TypeError,
     r"^engine_settings: expected fields of EngineSettings \('unroll', .*\), got \['unrol'\]$"),
    (dict(narrow_max_batch=-1), ValueError,
     r"^narrow_max_batch: expected an int >= 0, got -1$"),
    (dict(narrow_max_batch=True), ValueError,
     r"^narrow_max_batch: expected an int >= 0, got True$"),
    (dict(parallel_min_steps=0), ValueError,
     r"^parallel_min_steps: expected a positive int, got 0$"),
    (dict(parallel_min_steps={"rg_lru": 0}), ValueError,
     r"^parallel_min_steps\['rg_lru'\]: expected a positive int, got 0$"),
    (dict(parallel_derivatives=1), TypeError,
     r"^parallel_derivatives: expected a bool, got int 1$"),
    (dict(wavefront_remat=1.5), TypeError,
     r"^wavefront_remat: expected a positive int, got float 1.5$"),
    (dict(wavefront_segments=None), TypeError,
     r"^wavefront_segments: expected a positive int, got NoneType None$"),
    (dict(wavefront_min_width=0), ValueError,
     r"^wavefront_min_width: expected a positive int, got 0$"),
    (dict(unroll=4), ValueError,
     r"^unroll: expected a pair of positive ints \(forward, backward\), got 4$"),
    (dict(unroll=(4, 0)), ValueError,
     r"^unroll: expected a pair of positive ints \(forward, backward\), got \(4, 0\)$"),
    (dict(in_place=1), TypeError, r"^in_place: expected a bool, got 1$"),
    (dict(hoist_inputs="yes"), TypeError, r"^hoist_inputs: expected a bool, got 'yes'$"),
])
def test_engine_settings_reject_bad_values(overrides, error, message):
  with pytest.raises(error, match=message):
    with jaxrnn.engine_settings(**overrides):
      pass


def test_engine_settings_apply_inside_the_block_only():
  with jaxrnn.engine_settings() as default:
    pass
  with jaxrnn.engine_settings(in_place=not default.in_place, unroll=(2, 3)) as inside:
    assert inside.in_place == (not default.in_place) and inside.unroll == (2, 3)
    assert inside.hoist_inputs == default.hoist_inputs
  with jaxrnn.engine_settings() as after:
    assert after == default
