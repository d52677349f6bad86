"""A speedrun net in the style of airbench94 (Jordan, arXiv 2404.00498), in our terms.

Every choice below trades generality for steps-to-94%:

    Whitening  2x2 conv, 3→24, weights = ± the patch-covariance eigenvectors scaled to unit
               variance, frozen (set from training patches before step one). The first layer
               starts out doing what many epochs of SGD would otherwise learn: decorrelate
               pixels. Its bias trains for the first few epochs only.
    3 groups   conv → maxpool → BN → GELU → conv → BN → GELU, widths 64/256/256.
    Identity   every conv starts as a Dirac (identity) on its first in_channels filters, so
               the deep path starts close to passing its input through.
    BatchNorm  scale frozen at 1, only the bias learns (with its own, larger LR — see
               ``param_groups``); fast-moving running statistics (momentum 0.6 in the
               "keep" convention, i.e. PyTorch momentum 0.4).
    Head       maxpool 3 → linear (no bias) → × 1/9: a small fixed logit scale.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn


def patch_whitening_filters(images: torch.Tensor, kernel: int, eps: float) -> torch.Tensor:
    """Conv filters that whiten ``kernel``x``kernel`` patches of ``images`` (N, C, H, W).

    The (uncentred) second-moment matrix of all patches is eigendecomposed; each eigenvector,
    divided by the square root of its eigenvalue (+eps), is a filter whose response has unit
    variance over the data. Both signs are kept (2·C·k² filters) so that the GELU after it
    loses nothing. Strongest direction first.
    """
    c = images.shape[1]
    patches = images.double().unfold(2, kernel, 1).unfold(3, kernel, 1)  # N,C,H',W',k,k
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)
    second_moment = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(second_moment)  # ascending
    filters = eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
    filters = filters.flip(0).reshape(-1, c, kernel, kernel)
    return torch.cat([filters, -filters]).to(images.dtype)


class BiasOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1: only the shift learns."""

    def __init__(self, channels: int, momentum: float, eps: float = 1e-12) -> None:
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


def identity_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


class ConvGroup(nn.Sequential):
    """Named layers: the optimizer finds the BatchNorm biases by their ``norm`` names, which
    survive Lightning's SyncBatchNorm conversion (the module types do not)."""

    def __init__(self, cin: int, cout: int, bn_momentum: float) -> None:
        super().__init__(
            OrderedDict(
                conv1=identity_conv(cin, cout),
                pool=nn.MaxPool2d(2),
                norm1=BiasOnlyBatchNorm(cout, bn_momentum),
                act1=nn.GELU(),
                conv2=identity_conv(cout, cout),
                norm2=BiasOnlyBatchNorm(cout, bn_momentum),
                act2=nn.GELU(),
            )
        )


class AirbenchNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (64, 256, 256),
        bn_momentum: float = 0.4,
        whiten_kernel: int = 2,
        logit_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        whiten_width = 2 * 3 * whiten_kernel**2
        self.whiten = nn.Conv2d(3, whiten_width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from data, never trained
        w1, w2, w3 = widths
        self.body = nn.Sequential(
            nn.GELU(),
            ConvGroup(whiten_width, w1, bn_momentum),
            ConvGroup(w1, w2, bn_momentum),
            ConvGroup(w2, w3, bn_momentum),
            nn.MaxPool2d(3),
            nn.Flatten(),
        )
        self.head = nn.Linear(w3, num_classes, bias=False)
        self.logit_scale = logit_scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        kernel = self.whiten.kernel_size[0]
        filters = patch_whitening_filters(images.float(), kernel, eps)
        self.whiten.weight.copy_(filters.to(self.whiten.weight))
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.whiten(x))) * self.logit_scale
