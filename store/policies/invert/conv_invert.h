/*
 * Conv input regeneration by inversion (internal; not part of the public API).
 *
 * A stride-1, dilation-1, groups-1 convolution (cross-correlation, as in
 * PyTorch) Y = W (*) X + b is, before its window is cut, a multichannel
 * linear convolution whose full output F has (H+kh-1) x (W+kw-1) pixels per
 * output channel. Y is the central window of F; the rest of F depends only on
 * a thin frame of X (the outer mh = kh-1-pad_h rows and mw = kw-1-pad_w
 * columns). The solver keeps that frame at save time and at restore time
 * rebuilds F from Y and the frame, transforms it to the Fourier domain, solves
 * the per-frequency least-squares system (A^H A + eps I) X^ = A^H F^ with a
 * factor cached per weight version (or built inside a streaming restore,
 * nothing kept), and transforms back. For Cout >= 2 Cin and small condition
 * numbers a streaming restore applies A^H and the Cholesky factor of A^H A
 * per frequency instead of M (the adjoint path), and for Cout = Cin the LU
 * factors of A(f) (the LU path); Cin = 1 takes the closed form
 * a^H F^ / |a|^2 and 1x1 kernels a per-pixel channel mix.
 *
 * Layouts: X (N, Cin, H, W), Y (N, Cout, Ho, Wo), W (Cout, Cin, kh, kw), all
 * fp32, contiguous. The frame of one image is (Cin, frame_len) floats; per
 * channel: top mh rows (W each), bottom mh rows, then for the H-2mh middle rows
 * the left mw and right mw columns (row by row: left block, then right block).
 *
 * Thread-safety: an as__civ object is not thread-safe; use one per layer
 * and serialize calls (the store holds its lock). Different objects are
 * independent.
 */
#ifndef AS_STORE_CONV_INVERT_H
#define AS_STORE_CONV_INVERT_H

#include <stddef.h>
#include <stdint.h>

#include "actstore/common.h"
#include "actstore/store.h"

/* Geometry of one conv layer. n is only used by callers that pass it around;
 * the solver takes the batch size per call. */
typedef struct as__civ_geom {
    int n, cin, h, w;          /* input X */
    int cout, kh, kw;          /* weights */
    int pad_h, pad_w;          /* zero padding */
    int stride_h, stride_w;    /* must be 1 for inversion */
    int dil_h, dil_w;          /* must be 1 */
    int groups;                /* must be 1 */
} as__civ_geom;

typedef struct as__civ_cfg {
    double cond_max;   /* largest accepted per-frequency cond(A(f)); 0 = 1e4 */
    double eps_rel;    /* Tikhonov eps relative to trace(A^H A)/Cin; <0 = 1e-14 */
    int    no_adjoint; /* 1: streaming restores never take the adjoint path
                          (default: taken when Cout >= 2 Cin and
                          cond <= AS__CIV_ADJ_COND) */
    int    no_lu;      /* 1: streamed restores with Cout = Cin solve with M
                          (the Gram route) instead of the LU factors of A
                          (default: LU up to AS__CIV_LU_MAX_CIN channels) */
    int    no_bound;   /* 1: compute the condition number of every version
                          (default: a version close enough to the last
                          checked one is accepted by a perturbation bound,
                          see as__civ_condition) */
} as__civ_cfg;

/* Largest condition number for the adjoint (normal equations) path. */
#define AS__CIV_ADJ_COND 50.0
/* Widest layer (Cin = Cout) for the LU path: its error against the Gram
 * route's grows with the size (measured 1.4x at 16 channels, 1.7x at 64,
 * 2.5x at 96: docs/policies.md, "The LU path"); wider layers keep M. */
#define AS__CIV_LU_MAX_CIN 64
/* FRAME=auto stores 16-bit frames up to this condition number: the frame's
 * quantization error (<= 1.5e-5 of the channel's frame maximum) then comes
 * back in the interior amplified by at most a few times (measured:
 * docs/policies.md, "Frame precision"), inside the 1e-4 of the target. */
#define AS__CIV_Q16_COND 100.0

/* Counters of one solver object. */
typedef struct as__civ_stats {
    uint64_t factor_builds;   /* factorizations computed (new weight version) */
    uint64_t factor_hits;     /* prepares that reused the cached factor */
    uint64_t cond_checks;     /* condition numbers computed (one per version) */
    uint64_t cond_bounded;    /* versions accepted by the perturbation bound
                                 from the last checked version instead */
    uint64_t restores;        /* successful restores */
    uint64_t streamed;        /* restores that factored block by block */
    uint64_t adjoint;         /* of those, on the adjoint path */
    uint64_t lu;              /* of those, on the LU path (Cout = Cin) */
    double   cond;            /* max over frequencies of cond(A(f)), last check */
    double   factor_ms;       /* thread CPU time of the last factorization */
    double   cond_ms;         /* thread CPU time of the last condition-only check */
    size_t   cache_bytes;     /* bytes held by the cached factor */
    /* wall time of the phases of the last restore: build F, forward FFT,
     * solve, inverse FFT, crop */
    double   phase_ms[5];
    int      c1_channels;     /* Cin = 1: output channels the last restore
                                 read (invert/adjoint.c) */
} as__civ_stats;

typedef struct as__civ as__civ;

/* Output spatial size of the conv (ho = h + 2 pad_h - kh + 1). */
int as__civ_out_h(const as__civ_geom *g);
int as__civ_out_w(const as__civ_geom *g);

/* Is the geometry invertible at all (stride 1, dilation 1, groups 1,
 * Cout >= Cin, positive sizes, frame smaller than the input)? Returns 0, or
 * AS_ENOTSUP with a reason in why (NUL-terminated, truncated to whylen), or
 * AS_EINVAL for nonsense sizes. The condition number is checked later, by
 * as__civ_prepare. */
int as__civ_check(const as__civ_geom *g, char *why, size_t whylen);

/* Frame width in rows / columns: max(0, k-1-pad). */
int as__civ_frame_rows(const as__civ_geom *g);
int as__civ_frame_cols(const as__civ_geom *g);
/* Floats of the frame of one image and one channel (<= h*w). */
size_t as__civ_frame_len(const as__civ_geom *g);

/* Copy the frame of every image of x (n, Cin, H, W) into frame
 * (n, Cin, frame_len). Never fails. */
void as__civ_frame_extract(const as__civ_geom *g, int n, const float *x,
                           float *frame);

/* Create a solver for geometry g (must pass as__civ_check). cfg may be
 * NULL for defaults. Returns 0, AS_EINVAL / AS_ENOTSUP (why filled), or
 * AS_ENOMEM. The caller owns *out and frees it with as__civ_destroy. */
int as__civ_create(const as__civ_geom *g, const as__civ_cfg *cfg,
                   as__civ **out, char *why, size_t whylen);
/* NULL-safe. */
void as__civ_destroy(as__civ *ci);

/* Check the max per-frequency condition number of weights w (Cout, Cin,
 * kh, kw) of version `version` against cfg.cond_max, without building the
 * factor (cheaper: no M). The verdict is cached per version: a second call
 * with the same version costs nothing. A version close to the last
 * computed one (unless cfg.no_bound) is accepted by a perturbation bound
 * instead, when the bound stays below the decision threshold above that
 * one's condition number; its verdict is then the bound (an upper bound,
 * counted in cond_bounded). Returns 0; AS_EFALLBACK above the threshold
 * (why names the value); AS_ENOMEM. *cond_out (may be NULL) gets the
 * condition number (inf when singular). */
int as__civ_condition(as__civ *ci, const float *w, uint64_t version,
                      double *cond_out, char *why, size_t whylen);

/* While on, restores of a version rejected by the check proceed (the
 * caller verified that input's rebuild at save; policy.c). */
void as__civ_admit(as__civ *ci, int on);

/* Make the factor for weights w of version `version` current: reuses the
 * cached one when the version matches (counted as a hit), otherwise
 * rebuilds it (counted), computing the condition number in the same pass
 * when this version was not checked yet. Returns 0; AS_EFALLBACK when the
 * condition number exceeds cfg.cond_max (no factor is kept and the next
 * call with this version returns the same answer without recomputing);
 * AS_ENOMEM. *cond_out as for as__civ_condition. */
int as__civ_prepare(as__civ *ci, const float *w, uint64_t version,
                    double *cond_out, char *why, size_t whylen);

/* Rebuild x (n, Cin, H, W) from y (n, Cout, Ho, Wo), the optional bias
 * (Cout, subtracted from y; NULL = none) and the frame written by
 * as__civ_frame_extract. Needs a successful as__civ_prepare for the
 * current weights. Returns 0, AS_ESTATE (no valid factor), AS_ENOMEM. */
int as__civ_restore(as__civ *ci, int n, const float *y,
                    const float *bias, const float *frame, float *x);

/* Rebuild x without caching the factor: it exists only during the call.
 * A restore of more than one pass of 16 images builds the factor of every
 * frequency once, before the passes, in its work space when that is at most
 * twice one pass's work space; otherwise the frequencies are factored a
 * column (P frequencies) at a time inside each pass, and the passes are
 * made larger (within three passes' work space). The factor work is
 * done for every call (in training each version is restored once). Uses the
 * cached factor instead when one is held for `version`. Needs an accepted
 * condition verdict for `version` (computed here if missing). Returns 0,
 * AS_EFALLBACK (why filled), AS_ENOMEM. */
int as__civ_restore_stream(as__civ *ci, const float *w, uint64_t version,
                           int n, const float *y, const float *bias,
                           const float *frame, float *x, char *why, size_t whylen);

/* Work space: restores take as__civ_work_bytes(ci, n) bytes of work
 * space (that of one pass of at most 16 images, at most three times that
 * for a streamed restore: the up-front factor or larger passes; a restore
 * of n images runs in passes, so the work space does not grow with the
 * batch beyond that); with as__civ_set_work the caller lends a block (64-byte
 * aligned, at least that size) that the following restores use instead of
 * their own malloc (e.g. from an arena that keeps its pages: no page
 * faults). NULL returns to malloc. The block must outlive those calls. */
size_t as__civ_work_bytes(const as__civ *ci, int n);
/* The work space of the one restore about to run: as__civ_restore
 * (stream = 0) or as__civ_restore_stream for `version` (stream = 1;
 * the layout it takes follows the condition verdict of `version`, both
 * layouts' maximum when there is none yet). <= as__civ_work_bytes. */
size_t as__civ_path_work_bytes(const as__civ *ci, uint64_t version, int n,
                               int stream);
void as__civ_set_work(as__civ *ci, void *block, size_t bytes);

/* Bytes a cached factor takes (P * (Q/2+1) * 2 * Cin * Cout floats). */
size_t as__civ_factor_bytes(const as__civ *ci);

/* Drop the cached factor (it is rebuilt on the next prepare); the
 * condition verdict stays. */
void as__civ_trim(as__civ *ci);

void as__civ_get_stats(const as__civ *ci, as__civ_stats *st);

/* ---- the store policy "invert" (invert/policy.c) ------------------- */

extern const struct as_policy_ops as_policy_invert;

/* Counters of the invert policy for one layer (summed over the rules of
 * the store's current spec that use invert, and over geometries). */
typedef struct as__civ_lstats {
    uint64_t entries;         /* (layer, geometry) solvers */
    uint64_t saves;           /* inputs saved by inversion */
    uint64_t verified;        /* of them above the threshold, admitted by a
                                 rebuild at save within the error bound */
    uint64_t residuals;       /* of them, with an 8-bit residual code */
    uint64_t derived;         /* inputs saved as derivations (all layers:
                                 not per layer) */
    uint64_t restores;        /* inputs rebuilt */
    uint64_t factor_builds;   /* factorizations (once per weight version) */
    uint64_t factor_hits;     /* restores that reused a cached factor */
    uint64_t cond_checks;     /* condition numbers computed (per version) */
    uint64_t cond_bounded;    /* versions accepted by the perturbation bound */
    uint64_t streamed;        /* restores that factored block by block */
    uint64_t users;           /* live items that may still restore */
    size_t   cache_bytes;     /* factor bytes held now */
    double   cond;            /* last condition number (max over entries) */
} as__civ_lstats;

/* Fill *out for `layer` (NULL: all layers). Returns 0, or AS_ENOTFOUND when
 * no invert solver exists for it under the current rules. Thread-safe. */
int as__civ_layer_stats(as_store *s, const char *layer,
                        as__civ_lstats *out);

/* ---- the stored frame's packing (invert/fpack.c) ------------------------ */

/* Bytes of a bitmap of nfl values (whole 64-bit words). */
static inline size_t as__civ_bitmap_bytes(size_t nfl) { return (nfl + 63) / 64 * 8; }
/* Packed bytes of nfl frame values (nnz nonzero) in nblk blocks: sparse
 * (bitmap + nonzeros) or dense, q16 codes or floats. */
size_t as__civ_fpack_bytes(size_t nfl, size_t nnz, size_t nblk, int sparse, int q16);
/* Pack raw (nblk blocks of flen floats) into dst; unpack the inverse (q16:
 * each value within max|block| / 65534). */
void as__civ_fpack(const float *raw, size_t nblk, size_t flen, int sparse, int q16,
                   void *dst);
void as__civ_funpack(const void *src, size_t nblk, size_t flen, int sparse, int q16,
                     float *raw);

/* ---- internals shared by the conv_invert*.c files ----------------------- */

/* Hot loops are compiled for AVX-512, AVX2+FMA and baseline x86-64 and the
 * best one is picked at load time (GCC function multi-versioning). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(AS_NO_TARGET_CLONES)
#define AS__CIV_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define AS__CIV_CLONES
#endif

/* Batched complex FFT over "elements" that are planar vectors: an element is
 * 2*B floats, B real parts then B imaginary parts; the transform runs along
 * one axis of elements, independently for each of the B lanes. */
typedef struct as__civ_fft {
    int n;             /* length */
    int nfact;
    int sign;          /* -1 forward, +1 inverse */
    int fact[32];      /* pairs (radix p, remaining m) as in a mixed-radix plan */
    float *tw;         /* n complex twiddles, interleaved re/im */
} as__civ_fft;

/* Smallest 2,3,5-smooth integer >= n. */
int as__civ_fft_good_size(int n);
/* sign -1 forward, +1 inverse (unnormalized). Returns 0 or AS_ENOMEM. */
int as__civ_fft_init(as__civ_fft *f, int n, int sign);
void as__civ_fft_free(as__civ_fft *f);
/* out[j*os] = sum_k in[k*is] exp(sign 2 pi i jk/n) for each lane; strides in
 * floats; out and in must not overlap; B must be a multiple of 8. */
void as__civ_fft_run(const as__civ_fft *f, float *out, size_t os,
                     const float *in, size_t is, size_t B);

/* Per-frequency factorization (invert/factor.c). For every frequency of
 * the half spectrum (kp in [0,P), kq in [0, Q/2]; index f = kq * P + kp) compute
 * M(f) = (A^H A + eps I)^-1 A^H as fp32 planar (mr, mi each Cin x Cout,
 * row-major), stored at m + f * 2*Cin*Cout (m NULL: not computed), and the
 * max cond(A(f)) into *cond_out (NULL: not estimated), with the per-frequency
 * extreme eigenvalues of A^H A into eig (as in as__civ_fctx; NULL: not
 * kept). Returns 0 or AS_ENOMEM. */
int as__civ_factor(const as__civ_geom *g, int P, int Q, const float *w,
                   const double *R, double eps_rel, float *m, double *cond_out,
                   double *eig, void *scratch);
/* Scratch of the factorizations and of as__civ_gram (64-byte aligned, used
 * by one call at a time; NULL: they malloc their own). */
size_t as__civ_factor_scratch_bytes(const as__civ_geom *g, int P, int Q);

/* The kernels' cross-correlation R_ij(d) (i >= j, d in [-(kh-1), kh-1] x
 * [-(kw-1), kw-1]) that the Gram matrices come from: as__civ_gram_len(g)
 * doubles. The factorizations take it precomputed (R) or compute it (R
 * NULL). Returns 0 or AS_ENOMEM. */
size_t as__civ_gram_len(const as__civ_geom *g);
int as__civ_gram(const as__civ_geom *g, const float *w, double *R, void *scratch);

/* The same in pieces, for a restore that factors a block of frequencies at
 * a time instead of caching the whole factor: begin (kernel column DFTs
 * and work space), range (frequencies [f0, f1) of the half spectrum, index
 * kq * P + kp; M of frequency f at m + (f - f0) * 2*Cin*Cout; the
 * max condition number is folded into *cond_out when not NULL), end. */
typedef struct as__civ_fctx {
    as__civ_geom g;
    int P, Q;
    size_t nf;                  /* P * (Q/2+1) */
    double *T;
    double *Tg;                 /* Gram matrix DFT along kq (gram_dft) */
    double *tw;                 /* row twiddles (P x (2kh-1) complex) */
    struct as__civ_lanes *A, *L, *v;
    double *eig;                /* not NULL (with cond_out): range() writes
                                   lambda_max and lambda_min of G(f) at
                                   eig[2f], eig[2f+1] (lambda_min 0 where
                                   the Cholesky failed) */
    int ginv;                   /* range() writes A^H (Cin x Cout) and the
                                   Cholesky factor of A^H A (Cin x Cin,
                                   diagonal inverted) instead of M: 2 Cin
                                   (Cout + Cin) floats per frequency */
    int lu;                     /* range() writes the LU factors of the
                                   square A(f) instead (invert/lu.c; set by
                                   begin when asked, which then skips the
                                   Gram matrices) */
    void *own;                  /* the buffers' block when not the caller's */
} as__civ_fctx;
int as__civ_factor_begin(as__civ_fctx *fc, const as__civ_geom *g, int P,
                         int Q, const float *w, const double *R, void *scratch, int lu);
void as__civ_factor_range(as__civ_fctx *fc, size_t f0, size_t f1,
                          double eps_rel, float *m, double *cond_out);
void as__civ_factor_end(as__civ_fctx *fc);

#endif
