"""Golden fixtures for ember's nn layers and optimizers, from PyTorch, in float64.

For each layer: its parameters ("<layer>.param.<name>"), an input x, the output, a fixed
projection w, and the gradients of sum(out * w) with respect to x and every parameter.
BatchNorm2d runs in training mode and also stores its running statistics after the step.
For each optimizer: a start point, three fixed gradients, and the point after three steps.

Regenerate (needs torch and safetensors; written with torch 2.15.0):
    python3 tests/reference/make_nn_fixtures.py
"""
import math
import os
import torch
import torch.nn as nn
from safetensors.torch import save_file

torch.manual_seed(0)
here = os.path.dirname(os.path.abspath(__file__))
out = {}


def layer(name, module, x, rename=None):
    """rename maps a PyTorch parameter name to ember's where they differ."""
    rename = rename or {}
    module = module.double()
    x = x.double().requires_grad_(True)
    for pname, p in module.named_parameters():
        out[f"{name}.param.{rename.get(pname, pname)}"] = p.detach().clone()
    y = module(x)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    out[f"{name}.x"] = x.detach()
    out[f"{name}.out"] = y.detach()
    out[f"{name}.w"] = w
    out[f"{name}.grad.x"] = x.grad
    for pname, p in module.named_parameters():
        out[f"{name}.grad.{rename.get(pname, pname)}"] = p.grad
    for bname, b in module.named_buffers():
        if b.is_floating_point():
            out[f"{name}.buffer.{bname}"] = b.detach().clone()


layer("linear", nn.Linear(5, 4), torch.randn(3, 5))
layer("conv", nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), torch.randn(2, 4, 7, 6))
layer("convt", nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), torch.randn(2, 4, 3, 5))
gn = nn.GroupNorm(2, 6)
with torch.no_grad():
    gn.weight.uniform_(0.5, 1.5); gn.bias.uniform_(-0.5, 0.5)
layer("groupnorm", gn, torch.randn(2, 6, 4, 3))
bn = nn.BatchNorm2d(3)
with torch.no_grad():
    bn.weight.uniform_(0.5, 1.5); bn.bias.uniform_(-0.5, 0.5)
layer("batchnorm", bn, torch.randn(4, 3, 3, 2) * 2 + 1)
ln = nn.LayerNorm([3, 4])
with torch.no_grad():
    ln.weight.uniform_(0.5, 1.5); ln.bias.uniform_(-0.5, 0.5)
layer("layernorm", ln, torch.randn(2, 5, 3, 4))
layer("upsample", nn.Upsample(scale_factor=2, mode="nearest"), torch.randn(2, 3, 3, 4))
layer("avgpool", nn.AvgPool2d(2), torch.randn(2, 3, 6, 4))
import sys
sys.path.insert(0, os.path.join(here, "..", "..", "..", "shared", "reference"))
import torch_workloads as tw  # noqa: E402  (DDPM's attention block: GroupNorm(32), qkv, o)
att = tw.Attn(32)
with torch.no_grad():
    att.n.weight.uniform_(0.5, 1.5); att.n.bias.uniform_(-0.5, 0.5)
layer("attention", att, torch.randn(2, 32, 3, 2))
layer("weightnorm", nn.utils.weight_norm(nn.Linear(5, 4)), torch.randn(3, 5), rename={"bias": "module.bias"})
t = torch.tensor([0.0, 3.0, 517.0, 999.0], dtype=torch.float64)
half = 16
f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / (half - 1))
e = t[:, None] * f[None]
out["embedding.t"] = t
out["embedding.out"] = torch.cat([e.sin(), e.cos()], 1)  # the reference U-Net's embedding, dim 32

p0 = torch.randn(4, 3, dtype=torch.float64)
grads = [torch.randn(4, 3, dtype=torch.float64) for _ in range(3)]
out["optim.p0"] = p0
for i, g in enumerate(grads):
    out[f"optim.g{i}"] = g
makers = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1),
    "adamax": lambda ps: torch.optim.Adamax(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-8),
}
for name, make in makers.items():
    p = p0.clone().requires_grad_(True)
    opt = make([p])
    for g in grads:
        p.grad = g.clone()
        opt.step()
    out[f"optim.{name}"] = p.detach()

path = os.path.join(here, "fixtures", "nn_layers_optim.safetensors")
save_file({k: v.contiguous() for k, v in out.items()}, path, metadata={"torch": torch.__version__})
print("wrote", path, len(out), "tensors")
