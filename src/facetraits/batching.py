"""Walking rows a batch at a time: the one loop that keeps memory to one batch (images from a memory map, model
inputs, MLflow log calls) whatever the number of rows."""

from __future__ import annotations

from collections.abc import Iterator


def batches(count: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most `batch_size` covering range(count), in order."""
    for begin in range(0, count, batch_size):
        yield slice(begin, min(begin + batch_size, count))
