"""Random model inputs that the output actually depends on."""
from __future__ import annotations

import numpy as np


def random_video(rng, batch, frames, size=224, cell=32) -> np.ndarray:
    """Random float32 frames [batch, 3, frames, size, size] in [0, 1]: coarse random blocks plus
    pixel noise. Pure pixel noise averages out over the 196 patches the CLS attends to, leaving
    features that barely depend on the input; the blocks give every sample its own large-scale
    content."""
    coarse = rng.random((batch, 3, frames, size // cell, size // cell), dtype=np.float32)
    coarse = coarse.repeat(cell, axis=-2).repeat(cell, axis=-1)
    return 0.6 * coarse + 0.4 * rng.random((batch, 3, frames, size, size), dtype=np.float32)
