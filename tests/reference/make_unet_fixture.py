"""Golden fixture for ember's DDPM U-Net (models/unet.cpp) from the PyTorch U-Net of
../shared/reference/torch_workloads.py, in float32 (the reference model casts the timestep
embedding to float32, so it runs in f32 only).

The weights are not stored: both sides set parameter number k (in sorted name order), element
i, to a fixed formula (matrix weights 0.05 * sin(0.731 i + 1.3 k), vectors 1 + 0.1 * sin(...)
for GroupNorm weights, 0.1 * sin(...) for the rest), which keeps the file small. Stored: the
input x, timesteps t, the output, the gradient of sum(out * w) for a fixed random w with
respect to x and to four parameters.

Regenerate (needs torch and safetensors; written with torch 2.15.0):
    python3 tests/reference/make_unet_fixture.py
"""
import math, os, sys
import torch
from safetensors.torch import save_file

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "shared", "reference"))
import torch_workloads as tw  # noqa: E402


def fill(net):
    for k, (name, p) in enumerate(sorted(net.named_parameters())):
        i = torch.arange(p.numel(), dtype=torch.float64)
        s = torch.sin(0.731 * i + 1.3 * k)
        if p.dim() == 1 and (".n" in name or name.startswith("out.0")) and name.endswith("weight"):
            v = 1 + 0.1 * s
        elif p.dim() == 1:
            v = 0.1 * s
        else:
            v = 0.05 * s
        with torch.no_grad():
            p.copy_(v.reshape(p.shape).to(p.dtype))


torch.manual_seed(0)
net = tw.UNet(ch=32, mult=(1, 1), nres=1, attn_res=(4,), res=8, cin=3).eval()
fill(net)
x = torch.randn(2, 3, 8, 8, dtype=torch.float32, requires_grad=True)
t = torch.tensor([3.0, 517.0], dtype=torch.float32)
out = net(x, t)
w = torch.randn_like(out)
(out * w).sum().backward()
named = dict(net.named_parameters())
tensors = {"x": x.detach(), "t": t, "out": out.detach(), "w": w, "grad.x": x.grad}
for name in ["cin.weight", "temb.0.weight", "mid.1.qkv.weight", "out.2.weight", "down.1.weight"]:
    tensors["grad." + name] = named[name].grad
save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(here, "fixtures", "unet_small.safetensors"),
          metadata={"torch": torch.__version__, "config": "ch=32 mult=(1,1) nres=1 attn_res=(4,) res=8 cin=3"})
print("wrote", os.path.join(here, "fixtures", "unet_small.safetensors"), "parameters",
      sum(p.numel() for p in net.parameters()))
