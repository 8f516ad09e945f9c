"""Speed options that change how the net runs, never what it computes or saves."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from conftest import QUIET

from rnnlab.evaluate import load_checkpoint
from rnnlab.train import train


def c_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would call (``$CXX``, else g++ or clang++)."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(c_compiler() is None, reason="compile=true on a CPU needs a C++ compiler (g++)")
def test_compile_trains_and_saves_the_same_parameter_names(cfg_factory, tmp_path):
    eager = cfg_factory("data=pattern", "data.n_train=256", "trainer.max_epochs=1", *QUIET)
    compiled = cfg_factory(
        "data=pattern",
        "data.n_train=256",
        "trainer.max_epochs=1",
        "compile=true",
        *QUIET,
        subdir="compiled",
    )
    eager_metrics, compiled_metrics = train(eager), train(compiled)
    a = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    b = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.ckpt")["state_dict"]
    assert list(a) == list(b)
    # same seed, same data: the compiled net computes what the eager one does
    assert compiled_metrics["test/acc"] == pytest.approx(eager_metrics["test/acc"], abs=0.02)
    assert all(torch.isfinite(v).all() for v in b.values())


class _NoBf16Kernel(torch.nn.Module):
    """A net that fails under CPU bf16 autocast the way an LSTM does where oneDNN lacks the kernel."""

    cell = "lstm"

    def forward(self, x, lengths=None):
        if torch.is_autocast_cpu_enabled():
            raise RuntimeError(
                "could not create a primitive descriptor for the LSTM forward propagation "
                "primitive. Run workload with environment variable ONEDNN_VERBOSE=all"
            )
        return x.float().sum(-1)


def test_bf16_on_a_cpu_without_the_kernel_is_one_clear_sentence():
    from types import SimpleNamespace

    from rnnlab.config_checks import check_precision
    from rnnlab.errors import RnnlabError

    net, dims = _NoBf16Kernel().train(), SimpleNamespace(vocab_size=None, input_size=4)
    with pytest.raises(RnnlabError) as e:
        check_precision("bf16-mixed", "cpu", net, dims)
    message = str(e.value)
    assert message.startswith("trainer.precision=bf16-mixed can not run the LSTM on this CPU")
    assert "ONEDNN_VERBOSE" not in message and message.endswith("or a GPU")
    assert net.training  # the probe leaves the net as it found it
    check_precision("32-true", "cpu", net, dims)  # full precision: no probe
    check_precision("bf16-mixed", "cuda", net, dims)  # GPU: not probed here


def test_bf16_probe_passes_a_net_that_runs_and_draws_no_random_numbers():
    from types import SimpleNamespace

    from rnnlab.config_checks import check_precision
    from rnnlab.nets import RecurrentNet

    net = RecurrentNet(3, "gru", vocab_size=10, hidden_size=8, dropout=0.5, num_layers=2)
    state = torch.get_rng_state()
    check_precision("bf16-mixed", "cpu", net, SimpleNamespace(vocab_size=10, input_size=None))
    assert torch.equal(state, torch.get_rng_state()) and net.training
