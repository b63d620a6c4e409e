"""examples/detect_with_afi_fpn.py: Faster R-CNN + FPN on an AFI-ResNet-50 features_only body."""

import math

import pytest
from scripts import ROOT, load_script

EXAMPLE = ROOT / "examples" / "detect_with_afi_fpn.py"


def test_trains_one_step_and_detects(capsys):
    out = load_script(EXAMPLE).main(["--size", "128", "--steps", "1"])
    assert out["channels"] == [256, 512, 1024, 2048]  # C2..C5 of the AFI-ResNet-50
    assert set(out["losses"]) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert all(math.isfinite(v) for v in out["losses"].values())
    det = out["detections"]
    assert det["boxes"].shape[1:] == (4,) and 0 < len(det["boxes"]) == len(det["scores"]) <= 20
    assert (det["boxes"][:, 2:] <= 128).all() and (det["boxes"] >= 0).all()
    assert set(det["labels"].tolist()) <= {1, 2}
    assert "step 1: loss" in capsys.readouterr().out


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script(EXAMPLE).main(["--help"])
    assert exit_.value.code == 0
    assert "Faster R-CNN" in capsys.readouterr().out
