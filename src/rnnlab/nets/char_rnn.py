"""The classic char-RNN cell (i2h and i2o over the concatenated input and hidden), run over a batch."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.nets.common import InputEncoder, check_dims


class CharRNNCell(nn.Module):
    """One step: ``combined = [x_t, h_{t-1}]``, ``h_t = i2h(combined)``, ``y_t = log_softmax(i2o(combined))``.

    Note the hidden update has no nonlinearity, exactly as in the tutorial.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(input_size + hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        combined = torch.cat((x, hidden), 1)  # (batch, input + hidden)
        hidden = self.i2h(combined)
        output = self.softmax(self.i2o(combined))
        return output, hidden

    def init_hidden(self, batch_size: int = 1) -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden_size)


class CharRNN(nn.Module):
    """The tutorial cell unrolled over a padded batch; returns log-probabilities.

    ``output_mode="last"`` returns the output at each sequence's last valid step,
    ``output_mode="sequence"`` the output at every step.
    """

    def __init__(
        self,
        output_size: int,
        input_size: int | None = None,
        vocab_size: int | None = None,
        embedding_dim: int | None = None,
        hidden_size: int = 128,
        output_mode: str = "last",
    ) -> None:
        super().__init__()
        check_dims(hidden_size=hidden_size, output_size=output_size, output_mode=output_mode)
        # The tutorial feeds one-hot characters; token ids are one-hot encoded unless an
        # embedding size is given.
        self.one_hot_size = vocab_size if (vocab_size and not embedding_dim) else None
        if self.one_hot_size:
            self.encoder = InputEncoder(input_size=vocab_size, vocab_size=None, embedding_dim=1)
        else:
            self.encoder = InputEncoder(input_size, vocab_size, embedding_dim or 32)
        self.hidden_size = hidden_size
        self.output_mode = output_mode
        self.cell = CharRNNCell(self.encoder.output_size, hidden_size, output_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids or features -> (batch, seq, features) as the cell reads them."""
        if self.one_hot_size:
            x = nn.functional.one_hot(x, self.one_hot_size).to(self.cell.i2h.weight.dtype)
        return self.encoder(x)  # (batch, seq, features)

    def unroll(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every step's output and the hidden state each step reads (``h_0`` .. ``h_{T-1}``)."""
        outputs, states, _ = self._run(x, lengths, hidden)
        return outputs, states

    def _run(
        self, x: torch.Tensor, lengths: torch.Tensor | None, hidden: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """``unroll``'s outputs and states, and the hidden state after the last step."""
        x = self.encode(x)  # (batch, seq, features)
        batch, seq_len, _ = x.shape
        if hidden is None:
            hidden = x.new_zeros(batch, self.hidden_size)
        outputs, states = [], []
        for t in range(seq_len):
            states.append(hidden)
            out, new_hidden = self.cell(x[:, t], hidden)
            if lengths is not None and self.output_mode == "last":
                # freeze finished sequences so the final state is the one at their last valid step
                keep = (t < lengths.to(x.device)).unsqueeze(1)
                new_hidden = torch.where(keep, new_hidden, hidden)
                out = torch.where(keep, out, outputs[-1]) if outputs else out
            hidden = new_hidden
            outputs.append(out)
        return outputs, states, hidden

    carries_state = True  # ``carry`` continues a text from a state

    def carry(
        self, x: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-probabilities at every step of ``x`` read on from ``hidden`` (None: zeros),
        (batch, seq, output), and the hidden state after the last step (batch, hidden)."""
        outputs, _, hidden = self._run(x, None, hidden)
        return torch.stack(outputs, dim=1), hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        outputs, _ = self.unroll(x, lengths)
        if self.output_mode == "sequence":
            return torch.stack(outputs, dim=1)  # (batch, seq, output)
        return outputs[-1]  # (batch, output)
