"""Detect objects with torchvision's Faster R-CNN on an AFI-ResNet-50 + FPN backbone.

    python examples/detect_with_afi_fpn.py                 # one training step, one inference
    python examples/detect_with_afi_fpn.py --steps 20 --arch resnet50

The backbone is `create_model(arch, features_only=True, out_indices=...)`: the stages' feature
maps, with `feature_info` giving their channels; torchvision's public
`FeaturePyramidNetwork` (+ `LastLevelMaxPool`) makes them five 256-channel levels, which is
what `FasterRCNN` expects of a backbone with an `out_channels` attribute. The image is
generated (two coloured boxes on noise), and the sizes are small so that it runs on a CPU in
seconds. To start from trained weights, load them into `create_model(arch)` first and wrap it:
`FeatureNet(model, out_indices)`.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from afictl.models import FeatureNet, create_model


class AFIFPNBackbone(nn.Module):
    """Stage feature maps -> FPN levels ``"0".."3"`` and ``"pool"`` (``out_channels`` each)."""

    def __init__(self, body: FeatureNet, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            body.feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.body(x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def build_detector(arch: str, num_classes: int, size: int) -> FasterRCNN:
    """Faster R-CNN on ``arch``'s four stages (C2..C5 for an ImageNet ResNet), small settings."""
    body = create_model(arch, features_only=True, out_indices=(0, 1, 2, 3))
    cfg = body.pretrained_cfg  # the backbone's own normalisation
    return FasterRCNN(
        AFIFPNBackbone(body),
        num_classes=num_classes,
        min_size=size,
        max_size=size,
        image_mean=list(cfg["mean"]),
        image_std=list(cfg["std"]),
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=50,
        box_batch_size_per_image=64,
        box_detections_per_img=20,
        box_score_thresh=0.0,  # a few steps in, every box is a low-score guess: show them
    )


def make_image(size: int, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """A noisy image in [0, 1] with a red box (class 1) and a blue box (class 2)."""
    image = torch.rand(3, size, size, generator=generator) * 0.3
    boxes = torch.tensor([[0.1, 0.15, 0.45, 0.5], [0.5, 0.45, 0.9, 0.85]], dtype=torch.float32).mul(
        size
    )
    for (x0, y0, x1, y1), channel in zip(boxes.int().tolist(), (0, 2), strict=True):
        image[channel, y0:y1, x0:x1] = 0.9
    return image, {"boxes": boxes, "labels": torch.tensor([1, 2])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="afi_resnet50", help="an ImageNet model of afictl")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--steps", type=int, default=1, help="training steps before the inference")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = build_detector(args.arch, num_classes=3, size=args.size)  # background + 2
    image, target = make_image(args.size, generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    model.train()
    for step in range(args.steps):
        losses = model([image], [target])
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        print(f"step {step + 1}: loss {total.item():.4f}")
    model.eval()
    with torch.no_grad():
        (detections,) = model([image])
    print(f"{len(detections['boxes'])} detections; scores {detections['scores'][:3].tolist()}")
    return {
        "losses": {k: v.item() for k, v in losses.items()},
        "detections": detections,
        "channels": model.backbone.body.feature_info.channels(),
    }


if __name__ == "__main__":
    main()
