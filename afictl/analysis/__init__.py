"""The paper's analyses on trained checkpoints (section 4.2, Figures 2, 3 and 6).

- :mod:`.gradcam`: Grad-CAM heatmaps and the attention area (Figure 3); :mod:`.cam_methods`:
  the CAM methods' names (light: no torch);
- :mod:`.selectivity`: class selectivity index per channel (Morcos et al. 2018; Figure 6);
- :mod:`.features`: an AFI module's inputs, output and weights S~ (Figure 2, Eq. 2 and 8);
- :mod:`.runs`: which checkpoints to use when none is named (the newest run and its counterpart);
- :mod:`.plots`: the figures (matplotlib, Agg); :mod:`.labels`: numbers as people read them.

The names below are imported on first use (PEP 562), so that importing a light submodule such
as :mod:`.cam_methods` (``afictl gradcam --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AFIFeatures": "features",
    "run_features": "features",
    "CamResult": "gradcam",
    "GradCamReport": "gradcam",
    "attention_area": "gradcam",
    "run_gradcam": "gradcam",
    "default_checkpoints": "runs",
    "find_runs": "runs",
    "SelectivityResult": "selectivity",
    "run_selectivity": "selectivity",
    "selectivity_index": "selectivity",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
