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
 * (invert/restore.c). The normal equations square the condition number:
 * rounding errors grow as cond^2 eps instead of cond eps, so this path is
 * taken only for cond <= AS__CIV_ADJ_COND (there cond^2 eps_fp32 ~ 1.5e-4
 * at worst, ~1e-6 measured).
 *
 * (Until 2026-12-01 the adjoint path formed A^H F in the spatial domain,
 * a transposed convolution of the Cout-channel F, and transformed Cin
 * channels only; the transposed convolution cost about as much as the
 * conv forward and dominated the restore.)
 */
#include <math.h>
#include <string.h>

#include "store/policies/invert/impl.h"
#include "allocator/fault.h"

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

/* ---- one input channel: the closed form ---------------------------------
 *
 * With Cin = 1, A(f) is a column a(f) of Cout values and G(f) = |a(f)|^2
 * (+ eps) a number: X^(f) = a(f)^H F^(f) / G(f). The product a^H F^ is
 * formed in the spatial domain, image by image in the images' own layout
 * (X~ = the circular correlation of F with the kernels, summed over the
 * output channels: Cout * kh * kw multiply-adds per grid point, vectorized
 * along the rows), so only the one channel X~ is transformed, forward and
 * back, instead of the Cout channels of F, and F is never moved into the
 * transform layout. Same result as the other paths up to fp32 rounding:
 * X^ = M F^ with M = a^H / G for Cin = 1.
 *
 * Fewer channels. Cout equations per frequency for one unknown: F is
 * exact up to rounding (it is A X), so any subset S of the output
 * channels gives the same X^ = a_S^H F_S^ / G_S, with G_S = sum over S of
 * |a_o|^2, and only the rounding noise differs: at frequency f the
 * least-squares noise is sigma^2 / G_S(f) against sigma^2 / G(f) with all
 * channels. The restore reads the fewest channels, picked greedily (each
 * time the channel that raises min_f G_S(f) / G(f) most), for which
 * G_S(f) >= G(f) / C1_RHO at every frequency: the noise grows by at most
 * sqrt(C1_RHO) = 8 over the full least squares at any frequency, and the
 * build, the correlation and the border, the restore's main cost, shrink
 * by |S| / Cout. The shares |a_o(f)|^2 / G(f) come from the kernels' 2-D
 * DFT, once per weight version at the condition check (as__civ_c1_prepare,
 * which gives the verdict too: for one input channel cond(A(f)) is 1, or
 * infinite where a(f) vanishes), so no restore of Cin = 1 factors anything;
 * the pick costs Cout * P * Qh per greedy step. */

/* |a_o(f)|^2 over the half spectrum (f = kq P + kp), straight from the
 * kernels: w(o, u, v) = w[o * so + (u * kw + v) * st]. |a_o|^2 does not
 * depend on the kernel's flip or on where it sits on the grid (a phase),
 * so the plain 2-D DFT of each kernel is transformed, along the columns
 * first (kh x Qh per channel), then along the rows. Into wv (Cout, nf);
 * the sum over the channels, G(f), into g (nf doubles); tw: 2 (Qh kw +
 * P kh) doubles of scratch. */
static void c1_spectra(const as__civ *ci, const float *w, size_t so, size_t st,
                       float *wv, double *g, double *tw)
{
    const int P = ci->P, Q = ci->Q, Qh = ci->Qh, kh = ci->g.kh, kw = ci->g.kw;
    const int cout = ci->g.cout;
    const size_t nf = (size_t)P * Qh;
    /* twiddles e^{-2 pi i kq v / Q} (Qh x kw), then e^{-2 pi i kp u / P}
     * (P x kh), as (re, im) */
    double *eq = tw, *ep = tw + 2 * (size_t)Qh * kw;
    for (int kq = 0; kq < Qh; kq++)
        for (int v = 0; v < kw; v++) {
            const double ph = -2.0 * M_PI * (double)((long)kq * v % Q) / Q;
            eq[2 * (kq * kw + v)] = cos(ph), eq[2 * (kq * kw + v) + 1] = sin(ph);
        }
    for (int kp = 0; kp < P; kp++)
        for (int u = 0; u < kh; u++) {
            const double ph = -2.0 * M_PI * (double)((long)kp * u % P) / P;
            ep[2 * (kp * kh + u)] = cos(ph), ep[2 * (kp * kh + u) + 1] = sin(ph);
        }
    for (size_t f = 0; f < nf; f++)
        g[f] = 0.0;
    double t[16][2];
    for (int o = 0; o < cout; o++) {
        float *wo = wv + (size_t)o * nf;
        for (int kq = 0; kq < Qh; kq++) {
            const double *e = eq + 2 * (size_t)kq * kw;
            for (int u = 0; u < kh; u++) {
                double re = 0.0, im = 0.0;
                for (int v = 0; v < kw; v++) {
                    const double x = w[(size_t)o * so + (size_t)(u * kw + v) * st];
                    re += x * e[2 * v];
                    im += x * e[2 * v + 1];
                }
                t[u][0] = re, t[u][1] = im;
            }
            for (int kp = 0; kp < P; kp++) {
                const double *d = ep + 2 * (size_t)kp * kh;
                double re = 0.0, im = 0.0;
                for (int u = 0; u < kh; u++) {
                    re += t[u][0] * d[2 * u] - t[u][1] * d[2 * u + 1];
                    im += t[u][0] * d[2 * u + 1] + t[u][1] * d[2 * u];
                }
                const size_t f = (size_t)kq * P + kp;
                const double a2 = re * re + im * im;
                wo[f] = (float)a2;
                g[f] += a2;
            }
        }
    }
}

#define C1_RHO 64.0f   /* G_S >= G / C1_RHO at every frequency */

/* The channels to read (see "Fewer channels" above) into sel, their
 * number returned; wv: (Cout, nf) shares of G; r: nf floats of scratch,
 * left holding G_S / G; used: Cout bytes of scratch. */
static int pick_channels(const float *wv, int cout, size_t nf, float *r, int *sel,
                         unsigned char *used)
{
    int ns = 0;
    memset(used, 0, (size_t)cout);
    for (size_t f = 0; f < nf; f++)
        r[f] = 0.0f;
    while (ns < cout) {
        int best = -1;
        float bmin = -1.0f;
        for (int o = 0; o < cout; o++) {
            if (used[o])
                continue;
            const float *w = wv + (size_t)o * nf;
            float mn = 3.4e38f;
            for (size_t f = 0; f < nf && mn > bmin; f++) {
                const float t = r[f] + w[f];
                mn = t < mn ? t : mn;
            }
            if (mn > bmin) {
                bmin = mn;
                best = o;
            }
        }
        used[best] = 1;
        sel[ns++] = best;
        const float *w = wv + (size_t)best * nf;
        for (size_t f = 0; f < nf; f++)
            r[f] += w[f];
        if (bmin * C1_RHO >= 1.0f)
            break;
    }
    /* the order of the reads: by channel, for y's layout */
    for (int i = 1; i < ns; i++)
        for (int j = i; j > 0 && sel[j - 1] > sel[j]; j--) {
            const int t = sel[j];
            sel[j] = sel[j - 1];
            sel[j - 1] = t;
        }
    return ns;
}

/* The per-version state of the closed form (see "Fewer channels"): the
 * kernels' spectra, the condition verdict (1, or infinite when some
 * |a(f)|^2 vanishes: the Cholesky test of the factorization, d <= 1e-300 +
 * 1e-15 tr, for Cin = 1), the pick and 1 / G_S(f) (with the relative eps
 * of the factorization: G (1 + eps_rel)) into ci's c1 cache for version.
 * Returns 0 or AS_ENOMEM (the cache is then left invalid). */
int as__civ_c1_prepare(as__civ *ci, const float *w, size_t so, size_t st,
                       uint64_t version, double *cond)
{
    const int cout = ci->g.cout;
    const size_t nf = (size_t)ci->P * ci->Qh;
    ci->c1_ok = 0;
    float *wv = as__fmalloc(sizeof(float) * nf * ((size_t)cout + 1));
    double *g = as__fmalloc(sizeof(double) * (nf + 2 * ((size_t)ci->Qh * ci->g.kw +
                                                 (size_t)ci->P * ci->g.kh)));
    unsigned char *used = as__fmalloc((size_t)cout);
    if (!wv || !g || !used) {
        free(wv), free(g), free(used);
        return AS_ENOMEM;
    }
    float *rs = wv + nf * (size_t)cout;
    c1_spectra(ci, w, so, st, wv, g, g + nf);
    double c = 1.0;
    for (size_t f = 0; f < nf; f++) {
        const double d = g[f] * (1.0 + ci->cfg.eps_rel);
        if (!(d > 1e-300 + 1e-15 * g[f]))
            c = INFINITY;
        for (int o = 0; o < cout; o++)   /* shares of G (all 1 where G = 0) */
            wv[(size_t)o * nf + f] = g[f] > 0 ? (float)(wv[(size_t)o * nf + f] / g[f]) : 1.0f;
    }
    ci->c1_ns = pick_channels(wv, cout, nf, rs, ci->c1_sel, used);
    for (size_t f = 0; f < nf; f++)
        ci->c1_gi[f] = (float)(1.0 / (g[f] * rs[f] * (1.0 + ci->cfg.eps_rel)));
    ci->c1_version = version;
    ci->c1_ok = 1;
    if (cond)
        *cond = c;
    free(wv), free(g), free(used);
    return 0;
}

/* xt (P x Q) += the circular correlation of one output channel's F with
 * its kernel; fe: F on the grid extended by kh-1 rows and kw-1 columns of
 * wrap, Qe floats a row. Four vectors of a row at a time: four independent
 * chains of products and sums (one chain waits on the add latency). */
AS__CIV_CLONES
static void c1_corr(const float *fe, int Qe, const float *wk, int kh, int kw, int P, int Qs,
                    float *xt)
{
    for (int p = 0; p < P; p++) {
        float *xr = xt + (size_t)p * Qs;
        int q = 0;
        for (; q + 32 <= Qs; q += 32) {
            v8 a0 = ld8(xr + q), a1 = ld8(xr + q + 8), a2 = ld8(xr + q + 16),
               a3 = ld8(xr + q + 24);
            for (int u = 0; u < kh; u++) {
                const float *fr = fe + (size_t)(p + kh - 1 - u) * Qe + kw - 1 + q;
                for (int v = 0; v < kw; v++) {
                    const float w = wk[u * kw + v];
                    a0 += w * ld8(fr - v);
                    a1 += w * ld8(fr - v + 8);
                    a2 += w * ld8(fr - v + 16);
                    a3 += w * ld8(fr - v + 24);
                }
            }
            st8(xr + q, a0);
            st8(xr + q + 8, a1);
            st8(xr + q + 16, a2);
            st8(xr + q + 24, a3);
        }
        for (; q < Qs; q += 8) {
            v8 acc = ld8(xr + q);
            for (int u = 0; u < kh; u++) {
                const float *fr = fe + (size_t)(p + kh - 1 - u) * Qe + kw - 1 + q;
                for (int v = 0; v < kw; v++)
                    acc += wk[u * kw + v] * ld8(fr - v);
            }
            st8(xr + q, acc);
        }
    }
}

/* dst[b] = src[b] - c for b < len */
AS__CIV_CLONES
static void sub_row(float *dst, const float *src, float c, int len)
{
    int b = 0;
    const v8 cv = {c, c, c, c, c, c, c, c};
    for (; b + 8 <= len; b += 8)
        st8(dst + b, ld8(src + b) - cv);
    for (; b < len; b++)
        dst[b] = src[b] - c;
}

#define C1_OB 16   /* output channels of F held at once */

/* The border of F (the grid points outside Y's window, each a sum of the
 * kernels over frame pixels only) for ob <= C1_OB channels at once; xp:
 * the image with the frame in place and zeros inside, padded by kh-1 rows
 * and kw-1 columns of zeros on each side (xs floats a row); wblk: weights
 * as (kh, kw, C1_OB), zero beyond ob; fe: ob grids of fsz floats, Qe a
 * row. Four points of a row at a time (four independent chains). */
AS__CIV_CLONES
static void c1_border(const as__civ *ci, const float *xp, size_t xs, const float *wblk,
                      int ob, float *fe, int Qe, size_t fsz)
{
    const as__civ_geom *g = &ci->g;
    const int H = g->h, W = g->w, kh = g->kh, kw = g->kw;
    const int Pl = H + kh - 1, Ql = W + kw - 1, dh = ci->dh, dw = ci->dw;
    const int ho = ci->ho, wo = ci->wo;
    for (int a = 0; a < Pl; a++) {
        /* the kernel rows over image rows (the others read zeros) */
        const int u0 = kh - 1 - a > 0 ? kh - 1 - a : 0;
        const int u1 = H + kh - 1 - a < kh ? H + kh - 1 - a : kh;
        /* the border points of this row: [0, Ql), or the strips left and
         * right of the window */
        int seg[2][2] = {{0, Ql}, {0, 0}};
        if (a - dh >= 0 && a - dh < ho) {
            seg[0][1] = dw > 0 ? dw : 0;
            seg[1][0] = dw + wo > 0 ? dw + wo : 0;
            seg[1][1] = Ql;
        }
        for (int sg = 0; sg < 2; sg++)
            for (int b = seg[sg][0]; b < seg[sg][1]; b += 4) {
                const int nb = seg[sg][1] - b < 4 ? seg[sg][1] - b : 4;
                /* the kernel columns over image columns for some point of
                 * the group (the others read zeros): few in the side strips */
                const int v0 = kw - b - nb > 0 ? kw - b - nb : 0;
                const int v1 = W + kw - 1 - b < kw ? W + kw - 1 - b : kw;
                for (int k0 = 0; k0 < ob; k0 += 8) {
                    v8 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
                    for (int u = u0; u < u1; u++) {
                        const float *xr = xp + (size_t)(a + u) * xs + b;
                        const float *wr = wblk + (size_t)u * kw * C1_OB + k0;
                        for (int v = v0; v < v1; v++) {
                            const v8 w0 = ld8(wr + (size_t)v * C1_OB);
                            c0 += xr[v] * w0;
                            c1 += xr[v + 1] * w0;
                            c2 += xr[v + 2] * w0;
                            c3 += xr[v + 3] * w0;
                        }
                    }
                    const v8 cs[4] = {c0, c1, c2, c3};
                    const int kn = ob - k0 < 8 ? ob - k0 : 8;
                    for (int j = 0; j < nb; j++)
                        for (int k = 0; k < kn; k++)
                            fe[(k0 + k) * fsz + (size_t)a * Qe + b + j] = cs[j][k];
                }
            }
    }
}

size_t as__civ_c1_work_need(const as__civ *ci, int n)
{
    const as__civ_geom *g = &ci->g;
    const size_t P = (size_t)ci->P, Q = (size_t)ci->Q;
    const size_t NB = (((size_t)n + 1) / 2 + 7) / 8 * 8, E = 2 * NB, f4 = sizeof(float);
    const size_t Qs = (Q + 7) / 8 * 8, Pe = P + g->kh - 1, Qe = Qs + g->kw - 1;
    const size_t ob = g->cout < C1_OB ? (size_t)g->cout : C1_OB;
    return as__civ_wround(f4 * Pe * Qe * ob) + as__civ_wround(f4 * 8 * P * Qs) +
           as__civ_wround(f4 * ((g->h + 2 * (size_t)(g->kh - 1)) * (g->w + 2 * (size_t)(g->kw - 1)) + 3)) +
           2 * as__civ_wround(f4 * P * Q * E) +
           as__civ_wround(f4 * Q * E) + as__civ_wround(f4 * 2 * P * E);
}

/* The correlation a_S^H F of one image into xt (P x Qs): F of C1_OB
 * output channels at a time (the window Y - b, the border from the frame
 * in xp, the wrap), each on the grid extended by the wrap (fe: C1_OB grids
 * of Pe x Qe). */
static void c1_image(const as__civ *ci, int img, const float *y, const float *bias,
                     const float *xp, size_t xs, float *fe, float *xt)
{
    const as__civ_geom *g = &ci->g;
    const int P = ci->P, Q = ci->Q, cout = g->cout, ho = ci->ho, wo = ci->wo;
    const int kh = g->kh, kw = g->kw, Qs = (Q + 7) / 8 * 8;
    const int Pl = g->h + kh - 1, Ql = g->w + kw - 1, Pe = P + kh - 1, Qe = Qs + kw - 1;
    const int dh = ci->dh, dw = ci->dw, ns = ci->c1_ns, *sel = ci->c1_sel;
    const size_t flen = as__civ_frame_len(g), fsz = (size_t)Pe * Qe;
    memset(xt, 0, sizeof(float) * (size_t)P * Qs);
    for (int o0 = 0; o0 < ns; o0 += C1_OB) {
        const int ob = ns - o0 < C1_OB ? ns - o0 : C1_OB;
        /* zeros where neither the window nor the border writes: the
         * columns from Ql on and the rows Pl .. P-1 (the wrap comes
         * last) */
        for (int k = 0; k < ob; k++) {
            float *f = fe + k * fsz;
            for (int a = 0; a < Pl; a++)
                memset(f + (size_t)a * Qe + Ql, 0, sizeof(float) * (size_t)(Qe - Ql));
            memset(f + (size_t)Pl * Qe, 0, sizeof(float) * (size_t)(P - Pl) * Qe);
        }
        /* the window: Y - b */
        for (int k = 0; k < ob; k++) {
            const float *yo = y + ((size_t)img * cout + sel[o0 + k]) * ho * wo;
            const float bo = bias ? bias[sel[o0 + k]] : 0.0f;
            for (int a = 0; a < Pl; a++) {
                const int i = a - dh;
                if (i < 0 || i >= ho)
                    continue;
                const int b0 = dw > 0 ? dw : 0, b1 = wo + dw < Ql ? wo + dw : Ql;
                float *fr = fe + k * fsz + (size_t)a * Qe;
                const float *ys = yo + (size_t)i * wo - dw;
                sub_row(fr + b0, ys + b0, bo, b1 - b0);
            }
        }
        /* the border: the kernels against the frame, all channels of
         * the block per point (weights wt: (kh, kw, Cout); the block's
         * as (kh, kw, C1_OB), zero beyond ob) */
        float wblk[256 * C1_OB];
        for (int t = 0; flen && t < kh * kw; t++)
            for (int k = 0; k < C1_OB; k++)
                wblk[t * C1_OB + k] = k < ob ? ci->wt[(size_t)t * cout + sel[o0 + k]] : 0.0f;
        if (flen)
            c1_border(ci, xp, xs, wblk, ob, fe, Qe, fsz);
        for (int k = 0; k < ob; k++) {
            float *f = fe + k * fsz;
            float wk_o[256];
            for (int t = 0; t < kh * kw; t++)
                wk_o[t] = ci->wt[(size_t)t * cout + sel[o0 + k]];
            /* wrap: columns Q.. are columns 0.., rows P.. rows 0.. */
            for (int a = 0; a < P; a++)
                for (int v = 0; v < kw - 1; v++)
                    f[(size_t)a * Qe + Q + v] = f[(size_t)a * Qe + v];
            memcpy(f + (size_t)P * Qe, f, sizeof(float) * (size_t)(kh - 1) * Qe);
            c1_corr(f, Qe, wk_o, kh, kw, P, Qs, xt);
        }
    }
}

/* X^ = (a_S^H F)^ / G_S: Ga holds a_S^H F of every image (planar, E floats
 * per grid point); rows: FFT along Q into Gb; columns: FFT along P, times
 * 1 / G_S, inverse FFT along P back into Ga. C: a column (P * E floats). */
static void c1_solve(const as__civ *ci, float *Ga, float *Gb, float *C, int NB)
{
    const int P = ci->P, Q = ci->Q, Qh = ci->Qh;
    const size_t E = 2 * (size_t)NB;
    const float *gi = ci->c1_gi;
    for (int p = 0; p < P; p++)
        as__civ_fft_run(&ci->fq, Gb + (size_t)p * Q * E, E, Ga + (size_t)p * Q * E, E, NB);
    for (int kq = 0; kq < Qh; kq++) {
        const int mq = (Q - kq) % Q, pair = mq != kq;
        const int cols[2] = {kq, mq};
        for (int k = 0; k <= pair; k++) {
            as__civ_fft_run(&ci->fp, C, E, Gb + (size_t)cols[k] * E, (size_t)Q * E, NB);
            for (int kp = 0; kp < P; kp++) {
                /* (kp, mq) = -((P-kp)%P, kq): the same real 1/G */
                const int fp = k ? (P - kp) % P : kp;
                const float s = gi[(size_t)kq * P + fp];
                float *e = C + (size_t)kp * E;
                for (size_t l = 0; l < E; l++)
                    e[l] *= s;
            }
            as__civ_fft_run(&ci->ip, Ga + (size_t)cols[k] * E, (size_t)Q * E, C, E, NB);
        }
    }
}

/* The correlations of 8 images (rows[k]: P x Qs, NULL: zeros) into 8
 * lanes of a grid of P x Q elements E floats apart: 8 points of the 8
 * images per step, transposed (rows are Qs >= Q floats, whole vectors). */
AS__CIV_CLONES
static void c1_scatter8(const float *const rows[8], int P, int Q, int Qs, float *dst, size_t E)
{
    for (int p = 0; p < P; p++) {
        const float *rp[8];
        for (int k = 0; k < 8; k++)
            rp[k] = rows[k] ? rows[k] + (size_t)p * Qs : NULL;
        float *dp = dst + (size_t)p * Q * E;
        for (int q = 0; q < Qs; q += 8) {
            v8 r[8];
            for (int k = 0; k < 8; k++)
                r[k] = rp[k] ? (v8)ld8(rp[k] + q) : (v8){0};
            AS__CIV_T8(r);
            for (int j = 0; j < 8 && q + j < Q; j++)
                st8(dp + (size_t)(q + j) * E, r[j]);
        }
    }
}

int as__civ_restore_c1(as__civ *ci, uint64_t version, int n, const float *y,
                       const float *bias, const float *frame, float *x)
{
    const as__civ_geom *g = &ci->g;
    const int H = g->h, W = g->w, P = ci->P, Q = ci->Q;
    const int cout = g->cout, kh = g->kh, kw = g->kw;
    const int N2 = (n + 1) / 2, NB = (N2 + 7) / 8 * 8;
    const size_t E = 2 * (size_t)NB;
    /* rows of X~ padded to whole vectors (Qs), F's rows to Qs + kw - 1 */
    const int Qs = (Q + 7) / 8 * 8, Pe = P + kh - 1, Qe = Qs + kw - 1;
    const size_t flen = as__civ_frame_len(g);
    as__civ_work wk;
    double t0 = as__civ_now_ms();
    /* the channels read and 1 / G_S, once per version (ci->wt holds the
     * weights of the version restored: set by prepare or restore_stream) */
    if (!(ci->c1_ok && ci->c1_version == version) &&
        as__civ_c1_prepare(ci, ci->wt, 1, (size_t)cout, version, NULL))
        return AS_ENOMEM;
    ci->st.c1_channels = ci->c1_ns;
    if (as__civ_work_begin(ci, &wk, as__civ_c1_work_need(ci, n)))
        return AS_ENOMEM;
    float *fe = as__civ_wtake(&wk, sizeof(float) * (size_t)Pe * Qe *
                              (cout < C1_OB ? cout : C1_OB));
    float *xt = as__civ_wtake(&wk, sizeof(float) * 8 * (size_t)P * Qs);   /* 8 images */
    /* the frame of an image, zero inside and padded by kh-1 rows and kw-1
     * columns (then the border's sums need no bounds; +3: the last group
     * of four points of a row reads up to 3 floats beyond) */
    const size_t xs = (size_t)W + 2 * (kw - 1);
    float *xp = as__civ_wtake(&wk, sizeof(float) * ((H + 2 * (size_t)(kh - 1)) * xs + 3));
    float *Ga = as__civ_wtake(&wk, sizeof(float) * (size_t)P * Q * E);
    float *Gb = as__civ_wtake(&wk, sizeof(float) * (size_t)P * Q * E);
    float *R = as__civ_wtake(&wk, sizeof(float) * (size_t)Q * E);
    float *C = as__civ_wtake(&wk, sizeof(float) * (size_t)2 * P * E);
    double t1 = as__civ_now_ms();

    /* X~ of 8 images at a time (lanes l0 .. l0+7 of one half of Ga: image
     * lane + half * N2), then into Ga transposed, 8 points of the 8 images
     * per step (every lane written: no image, zeros) */
    memset(xp, 0, sizeof(float) * ((H + 2 * (size_t)(kh - 1)) * xs + 3));
    for (int half = 0; half < 2; half++)
        for (int l0 = 0; l0 < NB; l0 += 8) {
            const float *rows[8];
            for (int k = 0; k < 8; k++) {
                const int img = l0 + k + half * N2;
                float *xk = xt + (size_t)k * P * Qs;
                rows[k] = l0 + k < N2 && img < n ? xk : NULL;
                if (!rows[k])
                    continue;
                if (flen)
                    as__civ_frame_put_one(ci, frame + (size_t)img * flen,
                                          xp + (size_t)(kh - 1) * xs + kw - 1, xs);
                c1_image(ci, img, y, bias, xp, xs, fe, xk);
            }
            c1_scatter8(rows, P, Q, Qs, Ga + (size_t)half * NB + l0, E);
        }
    double t2 = as__civ_now_ms();
    c1_solve(ci, Ga, Gb, C, NB);
    double t3 = as__civ_now_ms();
    ci->st.phase_ms[0] = t2 - t1;
    ci->st.phase_ms[1] = 0;   /* the transforms are inside the solve */
    ci->st.phase_ms[2] = t1 - t0 + t3 - t2;
    as__civ_finish_rows(ci, n, Ga, E, (size_t)Q * E, R, frame, x, NB, 0);
    free(wk.own);
    return 0;
}
