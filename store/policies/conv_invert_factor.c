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

#include "store/policies/conv_invert.h"

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
typedef double v4du __attribute__((vector_size(32), aligned(8), may_alias));

/* R_ij(d) for i >= j from wd[c][t][o] (see gram_dft). */
AS__CIV_CLONES
static void gram_corr(int ci, int co, int kh, int kw, const double *wd, double *R)
{
    const int nt = kh * kw, nw = 2 * kw - 1;
    for (int i = 0; i < ci; i++)
        for (int j = 0; j <= i; j++) {
            double *r = R + ((size_t)i * (i + 1) / 2 + j) * (2 * kh - 1) * nw;
            for (int t1 = 0; t1 < nt; t1++) {
                const double *a = wd + ((size_t)i * nt + t1) * co;
                const int u = t1 / kw, v = t1 % kw;
                for (int t2 = 0; t2 < nt; t2++) {
                    const double *b = wd + ((size_t)j * nt + t2) * co;
                    /* four partial sums (a vector), then the rest */
                    v4d s4 = {0, 0, 0, 0};
                    int o = 0;
                    for (; o + 4 <= co; o += 4)
                        s4 += *(const v4du *)(a + o) * *(const v4du *)(b + o);
                    double acc = (s4[0] + s4[1]) + (s4[2] + s4[3]);
                    for (; o < co; o++)
                        acc += a[o] * b[o];
                    r[(t2 / kw - u + kh - 1) * nw + (t2 % kw - v + kw - 1)] += acc;
                }
            }
        }
}

static int gram_dft(const as__conv_geom *g, int Q, const float *w, double *Tg)
{
    const int ci = g->cin, co = g->cout, kh = g->kh, kw = g->kw;
    const int Qh = Q / 2 + 1, nh = 2 * kh - 1, nw = 2 * kw - 1;
    const size_t npair = (size_t)ci * (ci + 1) / 2;
    double *R = calloc(npair * nh * nw, sizeof(double));
    double *wd = malloc(sizeof(double) * (size_t)co * ci * kh * kw);
    if (!R || !wd) {
        free(R);
        free(wd);
        return AS_ENOMEM;
    }
    /* wd[c][t][o]: tap t = u*kw + v of input channel c, output channels
     * contiguous, so each term of R is a dot product over o. */
    for (int o = 0; o < co; o++)
        for (int c = 0; c < ci; c++)
            for (int t = 0; t < kh * kw; t++)
                wd[((size_t)c * kh * kw + t) * co + o] = w[((size_t)o * ci + c) * kh * kw + t];
    gram_corr(ci, co, kh, kw, wd, R);
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
    free(R);
    free(wd);
    return 0;
}

int as__civ_factor_begin(as__civ_fctx *fc, const as__conv_geom *g, int P,
                         int Q, const float *w)
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
    fc->T = malloc(sizeof(double) * 2 * (size_t)Qh * co * ci * kh);
    fc->A = malloc(sizeof(lanes_c) * (size_t)co * ci);   /* (Cout, Cin) */
    fc->L = malloc(sizeof(lanes_c) * (size_t)ci * ci);   /* (Cin, Cin) */
    fc->v = malloc(sizeof(lanes_c) * (size_t)ci * 2);    /* vectors */
    /* Tg[kq][ij][du] for the Gram matrix (see gram_dft), lower triangle
     * i >= j, du in [-(kh-1), kh-1]. */
    const size_t npair = (size_t)ci * (ci + 1) / 2, nd = 2 * (size_t)kh - 1;
    fc->Tg = malloc(sizeof(double) * 2 * (size_t)Qh * npair * nd);
    if (!fc->T || !fc->A || !fc->L || !fc->v || !fc->Tg) {
        as__civ_factor_end(fc);
        return AS_ENOMEM;
    }
    if (gram_dft(g, Q, w, fc->Tg)) {
        as__civ_factor_end(fc);
        return AS_ENOMEM;
    }
    double *T = fc->T;
    double cs[2 * 16];   /* e^{-2 pi i kq (kw-1-v)/Q} for v < kw <= 16 */
    for (int kq = 0; kq < Qh; kq++) {
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
    free(fc->A);
    free(fc->L);
    free(fc->v);
    memset(fc, 0, sizeof *fc);
}

int as__civ_factor(const as__conv_geom *g, int P, int Q, const float *w,
                   double eps_rel, float *m, double *cond_out)
{
    as__civ_fctx fc;
    int rc = as__civ_factor_begin(&fc, g, P, Q, w);
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
                double a = -2.0 * M_PI * kp[l] * (kh - 1 - u) / P;
                epr[l][u] = cos(a);
                epi[l][u] = sin(a);
            }
        }
        /* A(f), for M or the adjoint factor (the Gram matrix comes from
         * Tg, so a condition check alone does not need it) */
        for (int o = 0; m && o < co; o++)
            for (int c = 0; c < ci; c++) {
                lanes_c *a = &A[(size_t)o * ci + c];
                for (int l = 0; l < LANES; l++) {
                    const double *t = T + 2 * ((((size_t)kq[l] * co + o) * ci + c) * kh);
                    double sr = 0, si = 0;
                    for (int u = 0; u < kh; u++) {
                        sr += epr[l][u] * t[2 * u] - epi[l][u] * t[2 * u + 1];
                        si += epr[l][u] * t[2 * u + 1] + epi[l][u] * t[2 * u];
                    }
                    a->re[l] = sr;
                    a->im[l] = si;
                }
            }
        /* G = A^H A (lower triangle) into L, from Tg (gram_dft). */
        {
            const int nh = 2 * kh - 1;
            const size_t npair = (size_t)ci * (ci + 1) / 2;
            double gpr[31][LANES], gpi[31][LANES];   /* e^{2 pi i kp du/P} */
            const double *tl[LANES];
            for (int l = 0; l < LANES; l++) {
                for (int du = 0; du < nh; du++) {
                    const double a = 2.0 * M_PI * kp[l] * (du - (kh - 1)) / P;
                    gpr[du][l] = cos(a);
                    gpi[du][l] = sin(a);
                }
                tl[l] = fc->Tg + 2 * (size_t)kq[l] * npair * nh;
            }
            for (int i = 0; i < ci; i++)
                for (int j = 0; j <= i; j++) {
                    lanes_c *s = &L[(size_t)i * ci + j];
                    const size_t off = 2 * ((size_t)i * (i + 1) / 2 + j) * nh;
                    double sr[LANES] = {0}, si[LANES] = {0};
                    for (int du = 0; du < nh; du++)
                        for (int l = 0; l < LANES; l++) {
                            const double tr = tl[l][off + 2 * du], ti = tl[l][off + 2 * du + 1];
                            sr[l] += gpr[du][l] * tr - gpi[du][l] * ti;
                            si[l] += gpr[du][l] * ti + gpi[du][l] * tr;
                        }
                    for (int l = 0; l < LANES; l++) {
                        s->re[l] = sr[l];
                        s->im[l] = i == j ? 0.0 : si[l];
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
        double lmax[LANES], lmin[LANES];
        lanes_c *x = v, *y = v + ci;
        for (int c = 0; want_cond && c < ci; c++)
            for (int l = 0; l < LANES; l++) {
                x[c].re[l] = 1.0 + 0.37 * ((c * 7919) % 13);
                x[c].im[l] = 0.11 * ((c * 104729) % 7);
            }
        for (int it = 0; want_cond && it < POWER_ITERS; it++) {
            double nx[LANES] = {0}, rq[LANES] = {0};
            for (int i = 0; i < ci; i++) {
                lanes_c s;
                memset(&s, 0, sizeof s);
                for (int j = 0; j < ci; j++) {
                    /* G[i][j] = L[i][j] for j <= i, conj(L[j][i]) above */
                    const lanes_c *gij = j <= i ? &L[(size_t)i * ci + j] : &L[(size_t)j * ci + i];
                    const double sg = j <= i ? 1.0 : -1.0;
                    for (int l = 0; l < LANES; l++) {
                        double gr = gij->re[l], gi = sg * gij->im[l];
                        s.re[l] += gr * x[j].re[l] - gi * x[j].im[l];
                        s.im[l] += gr * x[j].im[l] + gi * x[j].re[l];
                    }
                }
                y[i] = s;
                for (int l = 0; l < LANES; l++) {
                    rq[l] += x[i].re[l] * s.re[l] + x[i].im[l] * s.im[l];
                    nx[l] += x[i].re[l] * x[i].re[l] + x[i].im[l] * x[i].im[l];
                }
            }
            double ny[LANES] = {0};
            for (int i = 0; i < ci; i++)
                for (int l = 0; l < LANES; l++)
                    ny[l] += y[i].re[l] * y[i].re[l] + y[i].im[l] * y[i].im[l];
            for (int l = 0; l < LANES; l++) {
                lmax[l] = rq[l] / nx[l];
                ny[l] = ny[l] > 0 ? 1.0 / sqrt(ny[l]) : 0.0;
            }
            for (int i = 0; i < ci; i++)
                for (int l = 0; l < LANES; l++) {
                    x[i].re[l] = y[i].re[l] * ny[l];
                    x[i].im[l] = y[i].im[l] * ny[l];
                }
        }

        /* Cholesky G = L L^H in place (lower). A non-positive pivot marks
         * the lane singular; the lane goes on with a harmless pivot so the
         * other lanes are unaffected. */
        int singular[LANES] = {0};
        for (int j = 0; j < ci; j++) {
            lanes_c *ljj = &L[(size_t)j * ci + j];
            for (int k = 0; k < j; k++) {
                const lanes_c *ljk = &L[(size_t)j * ci + k];
                for (int l = 0; l < LANES; l++)
                    ljj->re[l] -= ljk->re[l] * ljk->re[l] + ljk->im[l] * ljk->im[l];
            }
            double dinv[LANES];
            for (int l = 0; l < LANES; l++) {
                double d = ljj->re[l];
                if (!(d > 1e-300 + 1e-15 * tr[l])) {
                    singular[l] = 1;
                    d = tr[l] > 0 ? tr[l] : 1.0;
                }
                ljj->re[l] = sqrt(d);
                ljj->im[l] = 0;
                dinv[l] = 1.0 / ljj->re[l];
            }
            for (int i = j + 1; i < ci; i++) {
                lanes_c *lij = &L[(size_t)i * ci + j];
                for (int k = 0; k < j; k++) {
                    const lanes_c *lik = &L[(size_t)i * ci + k], *ljk = &L[(size_t)j * ci + k];
                    for (int l = 0; l < LANES; l++) {
                        /* lij -= lik * conj(ljk) */
                        lij->re[l] -= lik->re[l] * ljk->re[l] + lik->im[l] * ljk->im[l];
                        lij->im[l] -= lik->im[l] * ljk->re[l] - lik->re[l] * ljk->im[l];
                    }
                }
                for (int l = 0; l < LANES; l++) {
                    lij->re[l] *= dinv[l];
                    lij->im[l] *= dinv[l];
                }
            }
        }

/* Solve L L^H z = b in place (b in x[0..ci)). */
#define CHOL_SOLVE(x)                                                          \
        do {                                                                   \
            for (int i_ = 0; i_ < ci; i_++) {                                  \
                for (int k_ = 0; k_ < i_; k_++) {                              \
                    const lanes_c *lik_ = &L[(size_t)i_ * ci + k_];            \
                    for (int l = 0; l < LANES; l++) {                          \
                        x[i_].re[l] -= lik_->re[l] * x[k_].re[l] - lik_->im[l] * x[k_].im[l]; \
                        x[i_].im[l] -= lik_->re[l] * x[k_].im[l] + lik_->im[l] * x[k_].re[l]; \
                    }                                                          \
                }                                                              \
                const lanes_c *lii_ = &L[(size_t)i_ * ci + i_];                \
                for (int l = 0; l < LANES; l++) {                              \
                    x[i_].re[l] /= lii_->re[l];                                \
                    x[i_].im[l] /= lii_->re[l];                                \
                }                                                              \
            }                                                                  \
            for (int i_ = ci - 1; i_ >= 0; i_--) {                             \
                for (int k_ = i_ + 1; k_ < ci; k_++) {                         \
                    /* (L^H)[i][k] = conj(L[k][i]) */                          \
                    const lanes_c *lki_ = &L[(size_t)k_ * ci + i_];            \
                    for (int l = 0; l < LANES; l++) {                          \
                        x[i_].re[l] -= lki_->re[l] * x[k_].re[l] + lki_->im[l] * x[k_].im[l]; \
                        x[i_].im[l] -= lki_->re[l] * x[k_].im[l] - lki_->im[l] * x[k_].re[l]; \
                    }                                                          \
                }                                                              \
                const lanes_c *lii_ = &L[(size_t)i_ * ci + i_];                \
                for (int l = 0; l < LANES; l++) {                              \
                    x[i_].re[l] /= lii_->re[l];                                \
                    x[i_].im[l] /= lii_->re[l];                                \
                }                                                              \
            }                                                                  \
        } while (0)

        /* lambda_min by inverse iteration: Rayleigh quotient of G^-1. */
        for (int c = 0; want_cond && c < ci; c++)
            for (int l = 0; l < LANES; l++) {
                x[c].re[l] = 1.0 + 0.29 * ((c * 31) % 11);
                x[c].im[l] = -0.13 * ((c * 17) % 5);
            }
        for (int it = 0; want_cond && it < POWER_ITERS; it++) {
            double nx[LANES] = {0};
            for (int i = 0; i < ci; i++) {
                y[i] = x[i];
                for (int l = 0; l < LANES; l++)
                    nx[l] += x[i].re[l] * x[i].re[l] + x[i].im[l] * x[i].im[l];
            }
            CHOL_SOLVE(y);
            double rq[LANES] = {0}, ny[LANES] = {0};
            for (int i = 0; i < ci; i++)
                for (int l = 0; l < LANES; l++) {
                    rq[l] += x[i].re[l] * y[i].re[l] + x[i].im[l] * y[i].im[l];
                    ny[l] += y[i].re[l] * y[i].re[l] + y[i].im[l] * y[i].im[l];
                }
            for (int l = 0; l < LANES; l++) {
                lmin[l] = rq[l] > 0 ? nx[l] / rq[l] : 0.0;
                ny[l] = ny[l] > 0 ? 1.0 / sqrt(ny[l]) : 0.0;
            }
            for (int i = 0; i < ci; i++)
                for (int l = 0; l < LANES; l++) {
                    x[i].re[l] = y[i].re[l] * ny[l];
                    x[i].im[l] = y[i].im[l] * ny[l];
                }
        }
        for (int l = 0; want_cond && l < LANES && f0 + l < nf; l++) {
            double c = singular[l] || !(lmin[l] > 0) ? INFINITY : sqrt(lmax[l] / lmin[l]);
            if (!(c <= cond_max))
                cond_max = c;
        }

        /* fc->ginv: A^H (Cin x Cout) and the Cholesky factor L of G (Cin x
         * Cin, lower; the diagonal holds 1 / L_ii), for the adjoint path's
         * product and substitution (conv_invert_adjoint.c). */
        for (int l = 0; m && fc->ginv && l < LANES && f0 + l < nf; l++) {
            const size_t a = (size_t)ci * co;
            float *ar = m + (f0 + l - fbeg) * (2 * a + 2 * (size_t)ci * ci), *ai = ar + a;
            float *mr = ai + a, *mi = mr + (size_t)ci * ci;
            for (int c = 0; c < ci; c++)
                for (int o = 0; o < co; o++) {
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
        /* M = G^-1 A^H, column o of M solves G m = conj(A[o][:]). */
        for (int o = 0; m && !fc->ginv && o < co; o++) {
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
