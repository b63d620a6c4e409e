"""An exponential moving average of the weights (timm's ``--model-ema``/``--model-ema-decay``).

Built on :class:`torch.optim.swa_utils.AveragedModel` with
:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn` and ``use_buffers=True``, as torchvision's
classification reference (``references/classification/utils.py``,
``ExponentialMovingAverage``) does: the BatchNorm running statistics are averaged with the
weights, so the averaged network is evaluated as it is, without recomputing them.

With weights ``w_1, w_2, ...`` after optimizer steps 1, 2, ... the average after ``k`` updates
is::

    e_1 = w_1                                  (AveragedModel's first update copies)
    e_k = decay * e_{k-1} + (1 - decay) * w_k  (k > 1)

so the initial weights ``w_0`` do not enter (timm's ``ModelEmaV2`` starts from ``w_0`` and
decays from the first update: the two differ by ``decay^k (w_1 - w_0)``, which vanishes).
Integer buffers (BatchNorm's ``num_batches_tracked``) are copied, not averaged: an average
rounded to an integer would stay stuck (timm's ``ModelEmaV3`` copies them too).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .options import DEFAULTS

__all__ = ["DEFAULT_EMA_DECAY", "ModelEma", "unwrap_model"]

#: timm train.py's ``--model-ema-decay`` default, applied every step (torchvision's reference
#: defaults to 0.99998 every 32 steps, rescaled by batch size and epochs); declared in options.
DEFAULT_EMA_DECAY = DEFAULTS["model_ema_decay"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under ``torch.compile`` (``_orig_mod``) and DDP/DataParallel
    (``.module``) wrappers, in any nesting."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


class ModelEma(AveragedModel):
    """EMA of a model's parameters and buffers; ``.module`` is the averaged network.

    ``state_dict()`` holds ``n_averaged`` and the averaged ``module.*`` tensors;
    ``load_state_dict`` restores them exactly, so a resumed run continues the same average.
    The copy does not require gradients (it is never trained).
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = DEFAULT_EMA_DECAY,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], not {decay}")
        super().__init__(
            unwrap_model(model),
            device=device,
            multi_avg_fn=get_ema_multi_avg_fn(decay),
            use_buffers=True,
        )
        self.decay = decay
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (wrapped or not) into the average; call it
        after every optimizer step."""
        source = unwrap_model(model)
        self.update_parameters(source)
        for mine, theirs in zip(self.module.buffers(), source.buffers(), strict=True):
            if not (mine.is_floating_point() or mine.is_complex()):
                mine.copy_(theirs)
