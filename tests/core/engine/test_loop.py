"""Early stopping against a hand-made checkpoint sequence, and the device choice."""

import pytest
import torch
from torch import nn

from sparsekit.engine.loop import EarlyStopping
from sparsekit.engine.runtime import resolve_device
from sparsekit.errors import ConfigError


def test_early_stopping_keeps_the_lowest_validation_loss_and_counts_patience():
    model = nn.Linear(2, 1, bias=False)
    stopper = EarlyStopping(patience=2, modules=[model])
    sequence = [(10, 3.0, 1.0), (20, 1.0, 2.0), (30, 1.5, 3.0), (40, 1.0, 4.0)]
    for step, val_loss, weight in sequence:
        with torch.no_grad():
            model.weight.fill_(weight)
        stopper.update(step, val_loss)
    # 1.0 at step 20 is the best; an equal loss later (step 40) is not an improvement.
    assert stopper.best_step == 20 and stopper.best_loss == 1.0
    assert stopper.bad_evals == 2 and stopper.should_stop
    stopper.restore_best()
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))
    assert not EarlyStopping(patience=None, modules=[model]).should_stop


def test_auto_device_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
