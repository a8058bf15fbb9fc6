#!/usr/bin/env python3
"""PyTorch peer of benches/models.rs: the same workloads, timed the same way.

    python3 benches/peers/models.py WORKLOAD --threads 2 --iters N

Prints one JSON line: {"workload", "seconds" (median per iteration), "torch"}.
Workloads: sd15_unet (SD-1.5 UNet forward, batch 1, 64x64 latent, CFG off),
demo_unet_fwd / demo_unet_train (the demo UNet at batch 8, forward / forward+backward+AdamW),
resnet50 / densenet121 (forward, batch 8, 224x224). Random weights, eval mode, no_grad for
forward-only workloads, float32.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent.parent


def demo_unet():
    from diffusers import UNet2DConditionModel
    cfg = json.loads((ROOT / "weights/demo/unet/config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return UNet2DConditionModel(**cfg), cfg


def workload(name):
    if name == "sd15_unet":
        from diffusers import UNet2DConditionModel
        m = UNet2DConditionModel(cross_attention_dim=768).eval()
        x, t, c = torch.randn(1, 4, 64, 64), torch.tensor([500]), torch.randn(1, 77, 768)
        return lambda: m(x, t, encoder_hidden_states=c).sample, False
    if name in ("demo_unet_fwd", "demo_unet_train"):
        m, cfg = demo_unet()
        x = torch.randn(8, 4, cfg["sample_size"], cfg["sample_size"])
        t = torch.randint(0, 1000, (8,))
        c = torch.randn(8, 77, cfg["cross_attention_dim"])
        if name == "demo_unet_fwd":
            m.eval()
            return lambda: m(x, t, encoder_hidden_states=c).sample, False
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

        def step():
            opt.zero_grad()
            loss = (m(x, t, encoder_hidden_states=c).sample - x).pow(2).mean()
            loss.backward()
            opt.step()
        return step, True
    import torchvision
    m = {"resnet50": torchvision.models.resnet50, "densenet121": torchvision.models.densenet121}[name]().eval()
    x = torch.randn(8, 3, 224, 224)
    return lambda: m(x), False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    fn, train = workload(a.workload)
    ctx = torch.enable_grad() if train else torch.no_grad()
    times = []
    with ctx:
        fn()  # warm-up
        for _ in range(a.iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"workload": a.workload, "seconds": statistics.median(times), "min_seconds": min(times), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
