/*
 * Conv inversion, the adjoint restore (Cout >= 2 Cin, well conditioned):
 * A^H F in the spatial domain, Cin-channel transforms, Cin x Cin systems.
 * The rest of the solver is in conv_invert.c.
 */
#include <math.h>
#include <string.h>

#include "store/policies/conv_invert_impl.h"

/* ---- the adjoint path (Cout >= 2 Cin, well conditioned) ---------------- *
 *
 * X^ = G^-1 (A^H F^) with G = A^H A: A^H F is the correlation of F with the
 * weights (the transpose of the convolution, circular on the P x Q grid),
 * computed in the spatial domain, so only Cin channels are transformed
 * (forward and inverse) instead of Cout + Cin, and the per-frequency
 * system is Cin x Cin. The normal equations square the condition number:
 * rounding errors grow as cond^2 eps instead of cond eps, so this path is
 * taken only for cond <= AS__CIV_ADJ_COND (there cond^2 eps_fp32 ~ 1.5e-4
 * at worst, ~1e-6 measured). */

/* Row p of X~ = A^H F (circular): X~[c](p, q) = sum_{o,u,v} W[o,c,u,v]
 * F[o]((p + kh-1-u) mod P, (q + kw-1-v) mod Q); F is 0 outside rows < Pl,
 * columns < Ql; Frow[a]: row a of F (Q elements of Eo floats), read for
 * the rows of the window only. out: Q elements of Ei floats. */
AS__CIV_CLONES
static void adjoint_row(const as__conv_inv *ci, const float *const *Frow, int p, float *out,
                        int NB)
{
    const as__conv_geom *g = &ci->g;
    const int kh = g->kh, kw = g->kw, cin = g->cin, cout = g->cout;
    const int P = ci->P, Q = ci->Q, Pl = g->h + kh - 1, Ql = g->w + kw - 1;
    const size_t Bi = (size_t)cin * NB, Bo = (size_t)cout * NB;
    const size_t Ei = 2 * Bi, Eo = 2 * Bo;
    const float *taps[256];
    const float *wtap[256];
    for (int q = 0; q < Q; q++) {
        int nt = 0;
        for (int u = 0; u < kh; u++) {
            const int fp = (p + kh - 1 - u) % P;
            if (fp >= Pl)
                continue;
            for (int v = 0; v < kw; v++) {
                const int fq = (q + kw - 1 - v) % Q;
                if (fq >= Ql)
                    continue;
                taps[nt] = Frow[fp] + (size_t)fq * Eo;
                wtap[nt] = ci->wa + ((size_t)u * kw + v) * cin * cout;
                nt++;
            }
        }
        float *dst = out + (size_t)q * Ei;
        if (!nt) {
            memset(dst, 0, sizeof(float) * Ei);
            continue;
        }
        for (int ri = 0; ri < 2; ri++)
            for (int l0 = 0; l0 < NB;) {
                const int two = l0 + 16 <= NB;
                int c = 0;
                /* two lane blocks x 4 channels: 8 accumulators, 2 vector
                 * loads and 4 weights per output channel */
                for (; two && c + 4 <= cin; c += 4) {
                    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                    v8 b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
                    for (int t = 0; t < nt; t++) {
                        const float *w0 = wtap[t] + (size_t)c * cout;
                        const float *src = taps[t] + ri * Bo + l0;
                        for (int o = 0; o < cout; o++) {
                            const v8 fv = ld8(src + (size_t)o * NB);
                            const v8 gv = ld8(src + (size_t)o * NB + 8);
                            const float q0 = w0[o], q1 = w0[cout + o];
                            const float q2 = w0[2 * cout + o], q3 = w0[3 * cout + o];
                            a0 += q0 * fv; b0 += q0 * gv;
                            a1 += q1 * fv; b1 += q1 * gv;
                            a2 += q2 * fv; b2 += q2 * gv;
                            a3 += q3 * fv; b3 += q3 * gv;
                        }
                    }
                    float *d = dst + ri * Bi + (size_t)c * NB + l0;
                    st8(d, a0); st8(d + 8, b0);
                    st8(d + NB, a1); st8(d + NB + 8, b1);
                    st8(d + 2 * NB, a2); st8(d + 2 * NB + 8, b2);
                    st8(d + 3 * NB, a3); st8(d + 3 * NB + 8, b3);
                }
                /* the rest, one lane block at a time */
                for (int h = 0; h <= two; h++) {
                    const int lb = l0 + 8 * h;
                    int c2 = c;
                    for (; c2 + 4 <= cin; c2 += 4)
                        as__civ_taps_dot4(nt, wtap, (size_t)c2 * cout, taps, ri * Bo + lb, cout, NB,
                                  dst + ri * Bi + (size_t)c2 * NB + lb);
                    for (; c2 < cin; c2++) {
                        v8 acc0 = {0}, acc1 = {0};
                        for (int t = 0; t < nt; t++) {
                            const float *w0 = wtap[t] + (size_t)c2 * cout;
                            const float *src = taps[t] + ri * Bo + lb;
                            int o = 0;
                            for (; o + 2 <= cout; o += 2) {
                                acc0 += w0[o] * ld8(src + (size_t)o * NB);
                                acc1 += w0[o + 1] * ld8(src + (size_t)(o + 1) * NB);
                            }
                            for (; o < cout; o++)
                                acc0 += w0[o] * ld8(src + (size_t)o * NB);
                        }
                        st8(dst + ri * Bi + (size_t)c2 * NB + lb, acc0 + acc1);
                    }
                }
                l0 += two ? 16 : 8;
            }
    }
}

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

int as__civ_restore_adjoint(as__conv_inv *ci, as__civ_fctx *fc, int n, const float *y,
                           const float *bias, const float *frame, float *x)
{
    const as__conv_geom *g = &ci->g;
    const int H = g->h, W = g->w, P = ci->P, Q = ci->Q, Qh = ci->Qh;
    const int cin = g->cin, cout = g->cout, ho = ci->ho;
    const int N2 = (n + 1) / 2, NB = (N2 + 7) / 8 * 8;
    const size_t Bo = (size_t)cout * NB, Bi = (size_t)cin * NB;
    const size_t Eo = 2 * Bo, Ei = 2 * Bi;
    const int kh = g->kh, Pl = H + kh - 1;
    const size_t flen = as__conv_frame_len(g);
    const size_t gsz = 2 * (size_t)cin * cin;
    as__civ_work wk;
    if (as__civ_work_begin(ci, &wk, as__civ_work_need(ci, n, 1)))
        return AS_ENOMEM;
    float *xf = as__civ_wtake(&wk, sizeof(float) * (flen ? flen : 1) * Ei);
    int *fidx = as__civ_wtake(&wk, sizeof(int) * (size_t)H * W);
    float *F = as__civ_wtake(&wk, sizeof(float) * as__civ_adj_slots(g) * Q * Eo);     /* row slots */
    const float **Frow = as__civ_wtake(&wk, sizeof(float *) * (size_t)Pl);
    float *G = as__civ_wtake(&wk, sizeof(float) * (size_t)P * Q * Ei);        /* then X */
    float *R = as__civ_wtake(&wk, sizeof(float) * (size_t)Q * Ei);
    float *C = as__civ_wtake(&wk, sizeof(float) * (size_t)4 * P * Ei);
    float *mblk = as__civ_wtake(&wk, sizeof(float) * gsz * P);
    double t0 = as__civ_now_ms();
    as__civ_frame_pack(ci, n, frame, xf, fidx, NB);
    const double t_pack = as__civ_now_ms() - t0;
    /* X~ = A^H F row by row, FFT along Q into G. Row p reads F rows
     * p .. p+kh-1 (mod P; rows >= Pl are 0): F in the spatial domain is
     * built a row ahead of its first use, into its slot. */
    double t_build = 0, t_fft = 0;
    int built = 0;   /* F rows < built are in their slots */
    for (int p = 0; p < P; p++) {
        const int need = p + kh < Pl ? p + kh : Pl;
        double ta = as__civ_now_ms();
        for (; built < need; built++) {
            const int a = built;
            float *Ra = F + as__civ_adj_slot(g, a) * Q * Eo;
            memset(Ra, 0, sizeof(float) * (size_t)Q * Eo);
            const int i = a - ci->dh;
            if (i >= 0 && i < ho)
                as__civ_scatter_yrow(ci, n, y, bias, i, Ra, NB);
            if (flen)
                as__civ_border_row(ci, xf, fidx, a, Ra, NB);
            Frow[a] = Ra;
        }
        double tb = as__civ_now_ms();
        adjoint_row(ci, Frow, p, R, NB);
        as__civ_fft_run(&ci->fq, G + (size_t)p * Q * Ei, Ei, R, Ei, Bi);
        t_build += tb - ta;
        t_fft += as__civ_now_ms() - tb;
    }
    ci->st.phase_ms[0] = t_build + t_pack;
    double t_solve = 0, t_ifft = 0;
    /* The column pass reads both columns of G before it writes them: X
     * in place of G. */
    float *X = G;
    float *Cf[2] = {C, C + (size_t)P * Ei}, *Cx[2] = {C + (size_t)2 * P * Ei, C + (size_t)3 * P * Ei};
    for (int kq = 0; kq < Qh; kq++) {
        const int mq = (Q - kq) % Q, pair = mq != kq;
        const int cols[2] = {kq, mq};
        double ta = as__civ_now_ms();
        for (int k = 0; k <= pair; k++)
            as__civ_fft_run(&ci->fp, Cf[k], Ei, G + (size_t)cols[k] * Ei, (size_t)Q * Ei, Bi);
        double tb = as__civ_now_ms();
        const float *mcol = mblk;
        if (ci->mstream)
            mcol = ci->mstream + (size_t)kq * P * gsz;
        else
            as__civ_factor_range(fc, (size_t)kq * P, (size_t)(kq + 1) * P, ci->cfg.eps_rel,
                                 mblk, NULL);
        for (int kp = 0; kp < P; kp++) {
            const float *mf = mcol + (size_t)kp * gsz;
            solve_chol(mf, mf + gsz / 2, 1.0f, Cf[0] + (size_t)kp * Ei,
                       Cx[0] + (size_t)kp * Ei, cin, NB);
            if (pair) {
                const int mp = (P - kp) % P;
                solve_chol(mf, mf + gsz / 2, -1.0f, Cf[1] + (size_t)mp * Ei,
                           Cx[1] + (size_t)mp * Ei, cin, NB);
            }
        }
        double tc = as__civ_now_ms();
        for (int k = 0; k <= pair; k++)
            as__civ_fft_run(&ci->ip, X + (size_t)cols[k] * Ei, (size_t)Q * Ei, Cx[k], Ei, Bi);
        t_fft += tb - ta;
        t_solve += tc - tb;
        t_ifft += as__civ_now_ms() - tc;
    }
    ci->st.phase_ms[1] = t_fft;
    ci->st.phase_ms[2] = t_solve;
    as__civ_finish_rows(ci, n, X, R, frame, x, NB, t_ifft);
    free(wk.own);
    return 0;
}
