/*
 * Conv inversion, the adjoint path (Cout >= 2 Cin, well conditioned).
 *
 * X^ = G^-1 (A^H F^) with G = A^H A = L L^H, at every frequency: the
 * product with A^H (Cin x Cout, fp32) and two triangular substitutions
 * with the Cholesky factor L (Cin x Cin, fp32), per lane. Against the
 * direct path's M = G^-1 A^H it skips forming M (Cout * Cin^2 complex
 * multiply-adds per frequency in double, the largest part of a streamed
 * factorization) for Cin^2 more per lane in the apply; the transforms,
 * the row and column passes and the work space are the direct path's
 * (conv_invert.c). The normal equations square the condition number:
 * rounding errors grow as cond^2 eps instead of cond eps, so this path is
 * taken only for cond <= AS__CIV_ADJ_COND (there cond^2 eps_fp32 ~ 1.5e-4
 * at worst, ~1e-6 measured).
 *
 * (Until 2026-12-01 the adjoint path formed A^H F in the spatial domain,
 * a transposed convolution of the Cout-channel F, and transformed Cin
 * channels only; the transposed convolution cost about as much as the
 * conv forward and dominated the restore.)
 */
#include <string.h>

#include "store/policies/conv_invert_impl.h"

/* x = G^-1 z at one frequency by substitution with G = L L^H (lr, li:
 * Cin x Cin, lower, diagonal = 1 / L_ii; s = -1: the conjugate, for the
 * mirror frequency). z, xo: [re|im][Cin][NB]. */
AS__CIV_CLONES
static void solve_chol(const float *lr, const float *li, float s, const float *z,
                       float *xo, int cin, int NB)
{
    const size_t B = (size_t)cin * NB;
    for (int l0 = 0; l0 < NB; l0 += 8) {
        /* forward: y_i = (z_i - sum_{k<i} L_ik y_k) / L_ii */
        for (int i = 0; i < cin; i++) {
            v8 ar = ld8(z + (size_t)i * NB + l0), ai = ld8(z + B + (size_t)i * NB + l0);
            for (int k = 0; k < i; k++) {
                const float a = lr[(size_t)i * cin + k], b = s * li[(size_t)i * cin + k];
                const v8 yr = ld8(xo + (size_t)k * NB + l0), yi = ld8(xo + B + (size_t)k * NB + l0);
                ar -= a * yr - b * yi;
                ai -= a * yi + b * yr;
            }
            const float d = lr[(size_t)i * cin + i];
            st8(xo + (size_t)i * NB + l0, ar * d);
            st8(xo + B + (size_t)i * NB + l0, ai * d);
        }
        /* back: x_i = (y_i - sum_{k>i} conj(L_ki) x_k) / L_ii */
        for (int i = cin - 1; i >= 0; i--) {
            v8 ar = ld8(xo + (size_t)i * NB + l0), ai = ld8(xo + B + (size_t)i * NB + l0);
            for (int k = i + 1; k < cin; k++) {
                const float a = lr[(size_t)k * cin + i], b = -s * li[(size_t)k * cin + i];
                const v8 xr = ld8(xo + (size_t)k * NB + l0), xi = ld8(xo + B + (size_t)k * NB + l0);
                ar -= a * xr - b * xi;
                ai -= a * xi + b * xr;
            }
            const float d = lr[(size_t)i * cin + i];
            st8(xo + (size_t)i * NB + l0, ar * d);
            st8(xo + B + (size_t)i * NB + l0, ai * d);
        }
    }
}

/* One frequency of the adjoint path: f = [A^H (re, im: Cin x Cout) | L
 * (re, im: Cin x Cin, diagonal 1 / L_ii)], s = -1: conjugates (mirror
 * frequency). z: [re|im][Cout][NB]; tz: [re|im][Cin][NB] scratch; xo:
 * [re|im][Cin][NB]. */
void as__civ_adjoint_freq(const float *f, float s, const float *z, float *tz, float *xo,
                          int cin, int cout, int NB)
{
    const size_t a = (size_t)cin * cout, l = (size_t)cin * cin;
    as__civ_solve_freq(f, f + a, s, z, tz, cin, cout, NB);
    solve_chol(f + 2 * a, f + 2 * a + l, s, tz, xo, cin, NB);
}
