/*
 * The LU path of a streamed restore (Cout = Cin): at every frequency the
 * square A(f) is factored with partial pivoting, P A = L U, and the solve
 * applies the two triangular factors to the batch instead of M = A^-1.
 *
 * Why: a streamed restore factors every weight version once. The Gram
 * route (Cholesky of A^H A in double, then M = G^-1 A^H: Cin^3/3 + Cin^2 Cout
 * complex multiply-adds per frequency) costs about 4x the LU's Cin^3/3, and
 * for a square A the least-squares solution is A^-1 F^ anyway. Accuracy: LU
 * with partial pivoting is backward stable, so its error grows like cond(A)
 * times the rounding (not cond^2 as the normal equations); with the factors
 * rounded to float it measured as close to the float64 floor as the float M
 * of the Gram route (docs/policies.md, "The LU path").
 *
 * The factorization runs in float over 16 frequencies in lockstep (two
 * groups of A(f) of invert/factor.c, formed in double, rounded); each lane
 * pivots on its own rows (the search is vectorized, the row exchanges are
 * vector blends per distinct pivot row).
 */
#include <math.h>
#include <string.h>

#include "store/policies/invert/impl.h"

/* The factorization's lanes: FL frequencies in float, one complex entry
 * of each (the 128 bytes of an as__civ_lanes of 8 doubles). */
#define FL (2 * AS__CIV_LANES)
typedef struct lanes_f {
    float re[FL], im[FL];
} lanes_f;
typedef float vf __attribute__((vector_size(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4), may_alias));
typedef int vm __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));
typedef double v8du __attribute__((vector_size(64), aligned(8), may_alias));
#define VR(p) (*(vfu *)((p)->re))
#define VI(p) (*(vfu *)((p)->im))

/* Row j and the pivot row of each lane exchanged (columns 0..n-1), and the
 * permutation (perm[i].re[l]: original row of row i) with them. Lanes that
 * pivot on the same row (neighbouring frequencies mostly do) are exchanged
 * together by vector blends, one pass per distinct pivot row, instead of
 * per-lane scalar moves. */
static inline __attribute__((always_inline)) void
swap_rows(lanes_f *A, int n, int j, const vm piv, lanes_f *perm)
{
    vm todo = piv != j;
    for (;;) {
        int l = 0;
        while (l < FL && !todo[l])
            l++;
        if (l == FL)
            return;
        const int p = piv[l];
        const vm m = piv == p;
        todo &= ~m;
        lanes_f *rj = A + (size_t)j * n, *rp = A + (size_t)p * n;
        for (int c = 0; c < n; c++) {
            const vm ar = (vm)VR(&rj[c]), br = (vm)VR(&rp[c]);
            const vm ai = (vm)VI(&rj[c]), bi = (vm)VI(&rp[c]);
            VR(&rj[c]) = (vf)((br & m) | (ar & ~m));
            VR(&rp[c]) = (vf)((ar & m) | (br & ~m));
            VI(&rj[c]) = (vf)((bi & m) | (ai & ~m));
            VI(&rp[c]) = (vf)((ai & m) | (bi & ~m));
        }
        const vm pj = (vm)VR(&perm[j]), pp = (vm)VR(&perm[p]);
        VR(&perm[j]) = (vf)((pp & m) | (pj & ~m));
        VR(&perm[p]) = (vf)((pj & m) | (pp & ~m));
    }
}

/* Complex multiply-subtract on lanes: *a -= l * u. */
#define CMSUB(ar, ai, lr, li, ur, ui)                                          \
    do {                                                                       \
        (ar) -= (lr) * (ur) - (li) * (ui);                                     \
        (ai) -= (lr) * (ui) + (li) * (ur);                                     \
    } while (0)

/* Columns jb .. je-1 (the panel), rows jb .. n-1: unblocked LU with partial
 * pivoting (whole rows swapped), the panel's own columns updated. */
static inline __attribute__((always_inline)) void
lu_panel(lanes_f *A, int n, int jb, int je, lanes_f *perm)
{
    for (int j = jb; j < je; j++) {
        vf best = VR(&A[(size_t)j * n + j]) * VR(&A[(size_t)j * n + j]) +
                   VI(&A[(size_t)j * n + j]) * VI(&A[(size_t)j * n + j]);
        vm piv = (vm){0} + j;
        for (int i = j + 1; i < n; i++) {
            const lanes_f *a = &A[(size_t)i * n + j];
            const vf mag = VR(a) * VR(a) + VI(a) * VI(a);
            const vm gt = mag > best;
            best = (vf)(((vm)mag & gt) | ((vm)best & ~gt));
            piv = (((vm){0} + i) & gt) | (piv & ~gt);
        }
        swap_rows(A, n, j, piv, perm);
        lanes_f *ajj = &A[(size_t)j * n + j];
        const vf pr = VR(ajj), pi = VI(ajj), den = pr * pr + pi * pi;
        const vf inv = (vf)((vm)(1.0f / den) & (den > 0));
        const vf dr = pr * inv, di = -pi * inv;
        VR(ajj) = dr;
        VI(ajj) = di;
        const lanes_f *rj = A + (size_t)j * n;
        for (int i = j + 1; i < n; i++) {
            lanes_f *ri = A + (size_t)i * n;
            const vf ar = VR(&ri[j]), ai = VI(&ri[j]);
            const vf lr = ar * dr - ai * di, li = ar * di + ai * dr;
            VR(&ri[j]) = lr;
            VI(&ri[j]) = li;
            for (int c = j + 1; c < je; c++)
                CMSUB(VR(&ri[c]), VI(&ri[c]), lr, li, VR(&rj[c]), VI(&rj[c]));
        }
    }
}

/* Rows i of the trailing matrix, columns je..n-1: A22 -= L21 U12 for a
 * panel of 8 columns from jb, with row i's 8 multipliers in registers (an
 * eighth of the loads and stores of the unblocked update; the lanes' matrix
 * does not fit in L1 at 64 channels). */
static inline __attribute__((always_inline)) void
update8(lanes_f *A, int n, int jb, int je)
{
    const lanes_f *u = A + (size_t)jb * n;
    for (int i = je; i < n; i++) {
        lanes_f *ri = A + (size_t)i * n;
        vf lr[8], li[8];
        for (int k = 0; k < 8; k++) {
            lr[k] = VR(&ri[jb + k]);
            li[k] = VI(&ri[jb + k]);
        }
        for (int c = je; c < n; c++) {
            vf ar = VR(&ri[c]), ai = VI(&ri[c]);
            for (int k = 0; k < 8; k++)
                CMSUB(ar, ai, lr[k], li[k], VR(&u[(size_t)k * n + c]), VI(&u[(size_t)k * n + c]));
            VR(&ri[c]) = ar;
            VI(&ri[c]) = ai;
        }
    }
}

/* In place: P A = L U for each lane, in panels of LU_NB columns (the panel
 * unblocked, then its rows of U right of it by forward substitution, then
 * the trailing matrix minus L21 U12, update8). Afterwards A holds L's
 * multipliers below the diagonal, U above it and 1 / U_jj on it (0 for an
 * exactly zero pivot: a singular lane, which the condition check rejects
 * before any restore). perm (n entries): the row permutation. */
#define LU_NB 8
static inline __attribute__((always_inline)) void lu_lanes(lanes_f *A, int n, lanes_f *perm)
{
    for (int i = 0; i < n; i++)
        for (int l = 0; l < FL; l++)
            perm[i].re[l] = (float)i;
    for (int jb = 0; jb < n; jb += LU_NB) {
        const int je = jb + LU_NB < n ? jb + LU_NB : n;
        lu_panel(A, n, jb, je, perm);
        for (int j = jb + 1; j < je; j++)   /* U12 = L11^-1 A12 */
            for (int k = jb; k < j; k++) {
                const lanes_f *l = &A[(size_t)j * n + k], *rk = A + (size_t)k * n;
                const vf lr = VR(l), li = VI(l);
                lanes_f *rj = A + (size_t)j * n;
                for (int c = je; c < n; c++)
                    CMSUB(VR(&rj[c]), VI(&rj[c]), lr, li, VR(&rk[c]), VI(&rk[c]));
            }
        if (je - jb == LU_NB)
            update8(A, n, jb, je);
    }
}

/* The lanes' factors into m (frequency f at m + (f - fbeg) * msz,
 * as__civ_msz(g, AS__CIV_PATH_LU) floats: real parts n x n, imaginary parts
 * n x n, then the permutation as n ints), for lanes f0 + l < fend. Blocks of
 * 8 columns of 8 lanes are transposed so each lane stores 8 consecutive
 * floats at once. */
static inline __attribute__((always_inline)) void
store_lu(const lanes_f *A, const lanes_f *perm, int n, size_t f0, size_t fend, size_t fbeg,
         float *m)
{
    const size_t nn = (size_t)n * n, msz = 2 * nn + (size_t)n;
    for (int i = 0; i < n; i++) {
        int c = 0;
        for (; c + 8 <= n; c += 8)
            for (int part = 0; part < 2; part++)
                for (int l0 = 0; l0 < FL; l0 += 8) {
                    v8 r[8];
                    for (int k = 0; k < 8; k++) {
                        const lanes_f *e = &A[(size_t)i * n + c + k];
                        r[k] = ld8((part ? e->im : e->re) + l0);
                    }
                    AS__CIV_T8(r);
                    for (int l = 0; l < 8 && f0 + l0 + l < fend; l++)
                        st8(m + (f0 + l0 + l - fbeg) * msz + part * nn + (size_t)i * n + c, r[l]);
                }
        for (; c < n; c++)
            for (int l = 0; l < FL && f0 + l < fend; l++) {
                float *mf = m + (f0 + l - fbeg) * msz;
                mf[(size_t)i * n + c] = A[(size_t)i * n + c].re[l];
                mf[nn + (size_t)i * n + c] = A[(size_t)i * n + c].im[l];
            }
    }
    for (int l = 0; l < FL && f0 + l < fend; l++) {
        int *pm = (int *)(m + (f0 + l - fbeg) * msz + 2 * nn);
        for (int i = 0; i < n; i++)
            pm[i] = (int)perm[i].re[l];
    }
}

/* The two double groups' entries (lanes 0-7 from A, 8-15 from A2; A2 NULL:
 * A's again, never stored) as float lanes, in place over A (an entry of
 * either layout is 128 bytes). */
static inline __attribute__((always_inline)) void
to_float(struct as__civ_lanes *A, const struct as__civ_lanes *A2, size_t nn)
{
    for (size_t e = 0; e < nn; e++) {
        const struct as__civ_lanes *b = A2 ? &A2[e] : &A[e];
        const v8 r0 = __builtin_convertvector(*(const v8du *)A[e].re, v8);
        const v8 i0 = __builtin_convertvector(*(const v8du *)A[e].im, v8);
        const v8 r1 = __builtin_convertvector(*(const v8du *)b->re, v8);
        const v8 i1 = __builtin_convertvector(*(const v8du *)b->im, v8);
        lanes_f *f = (lanes_f *)(void *)&A[e];
        st8(f->re, r0);
        st8(f->re + 8, r1);
        st8(f->im, i0);
        st8(f->im + 8, i1);
    }
}

AS__CIV_CLONES
void as__civ_lu_group(struct as__civ_lanes *A, const struct as__civ_lanes *A2, int n,
                      struct as__civ_lanes *perm, size_t f0, size_t fend, size_t fbeg, float *m)
{
    to_float(A, A2, (size_t)n * n);
    lanes_f *Af = (lanes_f *)(void *)A, *pf = (lanes_f *)(void *)perm;
    lu_lanes(Af, n, pf);
    store_lu(Af, pf, n, f0, fend, fbeg, m);
}

/* Four rows' accumulators (one 8-lane block) in named registers. */
typedef struct acc4 {
    v8 r0, r1, r2, r3, i0, i1, i2, i3;
} acc4;

/* acc(row i0 + r) -= sum_{k in [k0, k1)} T[i0 + r][k] v_k for r < 4, with T
 * (tr + i ti) row-major n x n and v_k at vr + k * NB, vi + k * NB. Written
 * as two fused multiply-adds per part (not a product subtracted). */
static inline __attribute__((always_inline)) void
rect4(acc4 *a, const float *tr, const float *ti, int n, int i0, int k0, int k1,
      const float *vr, const float *vi, int NB)
{
    const float *t0 = tr + (size_t)i0 * n, *u0 = ti + (size_t)i0 * n;
    for (int k = k0; k < k1; k++) {
        const v8 pr = ld8(vr + (size_t)k * NB), pi = ld8(vi + (size_t)k * NB);
        float x, y;
#define STEP(q, R, I)                                                          \
        x = t0[(size_t)(q) * n + k];                                           \
        y = u0[(size_t)(q) * n + k];                                           \
        a->R = a->R - x * pr + y * pi;                                         \
        a->I = a->I - x * pi - y * pr;
        STEP(0, r0, i0) STEP(1, r1, i1) STEP(2, r2, i2) STEP(3, r3, i3)
#undef STEP
    }
}

/* One row's accumulator: acc -= sum_{k in [k0, k1)} T[i][k] v_k. */
static inline __attribute__((always_inline)) void
rect1(v8 *ar, v8 *ai, const float *tr, const float *ti, int n, int i, int k0, int k1,
      const float *vr, const float *vi, int NB)
{
    for (int k = k0; k < k1; k++) {
        const v8 pr = ld8(vr + (size_t)k * NB), pi = ld8(vi + (size_t)k * NB);
        const float x = tr[(size_t)i * n + k], y = ti[(size_t)i * n + k];
        *ar = *ar - x * pr + y * pi;
        *ai = *ai - x * pi - y * pr;
    }
}

/* Inside as__civ_lu_solve_freq: (R, I) -= T[i][k] (SR, SI); (R, I) *=
 * T[i][i] (U's inverted diagonal); the four rows of a back into xo. */
#define TSUB(R, I, i, k, SR, SI)                                               \
    do {                                                                       \
        const float x_ = tr[(size_t)(i) * n + (k)], y_ = ti[(size_t)(i) * n + (k)]; \
        (R) = (R) - x_ * (SR) + y_ * (SI);                                     \
        (I) = (I) - x_ * (SI) - y_ * (SR);                                     \
    } while (0)
#define TDIV(R, I, i)                                                          \
    do {                                                                       \
        const float x_ = tr[(size_t)(i) * n + (i)], y_ = ti[(size_t)(i) * n + (i)]; \
        const v8 r_ = (R), i_ = (I);                                           \
        (R) = x_ * r_ - y_ * i_;                                               \
        (I) = x_ * i_ + y_ * r_;                                               \
    } while (0)
#define STROWS(a, i0)                                                          \
    do {                                                                       \
        st8(xr0 + (size_t)(i0) * NB, (a).r0); st8(xi0 + (size_t)(i0) * NB, (a).i0);       \
        st8(xr0 + (size_t)((i0) + 1) * NB, (a).r1); st8(xi0 + (size_t)((i0) + 1) * NB, (a).i1); \
        st8(xr0 + (size_t)((i0) + 2) * NB, (a).r2); st8(xi0 + (size_t)((i0) + 2) * NB, (a).i2); \
        st8(xr0 + (size_t)((i0) + 3) * NB, (a).r3); st8(xi0 + (size_t)((i0) + 3) * NB, (a).i3); \
    } while (0)

/* x^ = A^-1 z^ at one frequency for all lanes from its LU factors f
 * (store_lu's layout); z [re|im][n][NB], xo [re|im][n][NB]; s = -1: the
 * factors of conj(A) (the mirrored frequency; the same permutation), solved
 * as conj(A^-1 conj(z)): the imaginary parts negated on load and on the
 * final store, so the substitutions never scale T.
 * Forward substitution with the unit lower factor into xo, then back
 * substitution with U in place, four rows at a time. */
AS__CIV_CLONES
void as__civ_lu_solve_freq(const float *f, float s, const float *z, float *xo, int n, int NB)
{
    const size_t nn = (size_t)n * n;
    const float *tr = f, *ti = f + nn;
    const int *perm = (const int *)(f + 2 * nn);
    const float *zr = z, *zi = z + (size_t)n * NB;
    float *xr = xo, *xi = xo + (size_t)n * NB;
    const v8 sg = (v8){0} + s;
    for (int l0 = 0; l0 < NB; l0 += 8) {
        const float *zr0 = zr + l0, *zi0 = zi + l0;
        float *xr0 = xr + l0, *xi0 = xi + l0;
        int i0 = 0;
        for (; i0 + 4 <= n; i0 += 4) {   /* L y = P z */
            acc4 a = {ld8(zr0 + (size_t)perm[i0] * NB), ld8(zr0 + (size_t)perm[i0 + 1] * NB),
                      ld8(zr0 + (size_t)perm[i0 + 2] * NB), ld8(zr0 + (size_t)perm[i0 + 3] * NB),
                      sg * ld8(zi0 + (size_t)perm[i0] * NB),
                      sg * ld8(zi0 + (size_t)perm[i0 + 1] * NB),
                      sg * ld8(zi0 + (size_t)perm[i0 + 2] * NB),
                      sg * ld8(zi0 + (size_t)perm[i0 + 3] * NB)};
            rect4(&a, tr, ti, n, i0, 0, i0, xr0, xi0, NB);
            TSUB(a.r1, a.i1, i0 + 1, i0, a.r0, a.i0);
            TSUB(a.r2, a.i2, i0 + 2, i0, a.r0, a.i0);
            TSUB(a.r2, a.i2, i0 + 2, i0 + 1, a.r1, a.i1);
            TSUB(a.r3, a.i3, i0 + 3, i0, a.r0, a.i0);
            TSUB(a.r3, a.i3, i0 + 3, i0 + 1, a.r1, a.i1);
            TSUB(a.r3, a.i3, i0 + 3, i0 + 2, a.r2, a.i2);
            STROWS(a, i0);
        }
        for (; i0 < n; i0++) {
            v8 ar = ld8(zr0 + (size_t)perm[i0] * NB), ai = sg * ld8(zi0 + (size_t)perm[i0] * NB);
            rect1(&ar, &ai, tr, ti, n, i0, 0, i0, xr0, xi0, NB);
            st8(xr0 + (size_t)i0 * NB, ar);
            st8(xi0 + (size_t)i0 * NB, ai);
        }
        /* U x = y, from the bottom: the rows below a multiple of 4 one by
         * one, then blocks of four */
        int top = n / 4 * 4;
        for (int i = n - 1; i >= top; i--) {
            v8 ar = ld8(xr0 + (size_t)i * NB), ai = ld8(xi0 + (size_t)i * NB);
            rect1(&ar, &ai, tr, ti, n, i, i + 1, n, xr0, xi0, NB);
            const float dr = tr[(size_t)i * n + i], di = ti[(size_t)i * n + i];
            st8(xr0 + (size_t)i * NB, dr * ar - di * ai);
            st8(xi0 + (size_t)i * NB, dr * ai + di * ar);
        }
        for (i0 = top - 4; i0 >= 0; i0 -= 4) {
            acc4 a = {ld8(xr0 + (size_t)i0 * NB), ld8(xr0 + (size_t)(i0 + 1) * NB),
                      ld8(xr0 + (size_t)(i0 + 2) * NB), ld8(xr0 + (size_t)(i0 + 3) * NB),
                      ld8(xi0 + (size_t)i0 * NB), ld8(xi0 + (size_t)(i0 + 1) * NB),
                      ld8(xi0 + (size_t)(i0 + 2) * NB), ld8(xi0 + (size_t)(i0 + 3) * NB)};
            rect4(&a, tr, ti, n, i0, i0 + 4, n, xr0, xi0, NB);
            TDIV(a.r3, a.i3, i0 + 3);
            TSUB(a.r2, a.i2, i0 + 2, i0 + 3, a.r3, a.i3);
            TDIV(a.r2, a.i2, i0 + 2);
            TSUB(a.r1, a.i1, i0 + 1, i0 + 3, a.r3, a.i3);
            TSUB(a.r1, a.i1, i0 + 1, i0 + 2, a.r2, a.i2);
            TDIV(a.r1, a.i1, i0 + 1);
            TSUB(a.r0, a.i0, i0, i0 + 3, a.r3, a.i3);
            TSUB(a.r0, a.i0, i0, i0 + 2, a.r2, a.i2);
            TSUB(a.r0, a.i0, i0, i0 + 1, a.r1, a.i1);
            TDIV(a.r0, a.i0, i0);
            STROWS(a, i0);
        }
        if (s < 0)   /* back from the conjugated system */
            for (int i = 0; i < n; i++)
                st8(xi0 + (size_t)i * NB, -ld8(xi0 + (size_t)i * NB));
    }
}
