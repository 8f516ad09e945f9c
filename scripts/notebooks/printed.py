"""The five source notebooks' printed numbers next to the same numbers computed with rnnlab.

Each ``seed_XXX()`` rebuilds one notebook's models with rnnlab's nets and returns a ``SeedCheck``:
rows of (quantity, what the notebook printed, what rnnlab computes, written to the printed digits).
``scripts/seeds.py`` prints them; the tests assert the same numbers one by one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rnnlab.nets import CellStack, NumpyRNN, RecurrentNet, UnrolledNet, rnn_forward

NUMBER = re.compile(r"-?\d+\.\d*(?:e[-+]?\d+)?|-?\d+")
TOLERANCE = 1e-6  # for the identities rnnlab adds (cells against fused layers, NumPy against torch)


@dataclass(frozen=True)
class Row:
    """One printed quantity: the notebook's text, rnnlab's text, and whether they agree."""

    quantity: str
    notebook: str
    rnnlab: str
    agrees: bool


@dataclass
class SeedCheck:
    """One notebook: its rows and the notes a reader needs to interpret them."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return all(row.agrees for row in self.rows)

    def number(self, quantity: str, printed: str, value: float | Sequence[float]) -> None:
        """A row for numbers printed with fixed digits: rnnlab's values written the same way."""
        text = like_printed(printed, value)
        self.rows.append(Row(quantity, printed, text, text == printed))

    def shape(self, quantity: str, printed: str, shape: Sequence[int]) -> None:
        """A row for a printed shape, ``torch.Size([3, 2, 7])`` or ``[1, 15, 1]``."""
        text = str(torch.Size(shape)) if printed.startswith("torch.Size") else str(list(shape))
        self.rows.append(Row(quantity, printed, text, text == printed))

    def identity(self, quantity: str, a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray):
        """A row for an equality rnnlab adds (not printed in the notebook): max |a - b| <= 1e-6."""
        diff = max_abs_diff(a, b)
        self.rows.append(Row(quantity, "(equal)", f"max |diff| {diff:.1e}", diff <= TOLERANCE))

    def fact(self, quantity: str, notebook: str, rnnlab: str, agrees: bool) -> None:
        self.rows.append(Row(quantity, notebook, rnnlab, agrees))


def like_printed(printed: str, value: float | Sequence[float]) -> str:
    """``value`` (one number or several) written into ``printed``'s layout, digit for digit.

    Every number in ``printed`` is replaced by the matching value rounded to the same number of
    decimals (``0.`` stays ``0.``), so equal strings mean equal to the printed digits.
    """
    values = iter(np.asarray(value, dtype=np.float64).reshape(-1).tolist())

    def write(match: re.Match) -> str:
        token = match.group(0)
        decimals = len(token.split(".", 1)[1]) if "." in token else 0
        v = next(values)
        text = f"{v:.{decimals}f}"
        if float(text) == 0.0:
            text = text.lstrip("-")  # torch and NumPy print a rounded -0 as 0
        return text + "." if token.endswith(".") else text

    text = NUMBER.sub(write, printed)
    if next(values, None) is not None:
        raise ValueError(f"more values than numbers in {printed!r}")
    return text


def max_abs_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = torch.as_tensor(np.asarray(a.detach() if isinstance(a, torch.Tensor) else a))
    b = torch.as_tensor(np.asarray(b.detach() if isinstance(b, torch.Tensor) else b))
    if a.shape != b.shape:
        return math.inf
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def fused_params(net: RecurrentNet) -> dict[str, np.ndarray]:
    """The fused layer's parameters as NumPy arrays, by ``nn.RNN``'s names."""
    return {k: v.detach().double().numpy() for k, v in net.rnn.named_parameters()}


# ---------------------------------------------------------------------------------------- 000


SEED_000_WEIGHTS = dict(
    w_cell_state=np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]),
    b_cell=np.array([0.1, -0.1]),
    w_output=np.array([1.0, 2.0]),
    b_output=0.1,
)


def seed_000() -> SeedCheck:
    """The NumPy demo loop, and nn.RNN(10, 20, num_layers=2)'s parameter and output shapes."""
    check = SeedCheck("000_f984341123f23219", "RNN demo in NumPy, then nn.RNN")
    reference = NumpyRNN(**SEED_000_WEIGHTS)
    states, outputs = reference.run([1, 2])
    printed_states = ["[0.53704957 0.46211716]", "[0.85973818 0.88366641]"]
    printed_outputs = ["1.561283881518055", "2.727071008233731"]
    for t in range(2):
        check.number(f"state_{t} (NumpyRNN)", printed_states[t], states[t])
        check.number(f"output_{t} (NumpyRNN)", printed_outputs[t], outputs[t])

    # the same weights in an nn.RNNCell + nn.Linear, and in rnnlab's model=rnn / model=rnn_cell
    cell, head = reference.to_rnn_cell()
    x = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)  # (batch 1, seq 2, input 1)
    with torch.no_grad():
        h = torch.zeros(1, 2, dtype=torch.float64)
        for t in range(2):
            h = cell(x[:, t], h)
            check.number(f"state_{t} (nn.RNNCell)", printed_states[t], h[0])
            check.number(f"output_{t} (nn.RNNCell + Linear)", printed_outputs[t], head(h)[0])
        for model, unrolled in (("rnn", False), ("rnn_cell", True)):
            net = reference.to_net(unrolled=unrolled)
            out = net(x)[0, :, 0]  # (seq,)
            for t in range(2):
                check.number(f"output_{t} (model={model})", printed_outputs[t], out[t])

    fused = RecurrentNet(output_size=1, cell="rnn", input_size=10, hidden_size=20, num_layers=2)
    cells = UnrolledNet(output_size=1, cell="rnn", input_size=10, hidden_size=20, num_layers=2)
    for layer, printed in (
        (0, "(torch.Size([20, 10]), torch.Size([20, 20]), torch.Size([20]))"),
        (1, "(torch.Size([20, 20]), torch.Size([20, 20]), torch.Size([20]))"),
    ):
        rnn = fused.rnn
        shapes = tuple(
            getattr(rnn, f"{k}_l{layer}").shape for k in ("weight_ih", "weight_hh", "bias_hh")
        )
        check.fact(
            f"layer {layer} weight_ih, weight_hh, bias_hh (model=rnn)",
            printed,
            str(shapes),
            str(shapes) == printed,
        )
        c = cells.rnn.cells[layer]
        shapes = (c.weight_ih.shape, c.weight_hh.shape, c.bias_hh.shape)
        check.fact(
            f"layer {layer} the same (model=rnn_cell)", printed, str(shapes), str(shapes) == printed
        )

    stack = CellStack("rnn", input_size=10, hidden_size=20, num_layers=2)  # (seq, batch, input)
    x, h_0 = torch.randn(100, 32, 10), torch.randn(2, 32, 20)
    with torch.no_grad():
        output, h_n = stack(x, h_0)
        fused_output, fused_h_n = stack.to_fused()(x, h_0)
    check.shape("output.shape (CellStack, seq first)", "torch.Size([100, 32, 20])", output.shape)
    check.shape("h_n.shape", "torch.Size([2, 32, 20])", h_n.shape)
    check.identity("CellStack output = nn.RNN output, same weights", output, fused_output)
    check.identity("CellStack h_n = nn.RNN h_n", h_n, fused_h_n)
    check.notes.append(
        "The tutorial class RNN (i2h, i2o, LogSoftmax) is rnnlab.nets.CharRNNCell (model=char_rnn)."
    )
    check.notes.append(
        "The notebook's inputs for nn.RNN are unseeded torch.randn: only their shapes are printed."
    )
    return check


# ---------------------------------------------------------------------------------------- 001


class Seed001Net(nn.Module):
    """The notebook's Net, as written there: nn.RNN with N(0, 0.001) weights, a per-step head."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, num_classes: int):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.rnn = nn.RNN(input_size, hidden_size, num_layers, batch_first=False)
        for p in self.rnn.parameters():
            nn.init.normal_(p, mean=0.0, std=0.001)
        self.linear = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h0 = torch.zeros(self.num_layers, x.size(1), self.hidden_size)
        out, hidden = self.rnn(x, h0)  # (seq, batch, hidden)
        out = self.linear(out.view(-1, self.hidden_size)).unsqueeze(dim=0)  # (1, seq*batch, 1)
        return out, hidden


def seed_001_net(seed: int | None = None) -> RecurrentNet:
    """Seed 001's model in rnnlab: 2-layer nn.RNN 4 -> 2, N(0, 0.001) init, a head at every step."""
    if seed is not None:
        torch.manual_seed(seed)
    return RecurrentNet(
        output_size=1,
        cell="rnn",
        input_size=4,
        hidden_size=2,
        num_layers=2,
        output_mode="sequence",
        init="normal",
        init_std=0.001,
    )


def seed_001() -> SeedCheck:
    """Output [1, 15, 1] (seq 3 x batch 5, flattened seq-major) and hidden [2, 5, 2]."""
    check = SeedCheck("001_0621f71920f38f6d", "nn.RNN with a per-step linear head")
    net = seed_001_net(seed=0)
    x = torch.ones(5, 3, 4)  # rnnlab nets are batch first: (batch 5, seq 3, input 4)
    with torch.no_grad():
        out = net(x)  # (batch, seq, 1)
        _, hidden = net.features(x)
    flat = out.transpose(0, 1).reshape(1, -1, 1)  # (1, seq*batch, 1), the notebook's view
    check.shape(
        "output.shape (seq-major, as the notebook's view)", "torch.Size([1, 15, 1])", flat.shape
    )
    check.shape("hidden.shape", "torch.Size([2, 5, 2])", hidden.shape)

    torch.manual_seed(0)
    theirs = Seed001Net(4, 2, 2, 1)
    with torch.no_grad():
        their_out, their_hidden = theirs(torch.ones(3, 5, 4))
    params = torch.cat([p.flatten() for p in net.rnn.parameters()])
    their_params = torch.cat([p.flatten() for p in theirs.rnn.parameters()])
    check.identity("same seed: rnn parameters = the notebook Net's", params, their_params)
    check.identity("same seed: output = the notebook Net's", flat, their_out)
    check.identity("same seed: hidden = the notebook Net's", hidden, their_hidden)
    check.notes.append(
        "rnnlab: model=rnn model.num_layers=2 model.hidden_size=2 model.init=normal "
        "model.init_std=0.001 (every rnn parameter, biases included, ~ N(0, 0.001)); "
        "seed_001_net() builds it; the head reads every step of a sequence target."
    )
    return check


# ---------------------------------------------------------------------------------------- 002


SEED_002_PARAMS = {
    "weight_ih_l0": "-0.0075",
    "weight_hh_l0": "0.5364",
    "bias_ih_l0": "-0.8230",
    "bias_hh_l0": "-0.7359",
    "weight_ih_l1": "-0.3852",
    "weight_hh_l1": "0.2682",
    "bias_ih_l1": "-0.0198",
    "bias_hh_l1": "0.7929",
    "weight_ih_l2": "-0.0887",
    "weight_hh_l2": "0.2646",
    "bias_ih_l2": "-0.3022",
    "bias_hh_l2": "-0.1966",
}


def seed_002_net() -> RecurrentNet:
    """Seed 002's model in rnnlab: ``torch.manual_seed(0)``, then a 3-layer relu RNN 1 -> 1."""
    torch.manual_seed(0)
    return RecurrentNet(
        output_size=1, cell="rnn", input_size=1, hidden_size=1, num_layers=3, nonlinearity="relu"
    )


def hand_chain(params: dict[str, float], inputs: Sequence[float]) -> list[tuple[float, float]]:
    """Seed 002's hand arithmetic, slip included: x_t enters layer t, whose state feeds layer t+1.

    Returns (pre-activation, relu) per line. This is *not* what a stacked RNN computes (see
    ``rnn_forward``): there every layer runs over every step.
    """
    h, lines = 0.0, []
    for layer, x in enumerate(inputs):
        z = (
            params[f"weight_ih_l{layer}"] * x
            + params[f"weight_hh_l{layer}"] * h
            + params[f"bias_ih_l{layer}"]
            + params[f"bias_hh_l{layer}"]
        )
        h = max(z, 0.0)
        lines.append((z, h))
    return lines


def seed_002() -> SeedCheck:
    """Printed parameters, hn [0, 1.0360, 0], output zeros, and the hand arithmetic's slip."""
    check = SeedCheck("002_1502f32a0ccdd6e9", "3-layer relu nn.RNN(1, 1), torch.manual_seed(0)")
    net = seed_002_net()
    for name, printed in SEED_002_PARAMS.items():
        param = getattr(net.rnn, name)
        check.number(f"{name} {tuple(param.shape)}", printed, param.item())
    data = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1)  # (batch 1, seq 3, input 1)
    with torch.no_grad():
        output, hn = net.features(data)  # (1, 3, 1), (3, 1, 1)
    check.number("hn (layers 0, 1, 2)", "[0.0000, 1.0360, 0.0000]", hn.flatten())
    check.number("output (steps 1, 2, 3)", "[0., 0., 0.]", output.flatten())

    # the formula, step by step: NumPy and the relu RNNCell stack give nn.RNN's numbers
    params = fused_params(net)
    x = data.transpose(0, 1).double().numpy()  # (seq, batch, input)
    np_output, np_hn = rnn_forward(params, x, nonlinearity="relu")
    check.identity("rnn_forward (NumPy formula) output = nn.RNN output", np_output[:, 0], output[0])
    check.identity("rnn_forward h_n = nn.RNN h_n", np_hn, hn)
    cells = UnrolledNet(
        output_size=1, cell="rnn", input_size=1, hidden_size=1, num_layers=3, nonlinearity="relu"
    ).load_recurrent_(net)
    with torch.no_grad():
        cell_output, cell_hn = cells.features(data)
    check.identity("model=rnn_cell (nn.RNNCell x 3, relu) h_n = nn.RNN h_n", cell_hn, hn)
    check.identity("model=rnn_cell output = nn.RNN output", cell_output, output)

    # the notebook's hand arithmetic uses the printed 4-digit weights and truncates its results
    rounded = {k: float(v) for k, v in SEED_002_PARAMS.items()}
    rounded_typo = {**rounded, "bias_hh_l0": -0.7356}  # the notebook writes -0.7356 there
    lines = hand_chain(rounded_typo, [1.0, 2.0, 3.0])
    for i, (printed, (z, _)) in enumerate(zip(("-1.56", "0.0027", "-0.7641"), lines, strict=True)):
        decimals = len(printed.split(".")[1])
        truncated = math.trunc(z * 10**decimals) / 10**decimals
        check.number(
            f"hand line {i + 1}: pre-activation (truncated, as written)", printed, truncated
        )
    two_layers = {k: v for k, v in params.items() if k.endswith(("_l0", "_l1"))}
    layer1_states = rnn_forward(two_layers, x, nonlinearity="relu")[0][:, 0, 0]  # (seq,)
    check.fact(
        "hand line 2 (0.0027) is not layer 1's state: nn.RNN hn[1] differs",
        f"{lines[1][1]:.4f}",
        f"{hn[1].item():.4f}",
        f"{lines[1][1]:.4f}" == "0.0027" and f"{hn[1].item():.4f}" == "1.0360",
    )
    check.notes.append(
        "The hand arithmetic feeds x_1 to layer 0, x_2 to layer 1 and x_3 to layer 2, each reading "
        "the layer below's state as its h_{t-1}: that is not a stacked RNN. nn.RNN (and rnn_forward, "
        "model=rnn_cell) runs every layer over every step; layer l at step t reads layer l-1's "
        "output at step t and its own state at step t-1. Layer 0 stays at 0, so layer 1 sees only "
        "its biases: h = relu(W_hh h + b) = "
        + ", ".join(f"{v:.4f}" for v in layer1_states)
        + ", hence hn[1] = 1.0360, while layer 2 stays at 0."
    )
    check.notes.append("The hand arithmetic also writes bias_hh_l0 as -0.7356 (printed: -0.7359).")
    return check


# ---------------------------------------------------------------------------------------- 003


SEED_003_WEIGHT_IH = [
    [0.0077, 0.1008, 0.1247, 0.0154, -0.0833],
    [0.3569, -0.0952, 0.3412, 0.3544, -0.3669],
    [0.2429, -0.1582, 0.0115, 0.1180, -0.1244],
    [-0.2614, -0.0604, -0.2257, -0.0659, 0.1029],
    [-0.1459, 0.1111, 0.1475, -0.3432, -0.3094],
    [-0.1935, 0.0313, -0.0643, -0.1423, -0.2273],
    [0.0744, -0.0722, -0.3413, -0.3499, -0.1177],
]
SEED_003_WEIGHT_HH = [
    [-0.1566, -0.1068, 0.2955, 0.3457, -0.3213, 0.1127, 0.2691],
    [0.0831, 0.2043, 0.0523, -0.1140, 0.0712, -0.0049, 0.1523],
    [0.0377, 0.0293, -0.3171, 0.1407, -0.0375, 0.0279, 0.0204],
    [0.0438, 0.1344, -0.0286, 0.1958, -0.2138, -0.2879, 0.1420],
    [0.0525, 0.0703, 0.2155, -0.3119, 0.0903, -0.2384, 0.2589],
    [-0.0364, 0.2902, -0.0801, 0.1708, 0.1888, 0.0107, -0.3042],
    [-0.1022, -0.3021, -0.0116, 0.2234, -0.0167, 0.3207, -0.2658],
]
SEED_003_RNN_CELL_OUT = [0.5858, -0.2554, -0.0037, 0.1401, -0.2586, -0.5967, 0.1548]
SEED_003_LSTM_CELL_H = [-0.4472, 0.2017, -0.2630, -0.3902, -0.1862, -0.0136, 0.1125]
SEED_003_LSTM_CELL_C = [-0.7371, 0.4007, -0.4013, -0.5062, -0.3430, -0.0419, 0.4852]


def seed_003() -> SeedCheck:
    """RNNCell / RNN and LSTMCell / LSTM with input 5, hidden 7: shapes, and what the values allow."""
    check = SeedCheck("003_2525c6c6aad059e8", "nn.RNNCell, nn.RNN, nn.LSTMCell, nn.LSTM (5 -> 7)")
    rnn = CellStack("rnn", input_size=5, hidden_size=7)  # seq first, as the notebook
    cell = rnn.cells[0]
    check.fact("the cell", "RNNCell(5, 7)", repr(cell), repr(cell) == "RNNCell(5, 7)")
    for name, printed in (("weight_ih", SEED_003_WEIGHT_IH), ("weight_hh", SEED_003_WEIGHT_HH)):
        shape = tuple(getattr(cell, name).shape)
        rows_cols = f"{len(printed)} x {len(printed[0])}"
        check.fact(
            f"{name} shape",
            rows_cols,
            f"{shape[0]} x {shape[1]}",
            rows_cols == f"{shape[0]} x {shape[1]}",
        )
    bound = 1 / math.sqrt(7)
    largest = max(abs(v) for row in SEED_003_WEIGHT_IH + SEED_003_WEIGHT_HH for v in row)
    check.fact(
        "printed weights lie in torch's init range U(-1/sqrt(7), 1/sqrt(7))",
        f"max |w| {largest:.4f}",
        f"bound {bound:.4f}",
        largest <= bound,
    )
    with torch.no_grad():
        step = cell(torch.rand(1, 5), torch.randn(1, 7))
    check.shape("rnn_cell(Input, Hidden) shape", f"[1, {len(SEED_003_RNN_CELL_OUT)}]", step.shape)

    x, h_0 = torch.rand(3, 2, 5), torch.randn(1, 2, 7)
    with torch.no_grad():
        output, h_1 = rnn(x, h_0)
        fused_output, fused_h_1 = rnn.to_fused()(x, h_0)
    check.shape("Output.size() (RNNCell stack)", "torch.Size([3, 2, 7])", output.shape)
    check.shape("Hidden_1.size()", "torch.Size([1, 2, 7])", h_1.shape)
    check.identity(
        "RNNCell stack = nn.RNN (same weights, output and h_n)",
        torch.cat([output, h_1]),
        torch.cat([fused_output, fused_h_1]),
    )

    lstm = CellStack("lstm", input_size=5, hidden_size=7)
    with torch.no_grad():
        h, c = lstm.cells[0](torch.rand(1, 5), (torch.randn(1, 7), torch.randn(1, 7)))
    check.shape("lstm_cell h shape", f"[1, {len(SEED_003_LSTM_CELL_H)}]", h.shape)
    check.shape("lstm_cell c shape", f"[1, {len(SEED_003_LSTM_CELL_C)}]", c.shape)
    # h = o * tanh(c) with a sigmoid gate o, so the printed pair implies o in (0, 1)
    gate = np.array(SEED_003_LSTM_CELL_H) / np.tanh(np.array(SEED_003_LSTM_CELL_C))
    check.fact(
        "printed h, c satisfy h = o * tanh(c), 0 < o < 1",
        "o = " + " ".join(f"{g:.2f}" for g in gate),
        "all in (0, 1)" if ((gate > 0) & (gate < 1)).all() else "outside (0, 1)",
        bool(((gate > 0) & (gate < 1)).all()),
    )
    x, h_0, c_0 = torch.rand(3, 2, 5), torch.randn(1, 2, 7), torch.randn(1, 2, 7)
    with torch.no_grad():
        output, (h_1, c_1) = lstm(x, (h_0, c_0))
        fused_output, (fused_h_1, fused_c_1) = lstm.to_fused()(x, (h_0, c_0))
    check.shape("LSTM Output.size() (LSTMCell stack)", "torch.Size([3, 2, 7])", output.shape)
    check.shape("H_1.size()", "torch.Size([1, 2, 7])", h_1.shape)
    check.shape("C_1.size()", "torch.Size([1, 2, 7])", c_1.shape)
    check.identity(
        "LSTMCell stack = nn.LSTM (output, h_n, c_n)",
        torch.cat([output, h_1, c_1]),
        torch.cat([fused_output, fused_h_1, fused_c_1]),
    )
    check.notes.append(
        "Weights and inputs are drawn without a seed: their values cannot be reproduced. rnnlab "
        "reproduces the shapes, checks the printed values against what torch could have produced, "
        "and shows its cell stacks equal the fused layers on fresh draws."
    )
    return check


# ---------------------------------------------------------------------------------------- 004


SEED_004_DATASET = [
    [[1.0843, -0.6787, 1.2429, 0.8117]],
    [[-0.0520, 0.4230, 0.1857, 0.3270]],
    [[0.2392, 0.2887, -0.1591, -1.3133]],
]
SEED_004_HIDDEN = [[0.4822, 0.2953], [-0.6670, 0.7566], [-0.8478, 0.8577]]
SEED_004_OUTPUT2 = [[-0.1519, -0.8191], [-0.7748, -0.5136], [-0.8614, -0.9138]]
SEED_004_HIDDEN2 = [-0.8614, -0.9138]


def seed_004() -> SeedCheck:
    """An RNNCell loop and nn.RNN (4 -> 2) on the printed dataset: shapes and equivalence."""
    check = SeedCheck("004_93fba434167eaf6a", "nn.RNNCell loop, nn.RNN, batch_first")
    dataset = torch.tensor(SEED_004_DATASET)  # (seq 3, batch 1, input 4), the printed values
    torch.manual_seed(0)
    stack = CellStack("rnn", input_size=4, hidden_size=2)
    hidden = torch.zeros(1, 2)
    with torch.no_grad():
        steps = []
        for idx, inputs in enumerate(dataset):  # the notebook's loop
            check.shape(f"step {idx}: Input size", "torch.Size([1, 4])", inputs.shape)
            hidden = stack.cells[0](inputs, hidden)
            check.shape(f"step {idx}: outputs size", "torch.Size([1, 2])", hidden.shape)
            steps.append(hidden)
        output, h_n = stack(dataset)
        fused_output, fused_h_n = stack.to_fused()(dataset)
    check.identity("RNNCell loop on the printed dataset = CellStack", torch.stack(steps), output)
    check.identity("CellStack output = nn.RNN output (same weights)", output, fused_output)
    check.identity("CellStack h_n = nn.RNN h_n", h_n, fused_h_n)
    check.shape("Output2 size", "torch.Size([3, 1, 2])", output.shape)
    check.shape("Hidden2 size", "torch.Size([1, 1, 2])", h_n.shape)
    check.fact(
        "printed Output2[-1] = Hidden2 (the last step's output is h_n)",
        f"{SEED_004_OUTPUT2[-1]} vs {SEED_004_HIDDEN2}",
        f"max |diff| {max_abs_diff(output[-1], h_n[0]):.1e}",
        SEED_004_OUTPUT2[-1] == SEED_004_HIDDEN2 and max_abs_diff(output[-1], h_n[0]) == 0.0,
    )
    batch_first = CellStack("rnn", input_size=4, hidden_size=2, batch_first=True)
    with torch.no_grad():
        out3, hidden3 = batch_first(dataset.transpose(0, 1), torch.zeros(1, 1, 2))
        fused_out3, _ = batch_first.to_fused()(dataset.transpose(0, 1), torch.zeros(1, 1, 2))
    check.shape("Output3 size, batch_first (the comment's [1, 3, 2])", "[1, 3, 2]", out3.shape)
    check.shape("Hidden3 size", "[1, 1, 2]", hidden3.shape)
    check.identity("batch_first CellStack = batch_first nn.RNN", out3, fused_out3)
    check.notes.append(
        "The cells' weights are drawn without a seed, so the printed hidden states cannot be "
        "reproduced; rnnlab feeds the printed dataset through its cells and the fused layer."
    )
    return check


SEEDS: dict[str, Callable[[], SeedCheck]] = {
    "000": seed_000,
    "001": seed_001,
    "002": seed_002,
    "003": seed_003,
    "004": seed_004,
}


def render(check: SeedCheck) -> str:
    """One notebook as a readable table: quantity | notebook | rnnlab | agrees."""
    header = ("quantity", "notebook", "rnnlab", "")
    rows = [header] + [
        (r.quantity, r.notebook, r.rnnlab, "ok" if r.agrees else "DIFFERS") for r in check.rows
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"seed {check.name}: {check.title}"]
    for i, row in enumerate(rows):
        lines.append(
            "  "
            + "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
        )
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.extend(f"  note: {n}" for n in check.notes)
    return "\n".join(lines)
