"""Plain torch.nn recurrent nets; nothing here imports Lightning."""

from rnnlab.nets.char_rnn import CharRNN, CharRNNCell
from rnnlab.nets.common import last_valid_step
from rnnlab.nets.modern import ModernNet, ModernStack
from rnnlab.nets.recurrent import RecurrentNet
from rnnlab.nets.reference import NumpyRNN, rnn_forward
from rnnlab.nets.unrolled import CellStack, UnrolledNet

__all__ = [
    "CellStack",
    "CharRNN",
    "CharRNNCell",
    "ModernNet",
    "ModernStack",
    "NumpyRNN",
    "RecurrentNet",
    "UnrolledNet",
    "last_valid_step",
    "rnn_forward",
]
