"""The built-in cells, one module per family; each equation is written once."""

from jaxrnn._src.cells.common import ACTIVATION_FUNCTIONS as ACTIVATION_FUNCTIONS
from jaxrnn._src.cells.common import LayerNormParams as LayerNormParams
from jaxrnn._src.cells.conv_lstm import ConvLSTMParams as ConvLSTMParams
from jaxrnn._src.cells.conv_lstm import conv_lstm as conv_lstm
from jaxrnn._src.cells.elman import ElmanParams as ElmanParams
from jaxrnn._src.cells.elman import elman as elman
from jaxrnn._src.cells.gru import GRUParams as GRUParams
from jaxrnn._src.cells.gru import gru as gru
from jaxrnn._src.cells.linear import LRUParams as LRUParams
from jaxrnn._src.cells.linear import LRUState as LRUState
from jaxrnn._src.cells.linear import MinGRUParams as MinGRUParams
from jaxrnn._src.cells.linear import MinLSTMParams as MinLSTMParams
from jaxrnn._src.cells.linear import lru as lru
from jaxrnn._src.cells.linear import min_gru as min_gru
from jaxrnn._src.cells.linear import min_lstm as min_lstm
from jaxrnn._src.cells.lstm import LSTMParams as LSTMParams
from jaxrnn._src.cells.lstm import LSTMState as LSTMState
from jaxrnn._src.cells.lstm import lstm as lstm
from jaxrnn._src.cells.mgu import MGUParams as MGUParams
from jaxrnn._src.cells.mgu import mgu as mgu
