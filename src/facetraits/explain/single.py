"""One face, one attribute, one method: the heatmap a researcher asks for from the command line."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from facetraits.config import ExplainParams
from facetraits.data.images import load_face
from facetraits.errors import ConfigError
from facetraits.explain.figures import overlay
from facetraits.explain.methods import build_method
from facetraits.figures import save_figure
from facetraits.models.inference import image_tensor, load_net
from facetraits.predict import DEFAULT_MAX_PIXELS


def explain_image_file(
    image: Path, checkpoint: Path, attribute: str, method: str, params: ExplainParams, out: Path
) -> Path:
    """Face and overlay side by side, titled with the predicted rating; the face is squared as `predict` does."""
    net = load_net(checkpoint)
    if attribute not in net.attributes:
        raise ConfigError(
            f"--attribute: '{attribute}' is not predicted by {checkpoint} (it has {list(net.attributes)})"
        )
    face = load_face(Path(image), net.image_size, "pad", DEFAULT_MAX_PIXELS)
    batch = image_tensor(face[None])
    target = net.attributes.index(attribute)
    with torch.no_grad():
        predicted = float(net(batch)[0, target])
    heatmap = build_method(method, net, params).maps(batch, target)[0].numpy()
    figure = Figure(figsize=(5, 2.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.imshow(face)
    right.imshow(overlay(face, heatmap))
    for ax in (left, right):
        ax.set_axis_off()
    figure.suptitle(f"{attribute}: predicted {predicted:.2f} ({method.replace('_', ' ')})", fontsize=9)
    return save_figure(figure, Path(out), dpi=150)
