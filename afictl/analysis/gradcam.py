"""Grad-CAM heatmaps of one or more checkpoints on the same images (paper section 4.2, Figure 3).

The heatmaps come from pytorch-grad-cam: Grad-CAM by default, or any of the CAM methods in
:data:`~afictl.analysis.cam_methods.METHODS` (each used as a context manager so its hooks are
removed afterwards). The target layer is ``model.feature_layer()`` (the last block of the last
stage) unless a module path is given; FullGrad uses every bias of the network instead. Each
heatmap also gets the paper's "area paid most attention to": the share of the input with
activation above half the maximum.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..checkpoint import model_from_checkpoint
from ..errors import UserError
from ..models import StageError, UnknownModelError
from .cam_methods import CAM_BATCH_SIZE, METHODS, CamMethod, check_target_class, resolve_method
from .inputs import class_name, load_image, model_input, model_view, resolve_class, thumbnail

__all__ = [
    "CAM_BATCH_SIZE",
    "METHODS",
    "CamMethod",
    "CamResult",
    "GradCamReport",
    "attention_area",
    "check_target_class",
    "grad_cam",
    "resolve_layer",
    "resolve_method",
    "run_gradcam",
]


@dataclass
class CamResult:
    """One heatmap: an image seen by one checkpoint."""

    image: str
    checkpoint: str
    arch: str
    predicted_index: int
    predicted_class: str
    probability: float
    target_index: int
    target_class: str
    target_probability: float
    attention_area: float
    layer: str
    method: str
    heatmap: np.ndarray = field(repr=False)  # (S, S) in [0, 1], at the model's input size
    view: np.ndarray = field(repr=False)  # (S, S, 3) in [0, 1]: the input, un-normalised

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("heatmap", "view")}


@dataclass
class GradCamReport:
    """Every heatmap computed, the images in order, and one line per input that failed."""

    results: list[CamResult]
    images: list[str]
    # the photos as read (thumbnails); the figure draws each result's view, the model's input
    originals: dict[str, np.ndarray]
    checkpoints: list[str]
    errors: list[str]
    method: str = "gradcam"
    #: each image's (width, height) as read, before the model's resize or crop
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The method's name in figures and tables (``Grad-CAM``, ``Score-CAM``, ...)."""
        return resolve_method(self.method).title

    def rows(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.results]


def attention_area(heatmap: np.ndarray) -> float:
    """Share of the pixels above half the heatmap's maximum (0 for an all-zero heatmap)."""
    peak = float(np.max(heatmap)) if heatmap.size else 0.0
    if peak <= 0.0:
        return 0.0
    return float(np.mean(heatmap > 0.5 * peak))


def resolve_layer(model: nn.Module, layer: str | None) -> tuple[nn.Module, str]:
    """The Grad-CAM target: ``feature_layer()`` by default, else a module path or a stage name."""
    default = model.feature_layer()
    default_name = next((n for n, m in model.named_modules() if m is default), "feature_layer")
    if layer is None:
        return default, default_name
    # Stage names first: on ResNets ``conv1`` is also the stem's module path, but the paper's
    # (and afictl's) conv1 is the first residual stage.
    try:
        stage = model.resolve_stage(layer)
        return model.get_stage(stage), stage
    except StageError:
        pass
    try:
        return model.get_submodule(layer), layer
    except AttributeError:
        pass
    raise UserError(
        f"--layer {layer!r}: no such module in {getattr(model, 'arch', 'the model')}; "
        f"give a module path such as {default_name} "
        f"or a stage name ({', '.join(model.stage_names)})"
    )


def grad_cam(
    model: nn.Module,
    batch: torch.Tensor,
    layer: nn.Module | None,
    targets: Sequence[int] | None = None,
    *,
    method: str | CamMethod = "gradcam",
    batch_size: int = CAM_BATCH_SIZE,
    progress: Callable[[int], Any] | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Heatmaps (B, S, S) in [0, 1] and the logits (on the CPU), for ``targets`` or the
    predicted classes.

    ``method`` is a :data:`METHODS` name; FullGrad ignores ``layer`` (it may be None). Score-CAM
    and Ablation-CAM run ``batch_size`` masked copies per forward pass, one image at a time; the
    other methods ``batch_size`` images at a time. ``progress(n)`` (optional) is called after
    each ``n`` images. The model is left as it came: same modules, no hooks, same mode.
    """
    spec = resolve_method(method)
    if layer is None and spec.name != "fullgrad":
        raise ValueError(f"{spec.title} needs a target layer")
    # pytorch-grad-cam pulls in scikit-learn and OpenCV (2 s): import it only when a CAM is drawn.
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_targets = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    cam_cls, kwargs = _cam_class(spec, layer, batch_size)
    # Score-CAM and Ablation-CAM loop over the images themselves: one at a time bounds the memory
    # (Score-CAM holds every masked copy of an image) and costs nothing; the others take
    # batch_size images a pass, which bounds the memory of a long list of photos.
    step = 1 if spec.per_channel else max(batch_size, 1)
    training = model.training
    heats, logits = [], []
    try:
        with (
            _quiet_progress(),
            torch.enable_grad() if spec.gradients else torch.no_grad(),
            cam_cls(model=model, **kwargs) as cam,
        ):
            cam.batch_size = batch_size  # Score-CAM reads it if set (else 16)
            for start in range(0, len(batch), step):
                chunk_targets = None if cam_targets is None else cam_targets[start : start + step]
                try:
                    heats.append(
                        cam(input_tensor=batch[start : start + step], targets=chunk_targets)
                    )
                except IndexError as exc:  # the CAM's __exit__ would print and swallow it
                    raise RuntimeError(f"{spec.title} failed: {exc}") from exc
                logits.append(cam.outputs.detach().cpu())  # the model may be on a GPU
                if progress is not None:
                    progress(len(batch[start : start + step]))
    finally:
        model.train(training)
    heat = np.concatenate(heats).astype(np.float32)
    return np.clip(np.nan_to_num(heat, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0), torch.cat(
        logits
    )


def _cam_class(
    spec: CamMethod, layer: nn.Module | None, batch_size: int
) -> tuple[type, dict[str, Any]]:
    """The pytorch-grad-cam class of ``spec`` (afictl's fixed FullGrad and Ablation-CAM) and
    its keyword arguments."""
    import pytorch_grad_cam

    if spec.name == "fullgrad":
        return _ordered_fullgrad(), {"target_layers": []}
    if spec.name == "ablationcam":
        return _ablation_cam(), {"target_layers": [layer], "batch_size": batch_size}
    return getattr(pytorch_grad_cam, spec.cls), {"target_layers": [layer]}


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No tqdm bar per image from Score-CAM and Ablation-CAM on stderr (afictl prints one table)."""
    from pytorch_grad_cam import ablation_cam, score_cam

    class _NoBar:
        @staticmethod
        def tqdm(iterable: Any, *args: Any, **kwargs: Any) -> Any:
            return iterable

    saved = ablation_cam.tqdm, score_cam.tqdm
    ablation_cam.tqdm = score_cam.tqdm = _NoBar
    try:
        yield
    finally:
        ablation_cam.tqdm, score_cam.tqdm = saved


@functools.cache
def _ablation_cam() -> type:
    """pytorch-grad-cam's AblationCAM, able to ablate a building block, sign-safe, restoring.

    - AblationCAM swaps the target module for an ``AblationLayer`` (which returns the cached
      activations with a batch of channels ablated) and calls it in the target's place; that
      layer takes the input alone, but a building block is called ``block(x, feats)`` (its
      stage's features container): "takes 2 positional arguments but 3 were given". The stand-in
      here takes whatever the target takes; given more than the input it also runs the target on
      them, so that what a block hands its stage (its X(i), computed from its input, which the
      ablation leaves alone) is there for the blocks after it as in a normal forward.
    - The channel weights are (score - ablated score) / |score| rather than / score: a negative
      class score (an untrained model, a non-predicted class) no longer flips every weight.
    - The target goes back into the model even when a forward pass fails half-way.
    """
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

    stand_in = _target_ablation_layer()

    class TargetAblationCAM(AblationCAM):
        def __init__(
            self, model: nn.Module, target_layers: list[nn.Module], batch_size: int
        ) -> None:
            # a fresh stand-in each time: AblationCAM's default is one instance shared by all
            super().__init__(
                model,
                target_layers,
                ablation_layer=stand_in(target_layers[0]),
                batch_size=batch_size,
            )

        def get_cam_weights(
            self,
            input_tensor: torch.Tensor,
            target_layer: nn.Module,
            targets: Any,
            activations: Any,
            grads: Any,
        ) -> np.ndarray:
            try:
                weights = super().get_cam_weights(
                    input_tensor, target_layer, targets, activations, grads
                )
            finally:
                if any(m is self.ablation_layer for m in self.model.modules()):
                    replace_layer_recursive(self.model, self.ablation_layer, target_layer)
            return weights * _score_signs(targets, self.outputs)[:, None]

    return TargetAblationCAM


@functools.cache
def _target_ablation_layer() -> type:
    """pytorch-grad-cam's AblationLayer called with whatever its target takes.

    Given more than the input it also runs the target on all of it, so that what a building
    block hands its stage besides its output is still there for the blocks after it.
    """
    from pytorch_grad_cam.ablation_layer import AblationLayer

    class TargetAblationLayer(AblationLayer):
        def __init__(self, target: nn.Module) -> None:
            super().__init__()
            self._target = [target]  # in a list: not a submodule of the stand-in

        def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if args or kwargs:
                self._target[0](x, *args, **kwargs)
            return super().__call__(x)

    return TargetAblationLayer


def _score_signs(targets: Any, outputs: torch.Tensor) -> np.ndarray:
    """The sign of each image's target score (float32), which the ablation weights are scaled by."""
    scores = np.float32(
        [target(out).cpu().item() for target, out in zip(targets, outputs, strict=True)]
    )
    return np.sign(scores)


@functools.cache
def _ordered_fullgrad() -> type:
    """pytorch-grad-cam's FullGrad with each bias paired with its own layer's gradient.

    FullGrad (1.5.7) pairs the biases, in module order, with the gradients in the order backward
    produced them reversed, which only holds for a chain: a residual block whose downsample
    branch has a BatchNorm (ResNeXt) pairs a 128-channel bias with a 256-channel gradient and
    fails. Here each gradient is recorded under its layer; a layer the forward did not reach is
    left out, one run twice counts twice. Without any bias-carrying layer (Conv2d with a bias,
    BatchNorm2d) the heatmap is the input x gradient term alone.
    """
    from pytorch_grad_cam import FullGrad

    class OrderedFullGrad(FullGrad):
        def __init__(
            self, model: nn.Module, target_layers: Sequence[nn.Module] = (), **kwargs: Any
        ) -> None:
            # an empty list: FullGrad prints a warning on stdout when given target layers
            super().__init__(model, list(target_layers), **kwargs)
            self._all_bias = self.bias_data
            self._grads: dict[tuple[int, int], torch.Tensor] = {}
            self._calls: dict[int, int] = {}
            self.activations_and_grads.release()  # its hooks record the gradients in one list
            self.activations_and_grads.handles = [
                layer.register_forward_hook(functools.partial(self._keep_gradient, i))
                for i, layer in enumerate(self.target_layers)
            ]

        def _keep_gradient(self, index: int, module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            key = (index, self._calls.get(index, 0))
            self._calls[index] = key[1] + 1

            def store(grad: torch.Tensor) -> None:
                self._grads[key] = grad.detach().cpu()

            output.register_hook(store)

        def forward(
            self, input_tensor: torch.Tensor, targets: Any, eigen_smooth: bool = False
        ) -> np.ndarray:
            self._grads.clear()
            self._calls.clear()
            return super().forward(input_tensor, targets, eigen_smooth)

        def compute_cam_per_layer(
            self, input_tensor: torch.Tensor, targets: Any, eigen_smooth: bool
        ) -> Any:
            keys = sorted(self._grads)
            self.activations_and_grads.gradients = [self._grads[k] for k in keys]
            self.bias_data = [self._all_bias[i] for i, _ in keys]
            try:
                return super().compute_cam_per_layer(input_tensor, targets, eigen_smooth)
            finally:
                self.bias_data = self._all_bias
                self._grads.clear()

    return OrderedFullGrad


def _load_images(images: Sequence[str | Path], errors: list[str]) -> dict[str, Image.Image]:
    """Every image that opens, by name; one error line for each one that does not."""
    loaded: dict[str, Image.Image] = {}
    for path in images:
        try:
            loaded[str(path)] = load_image(path)
        except UserError as exc:
            errors.append(str(exc))
    return loaded


def _load_model(
    ckpt_path: str | Path,
    cam: CamMethod,
    layer: str | None,
    target_class: str | None,
    arch: str | None = None,
) -> tuple[nn.Module, dict[str, Any], nn.Module | None, str, int | None]:
    """(model, checkpoint, target layer, its name, target class index) of one checkpoint
    (``arch``: the model of a plain state dict, or the expected one)."""
    try:
        model, ckpt = model_from_checkpoint(ckpt_path, arch=arch)
    except KeyError as exc:  # an afictl checkpoint missing a field
        raise UserError(
            f"{ckpt_path} is not a complete afictl checkpoint (no {exc} field)"
        ) from None
    if cam.name == "fullgrad":
        target_layer, layer_name = None, "all biases"
    else:
        target_layer, layer_name = resolve_layer(model, layer)
    target = None if target_class is None else resolve_class(ckpt, target_class)
    return model, ckpt, target_layer, layer_name, target


def _cam_results(
    model: nn.Module,
    ckpt: dict[str, Any],
    ckpt_path: str,
    loaded: dict[str, Image.Image],
    target_layer: nn.Module | None,
    layer_name: str,
    target: int | None,
    cam: CamMethod,
    progress: Callable[[int], Any] | None = None,
) -> list[CamResult]:
    """One :class:`CamResult` per image under one checkpoint (``progress(n)`` after n images)."""
    spec = model_input(ckpt)
    names = list(loaded)
    batch = torch.stack([spec.tensor(loaded[n]) for n in names])
    targets = None if target is None else [target] * len(names)
    heat, logits = grad_cam(model, batch, target_layer, targets, method=cam, progress=progress)
    probs = torch.softmax(logits.float(), dim=1)
    results = []
    for i, name in enumerate(names):
        pred = int(probs[i].argmax())
        tgt = pred if target is None else target
        results.append(
            CamResult(
                image=name,
                checkpoint=ckpt_path,
                arch=ckpt["arch"],
                predicted_index=pred,
                predicted_class=class_name(ckpt, pred),
                probability=round(float(probs[i, pred]), 6),
                target_index=tgt,
                # a class-independent map explains no class in particular
                target_class=class_name(ckpt, tgt) if cam.uses_target else "(any)",
                target_probability=round(float(probs[i, tgt]), 6),
                attention_area=round(attention_area(heat[i]), 6),
                layer=layer_name,
                method=cam.name,
                heatmap=heat[i],
                view=model_view(batch[i], spec.dataset),
            )
        )
    return results


def run_gradcam(
    images: Sequence[str | Path],
    checkpoints: Sequence[str | Path],
    *,
    archs: Sequence[str | None] | None = None,
    target_class: str | None = None,
    layer: str | None = None,
    method: str = "gradcam",
    progress: Any = None,
) -> GradCamReport:
    """A CAM (``method``, Grad-CAM by default) of every image under every checkpoint; bad inputs
    become error lines. An unknown method, ``layer`` with FullGrad, or ``target_class`` with a
    class-independent method (Eigen-CAM) is a :class:`UserError`.

    ``archs`` (one per checkpoint) names the model of a plain state dict or ``.safetensors``.
    ``progress(description, total)`` (optional) returns a callback ticked once per image and
    checkpoint.
    """
    cam = resolve_method(method)
    if cam.name == "fullgrad" and layer is not None:
        raise UserError(
            "--layer does not apply to --method fullgrad (it uses the bias of every "
            "convolution and BatchNorm of the network)"
        )
    check_target_class(cam, target_class)
    errors: list[str] = []
    loaded = _load_images(images, errors)
    tick = progress(cam.title, len(checkpoints) * len(loaded)) if progress and loaded else None

    def advance(n: int) -> None:
        for _ in range(n if tick is not None else 0):
            tick()

    results: list[CamResult] = []
    used: list[str] = []
    for ckpt_path, arch in zip(checkpoints, archs or [None] * len(checkpoints), strict=True):
        try:
            model, ckpt, target_layer, layer_name, target = _load_model(
                ckpt_path, cam, layer, target_class, arch
            )
        except (UserError, UnknownModelError) as exc:
            errors.append(str(exc))
            advance(len(loaded))
            continue
        used.append(str(ckpt_path))
        if loaded:
            results += _cam_results(
                model, ckpt, str(ckpt_path), loaded, target_layer, layer_name, target, cam, advance
            )
    originals = {n: thumbnail(img) for n, img in loaded.items()}
    sizes = {n: img.size for n, img in loaded.items()}
    return GradCamReport(
        results, list(loaded), originals, used, errors, method=cam.name, sizes=sizes
    )
