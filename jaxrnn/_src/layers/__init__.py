"""Layers: a cell over a sequence (`rnn`), bidirectional pairs, stacks and
readouts; each works on ONE sequence and composes with ``jax.vmap``."""

from jaxrnn._src.layers.bidirectional import BidirectionalCarry as BidirectionalCarry
from jaxrnn._src.layers.bidirectional import BidirectionalParams as BidirectionalParams
from jaxrnn._src.layers.bidirectional import bidirectional as bidirectional
from jaxrnn._src.layers.readout import ReadoutParams as ReadoutParams
from jaxrnn._src.layers.readout import readout as readout
from jaxrnn._src.layers.rnn import LearnedCarryParams as LearnedCarryParams
from jaxrnn._src.layers.rnn import rnn as rnn
from jaxrnn._src.layers.stack import stack as stack
