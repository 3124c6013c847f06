"""The one batch loop."""

from __future__ import annotations

import pytest

from facetraits.batching import batches


@pytest.mark.parametrize(("count", "size"), [(0, 4), (3, 4), (8, 4), (9, 4)])
def test_batches_cover_every_row_once_in_order(count: int, size: int) -> None:
    parts = list(batches(count, size))
    assert [row for part in parts for row in range(count)[part]] == list(range(count))
    assert all(0 < part.stop - part.start <= size for part in parts)
