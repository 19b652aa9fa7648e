#!/usr/bin/env python3
"""Where the conv inversion's error comes from just above cond 1e4.

A numpy model of the direct path (store/policies/invert/: F's border from
the frame, its centre Y - b, X^ = M(f) F^ per frequency, see
docs/policies.md "What it does") for 3x3 same-padded convs with Cout = Cin,
He-normal weights (one output channel pulled towards another to set the
conditioning), LeakyReLU(0.1) inputs, 4 images. Y is the forward's output
rounded to float32, as the framework stores it. Per draw with cond(A) in
[5e3, 2e5] the script prints max|X'-X| / max|X| of
  f64      the exact least-squares solve in float64 of that float32 Y
           (no solver rounding at all: the floor set by Y's rounding),
  f32      the same solve with M, F^ and the product in float32 (a model
           of the library's solver),
  ref1     f32 plus one step of iterative refinement with the residual
           in float64 (x += M (F - A x)),
  tik(e)   the float64 solve regularized by eps = e * trace(A^H A) / Cin.
Needs python3-numpy; not part of the build.
Run: python3 scripts/experiments/conv_cond_floor.py [draws] [seed]
"""
import sys

import numpy as np


def model(cin, h, wgt, x):
    p = q = h + 2
    ker = np.zeros((cin, cin, p, q))
    for a in range(3):
        for b in range(3):
            ker[:, :, (2 - a) % p, (2 - b) % q] = wgt[:, :, a, b]
    amat = np.fft.fft2(ker).transpose(2, 3, 0, 1)      # (p, q, Cout, Cin)
    ah = np.conj(amat.transpose(0, 1, 3, 2))
    gram = ah @ amat
    sv = np.linalg.svd(amat, compute_uv=False)
    cond = (sv[..., 0] / sv[..., -1]).max()
    n = x.shape[0]
    xg = np.zeros((n, cin, p, q))
    xg[:, :, :h, :h] = x
    full = np.real(np.fft.ifft2(np.einsum("pqoc,ncpq->nopq", amat, np.fft.fft2(xg))))
    y32 = full[:, :, 1:h + 1, 1:h + 1].astype(np.float32)
    # F: the centre from the float32 Y, the border (depends on the frame
    # only) exact
    f = full.copy()
    f[:, :, 1:h + 1, 1:h + 1] = y32
    fh = np.fft.fft2(f).transpose(2, 3, 1, 0)           # (p, q, Cout, n)

    def back(xh):
        return np.real(np.fft.ifft2(xh.transpose(3, 2, 0, 1)))[:, :, :h, :h]

    def err(xr):
        return np.abs(xr - x).max() / np.abs(x).max()

    tr = np.trace(gram, axis1=2, axis2=3).real[..., None, None] / cin
    eye = np.eye(cin)
    m64 = np.linalg.solve(gram, ah)
    out = {"cond": cond, "f64": err(back(m64 @ fh))}
    m32 = m64.astype(np.complex64)
    x32 = m32 @ fh.astype(np.complex64)
    out["f32"] = err(back(x32))
    res = fh - amat @ x32.astype(np.complex128)
    out["ref1"] = err(back(x32 + (m32 @ res.astype(np.complex64))))
    for e in (1e-8, 1e-7, 1e-6):
        mt = np.linalg.solve(gram + e * tr * eye, ah)
        out["tik(%g)" % e] = err(back(mt @ fh))
    return out


def main():
    draws = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    rows = []
    # Random He draws reach cond > 1e4 rarely (4 of 512 in docs/benchmarks.md);
    # here one output channel is pulled towards another, W[0] <- W[1] +
    # d W[0], which sets the conditioning (smaller d, larger cond).
    for i in range(draws):
        for cin, h in ((16, 7), (16, 14), (32, 7)):
            wgt0 = rng.standard_normal((cin, cin, 3, 3)) * np.sqrt(2 / (cin * 9))
            x = rng.standard_normal((4, cin, h, h))
            x = np.where(x > 0, x, 0.1 * x)
            for d in np.logspace(-1.0, -3.0, 9):
                wgt = wgt0.copy()
                wgt[0] = wgt0[1] + d * wgt0[0]
                r = model(cin, h, wgt, x)
                if 5e3 <= r["cond"] <= 2e5:
                    r["shape"] = "%d->%d %dx%d" % (cin, cin, h, h)
                    rows.append(r)
    keys = ["f64", "f32", "ref1", "tik(1e-08)", "tik(1e-07)", "tik(1e-06)"]
    print("| shape | cond | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for r in sorted(rows, key=lambda r: r["cond"]):
        print("| %s | %.3g | " % (r["shape"], r["cond"]) +
              " | ".join("%.2g" % r[k] for k in keys) + " |")


if __name__ == "__main__":
    main()
