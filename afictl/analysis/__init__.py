"""The paper's analyses on trained checkpoints (section 4.2, Figures 2, 3 and 6).

- :mod:`.gradcam`: Grad-CAM heatmaps and the attention area (Figure 3);
- :mod:`.selectivity`: class selectivity index per channel (Morcos et al. 2018; Figure 6);
- :mod:`.features`: an AFI module's inputs, output and weights S~ (Figure 2, Eq. 2 and 8);
- :mod:`.runs`: which checkpoints to use when none is named (the newest run and its counterpart);
- :mod:`.plots`: the figures (matplotlib, Agg).
"""

from .features import AFIFeatures, run_features
from .gradcam import CamResult, GradCamReport, attention_area, run_gradcam
from .runs import default_checkpoints, find_runs
from .selectivity import SelectivityResult, run_selectivity, selectivity_index

__all__ = [
    "AFIFeatures",
    "CamResult",
    "GradCamReport",
    "SelectivityResult",
    "attention_area",
    "default_checkpoints",
    "find_runs",
    "run_features",
    "run_gradcam",
    "run_selectivity",
    "selectivity_index",
]
