"""One export, from a registered name (random weights) or any checkpoint to any format: the
entry ``afictl export`` calls. It picks the writer: :func:`afictl.export.export_model` for
ONNX and ``.pt2`` (traced, verified), :func:`afictl.weights.export_safetensors` for weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .errors import UserError
from .export import ExportResult, export_model, infer_format, require_onnx

__all__ = ["export"]


def _source_model(
    arch: str | None,
    checkpoint: str | Path | None,
    num_classes: int | None,
    model_options: dict[str, Any],
) -> tuple[nn.Module, dict[str, Any] | None, str]:
    """The model to export (eval mode), the checkpoint it came from (None: random weights of
    ``arch`` built with ``model_options``) and its architecture."""
    from .models import create_model

    if checkpoint is None:
        model = create_model(arch, num_classes=num_classes, **model_options)
        return model.eval(), None, arch
    if num_classes is not None or model_options:
        raise UserError(
            "--num-classes and the model options apply to --arch only: a checkpoint has its own"
        )
    from .checkpoint import model_from_checkpoint

    model, ckpt = model_from_checkpoint(checkpoint, arch=arch)
    return model, ckpt, ckpt["arch"]


def export(
    output: str | Path | None = None,
    *,
    arch: str | None = None,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    input_size: int | None = None,
    format: str | None = None,
    model_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> ExportResult:
    """Export a registered architecture (random weights) or a checkpoint (an afictl one, a plain
    state dict of ``arch`` or a ``.safetensors`` file); see :func:`export_model` and
    :func:`afictl.weights.export_safetensors`.

    ``input_size`` defaults to the checkpoint's training resolution, else the registry's (32 or
    224); ``model_options`` build ``arch`` (afictl/model_options.py). ``output`` defaults to
    ``./<arch>.<format>`` (format default: onnx). Every file carries
    :func:`afictl.weights.model_config` (preprocessing, class names). ``progress(stage)`` is
    called as each stage begins (``loading``, then :func:`export_model`'s, or ``writing``).
    """
    if checkpoint is None and arch is None:
        raise UserError("give --arch NAME (random weights) or --checkpoint FILE")
    stage = kwargs.get("progress") or (lambda name: None)
    stage(f"loading {checkpoint or arch}")  # the imports too: a second or more
    from .models import get_model_info
    from .weights import export_safetensors, model_config

    if output is not None:
        format = infer_format(output, format)
    format = format or "onnx"
    if format == "onnx":
        require_onnx()  # before building anything
    model, ckpt, arch = _source_model(arch, checkpoint, num_classes, model_options or {})
    ckpt = ckpt or {"model_kwargs": model_options}
    config = ckpt.get("config") or {}
    recorded = config.get("input_size") or ckpt.get("input_size")
    size = input_size or int(recorded or get_model_info(arch).input_size)
    metadata = model_config(
        arch,
        ckpt.get("num_classes") or num_classes or get_model_info(arch).num_classes,
        model_kwargs=ckpt.get("model_kwargs"),
        dataset=config.get("dataset"),
        input_size=size,
        class_names=ckpt.get("class_names"),
    )
    output = Path(output) if output is not None else Path(f"{arch}.{format}")
    if format == "safetensors":
        run = ckpt if ckpt.get("source") is None and ckpt.get("config") else None
        stage(f"writing {output}")
        return export_safetensors(
            model, output, metadata, checkpoint=run, verify=kwargs.get("verify", True)
        )
    return export_model(
        model, output, format=format, input_size=size, arch=arch, metadata=metadata, **kwargs
    )
