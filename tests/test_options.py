"""Speed options that change how the net runs, never what it computes or saves."""

from __future__ import annotations

import pytest
import torch

from rnnlab.evaluate import load_checkpoint
from rnnlab.train import train

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.mark.slow
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
