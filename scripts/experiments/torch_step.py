#!/usr/bin/env python3
"""Training-step CPU time of the cnn and vit bench presets: actstore next to
PyTorch (Debian's python3-torch, the reader's reference, never a
dependency of the build or the tests).

Same architecture, batch, optimizer and input shapes as layers/presets.c
(cnn: 3 stages 16/32/64 of conv3x3 + BatchNorm + ReLU + 2x2 max-pool,
linear head, SGD momentum 0.9; vit: 4x4 patches, width 48, 4 heads, 3
pre-norm blocks, MLP 2x with tanh GELU, AdamW, clip 1.0). One thread
(torch.set_num_threads(1) and OPENBLAS_NUM_THREADS=1, actstore --threads 1),
thread CPU time per step
(forward, backward, optimizer); PyTorch runs on random inputs, so the data
path is not in its figure. Runs alternate: R rounds of (actstore run of S
steps, PyTorch run of S steps); each run reports its median step, the
table gives the median over rounds.

  /usr/bin/python3 scripts/experiments/torch_step.py [--bin build/client/actstore]
      [--rounds 5] [--steps 40] [--json out.json] [--models cnn,vit]
      [--kernels]

--kernels also times PyTorch's conv (forward; backward dW + dx, dW only for
the first layer) and linear layers in the shapes `actstore bench layers`
reports, alternating with `actstore bench layers --reps 9` runs; GFLOP/s
per shape next to actstore's, medians over rounds.

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

# One BLAS thread for PyTorch: its matmuls go to OpenBLAS, whose worker
# threads are not the calling thread, so thread CPU time would miss their
# share (with OpenBLAS's default of one thread per core, x W^T of the vit
# linears ran half on a second thread: 132 "GFLOP/s" against 86).
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import torch  # noqa: E402 (after the BLAS thread count)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


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


def tmedian(fn, reps=9):
    """Median thread-CPU seconds of fn over reps repeats of ~2 ms."""
    fn()
    t0 = time.thread_time()
    fn()
    one = max(time.thread_time() - t0, 1e-6)
    it = max(1, int(0.002 / one))
    v = []
    for _ in range(reps):
        t0 = time.thread_time()
        for _ in range(it):
            fn()
        v.append((time.thread_time() - t0) / it)
    return statistics.median(v)


def torch_kernels():
    """GFLOP/s of PyTorch's conv and linear in the bench shapes."""
    out = {}
    H, cin = 28, 1
    for s, w in enumerate((16, 32, 64)):
        x = torch.rand(64, cin, H, H, requires_grad=s > 0)
        conv = nn.Conv2d(cin, w, 3, 1, 1)
        f = 2.0 * w * 64 * H * H * cin * 9
        with torch.no_grad():
            tf = tmedian(lambda: conv(x))
        y = conv(x)
        dy = torch.rand_like(y)

        def bwd():
            conv.zero_grad(set_to_none=True)
            x.grad = None
            conv(x).backward(dy)
        tfb = tmedian(bwd)
        fb = f * (2 if s > 0 else 1)
        # backward timed with its forward: subtract the forward
        out[f"stages.{s}.conv0"] = {"fwd_gflops": 1e-9 * f / tf,
                                    "bwd_gflops": 1e-9 * fb / max(tfb - tf, 1e-9)}
        H //= 2
        cin = w
    for name, n, i, o in (("vit.attn.qkv", 3200, 48, 144), ("vit.attn.proj", 3200, 48, 48),
                          ("vit.mlp.fc1", 3200, 48, 96), ("vit.mlp.fc2", 3200, 96, 48)):
        x = torch.rand(n, i, requires_grad=True)
        lin = nn.Linear(i, o)
        f = 2.0 * n * i * o
        with torch.no_grad():
            tf = tmedian(lambda: lin(x))
        dy = torch.rand(n, o)

        def bwd():
            lin.zero_grad(set_to_none=True)
            x.grad = None
            lin(x).backward(dy)
        tfb = tmedian(bwd)
        out[name] = {"fwd_gflops": 1e-9 * f / tf,
                     "bwd_gflops": 1e-9 * 2 * f / max(tfb - tf, 1e-9)}
    return out


def actstore_kernels(binary):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([binary, "bench", "layers", "--reps", "9", "--json", f.name],
                       check=True, stdout=subprocess.DEVNULL)
        d = json.load(open(f.name))
    out = {c["layer"]: c for c in d["conv"]}
    out.update({m["layer"]: m for m in d["matmul"]})
    out["sgemm"] = d["sgemm_peak"]["gflops"]
    return out, d


def kernels(binary, rounds):
    keys = ("fwd_gflops", "bwd_gflops", "fwd_lib_gflops", "bwd_lib_gflops")
    ours, theirs, head = [], [], None
    for _ in range(rounds):
        o, head = actstore_kernels(binary)
        ours.append(o)
        theirs.append(torch_kernels())
    res = {"kernels": head.get("kernels"),
           "sgemm_1024_gflops": statistics.median(o["sgemm"] for o in ours),
           "layers": {}}
    print(f"actstore: {head.get('kernels')}")
    print(f"{'layer':16} {'ours fwd':>9} {'torch fwd':>9} {'ours bwd':>9} {'torch bwd':>9}"
          f" {'lib fwd':>8} {'lib bwd':>8}")
    for name in theirs[0]:
        r = {}
        for k in keys:
            v = [o[name][k] for o in ours if k in o.get(name, {})]
            if v:
                r[k] = statistics.median(v)
        r["torch_fwd_gflops"] = statistics.median(t[name]["fwd_gflops"] for t in theirs)
        r["torch_bwd_gflops"] = statistics.median(t[name]["bwd_gflops"] for t in theirs)
        res["layers"][name] = r
        lib = (f" {r['fwd_lib_gflops']:8.1f} {r['bwd_lib_gflops']:8.1f}"
               if "fwd_lib_gflops" in r else "")
        print(f"{name:16} {r['fwd_gflops']:9.1f} {r['torch_fwd_gflops']:9.1f} "
              f"{r['bwd_gflops']:9.1f} {r['torch_bwd_gflops']:9.1f}{lib}", flush=True)
    return res


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
    ap.add_argument("--kernels", action="store_true")
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
    if a.kernels:
        out["kernels"] = kernels(a.bin, a.rounds)
    if a.json:
        json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
