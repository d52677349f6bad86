"""Callbacks that tests load into a CLI run (``+callbacks.NAME._target_=probes.X``) to see
what each process of a distributed run did. Not collected by pytest (no ``test_`` prefix)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch


def image_digest(image_chw_uint8: torch.Tensor) -> str:
    return hashlib.sha1(image_chw_uint8.contiguous().numpy().tobytes()).hexdigest()


class ShardProbe(L.Callback):
    """Records a digest of every training image this rank sees, as the source's uint8 pixels.

    Undoing the normalization (with ``aug=none``) gives back the stored image whatever the
    loader, so the digests can be matched against the dataset's own arrays.
    """

    def __init__(self, out_dir: str, mean: list[float], std: list[float]) -> None:
        self.out_dir = Path(out_dir)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.digests: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images = batch[0].detach().cpu() * self.std + self.mean
        pixels = (images * 255).round().clamp(0, 255).to(torch.uint8)
        self.digests.extend(image_digest(p) for p in pixels)

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size}
        record["digests"] = self.digests
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class SlowFitStart(L.Callback):
    """Half a second in on_fit_start, like a model summary's example forward or a preview."""

    def on_fit_start(self, trainer, pl_module) -> None:
        import time

        time.sleep(0.5)
