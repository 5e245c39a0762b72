"""Golden fixtures for ember's DDE networks and differentiable ops, computed by PyTorch in float64.

tests/models/test_reference.cpp (suite TorchReference) loads these files and checks that ember
computes the same values, first and second derivatives; CI needs no Python for that, because the
files are committed. Regenerate them (needs torch and the safetensors package; written with torch
2.15.0, CPU) from the repository root with

    python3 tests/reference/make_fixtures.py

Everything is seeded (torch.manual_seed), so a rerun with the same torch version gives the same
files. What each file holds:

  mlp.safetensors, residual_mlp.safetensors   (a network s: R^2 -> R, 5 layers of width 16)
    model.<name>     the weights, under PyTorch's state_dict names
    x [8, 2], y [8, 1] = s(x)
    grad.x, grad.<name>       d sum(y) / d x and / d every parameter
    dde.sigma [1], dde.e [8, 2]  the noise level and the fixed noise (x~ = x + e)
    dde.grad_s [8, 2]         d s(x~) / d x~ (the score's input gradient, with create_graph)
    dde.loss [1]              L = 0.5 * sum((x~ + sigma^2 * d s(x~)/d x~ - x)^2), as models/dde
    ddegrad.<name>            dL / d every parameter (a double backward through s; zeros for
                              the output bias, which L does not depend on)
  densenet.safetensors        torch_workloads.DenseNet(6, 8, 3, 4, end_sigmoid=True)
    model.<name>, x [8, 6], y [8, 4], w [8, 4] (a fixed projection),
    grad.x, grad.<name>       d sum(y * w) / d x and / d every parameter
  ops.safetensors             one group of entries per case "<case>.":
    <case>.<input>            the inputs (x, weight, bias, q, k, v, mask, running_mean, ...)
    <case>.out, <case>.w      the output and a fixed random projection of the output's shape
    <case>.grad.<input>       d sum(out * w) / d input, for every differentiable input
    <case>.gg.<input>, <case>.gg.w   second order: d/d input and d/d w of sum_i sum(grad_i^2),
                              grad_i the first-order gradients above taken with create_graph
                              (zeros where the first-order gradients do not depend on it, e.g.
                              gg.x of the linear ops: pooling, upsampling)
    batch_norm also stores <case>.running_mean_out / running_var_out (the updated statistics).
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "fixtures")
sys.path.insert(0, os.path.join(here, "..", "..", "..", "shared", "reference"))
import torch_workloads as tw  # noqa: E402  (MLP and DenseNet: the twins of ember's MLP, DenseNetMLP)

torch.set_default_dtype(torch.float64)


def write(name, out):
    path = os.path.join(fixtures, name)
    # One metadata key: safetensors writes the metadata map in no fixed order, and a single
    # key keeps reruns byte-identical.
    save_file({k: v.detach().contiguous() for k, v in out.items()}, path, metadata={"torch": torch.__version__})
    print(f"wrote {path}: {len(out)} tensors, {os.path.getsize(path)} bytes")


class ResidualMLP(nn.Module):
    """The twin of ember's models::ResidualMLP (models/mlp.cpp): h = in(x); per block
    h = h + block(softplus(h)); y = out(softplus(h)) (+ x with residual_output)."""

    def __init__(self, n_in, n_h, n_layers, n_out, residual_output=False):
        super().__init__()
        self.residual_output = residual_output
        setattr(self, "in", nn.Linear(n_in, n_h))  # "in" is a Python keyword: the name ember uses
        self.blocks = nn.ModuleList([nn.Linear(n_h, n_h) for _ in range(n_layers - 2)])
        self.out = nn.Linear(n_h, n_out)

    def forward(self, x):
        h = getattr(self, "in")(x)
        for b in self.blocks:
            h = h + b(F.softplus(h))
        y = self.out(F.softplus(h))
        return y + x if self.residual_output else y


def scalar(v):
    return torch.tensor([float(v)])


def score_network_fixture(model, name):
    """Forward, first-order gradients and the DDE double backward of a network R^2 -> R."""
    out = {}
    params = dict(model.named_parameters())
    for k, v in model.state_dict().items():
        out["model." + k] = v.clone()
    x = torch.randn(8, 2)
    out["x"] = x.clone()
    xg = x.clone().requires_grad_(True)
    y = model(xg)
    out["y"] = y
    gs = torch.autograd.grad(y.sum(), [xg] + list(params.values()))
    out["grad.x"] = gs[0]
    for k, g in zip(params, gs[1:]):
        out["grad." + k] = g

    # DDE (models/dde/dde.h, dde_loss): x~ = x + e, L = 0.5 sum((x~ + sigma^2 ds/dx~ - x)^2).
    sigma = 0.3
    e = sigma * torch.randn(8, 2)
    out["dde.sigma"] = scalar(sigma)
    out["dde.e"] = e
    xn = (x + e).requires_grad_(True)
    s = model(xn)
    gx = torch.autograd.grad(s.sum(), xn, create_graph=True)[0]
    loss = 0.5 * ((xn + sigma * sigma * gx - x) ** 2).sum()
    out["dde.grad_s"] = gx
    out["dde.loss"] = loss.reshape(1)
    # The output layer's bias does not reach d s/d x~: its gradient is zero (None in PyTorch).
    dg = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    for (k, p), g in zip(params.items(), dg):
        out["ddegrad." + k] = g if g is not None else torch.zeros_like(p)
    write(name, out)


def densenet_fixture():
    model = tw.DenseNet(6, 8, 3, 4, end_sigmoid=True)
    params = dict(model.named_parameters())
    out = {"model." + k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 6)
    out["x"] = x.clone()
    xg = x.clone().requires_grad_(True)
    y = model(xg)
    w = torch.randn_like(y)
    out["y"], out["w"] = y, w
    gs = torch.autograd.grad((y * w).sum(), [xg] + list(params.values()))
    out["grad.x"] = gs[0]
    for k, g in zip(params, gs[1:]):
        out["grad." + k] = g
    write("densenet.safetensors", out)


ops = {}


def op_case(case, fn, inputs, grad_of, second_order=True, extra=None):
    """inputs: name -> tensor (saved); grad_of: the names whose gradients are checked."""
    for k, v in inputs.items():
        ops[f"{case}.{k}"] = v.clone()
    leaves = {k: (v.clone().requires_grad_(True) if k in grad_of else v.clone()) for k, v in inputs.items()}
    y = fn(**leaves)
    w = torch.randn_like(y)
    ops[f"{case}.out"], ops[f"{case}.w"] = y, w.clone()
    ins = [leaves[k] for k in grad_of]
    if second_order:
        w.requires_grad_(True)  # the backward is differentiated in its grad_output too
    gs = torch.autograd.grad((y * w).sum(), ins, create_graph=second_order)
    for k, g in zip(grad_of, gs):
        ops[f"{case}.grad.{k}"] = g
    if second_order:
        s2 = sum((g * g).sum() for g in gs)
        ggs = torch.autograd.grad(s2, ins + [w], allow_unused=True)
        for k, v, gg in zip(grad_of + ["w"], ins + [w], ggs):
            ops[f"{case}.gg.{k}"] = gg if gg is not None else torch.zeros_like(v)
    if extra:
        for k, v in extra(leaves).items():
            ops[f"{case}.{k}"] = v


def ops_fixture():
    r = torch.randn
    # conv2d: stride 2, padding 1, dilation 1, groups 2.
    op_case("conv2d", lambda x, weight, bias: F.conv2d(x, weight, bias, stride=2, padding=1, dilation=1, groups=2),
            {"x": r(2, 4, 7, 6), "weight": r(6, 2, 3, 3), "bias": r(6)}, ["x", "weight", "bias"])
    # conv2d with unequal stride / padding / dilation per dim, one group.
    op_case("conv2d_dilated",
            lambda x, weight, bias: F.conv2d(x, weight, bias, stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
            {"x": r(2, 3, 6, 7), "weight": r(4, 3, 3, 2), "bias": r(4)}, ["x", "weight", "bias"])
    # depthwise (channel multiplier 2): groups = in channels.
    op_case("conv2d_depthwise", lambda x, weight, bias: F.conv2d(x, weight, bias, padding=1, groups=3),
            {"x": r(2, 3, 5, 6), "weight": r(6, 1, 3, 3), "bias": r(6)}, ["x", "weight", "bias"])
    # conv_transpose2d: stride 2, padding 1, output_padding 1, groups 2.
    op_case("conv_transpose2d",
            lambda x, weight, bias: F.conv_transpose2d(x, weight, bias, stride=2, padding=1, output_padding=1, groups=2),
            {"x": r(2, 4, 3, 4), "weight": r(4, 3, 3, 3), "bias": r(6)}, ["x", "weight", "bias"])
    op_case("group_norm", lambda x, weight, bias: F.group_norm(x, 3, weight, bias, eps=1e-5),
            {"x": r(2, 6, 4, 3) * 2 + 0.5, "weight": torch.rand(6) + 0.5, "bias": r(6) * 0.5},
            ["x", "weight", "bias"])
    op_case("layer_norm", lambda x, weight, bias: F.layer_norm(x, [3, 4], weight, bias, eps=1e-5),
            {"x": r(2, 5, 3, 4) * 2 - 0.5, "weight": torch.rand(3, 4) + 0.5, "bias": r(3, 4) * 0.5},
            ["x", "weight", "bias"])

    # batch_norm in training mode: the running statistics are updated in place (momentum 0.1,
    # unbiased variance); the fixture keeps the values before and after.
    rm0, rv0 = r(3) * 0.5, torch.rand(3) + 0.5
    state = {}

    def bn(x, weight, bias, running_mean, running_var):
        state["rm"], state["rv"] = running_mean, running_var
        return F.batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum=0.1, eps=1e-5)

    op_case("batch_norm", bn,
            {"x": r(4, 3, 3, 2) * 2 + 1, "weight": torch.rand(3) + 0.5, "bias": r(3) * 0.5,
             "running_mean": rm0, "running_var": rv0}, ["x", "weight", "bias"],
            extra=lambda leaves: {"running_mean_out": state["rm"].clone(), "running_var_out": state["rv"].clone()})

    op_case("softmax", lambda x: torch.softmax(x, 1), {"x": r(3, 4, 5) * 2}, ["x"])
    op_case("log_softmax", lambda x: torch.log_softmax(x, -1), {"x": r(3, 4, 5) * 2}, ["x"])

    # scaled_dot_product_attention with a float mask [Tq, Tk] broadcast over batch and heads;
    # some positions are blocked with -inf (never a whole row).
    mask = r(4, 5)
    mask[0, 1] = float("-inf")
    mask[2, 4] = float("-inf")
    mask[3, 0] = float("-inf")
    op_case("sdpa", lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
            {"q": r(2, 2, 4, 8), "k": r(2, 2, 5, 8), "v": r(2, 2, 5, 6), "mask": mask}, ["q", "k", "v"])

    # count_include_pad=True is PyTorch's default and ember's avg_pool2d semantics.
    op_case("avg_pool2d", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), {"x": r(2, 3, 7, 6)}, ["x"])
    op_case("max_pool2d", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), {"x": r(2, 3, 7, 6)}, ["x"])
    op_case("upsample_nearest2d", lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
            {"x": r(2, 3, 3, 4)}, ["x"])
    write("ops.safetensors", ops)


def main():
    os.makedirs(fixtures, exist_ok=True)
    torch.manual_seed(0)
    score_network_fixture(tw.MLP(2, 16, 5, 1), "mlp.safetensors")
    torch.manual_seed(1)
    score_network_fixture(ResidualMLP(2, 16, 5, 1), "residual_mlp.safetensors")
    torch.manual_seed(2)
    densenet_fixture()
    torch.manual_seed(3)
    ops_fixture()


if __name__ == "__main__":
    main()
