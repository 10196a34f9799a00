"""What a training run shows: a tqdm bar (loss, lr, img/s, ETA), TensorBoard scalars, image grids and the
figures a task draws (e.g. VarFormer's DAE scale weights). Only rank 0 builds any of it; other ranks get a silent
logger.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, Mapping, Optional

import torch
from torchvision.utils import make_grid
from tqdm.auto import tqdm


class TrainLogger:
    def __init__(self, out_dir: Optional[str], total_steps: int, start_step: int = 0, enabled: bool = True,
                 progress: bool = True, desc: str = "train"):
        self.enabled = enabled and out_dir is not None
        self.writer = None
        self.bar = None
        if not self.enabled:
            return
        # imported here: TensorBoard's writer costs a second of start-up, and only rank 0 of a run needs it
        from torch.utils.tensorboard import SummaryWriter
        self.tb_dir = os.path.join(out_dir, "tb")
        self.writer = SummaryWriter(self.tb_dir)
        if progress:
            self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, dynamic_ncols=True,
                            file=sys.stderr, smoothing=0.1)

    # -- progress ------------------------------------------------------------------------------------------------
    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def postfix(self, values: Mapping[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items()},
                                 refresh=False)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    # -- TensorBoard ---------------------------------------------------------------------------------------------
    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(k, float(v), step)

    def image_grid(self, tag: str, columns: Mapping[str, torch.Tensor], step: int, max_rows: int = 4) -> None:
        """One row per image, one column per entry of ``columns`` (e.g. LQ | output | GT), each (B,3,H,W) in [0,1]."""
        if self.writer is None or not columns:
            return
        cols = [c.detach()[:max_rows].float().nan_to_num(0.0).clamp(0, 1).cpu() for c in columns.values()]
        rows = torch.stack(cols, dim=1).flatten(0, 1)  # (rows*cols, 3, H, W), row-major
        grid = make_grid(rows, nrow=len(cols), padding=2, pad_value=1.0)
        self.writer.add_image(tag, grid, step)

    def figure(self, tag: str, fig, step: int) -> None:
        """A matplotlib figure a task made (``TrainTask.figures``), closed after logging."""
        if self.writer is None:
            return
        self.writer.add_figure(tag, fig, step, close=True)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def mean_over_interval(sums: Dict[str, torch.Tensor], count: int) -> Dict[str, float]:
    """Turn device-side running sums into floats: the one host sync of a log step."""
    if count == 0 or not sums:
        return {}
    stacked = torch.stack([v.detach().float() for v in sums.values()]).cpu()
    return {k: float(v) / count for k, v in zip(sums.keys(), stacked)}
