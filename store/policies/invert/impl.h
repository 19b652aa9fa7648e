/*
 * Internals shared by the conv inversion sources (invert/solver.c: the
 * solver object, verdict and factor cache; invert/restore.c: geometry,
 * frame and the restore's passes; invert/adjoint.c: the adjoint path and
 * Cin = 1; invert/factor.c; invert/fft.c). Not part of any API; include
 * only from the sources in invert/.
 */
#ifndef AS_STORE_CONV_INVERT_IMPL_H
#define AS_STORE_CONV_INVERT_IMPL_H

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/policies/invert/conv_invert.h"
#include "util/clock.h"
#include "allocator/fault.h"

struct as__civ {
    as__civ_geom g;
    as__civ_cfg cfg;
    int ho, wo;
    int dh, dw;            /* F row a <-> Y row a - dh (dh = kh-1-pad_h) */
    int top, bot, left, right;   /* frame widths, clamped to the image */
    int P, Q, Qh;
    int pointwise;         /* 1x1 kernel: X = M Y per pixel */
    as__civ_fft fp, fq, ip, iq;  /* forward / inverse along P and Q */
    /* cache: the condition verdict and the factor, each for one version */
    int cond_state;        /* 0 unknown, 1 accepted, 2 rejected */
    int admit;             /* restore a rejected version anyway: its input
                              was verified at save (as__civ_admit) */
    uint64_t cond_version;
    double cond;
    int state;             /* 0 no factor, 1 factor valid for `version` */
    uint64_t version;
    float *m;              /* (P*Qh, 2, Cin, Cout) */
    const float *mstream;  /* during a streamed restore of several passes:
                              the factor of every frequency, built once for
                              all passes (NULL: per column inside each pass) */
    void *ext_work;        /* caller's work space for the next restores */
    size_t ext_bytes;
    float *wt;             /* weights as (kh, kw, Cout, Cin) */
    /* the kernels' cross-correlation of one version (weight-sized state,
     * as__civ_gram_len doubles): computed by the condition check at save,
     * reused by the restore's factorization of the same version */
    double *gram;
    void *fscr;            /* the factorization's scratch (solver.c) */
    uint64_t gram_version;
    int gram_ok;
    /* the reference of the perturbation bound (as__civ_condition): the
     * weights of the last version whose condition number was computed,
     * and the extreme eigenvalues of its A^H A per frequency (2 P Qh) */
    float *ref_w;
    double *ref_eig;
    double ref_cond;
    int ref_ok;
    /* Cin = 1 (invert/adjoint.c): the output channels a restore reads
     * and 1 / G_S over the half spectrum (P*Qh floats), for one version;
     * with them a restore needs no factor at all */
    float *c1_gi;
    int *c1_sel;
    int c1_ns, c1_ok;
    uint64_t c1_version;
    char reject[160];
    as__civ_stats st;
};

/* Wall clock in ms for the phase times of the stats (read several times
 * per grid row: the vDSO clock, no system call). */
static inline double as__civ_now_ms(void) { return as_clock_wall_s() * 1e3; }
/* The calling thread's CPU time in ms, for the factor and condition times
 * (read once per weight version; wall time on a shared machine would add
 * whatever else held the core). */
static inline double as__civ_cpu_ms(void) { return as_clock_thread_cpu_s() * 1e3; }

/* 8-float vectors (GCC/Clang vector extension; lowered to whatever the
 * clone's target has). Loads and stores are unaligned and
 * free of aliasing questions (may_alias, alignment 4). Macros, not
 * functions: a vector-typed function would change the ABI per clone. */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
#define ld8(p) (*(const v8u *)(p))
#define st8(p, v) (*(v8u *)(p) = (v))

/* 8 x 8 transpose of r[0..7] in place (r[k][j] -> r[j][k]): unpack pairs,
 * then quads, then halves. A macro for the same reason as ld8. */
typedef int v8i __attribute__((vector_size(32)));
#define AS__CIV_T8(r)                                                          \
    do {                                                                       \
        const v8i lo_ = {0, 8, 1, 9, 4, 12, 5, 13}, hi_ = {2, 10, 3, 11, 6, 14, 7, 15}; \
        const v8i ql_ = {0, 1, 8, 9, 4, 5, 12, 13}, qh_ = {2, 3, 10, 11, 6, 7, 14, 15}; \
        const v8i hl_ = {0, 1, 2, 3, 8, 9, 10, 11}, hh_ = {4, 5, 6, 7, 12, 13, 14, 15}; \
        v8 t_[8], u_[8];                                                       \
        for (int k_ = 0; k_ < 8; k_ += 2) {                                    \
            t_[k_] = __builtin_shuffle(r[k_], r[k_ + 1], lo_);                 \
            t_[k_ + 1] = __builtin_shuffle(r[k_], r[k_ + 1], hi_);             \
        }                                                                      \
        for (int k_ = 0; k_ < 8; k_ += 4) {                                    \
            u_[k_] = __builtin_shuffle(t_[k_], t_[k_ + 2], ql_);               \
            u_[k_ + 1] = __builtin_shuffle(t_[k_], t_[k_ + 2], qh_);           \
            u_[k_ + 2] = __builtin_shuffle(t_[k_ + 1], t_[k_ + 3], ql_);       \
            u_[k_ + 3] = __builtin_shuffle(t_[k_ + 1], t_[k_ + 3], qh_);       \
        }                                                                      \
        for (int k_ = 0; k_ < 4; k_++) {                                       \
            r[k_] = __builtin_shuffle(u_[k_], u_[k_ + 4], hl_);                \
            r[k_ + 4] = __builtin_shuffle(u_[k_], u_[k_ + 4], hh_);            \
        }                                                                      \
    } while (0)

/* Four output channels of one block of 8 lanes, summed over nt taps and K
 * channels: d[j*NB + l] = sum_t sum_k w_t[j*K + k] * x_t[k*NB + l], j < 4,
 * l < 8, with w_t = wtap[t] + woff (four rows of K weights) and
 * x_t = taps[t] + xoff. The convolution (as__civ_border_row: K = Cin) and its
 * transpose (adjoint_row: K = Cout) share it. Always inlined, so each
 * target clone of the caller gets its own copy. */
static inline __attribute__((always_inline)) void
as__civ_taps_dot4(int nt, const float *const *wtap, size_t woff, const float *const *taps,
          size_t xoff, int K, int NB, float *d)
{
    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int t = 0; t < nt; t++) {
        const float *w0 = wtap[t] + woff;
        const float *src = taps[t] + xoff;
        for (int k = 0; k < K; k++) {
            const v8 xv = ld8(src + (size_t)k * NB);
            a0 += w0[k] * xv;
            a1 += w0[K + k] * xv;
            a2 += w0[2 * K + k] * xv;
            a3 += w0[3 * K + k] * xv;
        }
    }
    st8(d, a0);
    st8(d + NB, a1);
    st8(d + 2 * NB, a2);
    st8(d + 3 * NB, a3);
}

/* Work space of a restore: carved from the caller's block when one was
 * given (as__civ_set_work) and it is large enough, else one malloc. */
typedef struct as__civ_work {
    char *base, *own;
    size_t off, cap;
} as__civ_work;

#define AS__CIV_WALIGN 64
static inline size_t as__civ_wround(size_t n) { return (n + AS__CIV_WALIGN - 1) / AS__CIV_WALIGN * AS__CIV_WALIGN; }

static inline int as__civ_work_begin(as__civ *ci, as__civ_work *wk, size_t need)
{
    memset(wk, 0, sizeof *wk);
    if (ci->ext_work && ci->ext_bytes >= need) {
        wk->base = ci->ext_work;
    } else {
        if (!(wk->own = as__fmalloc(need + AS__CIV_WALIGN)))
            return AS_ENOMEM;
        wk->base = (char *)(((uintptr_t)wk->own + AS__CIV_WALIGN - 1) / AS__CIV_WALIGN * AS__CIV_WALIGN);
    }
    wk->cap = need;
    return 0;
}

static inline void *as__civ_wtake(as__civ_work *wk, size_t bytes)
{
    void *p = wk->base + wk->off;
    wk->off += as__civ_wround(bytes);
    assert(wk->off <= wk->cap);
    return p;
}


/* Shared pieces of the restore (invert/restore.c). NB: lanes per half (a
 * multiple of 8); images j and j + ceil(n/2) share lane j (re / im). */
void as__civ_border_row(const as__civ *ci, const float *xf, const int *fidx,
                        int a, float *R, int NB);
void as__civ_scatter_yrow(const as__civ *ci, int n, const float *y, const float *bias,
                          int i, float *R, int NB);
void as__civ_frame_pack(const as__civ *ci, int n, const float *frame, float *xf,
                        int *fidx, int NB);
/* X: the solved spectrum, element (p, q) at X + p*rs + q*ex. */
void as__civ_finish_rows(as__civ *ci, int n, const float *X, size_t ex, size_t rs, float *R,
                         const float *frame, float *x, int NB, double t_ifft);
/* Row stride (floats) of a grid of Q elements of e floats: one cache line
 * more than the row, so the P elements of a column (read by the transforms
 * along P) fall in different cache sets even when the row is a multiple of
 * 4 KiB (64x64 maps: 72 elements of 2 KiB). */
static inline size_t as__civ_grid_rs(int Q, size_t e) { return (size_t)Q * e + 16; }
/* Bytes of work space of a restore of n images on a path (AS__CIV_PATH_*). */
size_t as__civ_work_need(const as__civ *ci, int n, int path);

/* The exact frame pixels of n images back into x (invert/restore.c). */
void as__civ_frame_put_back(const as__civ *ci, int n, const float *frame, float *x);
/* The frame of one image and channel into an image with rows stride floats
 * apart (invert/restore.c). */
void as__civ_frame_put_one(const as__civ *ci, const float *fr, float *xd, size_t stride);

/* Cin = 1 (invert/adjoint.c): the restore of n <= 16 images by the
 * closed form, with the per-version state of version (computed from ci->wt
 * when the cache holds another), and its work space (a restore of Cin = 1
 * takes only this). No factor is used. */
int as__civ_restore_c1(as__civ *ci, uint64_t version, int n, const float *y,
                       const float *bias, const float *frame, float *x);
/* The per-version state of Cin = 1 (the condition verdict, 1 or infinite,
 * the channels to read, 1 / G_S) from weights w(o, u, v) =
 * w[o * so + (u * kw + v) * st] into ci's c1 cache; 0 or AS_ENOMEM. */
int as__civ_c1_prepare(as__civ *ci, const float *w, size_t so, size_t st,
                       uint64_t version, double *cond);
size_t as__civ_c1_work_need(const as__civ *ci, int n);

/* Images per pass of a restore. The work space grows with the images of a
 * pass (the grid holds Cout channels of every image: P*Q*Cout floats per
 * image, several times the image's Cin*H*W), so a whole batch in one pass
 * would take more memory than the inversion saves. The passes are
 * independent (an image's result depends on its pair partner only through
 * float rounding); 16 images fill the 8 lanes of both halves exactly, the
 * smallest work space of the layout. */
#define AS__CIV_CHUNK 16

/* Frame widths (rows at the top and bottom, columns left and right),
 * clamped to the image (invert/restore.c). */
void as__civ_frame_widths(const as__civ_geom *g, int *top, int *bot, int *left, int *right);

/* A restore of n images in passes of at most chunk images (invert/restore.c):
 * fc != NULL factors inside (streamed; path: AS__CIV_PATH_*), else the
 * cached factor ci->m; one counted restore, phase times summed over the
 * passes. Returns 0 or AS_ENOMEM. */
int as__civ_restore_passes(as__civ *ci, as__civ_fctx *fc, int path, int chunk,
                           uint64_t version, int n, const float *y, const float *bias,
                           const float *frame, float *x);

/* What a restore applies per frequency: M (the direct path), A^H and the
 * Cholesky factor of A^H A (the adjoint path), or the LU factors of a
 * square A (the LU path, streamed restores with Cout = Cin). */
enum { AS__CIV_PATH_M = 0, AS__CIV_PATH_ADJ = 1, AS__CIV_PATH_LU = 2 };

/* Floats of the factor of one frequency on a path: M (2 Cin Cout); A^H
 * (2 Cin Cout) and the Cholesky factor (2 Cin Cin); L and U (2 Cin Cin)
 * and the row permutation (Cin ints, one float slot each). */
static inline size_t as__civ_msz(const as__civ_geom *g, int path)
{
    const size_t ci = (size_t)g->cin;
    if (path == AS__CIV_PATH_LU)
        return 2 * ci * ci + ci;
    return 2 * ci * g->cout + (path == AS__CIV_PATH_ADJ ? 2 * ci * ci : 0);
}

/* Frequencies the factorizations process in lockstep, and one complex
 * value of each (invert/factor.c; invert/lu.c reads two such groups and
 * factors their 16 lanes in float in the same 128 bytes per entry). */
#define AS__CIV_LANES 8
struct as__civ_lanes {
    double re[AS__CIV_LANES], im[AS__CIV_LANES];
};

/* The LU path (invert/lu.c). as__civ_lu_group: P A = L U of 16 lanes'
 * square A (n x n, A[r * n + c]: frequencies f0 .. f0+7 from A, f0+8 ..
 * f0+15 from A2, or none when A2 is NULL; factored in float in place over
 * A; perm: n lanes of scratch) into m (frequency f at m + (f - fbeg) *
 * as__civ_msz(g, AS__CIV_PATH_LU)) for the lanes f0 + l < fend.
 * as__civ_lu_solve_freq: x^ = A^-1 z^ at one
 * frequency for all lanes from those factors f; z [re|im][n][NB], xo
 * [re|im][n][NB]; s = -1: conj(A). */
void as__civ_lu_group(struct as__civ_lanes *A, const struct as__civ_lanes *A2, int n,
                      struct as__civ_lanes *perm, size_t f0, size_t fend, size_t fbeg, float *m);
void as__civ_lu_solve_freq(const float *f, float s, const float *z, float *xo, int n, int NB);

/* x^ = M z^ at one frequency for all lanes (invert/restore.c): mr, mi Cin x
 * Cout; z [re|im][Cout][NB], xo [re|im][Cin][NB]; s = -1: conj(M). */
void as__civ_solve_freq(const float *mr, const float *mi, float s, const float *z,
                        float *xo, int ci, int co, int NB);
/* x^ = G^-1 A^H z^ at one frequency (invert/adjoint.c); f: the
 * adjoint factor of the frequency (as__civ_msz(g, AS__CIV_PATH_ADJ) floats). */
void as__civ_adjoint_freq(const float *f, float s, const float *z, float *tz, float *xo,
                          int cin, int cout, int NB);

#endif
