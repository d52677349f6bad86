"""The five seed architectures: exact sizes, logits, multiply-adds and receptive fields."""

from __future__ import annotations

import pytest
import torch
import torchinfo
from torch import nn

from cifar_lightning.models.depthwise import DepthwiseNet
from cifar_lightning.run.config import build, compose_config
from cifar_lightning.tools.summary import receptive_field
from cifar_lightning.training.architectures import (
    DepthwiseClassifier,
    MediumCNNClassifier,
    ResNet9Classifier,
    SimpleCNNClassifier,
    VGGClassifier,
)

# name: (class, trainable parameters from the spec)
SEED_MODELS = {
    "simple_cnn": (SimpleCNNClassifier, 399_274),
    "medium_cnn": (MediumCNNClassifier, 2_791_434),
    "vgg": (VGGClassifier, 34_749_002),
    "depthwise": (DepthwiseClassifier, 82_474),
    "resnet9": (ResNet9Classifier, 6_573_120),
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: cls() for name, (cls, _) in SEED_MODELS.items()}


@pytest.mark.parametrize("name", SEED_MODELS)
def test_exact_parameter_count(models, name):
    assert models[name].num_parameters == SEED_MODELS[name][1]


@pytest.mark.parametrize("name", SEED_MODELS)
def test_outputs_one_logit_per_class(models, name):
    model = models[name].eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


@pytest.mark.parametrize("name", SEED_MODELS)
def test_model_option_builds_the_seed_class(name):
    """`model=NAME` reaches the right class, with the architecture's own defaults."""
    model = build(compose_config([f"model={name}"]).model, "model")
    assert type(model) is SEED_MODELS[name][0]
    assert model.num_parameters == SEED_MODELS[name][1]


def test_num_classes_reaches_every_head():
    for cls, _ in SEED_MODELS.values():
        with torch.no_grad():
            model = cls(class_names=["a", "b", "c", "d"]).eval()
            assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize(("name", "mult_adds"), [("simple_cnn", 22.36e6), ("depthwise", 19.87e6)])
def test_multiply_adds_match_the_seed_readmes(models, name, mult_adds):
    """Seeds 000 and 003 printed torchinfo's total; same tool, same net, same figure."""
    stats = torchinfo.summary(models[name].net, input_size=(1, 3, 32, 32), verbose=0)
    assert stats.total_mult_adds == pytest.approx(mult_adds, abs=0.005e6)


def test_resnet9_adds_its_residual_branch_without_a_relu_after():
    net = ResNet9Classifier().net.eval()
    residual = net.layer1[1]
    x = torch.randn(1, 128, 16, 16)
    with torch.no_grad():
        assert torch.allclose(residual(x), x + residual.body(x))
    # No bias anywhere: BatchNorm follows every conv, and the seed's linear layer had none.
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear))


# --- receptive field ------------------------------------------------------------------------


def test_depthwise_receptive_field_is_25():
    """3, 5 | 7, 9 | 13, 21 (dilated) | 25, 25 — see depthwise.py for the README's 47."""
    rf = receptive_field(DepthwiseClassifier().net)
    assert rf.size == 25 and rf.jump == 4
    assert [layer.rf for layer in rf.layers if layer.kernel > 1] == [3, 5, 7, 9, 13, 21, 25]


def test_depthwise_receptive_field_agrees_with_a_gradient_probe():
    """Independent check: which input pixels can move one unit of C4's output at all?

    With positive weights, zero biases and a positive input every ReLU passes its gradient,
    so the nonzero gradient marks exactly the receptive field; the input is large enough
    that no border clips it.
    """
    net = DepthwiseNet().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(0.1)
                m.bias.zero_()
    trunk = nn.Sequential(net.c1, net.c2, net.c3, net.c4)
    x = torch.ones(1, 3, 96, 96, requires_grad=True)
    out = trunk(x)
    centre = out.shape[-1] // 2
    out[0, 0, centre, centre].backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 25 and cols.max() - cols.min() + 1 == 25


@pytest.mark.parametrize(
    ("name", "size"),
    # conv/pool chains: e.g. simple_cnn 3,5,6,10,12,20,24,40,48; resnet9 follows the residual
    # branches (the longest path) and ends with its 4x4 max-pool.
    [("simple_cnn", 48), ("medium_cnn", 24), ("vgg", 36), ("resnet9", 88)],
)
def test_receptive_fields_of_the_other_nets(models, name, size):
    assert receptive_field(models[name].net).size == size


def test_receptive_field_leaves_the_net_as_it_was(models):
    net = models["depthwise"].net.train()
    receptive_field(net)
    assert net.training
    assert not any(m._forward_hooks for m in net.modules())
