"""Our Lightning callbacks; ``conf/callbacks/*.yaml`` turns most on next to Lightning's own."""

from cifar_lightning.training.callbacks.clock import RunClock
from cifar_lightning.training.callbacks.divergence import StopOnNonFiniteLoss
from cifar_lightning.training.callbacks.interrupt import CheckpointOnInterrupt
from cifar_lightning.training.callbacks.resumable import ResumableRun

__all__ = ["CheckpointOnInterrupt", "ResumableRun", "RunClock", "StopOnNonFiniteLoss"]
