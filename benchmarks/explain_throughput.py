"""Attribution maps per second for each method, on the GPU when there is one.

    python benchmarks/explain_throughput.py --size 64 224 --batch 16

Random-init VGG16-BN with ten attribute heads and random [0, 1] images: the cost of a map depends on
the network and the method's passes (IG: steps, GradientSHAP / SmoothGrad: samples), not on the weights.
The first batch of each method is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from facetraits.config import METHOD_NAMES, ExplainParams
from facetraits.explain.methods import build_method
from facetraits.models.components.backbones import build_backbone
from facetraits.models.components.heads import build_heads
from facetraits.models.components.net import FaceTraitsNet

# the methods that explain any image: region_occlusion needs a prepared face's regions (the explain stage)
IMAGE_METHOD_NAMES = tuple(name for name in METHOD_NAMES if name != "region_occlusion")


def network(size: int, device: torch.device) -> FaceTraitsNet:
    backbone = build_backbone("vgg16_bn", "none", 5, size)
    heads = build_heads("mlp", backbone.feature_dim, 10, 128, 0.0)
    attributes = tuple(f"a{i}" for i in range(10))
    return FaceTraitsNet(backbone, heads, torch.zeros(10), torch.ones(10), attributes, size).eval().to(device)


def maps_per_second(net: FaceTraitsNet, method: str, params: ExplainParams, size: int, batch: int, repeats: int) -> float:
    device = next(net.parameters()).device
    images = torch.rand(batch, 3, size, size, device=device)
    attribution = build_method(method, net, params)
    attribution.maps(images, 0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        attribution.maps(images, 0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs="+", default=[64])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = ExplainParams()
    for size in args.size:
        net = network(size, device)
        for method in IMAGE_METHOD_NAMES:
            rate = maps_per_second(net, method, params, size, args.batch, args.repeats)
            print(json.dumps({"device": device.type, "size": size, "method": method, "batch": args.batch,
                              "ig_steps": params.ig_steps, "shap_samples": params.shap_samples,
                              "noise_samples": params.noise_samples, "maps_per_s": round(rate, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
