/*
 * Per-frequency factorization for the conv inversion.
 *
 * At frequency f = (kp, kq) of the P x Q grid the full linear output is
 * F^(f) = A(f) X^(f) with A(f)[o][c] = sum_{u,v} W[o,c,u,v]
 * exp(-2 pi i (kp (kh-1-u)/P + kq (kw-1-v)/Q)) (the cross-correlation is a
 * convolution with the flipped kernel). The least-squares solution is
 * X^ = M(f) F^ with M(f) = (A^H A + eps I)^-1 A^H; we factor the Gram matrix
 * G = A^H A + eps I = L L^H (Cholesky, double precision), form M by two
 * triangular solves per column of A^H and keep M in fp32: applying it is one
 * small complex matrix product per frequency for the whole batch.
 *
 * The weights are real, so M(-f) = conj(M(f)): only the half spectrum
 * kq in [0, Q/2] is factored.
 *
 * cond(A(f)) = sqrt(lambda_max(G) / lambda_min(G)) is estimated with a few
 * power iterations on G (lambda_max) and inverse iterations with the
 * Cholesky factor (lambda_min). Rayleigh quotients converge from the inside,
 * so the estimate is a lower bound that is tight after a few iterations for
 * the well-separated extreme eigenvalues seen here; a failed Cholesky (a
 * non-positive pivot) reports an infinite condition number.
 *
 * Speed: frequencies are processed LANES at a time in lockstep; every scalar
 * operation of the textbook algorithm is a loop over the lanes, which the
 * compiler vectorizes.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/invert/impl.h"

#define LANES 8
#define POWER_ITERS 8

struct as__civ_lanes {
    double re[LANES], im[LANES];
};
typedef struct as__civ_lanes lanes_c;

/* The Gram matrix G(f) = A(f)^H A(f) without forming it from A at every
 * frequency: G[i][j](f) = sum_d R_ij(d) e^{2 pi i (kp du/P + kq dv/Q)}
 * over the kernel offsets d = (du, dv) in [-(kh-1), kh-1] x [-(kw-1), kw-1],
 * with the kernels' cross-correlation R_ij(d) = sum_o sum_{u,v} W[o,i,u,v]
 * W[o,j,u+du,v+dv] (computed once). Per frequency that is (2kh-1) complex
 * multiply-adds per entry, after the transform along dv, instead of Cout
 * (the product A^H A): 5 instead of 16..64 for 3x3 kernels. Tg[kq][ij][du]
 * = sum_dv R_ij(du, dv) e^{2 pi i kq dv/Q}, ij the lower-triangle index of
 * (i, j), i >= j: i(i+1)/2 + j. Returns 0 or AS_ENOMEM. */
typedef double v4d __attribute__((vector_size(32)));
/* The 8 lanes of a lanes_c part as one vector (lowered per target clone). */
typedef double v8d __attribute__((vector_size(64)));
typedef double v8du __attribute__((vector_size(64), aligned(8), may_alias));
#define VR(p) (*(v8du *)((p)->re))
#define VI(p) (*(v8du *)((p)->im))
typedef double v4du __attribute__((vector_size(32), aligned(8), may_alias));

#define GRB 5   /* rows of a register block (3x3 kernels: 9 = 5 + 4) */

/* R_ij(d) for i >= j from V[o][c*nt + t] (rows of NRp >= ci*nt + 16
 * doubles, zero beyond ci*nt; see gram_dft). Per input channel i: the
 * products K[t1][r2] = sum_o V[o][i*nt + t1] V[o][r2] for every column r2
 * of channels j <= i, in register blocks (GRB rows x 16 columns, vectors
 * along the columns), then added into R_ij at offset d(t1, t2). Kb: GRB *
 * NRp doubles of scratch. */
AS__CIV_CLONES
static void gram_corr(int ci, int co, int kh, int kw, const double *V, size_t NRp, double *Kb,
                      double *R)
{
    const int nt = kh * kw, nw = 2 * kw - 1, nh = 2 * kh - 1;
    for (int i = 0; i < ci; i++) {
        const int ncol = (i + 1) * nt, ncolp = (ncol + 15) / 16 * 16;
        for (int t0 = 0; t0 < nt; t0 += GRB) {
            const int tr = nt - t0 < GRB ? nt - t0 : GRB;
            for (int c0 = 0; c0 < ncolp; c0 += 16) {
                v8d acc[GRB][2] = {{{0}}};
                for (int o = 0; o < co; o++) {
                    const double *vo = V + (size_t)o * NRp;
                    const v8d b0 = *(const v8du *)(vo + c0), b1 = *(const v8du *)(vo + c0 + 8);
                    const double *a = vo + (size_t)i * nt + t0;
                    for (int r = 0; r < GRB; r++) {
                        const double ar = r < tr ? a[r] : 0.0;
                        acc[r][0] += ar * b0;
                        acc[r][1] += ar * b1;
                    }
                }
                for (int r = 0; r < tr; r++) {
                    *(v8du *)(Kb + (size_t)r * NRp + c0) = acc[r][0];
                    *(v8du *)(Kb + (size_t)r * NRp + c0 + 8) = acc[r][1];
                }
            }
            for (int r = 0; r < tr; r++) {
                const int t1 = t0 + r, u = t1 / kw, v = t1 % kw;
                const double *kr = Kb + (size_t)r * NRp;
                for (int j = 0; j <= i; j++) {
                    double *rij = R + ((size_t)i * (i + 1) / 2 + j) * nh * nw +
                                  (kh - 1 - u) * nw + (kw - 1 - v);
                    const double *kj = kr + (size_t)j * nt;
                    for (int u2 = 0; u2 < kh; u2++)
                        for (int v2 = 0; v2 < kw; v2++)
                            rij[u2 * nw + v2] += kj[u2 * kw + v2];
                }
            }
        }
    }
}

size_t as__civ_gram_len(const as__conv_geom *g)
{
    return (size_t)g->cin * (g->cin + 1) / 2 * (2 * g->kh - 1) * (2 * g->kw - 1);
}

int as__civ_gram(const as__conv_geom *g, const float *w, double *R)
{
    const int ci = g->cin, co = g->cout, kh = g->kh, kw = g->kw;
    const size_t NRp = (size_t)ci * kh * kw + 16;
    double *wd = calloc((size_t)co * NRp + 8 * NRp, sizeof(double));
    if (!wd)
        return AS_ENOMEM;
    memset(R, 0, sizeof(double) * as__civ_gram_len(g));
    /* V[o][c*nt + t] (tap t = u*kw + v of input channel c), rows of NRp */
    for (int o = 0; o < co; o++)
        for (int c = 0; c < ci; c++)
            for (int t = 0; t < kh * kw; t++)
                wd[(size_t)o * NRp + (size_t)c * kh * kw + t] = w[((size_t)o * ci + c) * kh * kw + t];
    gram_corr(ci, co, kh, kw, wd, NRp, wd + (size_t)co * NRp, R);
    free(wd);
    return 0;
}

/* Tg from R (computed here when R is NULL). */
static int gram_dft(const as__conv_geom *g, int Q, const float *w, const double *Rin,
                    double *Tg)
{
    const int ci = g->cin, kh = g->kh, kw = g->kw;
    const int Qh = Q / 2 + 1, nh = 2 * kh - 1, nw = 2 * kw - 1;
    const size_t npair = (size_t)ci * (ci + 1) / 2;
    double *Rown = NULL;
    const double *R = Rin;
    if (!R) {
        if (!(Rown = malloc(sizeof(double) * as__civ_gram_len(g))) ||
            as__civ_gram(g, w, Rown)) {
            free(Rown);
            return AS_ENOMEM;
        }
        R = Rown;
    }
    double cs[2 * 31];   /* e^{2 pi i kq dv/Q}, dv in [-(kw-1), kw-1], kw <= 16 */
    for (int kq = 0; kq < Qh; kq++) {
        for (int dv = 0; dv < nw; dv++) {
            const double a = 2.0 * M_PI * kq * (dv - (kw - 1)) / Q;
            cs[2 * dv] = cos(a);
            cs[2 * dv + 1] = sin(a);
        }
        for (size_t ij = 0; ij < npair; ij++)
            for (int du = 0; du < nh; du++) {
                const double *r = R + (ij * nh + du) * nw;
                double sr = 0, si = 0;
                for (int dv = 0; dv < nw; dv++) {
                    sr += r[dv] * cs[2 * dv];
                    si += r[dv] * cs[2 * dv + 1];
                }
                double *t = Tg + 2 * (((size_t)kq * npair + ij) * nh + du);
                t[0] = sr;
                t[1] = si;
            }
    }
    free(Rown);
    return 0;
}

static int begin_impl(as__civ_fctx *fc, const as__conv_geom *g, int P, int Q,
                      const float *w, const double *R, int need_a);

int as__civ_factor_begin(as__civ_fctx *fc, const as__conv_geom *g, int P,
                         int Q, const float *w, const double *R)
{
    return begin_impl(fc, g, P, Q, w, R, 1);
}

/* need_a = 0: for condition numbers only (no M, no adjoint factor), which
 * do not need A(f), so not its row DFTs T either. */
static int begin_impl(as__civ_fctx *fc, const as__conv_geom *g, int P, int Q,
                      const float *w, const double *R, int need_a)
{
    const int ci = g->cin, co = g->cout, kh = g->kh, kw = g->kw;
    const int Qh = Q / 2 + 1;
    memset(fc, 0, sizeof *fc);
    fc->g = *g;
    fc->P = P;
    fc->Q = Q;
    fc->nf = (size_t)P * Qh;
    /* T[kq][o][c][u] = sum_v W[o,c,u,v] e^{-2 pi i kq (kw-1-v)/Q}: the
     * column DFT of the kernel, shared by every kp. */
    fc->T = malloc(sizeof(double) * 2 * (need_a ? (size_t)Qh * co * ci * kh : 1));
    /* tw[kp][d] = e^{2 pi i kp (d - (kh-1)) / P}, d < 2kh-1: the row
     * twiddles of A (d <= kh-1) and of the Gram matrix */
    fc->tw = malloc(sizeof(double) * 2 * (size_t)P * (2 * kh - 1));
    fc->A = malloc(sizeof(lanes_c) * (size_t)co * ci);   /* (Cout, Cin) */
    fc->L = malloc(sizeof(lanes_c) * (size_t)ci * ci);   /* (Cin, Cin) */
    fc->v = malloc(sizeof(lanes_c) * (size_t)ci * 4);    /* vectors */
    /* Tg[kq][ij][du] for the Gram matrix (see gram_dft), lower triangle
     * i >= j, du in [-(kh-1), kh-1]. */
    const size_t npair = (size_t)ci * (ci + 1) / 2, nd = 2 * (size_t)kh - 1;
    fc->Tg = malloc(sizeof(double) * 2 * (size_t)Qh * npair * nd);
    if (!fc->T || !fc->A || !fc->L || !fc->v || !fc->Tg || !fc->tw) {
        as__civ_factor_end(fc);
        return AS_ENOMEM;
    }
    if (gram_dft(g, Q, w, R, fc->Tg)) {
        as__civ_factor_end(fc);
        return AS_ENOMEM;
    }
    for (int kp = 0; kp < P; kp++)
        for (int d = 0; d < 2 * kh - 1; d++) {
            const double a = 2.0 * M_PI * kp * (d - (kh - 1)) / P;
            fc->tw[2 * ((size_t)kp * (2 * kh - 1) + d)] = cos(a);
            fc->tw[2 * ((size_t)kp * (2 * kh - 1) + d) + 1] = sin(a);
        }
    double *T = fc->T;
    double cs[2 * 16];   /* e^{-2 pi i kq (kw-1-v)/Q} for v < kw <= 16 */
    for (int kq = 0; need_a && kq < Qh; kq++) {
        for (int vv = 0; vv < kw; vv++) {
            const double a = -2.0 * M_PI * kq * (kw - 1 - vv) / Q;
            cs[2 * vv] = cos(a);
            cs[2 * vv + 1] = sin(a);
        }
        for (int o = 0; o < co; o++)
            for (int c = 0; c < ci; c++)
                for (int u = 0; u < kh; u++) {
                    double sr = 0, si = 0;
                    const float *wr = w + (((size_t)o * ci + c) * kh + u) * kw;
                    for (int vv = 0; vv < kw; vv++) {
                        sr += wr[vv] * cs[2 * vv];
                        si += wr[vv] * cs[2 * vv + 1];
                    }
                    double *t = T + 2 * ((((size_t)kq * co + o) * ci + c) * kh + u);
                    t[0] = sr;
                    t[1] = si;
                }
    }
    return 0;
}

void as__civ_factor_end(as__civ_fctx *fc)
{
    free(fc->T);
    free(fc->Tg);
    free(fc->tw);
    free(fc->A);
    free(fc->L);
    free(fc->v);
    memset(fc, 0, sizeof *fc);
}

int as__civ_factor(const as__conv_geom *g, int P, int Q, const float *w,
                   const double *R, double eps_rel, float *m, double *cond_out)
{
    as__civ_fctx fc;
    int rc = begin_impl(&fc, g, P, Q, w, R, m != NULL);
    if (rc)
        return rc;
    if (cond_out)
        *cond_out = 0;
    as__civ_factor_range(&fc, 0, fc.nf, eps_rel, m, cond_out);
    as__civ_factor_end(&fc);
    return 0;
}

AS__CIV_CLONES
void as__civ_factor_range(as__civ_fctx *fc, size_t fbeg, size_t fend,
                          double eps_rel, float *m, double *cond_out)
{
    const int want_cond = cond_out != NULL;
    const as__conv_geom *g = &fc->g;
    const int ci = g->cin, co = g->cout, kh = g->kh;
    const int P = fc->P;
    const size_t nf = fend;
    const double *T = fc->T;
    lanes_c *A = fc->A, *L = fc->L, *v = fc->v;
    double cond_max = want_cond ? *cond_out : 0;
    for (size_t f0 = fbeg; f0 < nf; f0 += LANES) {
        int kp[LANES], kq[LANES];
        double epr[LANES][16], epi[LANES][16];   /* row twiddles, kh <= 16 */
        for (int l = 0; l < LANES; l++) {
            size_t f = f0 + l < nf ? f0 + l : f0;   /* pad with a real one */
            kq[l] = (int)(f / P);   /* column-major: one kq = P frequencies */
            kp[l] = (int)(f % P);
            for (int u = 0; u < kh; u++) {
                /* e^{-2 pi i kp (kh-1-u)/P} */
                const double *t = fc->tw + 2 * ((size_t)kp[l] * (2 * kh - 1) + u);
                epr[l][u] = t[0];
                epi[l][u] = t[1];
            }
        }
        /* A(f), for M or the adjoint factor (the Gram matrix comes from
         * Tg, so a condition check alone does not need it) */
        /* The lanes span few columns (kq values): per distinct kq, every
         * lane computed with that column's row DFTs T (vectors over the
         * lanes), kept in the lanes of that kq. */
        int kqd[LANES], nkq = 0;
        for (int l = 0; l < LANES; l++) {
            int k = 0;
            while (k < nkq && kqd[k] != kq[l]) k++;
            if (k == nkq) kqd[nkq++] = kq[l];
        }
        double eur[16][LANES], eui[16][LANES];
        for (int u = 0; u < kh; u++)
            for (int l = 0; l < LANES; l++) {
                eur[u][l] = epr[l][u];
                eui[u][l] = epi[l][u];
            }
        for (int d = 0; m && d < nkq; d++) {
            double sel[LANES];
            for (int l = 0; l < LANES; l++)
                sel[l] = kq[l] == kqd[d];
            for (int o = 0; o < co; o++)
                for (int c = 0; c < ci; c++) {
                    lanes_c *a = &A[(size_t)o * ci + c];
                    const double *t = T + 2 * ((((size_t)kqd[d] * co + o) * ci + c) * kh);
                    double sr[LANES] = {0}, si[LANES] = {0};
                    for (int u = 0; u < kh; u++) {
                        const double tr = t[2 * u], ti = t[2 * u + 1];
                        for (int l = 0; l < LANES; l++) {
                            sr[l] += eur[u][l] * tr - eui[u][l] * ti;
                            si[l] += eur[u][l] * ti + eui[u][l] * tr;
                        }
                    }
                    for (int l = 0; l < LANES; l++) {
                        a->re[l] = d ? (sel[l] != 0 ? sr[l] : a->re[l]) : sr[l];
                        a->im[l] = d ? (sel[l] != 0 ? si[l] : a->im[l]) : si[l];
                    }
                }
        }
        /* G = A^H A (lower triangle) into L, from Tg (gram_dft). */
        {
            const int nh = 2 * kh - 1;
            const size_t npair = (size_t)ci * (ci + 1) / 2;
            double gpr[31][LANES], gpi[31][LANES];   /* e^{2 pi i kp du/P} */
            for (int l = 0; l < LANES; l++)
                for (int du = 0; du < nh; du++) {
                    const double *t = fc->tw + 2 * ((size_t)kp[l] * nh + du);
                    gpr[du][l] = t[0];
                    gpi[du][l] = t[1];
                }
            for (int i = 0; i < ci; i++)
                for (int j = 0; j <= i; j++) {
                    lanes_c *s = &L[(size_t)i * ci + j];
                    const size_t off = 2 * ((size_t)i * (i + 1) / 2 + j) * nh;
                    for (int d = 0; d < nkq; d++) {
                        const double *t = fc->Tg + 2 * (size_t)kqd[d] * npair * nh + off;
                        double sr[LANES] = {0}, si[LANES] = {0};
                        for (int du = 0; du < nh; du++) {
                            const double tr = t[2 * du], ti = t[2 * du + 1];
                            for (int l = 0; l < LANES; l++) {
                                sr[l] += gpr[du][l] * tr - gpi[du][l] * ti;
                                si[l] += gpr[du][l] * ti + gpi[du][l] * tr;
                            }
                        }
                        for (int l = 0; l < LANES; l++) {
                            const int take = !d || kq[l] == kqd[d];
                            s->re[l] = take ? sr[l] : s->re[l];
                            s->im[l] = take ? (i == j ? 0.0 : si[l]) : s->im[l];
                        }
                    }
                }
        }
        double tr[LANES] = {0};
        for (int i = 0; i < ci; i++)
            for (int l = 0; l < LANES; l++)
                tr[l] += L[(size_t)i * ci + i].re[l];
        for (int i = 0; i < ci; i++)
            for (int l = 0; l < LANES; l++)
                L[(size_t)i * ci + i].re[l] += eps_rel * tr[l] / ci;

        /* lambda_max by power iteration on G (Hermitian; lower triangle
         * held in L before the factorization overwrites it). */
        v8d lmax = {0}, lmin = {0};
        lanes_c *x = v, *y = v + ci;
        for (int c = 0; want_cond && c < ci; c++)
            for (int l = 0; l < LANES; l++) {
                x[c].re[l] = 1.0 + 0.37 * ((c * 7919) % 13);
                x[c].im[l] = 0.11 * ((c * 104729) % 7);
            }
        for (int it = 0; want_cond && it < POWER_ITERS; it++) {
            v8d nx = {0}, rq = {0}, ny = {0};
            for (int i = 0; i < ci; i++) {
                v8d sr = {0}, si = {0};
                /* G[i][j] = L[i][j] for j <= i, conj(L[j][i]) above */
                for (int j = 0; j <= i; j++) {
                    const lanes_c *gp = &L[(size_t)i * ci + j];
                    const v8d gr = VR(gp), gi = VI(gp), xr = VR(&x[j]), xi = VI(&x[j]);
                    sr += gr * xr - gi * xi;
                    si += gr * xi + gi * xr;
                }
                for (int j = i + 1; j < ci; j++) {
                    const lanes_c *gp = &L[(size_t)j * ci + i];
                    const v8d gr = VR(gp), gi = VI(gp), xr = VR(&x[j]), xi = VI(&x[j]);
                    sr += gr * xr + gi * xi;
                    si += gr * xi - gi * xr;
                }
                VR(&y[i]) = sr;
                VI(&y[i]) = si;
                const v8d xr = VR(&x[i]), xi = VI(&x[i]);
                rq += xr * sr + xi * si;
                nx += xr * xr + xi * xi;
                ny += sr * sr + si * si;
            }
            lmax = rq / nx;
            v8d sc;
            for (int l = 0; l < LANES; l++)
                sc[l] = ny[l] > 0 ? 1.0 / sqrt(ny[l]) : 0.0;
            for (int i = 0; i < ci; i++) {
                VR(&x[i]) = VR(&y[i]) * sc;
                VI(&x[i]) = VI(&y[i]) * sc;
            }
        }

        /* Cholesky G = L L^H in place (lower). A non-positive pivot marks
         * the lane singular; the lane goes on with a harmless pivot so the
         * other lanes are unaffected. The imaginary part of the diagonal
         * gets 1 / L_ii (for the solves). */
        int singular[LANES] = {0};
        for (int j = 0; j < ci; j++) {
            lanes_c *ljj = &L[(size_t)j * ci + j];
            v8d dj = VR(ljj);
            for (int k = 0; k < j; k++) {
                const lanes_c *ljk = &L[(size_t)j * ci + k];
                const v8d a = VR(ljk), b = VI(ljk);
                dj -= a * a + b * b;
            }
            v8d dinv = {0};
            for (int l = 0; l < LANES; l++) {
                double d = dj[l];
                if (!(d > 1e-300 + 1e-15 * tr[l])) {
                    singular[l] = 1;
                    d = tr[l] > 0 ? tr[l] : 1.0;
                }
                dj[l] = sqrt(d);
                dinv[l] = 1.0 / dj[l];
            }
            VR(ljj) = dj;
            VI(ljj) = dinv;
            for (int i = j + 1; i < ci; i++) {
                lanes_c *lij = &L[(size_t)i * ci + j];
                v8d lr = VR(lij), li = VI(lij);
                for (int k = 0; k < j; k++) {
                    const lanes_c *lik = &L[(size_t)i * ci + k], *ljk = &L[(size_t)j * ci + k];
                    const v8d ar = VR(lik), ai = VI(lik), br = VR(ljk), bi = VI(ljk);
                    /* lij -= lik * conj(ljk) */
                    lr -= ar * br + ai * bi;
                    li -= ai * br - ar * bi;
                }
                VR(lij) = lr * dinv;
                VI(lij) = li * dinv;
            }
        }

/* Solve L L^H z = b in place (b in x[0..ci)). */
#define CHOL_SOLVE(x)                                                          \
        do {                                                                   \
            for (int i_ = 0; i_ < ci; i_++) {                                  \
                v8d xr_ = VR(&x[i_]), xi_ = VI(&x[i_]);                        \
                for (int k_ = 0; k_ < i_; k_++) {                              \
                    const lanes_c *lik_ = &L[(size_t)i_ * ci + k_];            \
                    const v8d a_ = VR(lik_), b_ = VI(lik_);                    \
                    const v8d yr_ = VR(&x[k_]), yi_ = VI(&x[k_]);              \
                    xr_ -= a_ * yr_ - b_ * yi_;                                \
                    xi_ -= a_ * yi_ + b_ * yr_;                                \
                }                                                              \
                const v8d d_ = VI(&L[(size_t)i_ * ci + i_]);                   \
                VR(&x[i_]) = xr_ * d_;                                         \
                VI(&x[i_]) = xi_ * d_;                                         \
            }                                                                  \
            for (int i_ = ci - 1; i_ >= 0; i_--) {                             \
                v8d xr_ = VR(&x[i_]), xi_ = VI(&x[i_]);                        \
                for (int k_ = i_ + 1; k_ < ci; k_++) {                         \
                    /* (L^H)[i][k] = conj(L[k][i]) */                          \
                    const lanes_c *lki_ = &L[(size_t)k_ * ci + i_];            \
                    const v8d a_ = VR(lki_), b_ = VI(lki_);                    \
                    const v8d yr_ = VR(&x[k_]), yi_ = VI(&x[k_]);              \
                    xr_ -= a_ * yr_ + b_ * yi_;                                \
                    xi_ -= a_ * yi_ - b_ * yr_;                                \
                }                                                              \
                const v8d d_ = VI(&L[(size_t)i_ * ci + i_]);                   \
                VR(&x[i_]) = xr_ * d_;                                         \
                VI(&x[i_]) = xi_ * d_;                                         \
            }                                                                  \
        } while (0)

        /* lambda_min by inverse iteration: Rayleigh quotient of G^-1. */
        for (int c = 0; want_cond && c < ci; c++)
            for (int l = 0; l < LANES; l++) {
                x[c].re[l] = 1.0 + 0.29 * ((c * 31) % 11);
                x[c].im[l] = -0.13 * ((c * 17) % 5);
            }
        for (int it = 0; want_cond && it < POWER_ITERS; it++) {
            v8d nx = {0};
            for (int i = 0; i < ci; i++) {
                y[i] = x[i];
                nx += VR(&x[i]) * VR(&x[i]) + VI(&x[i]) * VI(&x[i]);
            }
            CHOL_SOLVE(y);
            v8d rq = {0}, ny = {0};
            for (int i = 0; i < ci; i++) {
                const v8d xr = VR(&x[i]), xi = VI(&x[i]), yr = VR(&y[i]), yi = VI(&y[i]);
                rq += xr * yr + xi * yi;
                ny += yr * yr + yi * yi;
            }
            v8d sc;
            for (int l = 0; l < LANES; l++) {
                lmin[l] = rq[l] > 0 ? nx[l] / rq[l] : 0.0;
                sc[l] = ny[l] > 0 ? 1.0 / sqrt(ny[l]) : 0.0;
            }
            for (int i = 0; i < ci; i++) {
                VR(&x[i]) = VR(&y[i]) * sc;
                VI(&x[i]) = VI(&y[i]) * sc;
            }
        }
        for (int l = 0; want_cond && l < LANES && f0 + l < nf; l++) {
            double c = singular[l] || !(lmin[l] > 0) ? INFINITY : sqrt(lmax[l] / lmin[l]);
            if (!(c <= cond_max))
                cond_max = c;
        }

        /* fc->ginv: A^H (Cin x Cout) and the Cholesky factor L of G (Cin x
         * Cin, lower; the diagonal holds 1 / L_ii), for the adjoint path's
         * product and substitution (invert/adjoint.c). */
        /* A^H in blocks of 8 output channels: the 8 lanes (frequencies)
         * of 8 channels' entries converted to float and transposed, so each
         * frequency gets 8 consecutive floats of its row c (one store
         * instead of 8 scalar conversions and stores) */
        for (int o = 0; m && fc->ginv && o + 8 <= co; o += 8)
            for (int c = 0; c < ci; c++)
                for (int part = 0; part < 2; part++) {
                    v8 r[8];
                    for (int j = 0; j < 8; j++) {
                        const lanes_c *e = &A[(size_t)(o + j) * ci + c];
                        const v8d d = part ? -VI(e) : VR(e);
                        r[j] = __builtin_convertvector(d, v8);
                    }
                    AS__CIV_T8(r);
                    const size_t a = (size_t)ci * co, fs = 2 * a + 2 * (size_t)ci * ci;
                    for (int l = 0; l < LANES && f0 + l < nf; l++)
                        st8(m + (f0 + l - fbeg) * fs + part * a + (size_t)c * co + o, r[l]);
                }
        for (int l = 0; m && fc->ginv && l < LANES && f0 + l < nf; l++) {
            const size_t a = (size_t)ci * co;
            float *ar = m + (f0 + l - fbeg) * (2 * a + 2 * (size_t)ci * ci), *ai = ar + a;
            float *mr = ai + a, *mi = mr + (size_t)ci * ci;
            for (int o = co / 8 * 8; o < co; o++)   /* blocks of 8 below */
                for (int c = 0; c < ci; c++) {
                    ar[(size_t)c * co + o] = (float)A[(size_t)o * ci + c].re[l];
                    ai[(size_t)c * co + o] = (float)-A[(size_t)o * ci + c].im[l];
                }
            for (int i = 0; i < ci; i++)
                for (int k = 0; k < ci; k++) {
                    const lanes_c *lik = &L[(size_t)i * ci + k];
                    mr[(size_t)i * ci + k] = k < i ? (float)lik->re[l] : k == i ? (float)(1.0 / lik->re[l]) : 0.0f;
                    mi[(size_t)i * ci + k] = k < i ? (float)lik->im[l] : 0.0f;
                }
        }
        /* M = G^-1 A^H, column o of M solves G m = conj(A[o][:]); four
         * columns per pass over L (x4[c*4 + r]: row c of column o + r), so
         * L is read once for four right-hand sides. */
        int o4 = 0;
        for (; m && !fc->ginv && o4 + 4 <= co; o4 += 4) {
            lanes_c *x4 = v;
            for (int c = 0; c < ci; c++)
                for (int r = 0; r < 4; r++) {
                    const lanes_c *a = &A[(size_t)(o4 + r) * ci + c];
                    VR(&x4[c * 4 + r]) = VR(a);
                    VI(&x4[c * 4 + r]) = -VI(a);
                }
            /* the four right-hand sides in named registers (an array of
             * them indexed in the inner loop stayed in memory: a store and
             * a reload per step) */
#define X4_LOAD(i)                                                          \
    v8d xr0 = VR(&x4[(i) * 4]), xr1 = VR(&x4[(i) * 4 + 1]),                  \
        xr2 = VR(&x4[(i) * 4 + 2]), xr3 = VR(&x4[(i) * 4 + 3]);              \
    v8d xi0 = VI(&x4[(i) * 4]), xi1 = VI(&x4[(i) * 4 + 1]),                  \
        xi2 = VI(&x4[(i) * 4 + 2]), xi3 = VI(&x4[(i) * 4 + 3])
#define X4_STEP(k, sg)                                                      \
    do {                                                                    \
        const lanes_c *y_ = &x4[(k) * 4];                                   \
        xr0 -= a * VR(&y_[0]) - (sg) * b * VI(&y_[0]);                      \
        xi0 -= a * VI(&y_[0]) + (sg) * b * VR(&y_[0]);                      \
        xr1 -= a * VR(&y_[1]) - (sg) * b * VI(&y_[1]);                      \
        xi1 -= a * VI(&y_[1]) + (sg) * b * VR(&y_[1]);                      \
        xr2 -= a * VR(&y_[2]) - (sg) * b * VI(&y_[2]);                      \
        xi2 -= a * VI(&y_[2]) + (sg) * b * VR(&y_[2]);                      \
        xr3 -= a * VR(&y_[3]) - (sg) * b * VI(&y_[3]);                      \
        xi3 -= a * VI(&y_[3]) + (sg) * b * VR(&y_[3]);                      \
    } while (0)
#define X4_STORE(i, d)                                                      \
    do {                                                                    \
        VR(&x4[(i) * 4]) = xr0 * (d), VI(&x4[(i) * 4]) = xi0 * (d);         \
        VR(&x4[(i) * 4 + 1]) = xr1 * (d), VI(&x4[(i) * 4 + 1]) = xi1 * (d); \
        VR(&x4[(i) * 4 + 2]) = xr2 * (d), VI(&x4[(i) * 4 + 2]) = xi2 * (d); \
        VR(&x4[(i) * 4 + 3]) = xr3 * (d), VI(&x4[(i) * 4 + 3]) = xi3 * (d); \
    } while (0)
            for (int i = 0; i < ci; i++) {
                X4_LOAD(i);
                for (int k = 0; k < i; k++) {
                    const lanes_c *lik = &L[(size_t)i * ci + k];
                    const v8d a = VR(lik), b = VI(lik);
                    X4_STEP(k, 1.0);
                }
                X4_STORE(i, VI(&L[(size_t)i * ci + i]));
            }
            for (int i = ci - 1; i >= 0; i--) {
                X4_LOAD(i);
                for (int k = i + 1; k < ci; k++) {
                    /* (L^H)[i][k] = conj(L[k][i]) */
                    const lanes_c *lki = &L[(size_t)k * ci + i];
                    const v8d a = VR(lki), b = VI(lki);
                    X4_STEP(k, -1.0);
                }
                X4_STORE(i, VI(&L[(size_t)i * ci + i]));
            }
#undef X4_LOAD
#undef X4_STEP
#undef X4_STORE
            for (int l = 0; l < LANES && f0 + l < nf; l++) {
                float *mr = m + (f0 + l - fbeg) * 2 * (size_t)ci * co, *mi = mr + (size_t)ci * co;
                for (int c = 0; c < ci; c++)
                    for (int r = 0; r < 4; r++) {
                        mr[(size_t)c * co + o4 + r] = (float)x4[c * 4 + r].re[l];
                        mi[(size_t)c * co + o4 + r] = (float)x4[c * 4 + r].im[l];
                    }
            }
        }
        for (int o = o4; m && !fc->ginv && o < co; o++) {
            for (int c = 0; c < ci; c++)
                for (int l = 0; l < LANES; l++) {
                    x[c].re[l] = A[(size_t)o * ci + c].re[l];
                    x[c].im[l] = -A[(size_t)o * ci + c].im[l];
                }
            CHOL_SOLVE(x);
            for (int l = 0; l < LANES && f0 + l < nf; l++) {
                float *mr = m + (f0 + l - fbeg) * 2 * (size_t)ci * co, *mi = mr + (size_t)ci * co;
                for (int c = 0; c < ci; c++) {
                    mr[(size_t)c * co + o] = (float)x[c].re[l];
                    mi[(size_t)c * co + o] = (float)x[c].im[l];
                }
            }
        }
#undef CHOL_SOLVE
    }
    if (want_cond)
        *cond_out = cond_max;
}
