import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from facetraits.explain.figures import heatmap_gallery

TITLE = "trustworthy: integrated gradients (caption: predicted rating)"


@pytest.mark.parametrize("per_role", [1, 2, 5])
def test_every_gallery_text_lies_inside_the_image(per_role) -> None:
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (3 * per_role, 32, 32, 3), dtype=np.uint8)
    roles = [role for role in ("highest", "lowest", "random") for _ in range(per_role)]
    figure = heatmap_gallery(faces, rng.random((3 * per_role, 32, 32)), roles, ["6.21"] * len(roles), TITLE)
    renderer = FigureCanvasAgg(figure).get_renderer()
    image = figure.bbox
    texts = [figure._suptitle, *(t for axes in figure.axes for t in (axes.title, *axes.texts) if t.get_text())]
    assert len(texts) == 1 + len(roles) + 3
    for text in texts:
        extent = text.get_window_extent(renderer)
        inside = image.x0 <= extent.x0 and extent.x1 <= image.x1 and image.y0 <= extent.y0 and extent.y1 <= image.y1
        assert inside, (text.get_text(), extent, image)
    title = figure._suptitle.get_window_extent(renderer)
    assert all(title.y0 >= axes.title.get_window_extent(renderer).y1 for axes in figure.axes)  # above the captions
    assert figure._suptitle.get_text().replace("\n", " ") == TITLE  # wrapped, whole
