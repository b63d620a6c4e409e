"""A convolution whose output is narrower than the CPU's vector width, computed at full speed.

AFI blocks halve their first convolution; on the CIFAR networks' first stage that is a
16 -> 8 channel 3x3 convolution. oneDNN (PyTorch's CPU convolution) computes 16 output
channels per AVX-512 vector and, in NCHW, reorders the 8-channel output with a slow generic
kernel: on the measured CPU the 16 -> 8 convolution took as long as 16 -> 16 (docs/PERFORMANCE.md).
Viewing the batch as pairs of images side by side in the channel dimension,
(B, C, H, W) -> (B/2, 2C, H, W), turns it into a two-group convolution with 16 output
channels per image pair, the same multiply-accumulates with no padding lanes, and the result
views back as (B, 8, H, W) for free. Backward uses the plain convolution's kernels, which are
faster for these shapes than the grouped ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["conv_narrow"]

#: Output widths below this many channels get the paired form (the AVX-512 fp32 vector width).
NARROW = 16


def conv_narrow(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``, as a paired two-group convolution where that is faster (see above)."""
    if not _pairs(conv, x):
        return conv(x)
    args = (conv.stride, conv.padding, conv.dilation)
    out = _PairedConv.apply(x, conv.weight, args)
    return out if conv.bias is None else out + conv.bias[:, None, None]


def _pairs(conv: nn.Conv2d, x: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.shape[0] >= 2
        and x.shape[0] % 2 == 0
        and x.is_contiguous()
        and conv.weight.is_contiguous()
        and conv.groups == 1
        and conv.out_channels < NARROW
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and not torch.is_autocast_enabled("cpu")
    )


class _PairedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, args: tuple) -> Tensor:  # type: ignore[override]
        stride, padding, dilation = args
        b, c, h, w = x.shape
        out = F.conv2d(
            x.view(b // 2, 2 * c, h, w),
            torch.cat((weight, weight)),
            None,
            stride,
            padding,
            dilation,
            2,
        )
        ctx.args = args
        ctx.save_for_backward(x, weight)
        return out.view(b, weight.shape[0], out.shape[2], out.shape[3])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.args
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad,
            x,
            weight,
            None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False],
        )
        return grad_x, grad_w, None
