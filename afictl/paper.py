"""The paper's published numbers, keyed by registry name, for side-by-side comparison.

Parameters are counts; FLOPs follow the paper's convention (thop multiply-accumulates of one
image times the batch size, batch 32). Nothing here is ever printed as a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaperRow", "TABLE2", "TABLES", "paper_row"]


@dataclass(frozen=True)
class PaperRow:
    arch: str
    label: str  # the model's name as printed in the paper
    table: int
    params: float
    flops: float
    top1: float | None = None
    top5: float | None = None


_K, _M, _G = 1e3, 1e6, 1e9

TABLES: dict[int, list[PaperRow]] = {
    # Table 4: CIFAR-100 (accuracy, parameters, FLOPs at batch 32).
    4: [
        PaperRow("resnet32", "ResNet-32", 4, 472.76 * _K, 2.23 * _G, 71.16),
        PaperRow("afi_resnet32", "AFI-ResNet-32", 4, 378.23 * _K, 1.78 * _G, 71.09),
        PaperRow("resnet110", "ResNet-110", 4, 1.74 * _M, 8.17 * _G, 73.73),
        PaperRow("afi_resnet110", "AFI-ResNet-110", 4, 1.35 * _M, 6.23 * _G, 74.03),
        PaperRow("shufflenetv2", "ShuffleNetV2", 4, 0.94 * _M, 1.32 * _G, 70.71),
        PaperRow("afi_shufflenetv2", "AFI-ShuffleNetV2", 4, 0.95 * _M, 1.32 * _G, 72.06),
        PaperRow("mobilenetv2", "MobileNetV2", 4, 2.41 * _M, 3.03 * _G, 75.20),
        PaperRow("afi_mobilenetv2", "AFI-MobileNetV2", 4, 2.25 * _M, 2.67 * _G, 75.94),
        PaperRow("densenet40", "DenseNet-40", 4, 1.06 * _M, 34.48 * _G, 75.58),
        PaperRow("resnext29_32x4d", "ResNeXt-29(32x4d)", 4, 4.87 * _M, 24.95 * _G, 78.44),
        PaperRow("afi_resnext29_32x4d", "AFI-ResNeXt-29(32x4d)", 4, 4.26 * _M, 21.74 * _G, 79.37),
        PaperRow("densenet100", "DenseNet-100", 4, 7.09 * _M, 230.119 * _G, 79.80),
    ],
    # Table 5: ImageNet (top-1, top-5, parameters, FLOPs at batch 32).
    5: [
        PaperRow("resnet50", "ResNet-50", 5, 25.56 * _M, 131.57 * _G, 75.3, 92.2),
        PaperRow("afi_resnet50", "AFI-ResNet-50", 5, 23.85 * _M, 121.72 * _G, 76.19, 92.88),
        PaperRow("resnet101", "ResNet-101", 5, 44.55 * _M, 250.69 * _G, 76.4, 92.9),
        PaperRow("afi_resnet101", "AFI-ResNet-101", 5, 40.75 * _M, 226.91 * _G, 77.72, 93.76),
        PaperRow("resnet152", "ResNet-152", 5, 60.19 * _M, 369.88 * _G, 77.0, 93.3),
        PaperRow("afi_resnet152", "AFI-ResNet-152", 5, 54.67 * _M, 332.24 * _G, 78.24, 93.98),
        PaperRow("mobilenet_v2", "MobileNetV2", 5, 3.51 * _M, 10.46 * _G, 66.09, 87.14),
        PaperRow("afi_mobilenet_v2", "AFI-MobileNetV2", 5, 3.63 * _M, 9.36 * _G, 68.24, 88.54),
        PaperRow("resnext50_32x4d", "ResNeXt-50(32x4d)", 5, 25.03 * _M, 136.30 * _G, 76.08, 92.92),
        PaperRow("afi_resnext50_32x4d", "AFI-ResNeXt-50", 5, 21.84 * _M, 116.61 * _G, 77.16, 93.40),
    ],
}

# Table 2: per-stage parameters and FLOPs (batch 32) of ResNet-32 and AFI-ResNet-32.
TABLE2: dict[tuple[str, str], tuple[float, float]] = {
    ("resnet32", "conv1"): (23.36 * _K, 765.46 * _M),
    ("afi_resnet32", "conv1"): (18.82 * _K, 612.38 * _M),
    ("resnet32", "conv2"): (88.77 * _K, 727.19 * _M),
    ("afi_resnet32", "conv2"): (70.72 * _K, 575.20 * _M),
    ("resnet32", "conv3"): (353.66 * _K, 724.30 * _M),
    ("afi_resnet32", "conv3"): (281.73 * _K, 573.02 * _M),
}


def paper_row(arch: str) -> PaperRow | None:
    """The paper's row for a registry name, if the paper reports one."""
    for rows in TABLES.values():
        for row in rows:
            if row.arch == arch:
                return row
    return None


# Table 3: Office-Home accuracy (%) after fine-tuning on A and testing on B.
OFFICE_HOME_PAIRS = [
    "Ar:Cl",
    "Ar:Pr",
    "Ar:Rw",
    "Cl:Ar",
    "Cl:Pr",
    "Cl:Rw",
    "Pr:Ar",
    "Pr:Cl",
    "Pr:Rw",
    "Rw:Ar",
    "Rw:Cl",
    "Rw:Pr",
]
TABLE3: dict[str, list[float]] = {
    "resnet50": [34.9, 50.0, 58.0, 37.4, 41.9, 46.2, 38.5, 31.2, 60.4, 53.9, 41.2, 59.9],
    "afi_resnet50": [42.0, 64.0, 71.6, 48.2, 56.8, 61.5, 48.5, 36.4, 69.5, 63.7, 45.3, 75.5],
}
TABLE3_AVG = {"resnet50": 46.1, "afi_resnet50": 56.9}

# Table 6: memory (MiB) at batch 64, training and inference.
TABLE6 = {
    "resnet50": {"train_mib": 7447, "infer_mib": 3827},
    "afi_resnet50": {"train_mib": 7001, "infer_mib": 2671},
}

# Table 7: CIFAR-100 top-1 with AFI blocks in one stage only
# ("all" = the full AFI model of Table 4).
TABLE7: dict[str, dict[str, float]] = {
    "resnet32": {"baseline": 71.16, "1": 71.38, "2": 70.63, "3": 70.75},
    "resnet110": {"baseline": 73.73, "1": 75.03, "2": 74.13, "3": 74.02},
}

# Table 8: ImageNet top-1 of AFI-ResNet-50 for reduction ratios r.
TABLE8 = {1: 76.21, 2: 76.21, 4: 76.19, 8: 76.11}

# Table 9: CIFAR-100 top-1 of MobileNetV2 with AFI and an attention module on its result.
TABLE9 = {
    "mobilenetv2": 75.20,
    "afi_mobilenetv2": 75.94,
    "afi_mobilenetv2_se": 76.15,
    "afi_mobilenetv2_ge": 76.22,
    "afi_mobilenetv2_cbam": 76.51,
    "afi_mobilenetv2_eca": 76.76,
}
