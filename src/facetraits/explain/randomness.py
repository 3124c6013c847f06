"""Random draws tied to faces, not to batches: a face's map and scores do not depend on who shares its batch."""

from __future__ import annotations

import numpy as np
import torch


def face_generator(seed: int, key: int, device: torch.device) -> torch.Generator:
    """One face's own random stream, from explain.seed and the face's key (its row in the prepared data).

    Nothing here touches the global torch / numpy generators, so reruns give identical maps and scores.
    """
    state = np.random.SeedSequence([seed, key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))
