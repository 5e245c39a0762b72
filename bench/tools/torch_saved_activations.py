"""What PyTorch's autograd keeps for the DDPM U-Net's backward, measured without a GPU.

Runs the forward and loss of ../shared/reference/torch_workloads.py's U-Net (batch 128 unless
given) under torch.autograd.graph.saved_tensors_hooks and adds up the distinct buffers the graph
saves (parameters among them, printed apart), in f32 and under bf16 autocast on the device torch
sees (the CPU's autocast lists differ a little from CUDA's; on the CPU, dropout is replaced by one
that saves a one-byte mask, as CUDA's does). ember's own figure comes from its
caching allocator (bench_unet_cuda's peak_alloc_MiB; without a GPU, the emulator with
EMBER_EMU_SKIP_KERNELS=1: docs/performance.md, "Memory").

  python3 bench/tools/torch_saved_activations.py [batch] [path to torch_workloads.py]
"""
import importlib.util, os, sys

import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
ref = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "../../../shared/reference/torch_workloads.py")
spec = importlib.util.spec_from_file_location("torch_workloads", ref)
tw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tw)
dev = tw.dev
if dev == "cpu":
    # CUDA's dropout (native_dropout) saves a one-byte mask, the CPU's an f32 one (input * noise):
    # count what the GPU would keep.
    def dropout_saving_a_bool_mask(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep / (1 - self.p)  # mul saves only the mask, x needing no gradient from it
    torch.nn.Dropout.forward = dropout_saving_a_bool_mask
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 128

torch.manual_seed(0)
net = tw.UNet().to(dev)
params = {p.untyped_storage().data_ptr() for p in net.parameters()}
x = torch.randn(batch, 3, 32, 32, device=dev)
t = torch.randint(0, 1000, (batch,), device=dev)

for name, amp in (("fp32", False), ("bf16 autocast", True)):
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            loss = F.mse_loss(net(x, t), x)
    del loss
    mib = 1 << 20
    total = sum(saved.values())
    of_params = sum(n for ptr, n in saved.items() if ptr in params)
    print(f"{name:14s} batch {batch} on {dev}: {total / mib:9.1f} MiB saved in {len(saved)} buffers, "
          f"{(total - of_params) / mib:9.1f} MiB of them not parameters", flush=True)
