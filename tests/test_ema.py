"""EMA of the weights (``ema.*``): the decay's warm-up, and one update of weights and buffers.

Training with it on both loaders: tests/test_mixing.py; its exact resume: tests/test_resume.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from cifar_lightning.training.callbacks.ema import EMAWeights, ema_decay


def test_the_decay_warms_up_to_its_value():
    assert ema_decay(0.999, 0, warmup=True) == pytest.approx(0.1)
    assert ema_decay(0.999, 90, warmup=True) == pytest.approx(91 / 100)
    assert ema_decay(0.999, 10**6, warmup=True) == 0.999  # capped
    assert ema_decay(0.999, 0, warmup=False) == 0.999
    with pytest.raises(ValueError, match="must be in"):
        EMAWeights(decay=1.0)


def test_an_update_averages_weights_and_batchnorm_statistics_and_copies_counters():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = EMAWeights(decay=0.9)
    ema._average_model = AveragedModel(net, use_buffers=True)
    start = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()(torch.randn(8, 3, 8, 8))  # new running statistics, num_batches_tracked = 1
    ema.update(net, decay=0.9)
    averaged = ema._average_model.module.state_dict()
    for name, value in net.state_dict().items():
        if value.is_floating_point():  # weights and running mean/var alike
            expected = 0.9 * start[name] + 0.1 * value
            assert torch.allclose(averaged[name], expected, atol=1e-6), name
        else:
            assert torch.equal(averaged[name], value), name  # copied
    assert int(ema._average_model.n_averaged) == 1
