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
#include "allocator/fault.h"

#define LANES AS__CIV_LANES
#define POWER_ITERS 8

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
typedef long v8i64 __attribute__((vector_size(64)));
typedef long v8i64u __attribute__((vector_size(64), aligned(8), may_alias));

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

size_t as__civ_gram_len(const as__civ_geom *g)
{
    return (size_t)g->cin * (g->cin + 1) / 2 * (2 * g->kh - 1) * (2 * g->kw - 1);
}

/* Doubles of as__civ_gram's scratch: the weights as rows of NRp and GRB
 * rows of products (gram_corr). */
static size_t gram_scratch_len(const as__civ_geom *g)
{
    const size_t NRp = (size_t)g->cin * g->kh * g->kw + 16;
    return (size_t)g->cout * NRp + 8 * NRp;
}

int as__civ_gram(const as__civ_geom *g, const float *w, double *R, void *scratch)
{
    const int ci = g->cin, co = g->cout, kh = g->kh, kw = g->kw;
    const size_t NRp = (size_t)ci * kh * kw + 16, len = gram_scratch_len(g);
    double *wd = scratch ? scratch : as__fmalloc(sizeof(double) * len);
    if (!wd)
        return AS_ENOMEM;
    memset(wd, 0, sizeof(double) * len);
    memset(R, 0, sizeof(double) * as__civ_gram_len(g));
    /* V[o][c*nt + t] (tap t = u*kw + v of input channel c), rows of NRp */
    for (int o = 0; o < co; o++)
        for (int c = 0; c < ci; c++)
            for (int t = 0; t < kh * kw; t++)
                wd[(size_t)o * NRp + (size_t)c * kh * kw + t] = w[((size_t)o * ci + c) * kh * kw + t];
    gram_corr(ci, co, kh, kw, wd, NRp, wd + (size_t)co * NRp, R);
    if (!scratch)
        free(wd);
    return 0;
}

/* Tg from R (computed here when R is NULL). */
static int gram_dft(const as__civ_geom *g, int Q, const float *w, const double *Rin,
                    double *Tg)
{
    const int ci = g->cin, kh = g->kh, kw = g->kw;
    const int Qh = Q / 2 + 1, nh = 2 * kh - 1, nw = 2 * kw - 1;
    const size_t npair = (size_t)ci * (ci + 1) / 2;
    double *Rown = NULL;
    const double *R = Rin;
    if (!R) {
        if (!(Rown = as__fmalloc(sizeof(double) * as__civ_gram_len(g))) ||
            as__civ_gram(g, w, Rown, NULL)) {
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

static int begin_impl(as__civ_fctx *fc, const as__civ_geom *g, int P, int Q,
                      const float *w, const double *R, int need_a, void *scratch);

int as__civ_factor_begin(as__civ_fctx *fc, const as__civ_geom *g, int P,
                         int Q, const float *w, const double *R, void *scratch, int lu)
{
    /* the LU path needs A(f) only: no Gram matrices (2: skip their DFT) */
    int rc = begin_impl(fc, g, P, Q, w, R, lu ? 2 : 1, scratch);
    if (!rc)
        fc->lu = lu;
    return rc;
}

/* The factorization's buffers, in bytes, each rounded to 64 (need_a = 0:
 * T is not needed). */
static size_t begin_sizes(const as__civ_geom *g, int P, int Q, int need_a, size_t sz[6])
{
    const size_t ci = (size_t)g->cin, co = (size_t)g->cout, kh = (size_t)g->kh;
    const size_t Qh = (size_t)Q / 2 + 1, npair = ci * (ci + 1) / 2, nd = 2 * kh - 1;
    sz[0] = sizeof(double) * 2 * (need_a ? Qh * co * ci * kh : 1);   /* T */
    sz[1] = sizeof(double) * 2 * (size_t)P * nd;                      /* tw */
    sz[2] = sizeof(lanes_c) * co * ci;                                /* A */
    sz[3] = sizeof(lanes_c) * ci * ci;                                /* L */
    sz[4] = sizeof(lanes_c) * ci * 4;                                 /* v */
    sz[5] = sizeof(double) * 2 * Qh * npair * nd;                     /* Tg */
    size_t t = 0;
    for (int k = 0; k < 6; k++)
        t += sz[k] = (sz[k] + 63) / 64 * 64;
    return t;
}

size_t as__civ_factor_scratch_bytes(const as__civ_geom *g, int P, int Q)
{
    size_t sz[6];
    const size_t b = begin_sizes(g, P, Q, 1, sz), gb = sizeof(double) * gram_scratch_len(g);
    return b > gb ? b : gb;
}

/* need_a = 0: for condition numbers only (no M, no adjoint factor), which
 * do not need A(f), so not its row DFTs T either; need_a = 2: A(f) only
 * (the LU path), no Gram DFT Tg. */
static int begin_impl(as__civ_fctx *fc, const as__civ_geom *g, int P, int Q,
                      const float *w, const double *R, int need_a, void *scratch)
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
    /* tw[kp][d] = e^{2 pi i kp (d - (kh-1)) / P}, d < 2kh-1: the row
     * twiddles of A (d <= kh-1) and of the Gram matrix; A (Cout, Cin), L
     * (Cin, Cin), v: vectors; Tg[kq][ij][du] for the Gram matrix (see
     * gram_dft), lower triangle i >= j, du in [-(kh-1), kh-1]. All in one
     * block: the caller's scratch (kept across versions: no page faults
     * of fresh memory) or one malloc. */
    size_t sz[6];
    const size_t total = begin_sizes(g, P, Q, need_a, sz);
    char *b = scratch;
    if (!b && !(b = fc->own = as__fmalloc(total)))
        return AS_ENOMEM;
    fc->T = (double *)b;
    fc->tw = (double *)(b += sz[0]);
    fc->A = (lanes_c *)(b += sz[1]);
    fc->L = (lanes_c *)(b += sz[2]);
    fc->v = (lanes_c *)(b += sz[3]);
    fc->Tg = (double *)(b += sz[4]);
    if (need_a != 2 && gram_dft(g, Q, w, R, fc->Tg)) {
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
    free(fc->own);
    memset(fc, 0, sizeof *fc);
}

int as__civ_factor(const as__civ_geom *g, int P, int Q, const float *w,
                   const double *R, double eps_rel, float *m, double *cond_out,
                   double *eig, void *scratch)
{
    as__civ_fctx fc;
    int rc = begin_impl(&fc, g, P, Q, w, R, m != NULL, scratch);
    if (rc)
        return rc;
    fc.eig = eig;
    if (cond_out)
        *cond_out = 0;
    as__civ_factor_range(&fc, 0, fc.nf, eps_rel, m, cond_out);
    as__civ_factor_end(&fc);
    return 0;
}

/* The steps of as__civ_factor_range, each over one group of LANES
 * frequencies in lockstep. Always inlined: every target clone of the range
 * gets its own vectorized copy. */
#define FSTEP static inline __attribute__((always_inline))

/* One group of LANES frequencies: their indices, the row twiddles of A and
 * the distinct columns (kq values) the lanes span. */
typedef struct fgroup {
    size_t f0, nf;                   /* first frequency, end of the range */
    int kp[LANES], kq[LANES];
    int kqd[LANES], nkq;             /* distinct kq values of the lanes */
    long dsel[LANES][LANES];         /* dsel[d][l]: lane l belongs to column kqd[d] */
    double eur[16][LANES], eui[16][LANES];   /* e^{-2 pi i kp (kh-1-u)/P}, kh <= 16 */
} fgroup;

FSTEP void group_init(const as__civ_fctx *fc, size_t f0, size_t nf, fgroup *gr)
{
    const int kh = fc->g.kh, P = fc->P;
    gr->f0 = f0;
    gr->nf = nf;
    gr->nkq = 0;
    for (int l = 0; l < LANES; l++) {
        const size_t f = f0 + l < nf ? f0 + l : f0;   /* pad with a real one */
        gr->kq[l] = (int)(f / P);   /* column-major: one kq = P frequencies */
        gr->kp[l] = (int)(f % P);
        for (int u = 0; u < kh; u++) {
            const double *t = fc->tw + 2 * ((size_t)gr->kp[l] * (2 * kh - 1) + u);
            gr->eur[u][l] = t[0];
            gr->eui[u][l] = t[1];
        }
        int k = 0;
        while (k < gr->nkq && gr->kqd[k] != gr->kq[l])
            k++;
        if (k == gr->nkq)
            gr->kqd[gr->nkq++] = gr->kq[l];
    }
    for (int d = 0; d < gr->nkq; d++)
        for (int l = 0; l < LANES; l++)
            gr->dsel[d][l] = gr->kq[l] == gr->kqd[d] ? -1 : 0;
}

/* The pair (re, im) at offset off of each lane's own column of a table
 * whose columns (kq values) are cs doubles apart: one broadcast per
 * distinct column, blended by lane. */
FSTEP void lane_pair(const double *T, size_t cs, size_t off, const fgroup *gr,
                     v8d *re, v8d *im)
{
    const double *t0 = T + (size_t)gr->kqd[0] * cs + off;
    v8d tr = {0}, ti = {0};
    tr += t0[0];
    ti += t0[1];
    for (int d = 1; d < gr->nkq; d++) {
        const double *td = T + (size_t)gr->kqd[d] * cs + off;
        const v8i64 m = *(const v8i64u *)gr->dsel[d];
        v8d br = {0}, bi = {0};
        br += td[0];
        bi += td[1];
        tr = (v8d)(((v8i64)br & m) | ((v8i64)tr & ~m));
        ti = (v8d)(((v8i64)bi & m) | ((v8i64)ti & ~m));
    }
    *re = tr;
    *im = ti;
}

/* A(f) (Cout x Cin) for M or the adjoint factor (a condition check alone
 * does not need it: the Gram matrix comes from Tg). Each lane takes the
 * row DFTs T of its own column (lane_pair). */
FSTEP void form_a(const as__civ_fctx *fc, const fgroup *gr, lanes_c *A)
{
    const int ci = fc->g.cin, co = fc->g.cout, kh = fc->g.kh;
    const size_t cs = 2 * (size_t)co * ci * kh;   /* T's stride between columns */
    for (int o = 0; o < co; o++)
        for (int c = 0; c < ci; c++) {
            const size_t off = 2 * (((size_t)o * ci + c) * kh);
            v8d sr = {0}, si = {0};
            for (int u = 0; u < kh; u++) {
                v8d tr, ti;
                lane_pair(fc->T, cs, off + 2 * u, gr, &tr, &ti);
                const v8d er = *(const v8du *)gr->eur[u], ei = *(const v8du *)gr->eui[u];
                sr += er * tr - ei * ti;
                si += er * ti + ei * tr;
            }
            lanes_c *a = &A[(size_t)o * ci + c];
            VR(a) = sr;
            VI(a) = si;
        }
}

/* G = A^H A (lower triangle) into L, from Tg (gram_dft); each lane takes
 * Tg of its own column as in form_a. */
FSTEP void form_gram(const as__civ_fctx *fc, const fgroup *gr, lanes_c *L)
{
    const int ci = fc->g.cin, nh = 2 * fc->g.kh - 1;
    const size_t npair = (size_t)ci * (ci + 1) / 2, cs = 2 * npair * nh;
    v8d gpr[31], gpi[31];   /* e^{2 pi i kp du/P} */
    for (int l = 0; l < LANES; l++)
        for (int du = 0; du < nh; du++) {
            const double *t = fc->tw + 2 * ((size_t)gr->kp[l] * nh + du);
            gpr[du][l] = t[0];
            gpi[du][l] = t[1];
        }
    for (int i = 0; i < ci; i++)
        for (int j = 0; j <= i; j++) {
            const size_t off = 2 * ((size_t)i * (i + 1) / 2 + j) * nh;
            v8d sr = {0}, si = {0};
            for (int du = 0; du < nh; du++) {
                v8d tr, ti;
                lane_pair(fc->Tg, cs, off + 2 * du, gr, &tr, &ti);
                sr += gpr[du] * tr - gpi[du] * ti;
                si += gpr[du] * ti + gpi[du] * tr;
            }
            lanes_c *s = &L[(size_t)i * ci + j];
            VR(s) = sr;
            VI(s) = i == j ? (v8d){0} : si;
        }
}

/* G + eps I with eps = eps_rel * trace(G) / Cin; tr gets the trace. */
FSTEP void gram_regularize(lanes_c *L, int ci, double eps_rel, double tr[LANES])
{
    for (int l = 0; l < LANES; l++)
        tr[l] = 0;
    for (int i = 0; i < ci; i++)
        for (int l = 0; l < LANES; l++)
            tr[l] += L[(size_t)i * ci + i].re[l];
    for (int i = 0; i < ci; i++)
        for (int l = 0; l < LANES; l++)
            L[(size_t)i * ci + i].re[l] += eps_rel * tr[l] / ci;
}

/* lambda_max of G by power iteration (G Hermitian, its lower triangle in
 * L before the factorization overwrites it); x, y: Cin vectors each. */
FSTEP void power_lmax(const lanes_c *L, int ci, lanes_c *x, lanes_c *y, v8d *lmax)
{
    for (int c = 0; c < ci; c++)
        for (int l = 0; l < LANES; l++) {
            x[c].re[l] = 1.0 + 0.37 * ((c * 7919) % 13);
            x[c].im[l] = 0.11 * ((c * 104729) % 7);
        }
    for (int it = 0; it < POWER_ITERS; it++) {
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
        *lmax = rq / nx;
        v8d sc;
        for (int l = 0; l < LANES; l++)
            sc[l] = ny[l] > 0 ? 1.0 / sqrt(ny[l]) : 0.0;
        for (int i = 0; i < ci; i++) {
            VR(&x[i]) = VR(&y[i]) * sc;
            VI(&x[i]) = VI(&y[i]) * sc;
        }
    }
}

/* Cholesky G = L L^H in place (lower). A non-positive pivot marks the lane
 * singular; the lane goes on with a harmless pivot so the other lanes are
 * unaffected. The imaginary part of the diagonal gets 1 / L_ii (for the
 * solves). */
FSTEP void cholesky(lanes_c *L, int ci, const double tr[LANES], int singular[LANES])
{
    for (int l = 0; l < LANES; l++)
        singular[l] = 0;
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
}

/* Solve L L^H z = b in place (b in x[0..ci)). */
FSTEP void chol_solve(const lanes_c *L, int ci, lanes_c *x)
{
    for (int i = 0; i < ci; i++) {
        v8d xr = VR(&x[i]), xi = VI(&x[i]);
        for (int k = 0; k < i; k++) {
            const lanes_c *lik = &L[(size_t)i * ci + k];
            const v8d a = VR(lik), b = VI(lik);
            const v8d yr = VR(&x[k]), yi = VI(&x[k]);
            xr -= a * yr - b * yi;
            xi -= a * yi + b * yr;
        }
        const v8d d = VI(&L[(size_t)i * ci + i]);
        VR(&x[i]) = xr * d;
        VI(&x[i]) = xi * d;
    }
    for (int i = ci - 1; i >= 0; i--) {
        v8d xr = VR(&x[i]), xi = VI(&x[i]);
        for (int k = i + 1; k < ci; k++) {
            /* (L^H)[i][k] = conj(L[k][i]) */
            const lanes_c *lki = &L[(size_t)k * ci + i];
            const v8d a = VR(lki), b = VI(lki);
            const v8d yr = VR(&x[k]), yi = VI(&x[k]);
            xr -= a * yr + b * yi;
            xi -= a * yi - b * yr;
        }
        const v8d d = VI(&L[(size_t)i * ci + i]);
        VR(&x[i]) = xr * d;
        VI(&x[i]) = xi * d;
    }
}

/* lambda_min of G by inverse iteration (Rayleigh quotient of G^-1) with
 * the Cholesky factor in L; x, y: Cin vectors each. */
FSTEP void inverse_lmin(const lanes_c *L, int ci, lanes_c *x, lanes_c *y, v8d *lmin)
{
    for (int c = 0; c < ci; c++)
        for (int l = 0; l < LANES; l++) {
            x[c].re[l] = 1.0 + 0.29 * ((c * 31) % 11);
            x[c].im[l] = -0.13 * ((c * 17) % 5);
        }
    for (int it = 0; it < POWER_ITERS; it++) {
        v8d nx = {0};
        for (int i = 0; i < ci; i++) {
            y[i] = x[i];
            nx += VR(&x[i]) * VR(&x[i]) + VI(&x[i]) * VI(&x[i]);
        }
        chol_solve(L, ci, y);
        v8d rq = {0}, ny = {0};
        for (int i = 0; i < ci; i++) {
            const v8d xr = VR(&x[i]), xi = VI(&x[i]), yr = VR(&y[i]), yi = VI(&y[i]);
            rq += xr * yr + xi * yi;
            ny += yr * yr + yi * yi;
        }
        v8d sc;
        for (int l = 0; l < LANES; l++) {
            (*lmin)[l] = rq[l] > 0 ? nx[l] / rq[l] : 0.0;
            sc[l] = ny[l] > 0 ? 1.0 / sqrt(ny[l]) : 0.0;
        }
        for (int i = 0; i < ci; i++) {
            VR(&x[i]) = VR(&y[i]) * sc;
            VI(&x[i]) = VI(&y[i]) * sc;
        }
    }
}

/* The adjoint factor of the group's frequencies into m (frequency f at
 * m + (f - fbeg) * as__civ_msz(g, 1)): A^H (Cin x Cout) and the Cholesky
 * factor L of G (Cin x Cin, lower; the diagonal holds 1 / L_ii), for the
 * adjoint path's product and substitution (invert/adjoint.c). A^H in
 * blocks of 8 output channels: the 8 lanes (frequencies) of 8 channels'
 * entries converted to float and transposed, so each frequency gets 8
 * consecutive floats of its row c (one store instead of 8 scalar
 * conversions and stores). */
FSTEP void store_adjoint(const as__civ_fctx *fc, const fgroup *gr, size_t fbeg,
                         const lanes_c *A, const lanes_c *L, float *m)
{
    const int ci = fc->g.cin, co = fc->g.cout;
    const size_t a = (size_t)ci * co, fs = 2 * a + 2 * (size_t)ci * ci;
    for (int o = 0; o + 8 <= co; o += 8)
        for (int c = 0; c < ci; c++)
            for (int part = 0; part < 2; part++) {
                v8 r[8];
                for (int j = 0; j < 8; j++) {
                    const lanes_c *e = &A[(size_t)(o + j) * ci + c];
                    const v8d d = part ? -VI(e) : VR(e);
                    r[j] = __builtin_convertvector(d, v8);
                }
                AS__CIV_T8(r);
                for (int l = 0; l < LANES && gr->f0 + l < gr->nf; l++)
                    st8(m + (gr->f0 + l - fbeg) * fs + part * a + (size_t)c * co + o, r[l]);
            }
    for (int l = 0; l < LANES && gr->f0 + l < gr->nf; l++) {
        float *ar = m + (gr->f0 + l - fbeg) * fs, *ai = ar + a;
        float *mr = ai + a, *mi = mr + (size_t)ci * ci;
        for (int o = co / 8 * 8; o < co; o++)   /* blocks of 8 above */
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
}

/* Four right-hand sides of the M formation in named registers (an array
 * of them indexed in the inner loop stayed in memory: a store and a reload
 * per step); x4 holds them as x4[c*4 + r] (row c of right-hand side r). */
typedef struct rhs4 {
    v8d r0, r1, r2, r3, i0, i1, i2, i3;
} rhs4;

FSTEP void rhs4_load(rhs4 *s, const lanes_c *x4, int i)
{
    const lanes_c *p = &x4[i * 4];
    s->r0 = VR(&p[0]), s->r1 = VR(&p[1]), s->r2 = VR(&p[2]), s->r3 = VR(&p[3]);
    s->i0 = VI(&p[0]), s->i1 = VI(&p[1]), s->i2 = VI(&p[2]), s->i3 = VI(&p[3]);
}

/* s -= (a + i sg b) * x4[row k] for the four right-hand sides, with
 * a + i b the entry e (sg = 1: L[i][k]; sg = -1: conj, for L^H). */
FSTEP void rhs4_step(rhs4 *s, const lanes_c *e, double sg, const lanes_c *x4, int k)
{
    const v8d a = VR(e), b = VI(e);
    const lanes_c *y = &x4[k * 4];
    s->r0 -= a * VR(&y[0]) - sg * b * VI(&y[0]);
    s->i0 -= a * VI(&y[0]) + sg * b * VR(&y[0]);
    s->r1 -= a * VR(&y[1]) - sg * b * VI(&y[1]);
    s->i1 -= a * VI(&y[1]) + sg * b * VR(&y[1]);
    s->r2 -= a * VR(&y[2]) - sg * b * VI(&y[2]);
    s->i2 -= a * VI(&y[2]) + sg * b * VR(&y[2]);
    s->r3 -= a * VR(&y[3]) - sg * b * VI(&y[3]);
    s->i3 -= a * VI(&y[3]) + sg * b * VR(&y[3]);
}

FSTEP void rhs4_store(const rhs4 *s, const lanes_c *dl, lanes_c *x4, int i)
{
    const v8d d = VI(dl);
    lanes_c *p = &x4[i * 4];
    VR(&p[0]) = s->r0 * d, VI(&p[0]) = s->i0 * d;
    VR(&p[1]) = s->r1 * d, VI(&p[1]) = s->i1 * d;
    VR(&p[2]) = s->r2 * d, VI(&p[2]) = s->i2 * d;
    VR(&p[3]) = s->r3 * d, VI(&p[3]) = s->i3 * d;
}

/* Columns o4 .. o4+3 of M: column o solves G m = conj(A[o][:]); L is read
 * once for the four right-hand sides (x4: 4 Cin vectors). */
FSTEP void form_m4(const lanes_c *A, const lanes_c *L, int ci, int o4, lanes_c *x4)
{
    for (int c = 0; c < ci; c++)
        for (int r = 0; r < 4; r++) {
            const lanes_c *a = &A[(size_t)(o4 + r) * ci + c];
            VR(&x4[c * 4 + r]) = VR(a);
            VI(&x4[c * 4 + r]) = -VI(a);
        }
    rhs4 s;
    for (int i = 0; i < ci; i++) {
        rhs4_load(&s, x4, i);
        for (int k = 0; k < i; k++)
            rhs4_step(&s, &L[(size_t)i * ci + k], 1.0, x4, k);
        rhs4_store(&s, &L[(size_t)i * ci + i], x4, i);
    }
    for (int i = ci - 1; i >= 0; i--) {
        rhs4_load(&s, x4, i);
        for (int k = i + 1; k < ci; k++)   /* (L^H)[i][k] = conj(L[k][i]) */
            rhs4_step(&s, &L[(size_t)k * ci + i], -1.0, x4, k);
        rhs4_store(&s, &L[(size_t)i * ci + i], x4, i);
    }
}

/* M = G^-1 A^H of the group's frequencies into m (frequency f at
 * m + (f - fbeg) * 2 Cin Cout, fp32 planar): four columns at a time, the
 * rest one by one. v: 4 Cin vectors of scratch. */
FSTEP void store_m(const as__civ_fctx *fc, const fgroup *gr, size_t fbeg, const lanes_c *A,
                   const lanes_c *L, lanes_c *v, float *m)
{
    const int ci = fc->g.cin, co = fc->g.cout;
    int o4 = 0;
    for (; o4 + 4 <= co; o4 += 4) {
        form_m4(A, L, ci, o4, v);
        for (int l = 0; l < LANES && gr->f0 + l < gr->nf; l++) {
            float *mr = m + (gr->f0 + l - fbeg) * 2 * (size_t)ci * co, *mi = mr + (size_t)ci * co;
            for (int c = 0; c < ci; c++)
                for (int r = 0; r < 4; r++) {
                    mr[(size_t)c * co + o4 + r] = (float)v[c * 4 + r].re[l];
                    mi[(size_t)c * co + o4 + r] = (float)v[c * 4 + r].im[l];
                }
        }
    }
    for (int o = o4; o < co; o++) {
        for (int c = 0; c < ci; c++)
            for (int l = 0; l < LANES; l++) {
                v[c].re[l] = A[(size_t)o * ci + c].re[l];
                v[c].im[l] = -A[(size_t)o * ci + c].im[l];
            }
        chol_solve(L, ci, v);
        for (int l = 0; l < LANES && gr->f0 + l < gr->nf; l++) {
            float *mr = m + (gr->f0 + l - fbeg) * 2 * (size_t)ci * co, *mi = mr + (size_t)ci * co;
            for (int c = 0; c < ci; c++) {
                mr[(size_t)c * co + o] = (float)v[c].re[l];
                mi[(size_t)c * co + o] = (float)v[c].im[l];
            }
        }
    }
}

/* The largest of cond_max and the condition numbers sqrt(lmax / lmin) of
 * the group's lanes (infinite for a singular lane); eig (not NULL) gets
 * the lanes' lmax and lmin (0 when singular) at eig[2f], eig[2f+1]. */
FSTEP double fold_cond(const fgroup *gr, const int singular[LANES], const v8d *lmax,
                       const v8d *lmin, double cond_max, double *eig)
{
    for (int l = 0; l < LANES && gr->f0 + l < gr->nf; l++) {
        const int bad = singular[l] || !((*lmin)[l] > 0);
        const double c = bad ? INFINITY : sqrt((*lmax)[l] / (*lmin)[l]);
        if (!(c <= cond_max))
            cond_max = c;
        if (eig) {
            eig[2 * (gr->f0 + l)] = (*lmax)[l];
            eig[2 * (gr->f0 + l) + 1] = bad ? 0.0 : (*lmin)[l];
        }
    }
    return cond_max;
}

AS__CIV_CLONES
void as__civ_factor_range(as__civ_fctx *fc, size_t fbeg, size_t fend,
                          double eps_rel, float *m, double *cond_out)
{
    const int ci = fc->g.cin;
    lanes_c *A = fc->A, *L = fc->L, *v = fc->v;
    double cond_max = cond_out ? *cond_out : 0;
    if (m && fc->lu) {   /* square A: its LU factors (two groups in L, then A) */
        for (size_t f0 = fbeg; f0 < fend; f0 += 2 * LANES) {
            fgroup gr;
            const int two = f0 + LANES < fend;
            group_init(fc, f0, fend, &gr);
            form_a(fc, &gr, A);
            if (two) {
                group_init(fc, f0 + LANES, fend, &gr);
                form_a(fc, &gr, L);   /* Cin x Cin: L's size, unused by the LU */
            }
            as__civ_lu_group(A, two ? L : NULL, ci, v, f0, fend, fbeg, m);
        }
        return;
    }
    for (size_t f0 = fbeg; f0 < fend; f0 += LANES) {
        fgroup gr;
        group_init(fc, f0, fend, &gr);
        if (m)
            form_a(fc, &gr, A);
        form_gram(fc, &gr, L);
        double tr[LANES];
        gram_regularize(L, ci, eps_rel, tr);
        v8d lmax = {0}, lmin = {0};
        if (cond_out)
            power_lmax(L, ci, v, v + ci, &lmax);
        int singular[LANES];
        cholesky(L, ci, tr, singular);
        if (cond_out) {
            inverse_lmin(L, ci, v, v + ci, &lmin);
            cond_max = fold_cond(&gr, singular, &lmax, &lmin, cond_max, fc->eig);
        }
        if (m && fc->ginv)
            store_adjoint(fc, &gr, fbeg, A, L, m);
        else if (m)
            store_m(fc, &gr, fbeg, A, L, v, m);
    }
    if (cond_out)
        *cond_out = cond_max;
}
