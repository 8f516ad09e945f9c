"""Plain torch.nn recurrent nets; nothing here imports Lightning."""

from rnnlab.nets.char_rnn import CharRNN, CharRNNCell
from rnnlab.nets.common import last_valid_step
from rnnlab.nets.recurrent import RecurrentNet

__all__ = ["CharRNN", "CharRNNCell", "RecurrentNet", "last_valid_step"]
