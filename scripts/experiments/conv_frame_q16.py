#!/usr/bin/env python3
"""Numerical model of conv inversion with a 16- or 12-bit frame.

A numpy (float64) model of the scheme in store/policies/conv_invert*.c:
the full linear output F of a 3x3 same-padded conv is a circular
convolution on a (H+2)x(W+2) grid; F's border comes from the input's
one-pixel frame, its centre is Y; per frequency X^ = (A^H A)^-1 A^H F^.
The frame is stored exactly or as int codes with one scale per channel
(max|frame| / (2^(bits-1) - 1)); the script prints the max relative
reconstruction error max|X'-X| / max|X| of both, with cond = the largest
per-frequency condition number of A(f). Inputs: LeakyReLU(0.1) of normal
draws, He-normal weights, 4 images per layer, seed 1.

Needs python3-numpy (apt-get install python3-numpy); not part of the build.
Run: python3 scripts/experiments/conv_frame_q16.py
"""
import numpy as np


def run(cin, cout, h, bits, seed=1, images=4):
    rng = np.random.default_rng(seed)
    w_ = h
    k = 3
    wgt = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))
    p, q = h + 2, w_ + 2
    ker = np.zeros((cout, cin, p, q))
    for a in range(k):
        for b in range(k):
            ker[:, :, (2 - a) % p, (2 - b) % q] = wgt[:, :, a, b]
    kh = np.fft.fft2(ker)
    amat = kh.transpose(2, 3, 0, 1)
    ah = np.conj(amat.transpose(0, 1, 3, 2))
    pinv = np.linalg.inv(ah @ amat) @ ah
    sv = np.linalg.svd(amat, compute_uv=False)
    cond = (sv[..., 0] / sv[..., -1]).max()

    def circ(xg):
        xh = np.fft.fft2(xg)
        return np.real(np.fft.ifft2(np.einsum("ocpq,cpq->opq", kh, xh)))

    def solve(f):
        fh = np.fft.fft2(f).transpose(1, 2, 0)[..., None]
        return np.real(np.fft.ifft2((pinv @ fh)[..., 0].transpose(2, 0, 1)))

    ring = np.zeros((h, w_), bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    err = {False: 0.0, True: 0.0}
    for _ in range(images):
        x = rng.standard_normal((cin, h, w_))
        x = np.where(x > 0, x, 0.1 * x)
        xg = np.zeros((cin, p, q))
        xg[:, :h, :w_] = x
        y = circ(xg)[:, 1:h + 1, 1:w_ + 1]
        for quant in (False, True):
            fr = x.copy()
            if quant:
                for c in range(cin):
                    scale = np.abs(fr[c][ring]).max() / (2 ** (bits - 1) - 1)
                    fr[c][ring] = np.round(fr[c][ring] / scale) * scale
            xf = np.zeros((cin, p, q))
            xf[:, :h, :w_] = np.where(ring, fr, 0)
            fe = circ(xf)
            fe[:, 1:h + 1, 1:w_ + 1] = y
            xe = solve(fe)[:, :h, :w_]
            xe[:, ring] = fr[:, ring]
            e = np.abs(xe - x).max() / np.abs(x).max()
            err[quant] = max(err[quant], e)
    print(f"{cin:3d} -> {cout:3d}  {h}x{h}  cond {cond:8.3g}  "
          f"exact frame {err[False]:.2e}  {bits}-bit frame {err[True]:.2e}")


if __name__ == "__main__":
    for cin, cout, h in [(1, 16, 28), (16, 32, 14), (32, 64, 7),
                         (16, 16, 28), (32, 32, 14), (16, 16, 14)]:
        for bits in (16, 12):
            run(cin, cout, h, bits)
