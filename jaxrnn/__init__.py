"""jaxrnn: recurrent networks as pure functions for JAX.

Cells are `NamedTuple`s of pure functions on ONE example; layers unroll them
with ``jax.lax.scan``; minibatches are ``jax.vmap``.
"""

from jaxrnn._src.base import Cell as Cell
from jaxrnn._src.base import Layer as Layer
from jaxrnn._src.cells.elman import ElmanParams as ElmanParams
from jaxrnn._src.cells.gru import GRUParams as GRUParams
from jaxrnn._src.cells.common import LayerNormParams as LayerNormParams
from jaxrnn._src.cells.lstm import LSTMParams as LSTMParams
from jaxrnn._src.cells.lstm import LSTMState as LSTMState
from jaxrnn._src.cells.elman import elman as elman
from jaxrnn._src.cells.gru import gru as gru
from jaxrnn._src.cells.lstm import lstm as lstm
from jaxrnn._src.training.checkpoint import latest_step as latest_step
from jaxrnn._src.training.checkpoint import restore_checkpoint as restore_checkpoint
from jaxrnn._src.training.checkpoint import save_checkpoint as save_checkpoint
from jaxrnn._src.cells.conv_lstm import ConvLSTMParams as ConvLSTMParams
from jaxrnn._src.cells.conv_lstm import conv_lstm as conv_lstm
from jaxrnn._src.training.data import bucket_by_length as bucket_by_length
from jaxrnn._src.training.data import pad_sequences as pad_sequences
from jaxrnn._src.training.data import unpad_sequences as unpad_sequences
from jaxrnn._src.training.distributed import batch_mesh as batch_mesh
from jaxrnn._src.training.distributed import data_parallel_step as data_parallel_step
from jaxrnn._src.training.distributed import replicate as replicate
from jaxrnn._src.training.distributed import shard_batch as shard_batch
from jaxrnn._src.layers.bidirectional import BidirectionalCarry as BidirectionalCarry
from jaxrnn._src.layers.bidirectional import BidirectionalParams as BidirectionalParams
from jaxrnn._src.layers.rnn import LearnedCarryParams as LearnedCarryParams
from jaxrnn._src.layers.readout import ReadoutParams as ReadoutParams
from jaxrnn._src.layers.bidirectional import bidirectional as bidirectional
from jaxrnn._src.layers.readout import readout as readout
from jaxrnn._src.layers.rnn import rnn as rnn
from jaxrnn._src.layers.stack import stack as stack
from jaxrnn._src.layers.as_cell import as_cell as as_cell
from jaxrnn._src.engine.settings import EngineSettings as EngineSettings
from jaxrnn._src.engine.settings import engine_settings as engine_settings
from jaxrnn._src.training.losses import sequence_loss as sequence_loss
from jaxrnn._src.decoding.ctc import ctc_beam_search as ctc_beam_search
from jaxrnn._src.decoding.ctc import ctc_greedy_decode as ctc_greedy_decode
from jaxrnn._src.decoding.ctc import ctc_loss as ctc_loss
from jaxrnn._src.decoding.beam import beam_search as beam_search
from jaxrnn._src.cells.mgu import MGUParams as MGUParams
from jaxrnn._src.cells.mgu import mgu as mgu
from jaxrnn._src.cells.linear import LRUParams as LRUParams
from jaxrnn._src.cells.linear import LRUState as LRUState
from jaxrnn._src.cells.linear import MinGRUParams as MinGRUParams
from jaxrnn._src.cells.linear import MinLSTMParams as MinLSTMParams
from jaxrnn._src.cells.linear import linear_cell as linear_cell
from jaxrnn._src.cells.linear import lru as lru
from jaxrnn._src.cells.linear import min_gru as min_gru
from jaxrnn._src.cells.linear import min_lstm as min_lstm
from jaxrnn._src.cells.mamba import MambaParams as MambaParams
from jaxrnn._src.cells.mlstm import MLSTMParams as MLSTMParams
from jaxrnn._src.cells.mlstm import MLSTMState as MLSTMState
from jaxrnn._src.cells.mlstm import mlstm as mlstm
from jaxrnn._src.cells.mamba import MambaState as MambaState
from jaxrnn._src.cells.mamba import mamba as mamba
from jaxrnn._src.cells.rg_lru import RGLRUParams as RGLRUParams
from jaxrnn._src.cells.rg_lru import rg_lru as rg_lru
from jaxrnn._src.cells.slstm import SLSTMParams as SLSTMParams
from jaxrnn._src.cells.slstm import SLSTMState as SLSTMState
from jaxrnn._src.cells.slstm import slstm as slstm
from jaxrnn._src.training.tbptt import chunk_lengths as chunk_lengths
from jaxrnn._src.training.tbptt import reset_carry as reset_carry
from jaxrnn._src.training.tbptt import split_chunks as split_chunks
from jaxrnn._src.training.tbptt import tbptt as tbptt
from jaxrnn._src.training.tbptt import tbptt_step as tbptt_step
from jaxrnn._src.training.tasks import classification_loss as classification_loss
from jaxrnn._src.training.tasks import labelling_loss as labelling_loss
from jaxrnn._src.training.tasks import language_model_loss as language_model_loss
from jaxrnn._src.training.tasks import last_step as last_step
from jaxrnn._src.training.tasks import per_step_cross_entropy as per_step_cross_entropy
from jaxrnn._src.training.tasks import pooled as pooled
from jaxrnn._src.cells.two_d import Elman2DParams as Elman2DParams
from jaxrnn._src.cells.two_d import LSTM2DParams as LSTM2DParams
from jaxrnn._src.cells.two_d import elman2d as elman2d
from jaxrnn._src.cells.two_d import lstm2d as lstm2d
from jaxrnn._src.layers.two_d import ReNetCarry as ReNetCarry
from jaxrnn._src.layers.two_d import ReNetParams as ReNetParams
from jaxrnn._src.layers.two_d import multidirectional as multidirectional
from jaxrnn._src.layers.two_d import renet as renet
from jaxrnn._src.layers.two_d import rnn2d as rnn2d

from jaxrnn._version import __version__ as __version__


def __getattr__(name):
  # jaxrnn.flax, jaxrnn.nnx and jaxrnn.equinox import their framework, so
  # they load on first use only (an ImportError names the extra to install).
  if name in ("flax", "nnx", "equinox"):
    import importlib
    return importlib.import_module(f"jaxrnn.{name}")
  raise AttributeError(f"module 'jaxrnn' has no attribute {name!r}")

__all__ = (
    "BidirectionalCarry",
    "BidirectionalParams",
    "Cell",
    "ConvLSTMParams",
    "ElmanParams",
    "EngineSettings",
    "GRUParams",
    "LRUParams",
    "LRUState",
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
    "RGLRUParams",
    "ReadoutParams",
    "SLSTMParams",
    "SLSTMState",
    "as_cell",
    "batch_mesh",
    "beam_search",
    "bidirectional",
    "bucket_by_length",
    "chunk_lengths",
    "classification_loss",
    "conv_lstm",
    "ctc_beam_search",
    "ctc_greedy_decode",
    "ctc_loss",
    "data_parallel_step",
    "elman",
    "engine_settings",
    "gru",
    "labelling_loss",
    "language_model_loss",
    "last_step",
    "latest_step",
    "linear_cell",
    "lru",
    "lstm",
    "mamba",
    "mgu",
    "min_gru",
    "min_lstm",
    "mlstm",
    "pad_sequences",
    "per_step_cross_entropy",
    "pooled",
    "readout",
    "replicate",
    "reset_carry",
    "restore_checkpoint",
    "rg_lru",
    "rnn",
    "save_checkpoint",
    "sequence_loss",
    "shard_batch",
    "slstm",
    "split_chunks",
    "stack",
    "tbptt",
    "tbptt_step",
    "unpad_sequences",
    "Elman2DParams",
    "LSTM2DParams",
    "ReNetCarry",
    "ReNetParams",
    "elman2d",
    "lstm2d",
    "multidirectional",
    "renet",
    "rnn2d",
)


def _register_for_export() -> None:
  from jaxrnn._src import serialization
  from jaxrnn._src.training.tbptt import TBPTTState  # returned by tbptt_step
  serialization.register_namedtuples([globals()[name] for name in __all__] + [TBPTTState])


_register_for_export()
