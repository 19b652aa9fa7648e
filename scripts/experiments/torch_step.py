#!/usr/bin/env python3
"""Training-step CPU time of the cnn and vit bench presets: actstore next to
PyTorch (Debian's python3-torch, the reader's reference, never a
dependency of the build or the tests).

Same architecture, batch, optimizer and input shapes as layers/presets.c
(cnn: 3 stages 16/32/64 of conv3x3 + BatchNorm + ReLU + 2x2 max-pool,
linear head, SGD momentum 0.9; vit: 4x4 patches, width 48, 4 heads, 3
pre-norm blocks, MLP 2x with tanh GELU, AdamW, clip 1.0). One thread
(torch.set_num_threads(1), actstore --threads 1), thread CPU time per step
(forward, backward, optimizer); PyTorch runs on random inputs, so the data
path is not in its figure. Runs alternate: R rounds of (actstore run of S
steps, PyTorch run of S steps); each run reports its median step, the
table gives the median over rounds.

  /usr/bin/python3 scripts/experiments/torch_step.py [--bin build/client/actstore]
      [--rounds 5] [--steps 40] [--json out.json] [--models cnn,vit]

The actstore run's environment decides its kernels (AS_KERNELS,
OPENBLAS_CORETYPE); PyTorch runs with the environment it was started with
(its matmuls go through the system BLAS, i.e. OpenBLAS with the same
OPENBLAS_CORETYPE rules: set it to compare like with like).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for w in (16, 32, 64):
            layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(), nn.MaxPool2d(2)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(64 * 3 * 3, 10)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc1, self.fc2 = nn.Linear(C, 2 * C), nn.Linear(2 * C, C)
        self.NH = NH

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        hd = C // self.NH
        q, k, v = (t.view(B, T, self.NH, hd).transpose(1, 2) for t in (q, k, v))
        p = torch.softmax(q @ k.transpose(-2, -1) / hd ** 0.5, dim=-1)
        a = (p @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class Vit(nn.Module):
    def __init__(self, C=48, NH=4, depth=3):
        super().__init__()
        self.patch = nn.Linear(16, C)
        self.cls = nn.Parameter(torch.zeros(C))
        self.pos = nn.Parameter(torch.zeros(50, C))
        self.blocks = nn.ModuleList(Block(C, NH) for _ in range(depth))
        self.lnf, self.head = nn.LayerNorm(C), nn.Linear(C, 10)

    def forward(self, img):
        B = img.shape[0]
        p = img.view(B, 7, 4, 7, 4).permute(0, 1, 3, 2, 4).reshape(B, 49, 16)
        x = torch.cat([self.cls.expand(B, 1, -1), self.patch(p)], 1) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.lnf(x[:, 0]))


def torch_run(model, steps):
    torch.manual_seed(1)
    B = 64
    if model == "cnn":
        m = Cnn()
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    else:
        m = Vit()
        opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.01)
    x = torch.rand(B, 1, 28, 28)
    y = torch.randint(0, 10, (B,))
    t = []
    for _ in range(steps + 3):
        t0 = time.thread_time()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        if model == "vit":
            nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        t.append(time.thread_time() - t0)
    return statistics.median(t[3:]) * 1e3


def actstore_run(binary, model, steps):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([binary, "train", "--model", model, "--preset", "bench",
                        "--policy", "default=keep", "--steps", str(steps),
                        "--threads", "1", "--quiet", "--json", f.name], check=True)
        d = json.load(open(f.name))
    return d["time"]["step_cpu_ms_median"], d.get("blas_core", "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/client/actstore")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--models", default="cnn,vit")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = {"torch": torch.__version__, "rounds": a.rounds, "steps": a.steps,
           "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
           "as_kernels": os.environ.get("AS_KERNELS"), "models": {}}
    for model in a.models.split(","):
        ours, theirs = [], []
        for _ in range(a.rounds):
            ms, core = actstore_run(a.bin, model, a.steps)
            ours.append(ms)
            theirs.append(torch_run(model, a.steps))
        r = {"actstore_step_cpu_ms": statistics.median(ours),
             "torch_step_cpu_ms": statistics.median(theirs),
             "actstore_runs": ours, "torch_runs": theirs, "blas_core": core}
        r["ratio"] = r["actstore_step_cpu_ms"] / r["torch_step_cpu_ms"]
        out["models"][model] = r
        print(f"{model}: actstore {r['actstore_step_cpu_ms']:.2f} ms, "
              f"PyTorch {r['torch_step_cpu_ms']:.2f} ms, ratio {r['ratio']:.2f} "
              f"(actstore runs {', '.join(f'{v:.1f}' for v in ours)}; "
              f"PyTorch {', '.join(f'{v:.1f}' for v in theirs)})", flush=True)
    if a.json:
        json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
