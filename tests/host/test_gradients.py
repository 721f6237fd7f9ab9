"""Weights loaded under inference mode made usable by autograd (nodes/host/gradients.py)."""
import torch

from ai_t2i_pack.nodes.host import gradients as grads


def test_weights_become_grad_capable_without_changing_values():
    with torch.inference_mode():
        lin = torch.nn.Linear(3, 2)
    before = lin.weight.detach().clone()
    assert lin.weight.is_inference()
    converted = grads.make_grad_capable(lin)
    assert converted == (6 + 2) * 4
    assert not lin.weight.is_inference() and torch.equal(lin.weight, before)
