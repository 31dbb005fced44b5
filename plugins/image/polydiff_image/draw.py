"""Pictures of sampling trajectories: one row per image, one column per step (the x0 estimates)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from . import io as image_io
from .encoder import from_tensor


def draw_frames(encoder, frames: Sequence[torch.Tensor], cond, path, titles: Optional[List[str]] = None,
                max_rows: int = 8) -> Path:
    """A PNG grid of ``frames`` (a list of [B, C, H, W] batches, one per step): row i shows image i's
    estimates from the first step (left) to the final sample (right); at most ``max_rows`` rows."""
    if not frames:
        raise ValueError("no frames to draw")
    rows = min(int(frames[0].shape[0]), max_rows)
    tiles = []
    for i in range(rows):
        tiles += [from_tensor(f[i]) for f in frames]
    side = tiles[0].shape[0]
    return image_io.write_png(path, image_io.grid(tiles, cols=len(frames), scale=max(1, 64 // side)))
