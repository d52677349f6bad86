"""Our Lightning callbacks; conf/callbacks/*.yaml turns them on next to Lightning's own."""

from cifar_lightning.callbacks.divergence import StopOnNonFiniteLoss
from cifar_lightning.callbacks.interrupt import CheckpointOnInterrupt

__all__ = ["CheckpointOnInterrupt", "StopOnNonFiniteLoss"]
