"""Learning-rate schedules torch does not ship as one piece (``conf/sched/``)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupWarmdown:
    """LR multiplier: linear from ``start`` to 1 over the first ``warmup`` of the run, then
    linear to ``end`` at its last step. A plain class (not a lambda) so that the scheduler's
    state_dict keeps its numbers and a checkpoint restores it."""

    def __init__(self, total_steps: int, warmup: float, start: float, end: float) -> None:
        self.total_steps = total_steps
        self.warmup_steps = max(1, int(total_steps * warmup))
        self.start, self.end = start, end

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start + (1.0 - self.start) * (step / self.warmup_steps)
        frac = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 1.0 + (self.end - 1.0) * min(frac, 1.0)


def warmup_warmdown(
    optimizer: Optimizer,
    total_steps: int,
    warmup: float = 0.23,
    start: float = 0.2,
    end: float = 0.07,
) -> LambdaLR:
    """Every param group's own LR times :class:`WarmupWarmdown` (so per-group LRs keep their
    ratio, unlike one-cycle's single max_lr). ``total_steps`` comes from the Trainer."""
    return LambdaLR(optimizer, WarmupWarmdown(total_steps, warmup, start, end))
