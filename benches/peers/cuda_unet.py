#!/usr/bin/env python3
"""PyTorch peer of the GPU benchmarks in tests/cuda_bench.rs (issue 11), on the same device in the same run.

    python3 benches/peers/cuda_unet.py [WORKLOAD ...] [--iters N] [--no-compile] [--device cuda:0]

Prints one JSON line per (workload, mode) with: workload, mode ("eager" or "compile"), seconds (median per
iteration, CUDA-synchronised), the workload's rate (it_per_s, img_per_s or tflops), and the environment
(device name, driver, CUDA and torch versions). Modes: PyTorch eager, then torch.compile when it works (a
compile failure is reported as {"mode": "compile", "error": ...} and the run goes on).

Workloads (random weights; the shapes of the issue's goals):
  sd15_cfg      SD-1.5 UNet at 512x512 (64x64 latents) with classifier-free guidance: batch 2, f16, no_grad;
                one iteration = one sampler step (it/s).
  sd15_train    SD-1.5 UNet training step at 512x512 on precomputed latents: batch 2, bf16 autocast
                with f32 master weights, MSE on the noise, backward, AdamW (img/s).
  resnet50      ResNet-50 inference (batch 64, f16, 224x224) and training step (batch 32, bf16 autocast) (img/s).
  densenet121   DenseNet-121 inference and training, same settings (img/s).
  sdpa          scaled_dot_product_attention forward and forward+backward at SD-1.5 shapes
                (batch 2, 8 heads, 4096 tokens, head dims 40/64/80/128, f16) (TFLOP/s).
"""

import argparse
import json
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F


def environment(device):
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        driver = "unknown"
    return {
        "device": torch.cuda.get_device_name(device),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
        "driver": driver,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
    }


def timed(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sd15_unet(device, dtype):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(cross_attention_dim=768).to(device=device, dtype=dtype)


def sd15_cfg(device, compile_):
    unet = sd15_unet(device, torch.float16).eval()
    model = torch.compile(unet) if compile_ else unet
    # CFG: the unconditional and conditional halves of one image in one batch of 2.
    x = torch.randn(1, 4, 64, 64, device=device, dtype=torch.float16)
    ctx = torch.randn(2, 77, 768, device=device, dtype=torch.float16)
    t = torch.tensor([500, 500], device=device)

    @torch.no_grad()
    def step():
        eps = model(torch.cat([x, x]), t, encoder_hidden_states=ctx).sample
        uncond, cond = eps.chunk(2)
        return uncond + 7.5 * (cond - uncond)

    return step, "it_per_s", 1.0


def sd15_train(device, compile_):
    unet = sd15_unet(device, torch.float32).train()
    model = torch.compile(unet) if compile_ else unet
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    latents = torch.randn(2, 4, 64, 64, device=device)
    noise = torch.randn_like(latents)
    ctx = torch.randn(2, 77, 768, device=device)
    t = torch.randint(0, 1000, (2,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = model(latents + noise, t, encoder_hidden_states=ctx).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        opt.step()

    return step, "img_per_s", 2.0


def classifier(name, train):
    import torchvision

    def make(device, compile_):
        net = getattr(torchvision.models, name)(weights=None).to(device)
        if not train:
            net = net.eval().half()
            model = torch.compile(net) if compile_ else net
            x = torch.randn(64, 3, 224, 224, device=device, dtype=torch.float16)

            @torch.no_grad()
            def step():
                return model(x)

            return step, "img_per_s", 64.0
        net.train()
        model = torch.compile(net) if compile_ else net
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(32, 3, 224, 224, device=device)
        y = torch.randint(0, 1000, (32,), device=device)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

        return step, "img_per_s", 32.0

    return make


def sdpa(head_dim, backward):
    def make(device, compile_):
        b, h, n = 2, 8, 4096
        q, k, v = (torch.randn(b, h, n, head_dim, device=device, dtype=torch.float16, requires_grad=backward) for _ in range(3))
        attn = torch.compile(F.scaled_dot_product_attention) if compile_ else F.scaled_dot_product_attention
        flops = 4.0 * b * h * n * n * head_dim * (3.5 if backward else 1.0)  # bwd = 2.5x fwd
        grad = torch.randn(b, h, n, head_dim, device=device, dtype=torch.float16)

        def step():
            out = attn(q, k, v)
            if backward:
                out.backward(grad)
            return out

        return step, "tflops", flops / 1e12

    return make


WORKLOADS = {
    "sd15_cfg": [("sd15_cfg", sd15_cfg)],
    "sd15_train": [("sd15_train", sd15_train)],
    "resnet50": [("resnet50_infer", classifier("resnet50", False)), ("resnet50_train", classifier("resnet50", True))],
    "densenet121": [("densenet121_infer", classifier("densenet121", False)), ("densenet121_train", classifier("densenet121", True))],
    "sdpa": [(f"sdpa_d{d}_{'fwdbwd' if bwd else 'fwd'}", sdpa(d, bwd)) for d in (40, 64, 80, 128) for bwd in (False, True)],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--device", default="cuda:0")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("cuda_unet.py: no CUDA device visible to PyTorch")
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    env = environment(device)
    modes = [False] if args.no_compile else [False, True]
    for group in args.workloads:
        for name, make in WORKLOADS[group]:
            for compile_ in modes:
                mode = "compile" if compile_ else "eager"
                try:
                    step, unit, per_iter = make(device, compile_)
                    seconds = timed(step, args.iters)
                except Exception as e:  # noqa: BLE001 - report and go on (torch.compile can fail per model)
                    print(json.dumps({"workload": name, "mode": mode, "error": f"{type(e).__name__}: {e}"[:500], **env}), flush=True)
                    torch.cuda.empty_cache()
                    continue
                rate = per_iter / seconds
                print(json.dumps({"workload": name, "mode": mode, "seconds": seconds, unit: rate, **env}), flush=True)
                del step
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
