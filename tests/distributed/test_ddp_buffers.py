"""Two gloo ranks: BatchNorm's running statistics are rank 0's on every rank after a pass.

The last training batch of an epoch updates each rank's statistics with its own data; kiln
copies rank 0's to every rank at the pass's end, so validation measures rank 0's model, the
one it checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kiln
from tests.distributed import buffers_script, script
from tests.distributed.group import results, run_forked


@pytest.mark.slow
def test_buffers_are_rank_zeros_and_validation_measures_rank_zeros_model(tmp_path: Path) -> None:
    """After fit the buffers are equal; the last val_loss is rank 0's model on all the data."""
    run_forked({"out": str(tmp_path), "epochs": 2}, main=buffers_script.run)
    first, second = results(tmp_path)
    assert first["buffers"], "the model has no buffers: the test checks nothing"
    for key, value in first["buffers"].items():
        assert torch.equal(value, second["buffers"][key]), key
    kiln.seed_everything(0)  # the script's validation data, drawn the same way
    _, val = script.make_data({})
    inputs, targets = val.tensors
    model = buffers_script.make_model()
    model.load_state_dict(first["weights"])
    model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(inputs), targets).item()
    assert first["history"][-1]["val_loss"] == pytest.approx(expected, abs=1e-6)
    assert second["history"][-1]["val_loss"] == first["history"][-1]["val_loss"]
