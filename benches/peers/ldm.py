#!/usr/bin/env python3
"""diffusers peer of benches/ldm.rs: the same workloads, timed the same way.

    python3 benches/peers/ldm.py WORKLOAD --threads 2 --iters N --batch 16 --steps 20

Prints one JSON line: {"workload", "seconds" (median per iteration), "torch"}.
Workloads, on the demo-size models of weights/demo (random weights, float32):
ldm_train — one training step on given latents and text states: random timesteps,
DDPM add_noise with SD's scaled-linear schedule, UNet forward, eps-MSE, backward, AdamW;
ldm_sample — DDIM in `steps` steps with classifier-free guidance (the UNet at twice the
batch) and the VAE decode, under no_grad.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent.parent


def load(kind, cls):
    cfg = json.loads((ROOT / f"weights/demo/{kind}/config.json").read_text())
    return cls(**{k: v for k, v in cfg.items() if not k.startswith("_")}), cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

    unet, ucfg = load("unet", UNet2DConditionModel)
    s, b = ucfg["sample_size"], a.batch
    sched = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, set_alpha_to_one=False, clip_sample=False)
    latents = torch.randn(b, ucfg["in_channels"], s, s)
    ctx = torch.randn(b, 77, ucfg["cross_attention_dim"])
    if a.workload == "ldm_train":
        noise_sched = DDPMScheduler(**{k: v for k, v in sched.items() if k != "set_alpha_to_one"})
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)

        def fn():
            t = torch.randint(0, 1000, (b,))
            noise = torch.randn_like(latents)
            noisy = noise_sched.add_noise(latents, noise, t)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(unet(noisy, t, encoder_hidden_states=ctx).sample, noise)
            loss.backward()
            opt.step()
        grad = True
    else:
        vae, vcfg = load("vae", AutoencoderKL)
        vae.eval()
        unet.eval()
        ddim = DDIMScheduler(**sched)
        ctx2 = torch.cat([torch.randn_like(ctx), ctx])

        def fn():
            ddim.set_timesteps(a.steps)
            x = torch.randn_like(latents)
            for t in ddim.timesteps:
                out = unet(torch.cat([x, x]), t, encoder_hidden_states=ctx2).sample
                u, c = out.chunk(2)
                x = ddim.step(u + 4.0 * (c - u), t, x).prev_sample
            return vae.decode(x / vcfg.get("scaling_factor", 1.0)).sample
        grad = False
    times = []
    with torch.enable_grad() if grad else torch.no_grad():
        fn()  # warm-up
        for _ in range(a.iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"workload": a.workload, "seconds": statistics.median(times), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
