"""Gradients through the UNet while the host runs every node under inference mode.

ComfyUI executes nodes inside torch.inference_mode(), so weights loaded or LoRA-patched
there are inference tensors, which autograd refuses to save for backward. Before a
guided run the UNet's inference-tensor parameters and buffers are swapped, one at a
time, for ordinary tensors with the same values. The values do not change, so this is
not a patch to undo; the transient memory cost is one tensor at a time, and the old
tensor is freed unless the host keeps a reference (e.g. its LoRA backup, which holds
the un-patched originals and is left untouched).
"""
from __future__ import annotations

import torch


def make_grad_capable(module: torch.nn.Module) -> int:
    """Replace inference-tensor parameters/buffers of module in place. Returns bytes converted."""
    converted = 0
    with torch.inference_mode(False):
        for sub in module.modules():
            for name, p in list(sub._parameters.items()):
                if p is not None and p.is_inference():
                    sub._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
                    converted += p.numel() * p.element_size()
            for name, b in list(sub._buffers.items()):
                if b is not None and b.is_inference():
                    sub._buffers[name] = b.detach().clone()
                    converted += b.numel() * b.element_size()
    return converted
