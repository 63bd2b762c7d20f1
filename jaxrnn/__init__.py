"""jaxrnn: recurrent networks as pure functions for JAX.

Cells are `NamedTuple`s of pure functions on ONE example; layers unroll them
with ``jax.lax.scan``; minibatches are ``jax.vmap``.
"""

from jaxrnn._src.base import Cell as Cell
from jaxrnn._src.base import Layer as Layer
from jaxrnn._src.cells import ElmanParams as ElmanParams
from jaxrnn._src.cells import GRUParams as GRUParams
from jaxrnn._src.cells import LSTMParams as LSTMParams
from jaxrnn._src.cells import LSTMState as LSTMState
from jaxrnn._src.cells import elman as elman
from jaxrnn._src.cells import gru as gru
from jaxrnn._src.cells import lstm as lstm
from jaxrnn._src.layers import BidirectionalCarry as BidirectionalCarry
from jaxrnn._src.layers import BidirectionalParams as BidirectionalParams
from jaxrnn._src.layers import ReadoutParams as ReadoutParams
from jaxrnn._src.layers import bidirectional as bidirectional
from jaxrnn._src.layers import readout as readout
from jaxrnn._src.layers import rnn as rnn
from jaxrnn._src.layers import stack as stack
from jaxrnn._src.losses import sequence_loss as sequence_loss

__version__ = "0.1.0"

__all__ = (
    "BidirectionalCarry",
    "BidirectionalParams",
    "Cell",
    "ElmanParams",
    "GRUParams",
    "LSTMParams",
    "LSTMState",
    "Layer",
    "ReadoutParams",
    "bidirectional",
    "elman",
    "gru",
    "lstm",
    "readout",
    "rnn",
    "sequence_loss",
    "stack",
)
