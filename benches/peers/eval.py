#!/usr/bin/env python3
"""PyTorch peer of benches/eval.rs: the same workloads, timed the same way.

    python3 benches/peers/eval.py WORKLOAD --threads 2 --iters N

Prints one JSON line: {"workload", "seconds" (median per iteration), "torch"}.
Workloads: fid_features_demo (demo DenseNet features, batch 32, 64x64),
classifier_train_demo (its BCE + AdamW training step), fid_features_densenet121
(torchxrayvision-style DenseNet-121, 1 channel, batch 16, 224x224, pooled features),
classifier_train_densenet121 (DenseNet-121, 5 outputs, batch 8, 224x224, BCE + AdamW),
frechet_2048x1024 (pytorch-fid's calculate_frechet_distance: numpy mean/cov and
scipy.linalg.sqrtm). Random weights, float32, inputs in [-1024, 1024].
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def densenet(growth, blocks, init, bn_size, classes):
    from torchvision.models import DenseNet

    m = DenseNet(growth_rate=growth, block_config=tuple(blocks), num_init_features=init, bn_size=bn_size, num_classes=classes)
    m.features.conv0 = nn.Conv2d(1, init, kernel_size=7, stride=2, padding=3, bias=False)
    return m


def features(m, x):
    return torch.flatten(F.adaptive_avg_pool2d(F.relu(m.features(x)), (1, 1)), 1)


def pixels(*shape):
    return torch.rand(*shape) * 2048 - 1024


def workload(name):
    if name.startswith("frechet"):
        import numpy as np
        import scipy.linalg

        rng = np.random.default_rng(5)
        a = rng.normal(size=(2048, 1024))
        b = rng.normal(size=(2048, 1024)) * 0.9 + 0.1

        def run():
            mu1, mu2 = a.mean(0), b.mean(0)
            s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
            covmean = scipy.linalg.sqrtm(s1 @ s2).real
            return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        return run, False
    demo = name.endswith("demo")
    m = densenet(12, [2, 2, 2, 2], 24, 2, 3) if demo else densenet(32, [6, 12, 24, 16], 64, 4, 18 if name.startswith("fid") else 5)
    if name.startswith("fid"):
        m.eval()
        x = pixels(32, 1, 64, 64) if demo else pixels(16, 1, 224, 224)
        return lambda: features(m, x), False
    m.train()
    x = pixels(32, 1, 64, 64) if demo else pixels(8, 1, 224, 224)
    y = (torch.rand(32, 3) > 0.7).float() if demo else torch.full((8, 5), 0.5)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3 if demo else 1e-4)

    def step():
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(m(x), y).backward()
        opt.step()
    return step, True


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
    print(json.dumps({"workload": a.workload, "seconds": statistics.median(times), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
