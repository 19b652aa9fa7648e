/*
 * Policy "invert" for conv inputs: drop the input at save, rebuild it at
 * restore from the conv output, the weights and the border frame (the
 * solver is invert/restore.c; the math is in invert/conv_invert.h and
 * docs/policies.md, "## Conv inversion").
 *
 * Spec: conv_input=invert[:COND[:MODE[:FRAME[:DERIVED]]]] (an empty field =
 * default)
 *   COND  largest accepted per-frequency condition number (default 1e4)
 *   MODE  auto (default): cache the factor when it is small, else stream;
 *         cache: always cache; stream: never cache (see below)
 *   FRAME precision of the stored frame: auto (default: q16 when the
 *         version's condition number is at most AS__CIV_Q16_COND and the input
 *         is not an activation's saved output, else f32), f32 (exact), q16
 *         (16-bit fixed point per image and channel)
 *   DERIVED derive (default): an input declared derived (below) is rebuilt
 *         through its relation; solve: declared relations are ignored and
 *         every input is inverted (to measure or test the solver)
 *
 * Save (encode):
 *   - applicability: f32 (N, Cin, H, W) with conv metadata, stride 1,
 *     dilation 1, groups 1, Cout >= Cin, a frame smaller than the input,
 *     a saved conv output to rebuild from; then the condition number of the
 *     weights' version (computed once per version and layer, cached).
 *     Anything else is AS_ENOTSUP with a short reason: the store falls back
 *     (the rule's fallback, else keep) and counts it for the layer.
 *   - stored: the frame, as raw values or, when smaller, as a bitmap of
 *     its nonzero values plus those values (image borders are often zero),
 *     and a copy of the bias. Values are floats, or (q16) int16 codes with
 *     one float scale per image and channel: |error| <= max|frame of that
 *     channel| / 65534, which the solve spreads into the interior amplified
 *     by a small factor when the condition number is small (measured in
 *     docs/policies.md). The conv output becomes a dependency.
 * Restore (decode): the conv output through its own policy, the factor of
 *   the weights' version (built at the first restore of that version and
 *   reused by every other restore of it), the frame; solve, 16 images per
 *   pass (as__civ_work_bytes: the work space is that of one pass, not
 *   of the batch, which would exceed the bytes the inversion saves).
 *
 * The per-layer solver (factor cache) lives in the rule's params, one per
 * (layer, geometry), each with its own lock. The factor is built lazily at
 * the first restore, so forward holds only frames. When it is small next
 * to the input (<= 1/8 of its bytes) and the layer does not qualify for
 * the adjoint path (Cout >= 2 Cin, cond <= 50: streamed, faster), it is
 * cached, reused by every restore
 * of that weight version, freed when the last item of the layer that may
 * need it is dropped (in training: at the layer's backward release), and
 * its bytes are charged to the item whose restore built it. Otherwise the
 * restore factors one column of frequencies at a time inside the solve (in
 * every pass of images) and keeps nothing (the factor would cost more memory than the inversion saves:
 * it grows as Cin * Cout * spectrum, the input as N * Cin * H * W).
 *
 * Derived inputs: when the save carries a recompute relation
 * (as_save_info.recompute: the framework declares the input a function of
 * tensors it saved anyway, e.g. a pooled map = the pool's input at the
 * saved argmax), the input is rebuilt through it (policy recompute's
 * encode / decode): exact, no frame, no weights needed, any geometry.
 *
 * Contract (as_conv_meta): weights and bias unchanged between the save
 * and the restore (true in training: the optimizer runs after backward),
 * and weight_version bumped whenever they change.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/invert/conv_invert.h"
#include "store/store_internal.h"
#include "allocator/fault.h"

typedef struct inv_entry {
    struct inv_entry *next;
    char              layer[64];
    as__civ_geom     g;        /* n = 0 */
    const float      *w;        /* the layer's weights (part of the key) */
    pthread_mutex_t   mu;
    as__civ     *ci;
    int               users;    /* live items that may restore through ci */
    uint64_t          saves, restores;
    uint64_t          verified;  /* saves above the threshold verified */
    uint64_t          residuals; /* of them, admitted with a residual code */
} inv_entry;

typedef struct inv_params {
    double          cond_max;
    int             mode;       /* MODE_*: when to cache the factor */
    int             frame;      /* FRAME_*: precision of the stored frame */
    int             solve_only; /* DERIVED solve: ignore declared relations */
    pthread_mutex_t mu;         /* the entry list, derived */
    inv_entry      *entries;
    uint64_t        derived;    /* inputs saved as derivations */
} inv_params;

typedef struct inv_state {
    inv_entry   *e;
    as_handle    y;             /* conv output */
    const float *w;
    uint64_t     version;       /* cache key: weight version and checksum */
    int          n;
    int          sparse;        /* frame as bitmap + nonzeros */
    int          q16;           /* values as int16 codes + scales */
    size_t       frame_floats;  /* n * Cin * frame_len */
    size_t       nnz;
    void        *frame;         /* [bitmap] [scales (q16)] values */
    float       *bias;          /* copy (Cout) or NULL */
    int          nonneg;        /* no x < 0: clamp the rebuilt values at 0 */
    uint64_t    *pos;           /* bitmap of x > 0 (aliased inputs) or NULL */
    void        *derived;       /* recompute state: the input is derived */
    int          admitted;      /* version above the threshold, this input's
                                   rebuild verified at save */
    float       *rscale;        /* admitted with a residual code: one scale
                                   per (image, channel) block, then */
    int8_t      *resid;         /* X - X' per value, in units of the scale */
} inv_state;

/* ---- params --------------------------------------------------------------- */

enum { MODE_AUTO, MODE_CACHE, MODE_STREAM };
/* Versions with cond in (COND, VERIFY_SPAN * COND] are verified per save
 * against the error bound VERIFY_TOL (docs/policies.md, "Verified above the
 * threshold"). */
#define VERIFY_SPAN 10.0
#define VERIFY_TOL 1e-4
/* A rebuild off by at most RESID_MAX max|X| keeps an 8-bit residual code
 * (error <= RESID_MAX / 254 max|X| after it) instead of falling back. */
#define RESID_MAX 1e-2
enum { FRAME_AUTO, FRAME_F32, FRAME_Q16 };

static int parse_err(char *err, size_t errlen, size_t *err_off, size_t off,
                     const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    *err_off = off;
    return AS_ESPEC;
}

/* Index of w in the NULL-terminated list, or -1. */
static int word_of(const char *w, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (!strcmp(w, list[i]))
            return i;
    return -1;
}

static int inv_parse(const char *args, size_t len, void **params, char *err,
                     size_t errlen, size_t *err_off)
{
    static const char *const modes[] = {"auto", "cache", "stream", NULL};
    static const char *const frames[] = {"auto", "f32", "q16", NULL};
    static const char *const derives[] = {"derive", "solve", NULL};
    double cm = 1e4;
    int mode = MODE_AUTO, frame = FRAME_AUTO, solve_only = 0;
    *params = NULL;
    char buf[64];
    if (len >= sizeof buf)
        return parse_err(err, errlen, err_off, 0,
                         "expected COND[:auto|cache|stream[:auto|f32|q16"
                         "[:derive|solve]]]");
    memcpy(buf, args, len);
    buf[len] = 0;
    char *field[4] = {buf, NULL, NULL, NULL};
    for (int i = 1; i < 4 && field[i - 1]; i++) {
        char *c = strchr(field[i - 1], ':');
        if (c) {
            *c = 0;
            field[i] = c + 1;
        }
    }
    if (field[3] && strchr(field[3], ':'))
        return parse_err(err, errlen, err_off, (size_t)(strchr(field[3], ':') - buf),
                         "at most four fields: COND:MODE:FRAME:DERIVED");
    if (field[0][0]) {
        char *end = NULL;
        cm = strtod(field[0], &end);
        if (*end || !(cm > 1) || !isfinite(cm))
            return parse_err(err, errlen, err_off, 0,
                             "expected a condition number threshold > 1 "
                             "(e.g. invert:1e5)");
    }
    if (field[1] && field[1][0] && (mode = word_of(field[1], modes)) < 0)
        return parse_err(err, errlen, err_off, (size_t)(field[1] - buf),
                         "expected a factor mode: auto, cache or stream");
    if (field[2] && field[2][0] && (frame = word_of(field[2], frames)) < 0)
        return parse_err(err, errlen, err_off, (size_t)(field[2] - buf),
                         "expected a frame precision: auto, f32 or q16");
    if (field[3] && field[3][0] && (solve_only = word_of(field[3], derives)) < 0)
        return parse_err(err, errlen, err_off, (size_t)(field[3] - buf),
                         "expected what to do with declared derivations: "
                         "derive or solve");
    inv_params *p = as__fcalloc(1, sizeof *p);
    if (!p)
        return AS_ENOMEM;
    p->cond_max = cm;
    p->mode = mode;
    p->frame = frame;
    p->solve_only = solve_only;
    pthread_mutex_init(&p->mu, NULL);
    *params = p;
    return 0;
}

static void inv_free_params(void *params)
{
    inv_params *p = params;
    if (!p)
        return;
    for (inv_entry *e = p->entries, *nx; e; e = nx) {
        nx = e->next;
        as__civ_destroy(e->ci);
        pthread_mutex_destroy(&e->mu);
        free(e);
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static int geom_equal(const as__civ_geom *a, const as__civ_geom *b)
{
    return a->cin == b->cin && a->h == b->h && a->w == b->w &&
           a->cout == b->cout && a->kh == b->kh && a->kw == b->kw &&
           a->pad_h == b->pad_h && a->pad_w == b->pad_w;
}

/* The entry of (layer, geometry), created on first use. */
static int entry_get(inv_params *p, const char *layer, const as__civ_geom *g,
                     const float *w, inv_entry **out, char *why, size_t whylen)
{
    *out = NULL;
    pthread_mutex_lock(&p->mu);
    inv_entry *e = p->entries;
    for (; e; e = e->next)
        if (e->w == w && !strcmp(e->layer, layer) && geom_equal(&e->g, g))
            break;
    int rc = 0;
    if (!e) {
        e = as__fcalloc(1, sizeof *e);
        if (!e) {
            rc = AS_ENOMEM;
            goto out;
        }
        as__strlcpy(e->layer, layer, sizeof e->layer);
        e->w = w;
        e->g = *g;
        e->g.n = 0;
        as__civ_cfg cfg = {.cond_max = p->cond_max, .eps_rel = -1};
        rc = as__civ_create(&e->g, &cfg, &e->ci, why, whylen);
        if (rc) {
            free(e);
            goto out;
        }
        pthread_mutex_init(&e->mu, NULL);
        e->next = p->entries;
        p->entries = e;
    }
    *out = e;
out:
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ---- save ----------------------------------------------------------------- */

/* Stride, dilation and groups 0 mean 1 (store.h, as_conv_meta). */
static int32_t one_if_zero(int32_t v) { return v ? v : 1; }

static void geom_of(const as_conv_meta *m, as__civ_geom *g)
{
    *g = (as__civ_geom){.n = m->n, .cin = m->cin, .h = m->h, .w = m->w,
                         .cout = m->cout, .kh = m->kh, .kw = m->kw,
                         .pad_h = m->pad_h, .pad_w = m->pad_w,
                         .stride_h = one_if_zero(m->stride_h),
                         .stride_w = one_if_zero(m->stride_w),
                         .dil_h = one_if_zero(m->dil_h),
                         .dil_w = one_if_zero(m->dil_w),
                         .groups = one_if_zero(m->groups)};
}

/* Whether t is the conv input in a channel-blocked layout, (N, ceil(Cin /
 * L), H, W, L) for some lane count L > 1 (a framework's nChw16c): the same
 * values in another order, which the solver (NCHW) does not read. */
static bool is_channel_blocked(const as_conv_meta *m, const as_tensor *t)
{
    const int64_t *d = t->shape;
    return t->ndim == 5 && d[4] > 1 && d[0] == m->n && d[1] == (m->cin + d[4] - 1) / d[4] &&
           d[2] == m->h && d[3] == m->w;
}

static int solve_applies(const as_save_info *info, const as_tensor *t,
                         char *why, size_t whylen)
{
    const as_conv_meta *m = &info->meta.conv;
    if (t->dtype != AS_F32) {
        snprintf(why, whylen, "dtype %s (inversion needs f32)",
                 as_dtype_name(t->dtype));
        return AS_ENOTSUP;
    }
    if (is_channel_blocked(m, t)) {
        snprintf(why, whylen, "layout: channel-blocked (N, C/%lld, H, W, %lld) "
                 "input (the solver reads NCHW)", (long long)t->shape[4],
                 (long long)t->shape[4]);
        return AS_ENOTSUP;
    }
    if (t->ndim != 4 || t->shape[0] != m->n || t->shape[1] != m->cin ||
        t->shape[2] != m->h || t->shape[3] != m->w) {
        snprintf(why, whylen, "metadata: tensor shape does not match the "
                 "conv metadata (N, Cin, H, W) = (%d, %d, %d, %d)", m->n,
                 m->cin, m->h, m->w);
        return AS_EMETA;
    }
    if (!m->weight) {
        snprintf(why, whylen, "metadata: no weights (inversion needs "
                 "them)");
        return AS_EMETA;
    }
    if (as_handle_is_null(m->output)) {
        snprintf(why, whylen, "no saved conv output to rebuild from");
        return AS_ENOTSUP;
    }
    as__civ_geom g;
    geom_of(m, &g);
    if (g.kh > 16 || g.kw > 16) {   /* a real conv, beyond the solver */
        snprintf(why, whylen, "kernel %dx%d (inversion handles up to 16)",
                 g.kh, g.kw);
        return AS_ENOTSUP;
    }
    char what[128];
    int rc = as__civ_check(&g, what, sizeof what);
    if (rc == AS_EINVAL) {   /* impossible geometry: the metadata is wrong */
        snprintf(why, whylen, "metadata: %s", what);
        return AS_EMETA;
    }
    if (rc)
        snprintf(why, whylen, "%s", what);
    return rc ? AS_ENOTSUP : 0;
}

/* A declared derivation (as_save_info.recompute) needs no solve, unless
 * the rule says solve. */
static int has_derivation(const inv_params *p, const as_save_info *info,
                          const as_tensor *t)
{
    char why[80];
    return !p->solve_only && info->recompute &&
           as_policy_recompute.applies(NULL, info, t, why, sizeof why) == 0;
}

static int inv_applies(const void *params, const as_save_info *info,
                       const as_tensor *t, char *why, size_t whylen)
{
    return has_derivation(params, info, t) ? 0 : solve_applies(info, t, why, whylen);
}

/* The conv output handle must describe the f32 (N, Cout, Ho, Wo) tensor
 * the restore rebuilds from. Returns 0, AS_ENOTSUP (no such handle) or
 * AS_EMETA (the metadata disagrees with it), the reason set. */
static int encode_check_output(as_pctx *ctx, const as_conv_meta *m, const as__civ_geom *g)
{
    const int ho = as__civ_out_h(g), wo = as__civ_out_w(g);
    as_tensor ys;
    int yk = -1;
    int rc = as_store_describe(as_pctx_store(ctx), m->output, &ys, &yk);
    if (rc < 0) {
        as_pctx_errorf(ctx, "conv output handle: %s", as_strerror(rc));
        return AS_ENOTSUP;
    }
    if (ys.dtype != AS_F32 || ys.ndim != 4 || ys.shape[0] != m->n ||
        ys.shape[1] != m->cout || ys.shape[2] != ho || ys.shape[3] != wo) {
        as_pctx_errorf(ctx, "metadata: conv output is not f32 (%d, %d, %d, "
                       "%d)", m->n, m->cout, ho, wo);
        return AS_EMETA;
    }
    return 0;
}

/* The frame of t into st->frame: extracted into scratch, then packed dense
 * or sparse (whichever is smaller), 16-bit or f32 (see FRAME). */
static int encode_frame(as_pctx *ctx, const inv_params *p, const as_save_info *info,
                        const as_tensor *t, const as__civ_geom *g, double cond,
                        inv_state *st)
{
    const size_t nfl = st->frame_floats;
    float *raw = NULL;
    int rc = as_pctx_scratch(ctx, nfl * sizeof(float), (void **)&raw);
    if (rc < 0)
        return rc;
    as__civ_frame_extract(g, st->n, t->data, raw);
    size_t nnz = 0;
    int finite = 1;
    for (size_t i = 0; i < nfl; i++) {
        nnz += raw[i] != 0.0f || signbit(raw[i]);
        finite &= isfinite(raw[i]) != 0;
    }
    /* 16-bit codes only for finite frames (a NaN or Inf stays exact);
     * auto: only for well-conditioned versions, and not for inputs that
     * are an activation's saved output (alias_of): in a chain those
     * values also rebuild the layers below, through inverses that
     * amplify errors (LeakyReLU: 1/alpha per link). */
    st->q16 = finite && (p->frame == FRAME_Q16 ||
                         (p->frame == FRAME_AUTO && cond <= AS__CIV_Q16_COND &&
                          as_handle_is_null(info->alias_of)));
    const size_t nblk = (size_t)st->n * g->cin, flen = nfl / nblk;
    const size_t dense = as__civ_fpack_bytes(nfl, nnz, nblk, 0, st->q16);
    const size_t sp = as__civ_fpack_bytes(nfl, nnz, nblk, 1, st->q16);
    st->sparse = sp < dense;
    st->nnz = nnz;
    rc = as_pctx_alloc(ctx, st->sparse ? sp : dense, &st->frame);
    if (rc < 0)
        return rc;
    as__civ_fpack(raw, nblk, flen, st->sparse, st->q16, st->frame);
    return 0;
}

/* Signs. The rebuilt values are off by the reconstruction error, so
 * entries near 0 may land on the wrong side: harmless for the weight
 * gradient, but an input that is also an activation's saved output
 * (alias_of) gives that activation's backward its derivative mask
 * (ReLU, LeakyReLU: y > 0), which must be exact. Such inputs keep a
 * bitmap of x > 0 (1 bit per value); and an input with no negative
 * value (images, ReLU and pooled ReLU outputs) is clamped at 0, which
 * also restores its zeros exactly. */
static int encode_signs(as_pctx *ctx, const as_save_info *info, const as_tensor *t,
                        inv_state *st)
{
    const size_t nx = as_tensor_numel(t) > 0 ? (size_t)as_tensor_numel(t) : 0;
    const float *xv = t->data;
    /* (branch-free inner loops: signs of activations are unpredictable) */
    st->nonneg = 1;
    for (size_t i0 = 0; i0 < nx && st->nonneg; i0 += 64) {
        const size_t i1 = nx - i0 < 64 ? nx : i0 + 64;
        int neg = 0;
        for (size_t i = i0; i < i1; i++)
            neg |= xv[i] < 0;
        st->nonneg = !neg;
    }
    if (as_handle_is_null(info->alias_of) || !nx)
        return 0;
    int rc = as_pctx_alloc(ctx, as__civ_bitmap_bytes(nx), (void **)&st->pos);
    if (rc < 0)
        return rc;
    memset(st->pos, 0, as__civ_bitmap_bytes(nx));
    for (size_t i0 = 0; i0 < nx; i0 += 64) {
        const size_t nb = nx - i0 < 64 ? nx - i0 : 64;
        uint64_t wbits = 0;
        for (size_t j = 0; j < nb; j++)
            wbits |= (uint64_t)(xv[i0 + j] > 0) << j;
        st->pos[i0 / 64] = wbits;
    }
    return 0;
}

/* An input the framework declares derived from tensors saved anyway (a
 * pooled map: the pool's input at its saved argmax) is rebuilt from them:
 * exact, no frame, no solve. */
static int derivable(as_pctx *ctx, const inv_params *p, const as_save_info *info,
                     const as_tensor *t)
{
    if (!has_derivation(p, info, t))
        return 0;
    for (size_t i = 0; i < info->recompute_ninputs; i++)
        if (!as_pctx_can_depend(ctx, info->recompute_inputs[i]))
            return 0;   /* e.g. a source kept as signs only: solve */
    return 1;
}

static int encode_derived(as_pctx *ctx, inv_params *p, const as_save_info *info,
                          const as_tensor *t, void **state)
{
    inv_state *st = as__fcalloc(1, sizeof *st);
    if (!st)
        return AS_ENOMEM;
    int rc = as_policy_recompute.encode(ctx, NULL, info, t, &st->derived);
    if (rc < 0) {
        free(st);
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    p->derived++;
    pthread_mutex_unlock(&p->mu);
    *state = st;
    return 0;
}

static int restore_into(as_pctx *ctx, const inv_params *p, inv_state *st,
                        const float *y, float *out, size_t out_bytes);
static void fix_signs(const inv_state *st, float *x, size_t n);

static double max_diff(const float *a, const float *b, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++)
        e = fmax(e, fabs((double)a[i] - b[i]));
    return e;
}

static size_t resid_blocks(const inv_state *st) { return (size_t)st->n * st->e->g.cin; }

/* x += the residual code, then the signs fixed again (a restore does the
 * same after its own fix). */
static void resid_apply(const inv_state *st, float *x, size_t n)
{
    const size_t nblk = resid_blocks(st), blk = n / nblk;
    for (size_t b = 0; b < nblk; b++) {
        const float sc = st->rscale[b];
        const int8_t *c = st->resid + b * blk;
        float *xb = x + b * blk;
        for (size_t i = 0; i < blk; i++)
            xb[i] += sc * (float)c[i];
    }
    fix_signs(st, x, n);
}

/* The residual X - X' as int8 codes, one scale per (image, channel), kept
 * with the item; xr (the rebuild) gets it applied. */
static int encode_resid(as_pctx *ctx, inv_state *st, const float *x, float *xr,
                        size_t n)
{
    const size_t nblk = resid_blocks(st), blk = n / nblk;
    void *buf;
    int rc = as_pctx_alloc(ctx, nblk * sizeof(float) + n, &buf);
    if (rc < 0)
        return rc;
    st->rscale = buf;
    st->resid = (int8_t *)(st->rscale + nblk);
    for (size_t b = 0; b < nblk; b++) {
        const float *xb = x + b * blk, *rb = xr + b * blk;
        float m = 0;
        for (size_t i = 0; i < blk; i++)
            m = fmaxf(m, fabsf(xb[i] - rb[i]));
        const float sc = m / 127.0f, inv = m > 0 ? 127.0f / m : 0.0f;
        st->rscale[b] = sc;
        for (size_t i = 0; i < blk; i++)
            st->resid[b * blk + i] = (int8_t)lrintf((xb[i] - rb[i]) * inv);
    }
    resid_apply(st, xr, n);
    return 0;
}

/* Rebuild t from the conv output just saved, as a restore will, and admit
 * the item when max|X' - X| <= VERIFY_TOL max|X|; else AS_ENOTSUP (the
 * store falls back). */
static int verify_rebuild(as_pctx *ctx, const inv_params *p, inv_state *st,
                          const as_tensor *t, double cond)
{
    const as_tensor *y;
    int rc = as_pctx_restore_dep(ctx, st->y, &y);
    float *xr;
    const size_t nb = as_tensor_bytes(t), n = nb / sizeof(float);
    if (rc < 0 || (rc = as_pctx_scratch(ctx, nb, (void **)&xr)) < 0)
        return rc;
    st->admitted = 1;
    if ((rc = restore_into(ctx, p, st, y->data, xr, nb)) < 0)
        return rc;
    const float *x = t->data;
    double e = max_diff(xr, x, n), mx = 0;
    for (size_t i = 0; i < n; i++)
        mx = fmax(mx, fabs((double)x[i]));
    if (e <= VERIFY_TOL * mx)
        return 0;
    if (e <= RESID_MAX * mx) {
        if ((rc = encode_resid(ctx, st, x, xr, n)) < 0)
            return rc;
        const double e1 = max_diff(xr, x, n);
        if (e1 <= VERIFY_TOL * mx)
            return 0;
        e = e1;
    }
    as_pctx_errorf(ctx, "rebuild error %.2g > %.0e at condition number %.3g "
                   "(threshold %.3g)", mx > 0 ? e / mx : e, VERIFY_TOL, cond,
                   p->cond_max);
    pthread_mutex_lock(&st->e->mu);
    if (st->e->users == 0)
        as__civ_trim(st->e->ci);   /* a factor cached by the check */
    pthread_mutex_unlock(&st->e->mu);
    return AS_ENOTSUP;
}

static int inv_encode(as_pctx *ctx, const void *params,
                      const as_save_info *info, const as_tensor *t,
                      void **state)
{
    inv_params *p = (inv_params *)params;
    const as_conv_meta *m = &info->meta.conv;
    char why[160] = "";
    if (derivable(ctx, p, info, t))
        return encode_derived(ctx, p, info, t, state);
    int rc = solve_applies(info, t, why, sizeof why);
    if (rc) {
        as_pctx_errorf(ctx, "%s", why);
        return rc;
    }
    as__civ_geom g;
    geom_of(m, &g);
    if ((rc = encode_check_output(ctx, m, &g)))
        return rc;
    inv_entry *e;
    if ((rc = entry_get(p, as_pctx_layer(ctx), &g, m->weight, &e, why, sizeof why)) < 0) {
        as_pctx_errorf(ctx, "%s", why[0] ? why : as_strerror(rc));
        return rc == AS_ENOMEM ? rc : AS_ENOTSUP;
    }
    /* The cache key: the framework's weight version and a checksum of the
     * weights, so a version number reused with other weights (another
     * model in the same store, a framework that forgot to bump it) never
     * picks up a stale factor. */
    const uint64_t key = m->weight_version * 0x9E3779B97F4A7C15ull ^
        as__checksum(m->weight, sizeof(float) * (size_t)m->cout * m->cin * m->kh * m->kw);
    pthread_mutex_lock(&e->mu);
    double cond = 0;
    rc = as__civ_condition(e->ci, m->weight, key, &cond, why, sizeof why);
    pthread_mutex_unlock(&e->mu);
    /* Above the threshold but within VERIFY_SPAN of it: rebuild this
     * input now and accept it if the error is within the bound. */
    const int verify = rc == AS_EFALLBACK && cond <= p->cond_max * VERIFY_SPAN;
    if (rc == AS_EFALLBACK && !verify) {
        as_pctx_errorf(ctx, "%s", why);
        return AS_ENOTSUP;
    }
    if (rc < 0 && !verify)
        return rc;

    inv_state *st = as__fcalloc(1, sizeof *st);
    if (!st)
        return AS_ENOMEM;
    st->e = e;
    st->y = m->output;
    st->w = m->weight;
    st->version = key;
    st->n = m->n;
    st->frame_floats = (size_t)m->n * m->cin * as__civ_frame_len(&g);
    if (st->frame_floats && (rc = encode_frame(ctx, p, info, t, &g, cond, st)) < 0)
        goto fail;
    if ((rc = encode_signs(ctx, info, t, st)) < 0)
        goto fail;
    if (m->bias) {
        rc = as_pctx_alloc(ctx, sizeof(float) * m->cout, (void **)&st->bias);
        if (rc < 0)
            goto fail;
        memcpy(st->bias, m->bias, sizeof(float) * m->cout);
    }
    rc = as_pctx_depend(ctx, m->output);
    if (rc < 0) {
        if (rc == AS_ESTATE)
            as_pctx_errorf(ctx, "dependency cycle through the conv output");
        goto fail;
    }
    if (verify && (rc = verify_rebuild(ctx, p, st, t, cond)) < 0)
        goto fail;
    pthread_mutex_lock(&e->mu);
    e->users++;
    e->saves++;
    e->verified += (uint64_t)verify;
    e->residuals += (uint64_t)(st->resid != NULL);
    pthread_mutex_unlock(&e->mu);
    *state = st;
    return 0;
fail:
    free(st);   /* blocks are freed by the store */
    return rc;
}

/* ---- restore -------------------------------------------------------------- */

/* Put rebuilt values back on the side of 0 they were saved on (see the
 * encode): a value that must be > 0 and is not becomes FLT_MIN, one that
 * must be <= 0 and is not becomes 0 (in both cases the true value is
 * within the reconstruction error of 0). */
static void fix_signs(const inv_state *st, float *x, size_t n)
{
    if (st->pos) {
        /* a value on the wrong side of 0 moves to FLT_MIN (should be > 0)
         * or 0 (should not be); selects, no branches */
        for (size_t i = 0; i < n; i++) {
            const int p = (int)((st->pos[i / 64] >> (i % 64)) & 1);
            const float v = x[i];
            const int q = v > 0;
            x[i] = p == q ? v : (p ? FLT_MIN : 0.0f);
        }
    }
    if (st->nonneg)
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] > 0 ? x[i] : 0.0f;
}

/* Rebuild the input of item st into out (n * Cin * H * W floats) from the
 * conv output y. */
static int restore_into(as_pctx *ctx, const inv_params *p, inv_state *st,
                        const float *y, float *out, size_t out_bytes)
{
    inv_entry *e = st->e;
    int rc;
    const float *frame = st->frame;
    if (st->sparse || st->q16) {
        float *raw;
        if ((rc = as_pctx_scratch(ctx, st->frame_floats * sizeof(float),
                                  (void **)&raw)) < 0)
            return rc;
        const size_t nblk = (size_t)st->n * e->g.cin;
        as__civ_funpack(st->frame, nblk, st->frame_floats / nblk, st->sparse,
                     st->q16, raw);
        frame = raw;
    }
    char why[160] = "";
    pthread_mutex_lock(&e->mu);
    as__civ_admit(e->ci, st->admitted);
    /* Cache the factor only when it is small next to the input it rebuilds
     * (it would otherwise eat the memory the inversion saves: it grows as
     * Cin * Cout * spectrum, the input as N * Cin * H * W); else factor
     * block by block inside the solve. */
    const size_t fb = as__civ_factor_bytes(e->ci);
    as__civ_stats cs;
    as__civ_get_stats(e->ci, &cs);
    /* Cout >= 2 Cin and well conditioned: the streaming restore takes the
     * adjoint path (Cin-channel transforms), faster than a cached M. */
    const int adjoint = e->g.cout >= 2 * e->g.cin && cs.cond <= AS__CIV_ADJ_COND &&
                        !(e->g.kh == 1 && e->g.kw == 1);
    const int cached = p->mode == MODE_CACHE ||
        (p->mode == MODE_AUTO && !adjoint && fb <= out_bytes / 8);
    /* Work space from the store's arena (workspace tag: counted, and its
     * pages are reused from one restore to the next); malloc if refused.
     * The size of the path about to run, for one pass of images. */
    const size_t wb = as__civ_path_work_bytes(e->ci, st->version, st->n, !cached);
    void *wbuf = NULL;
    if (wb && as_pctx_scratch(ctx, wb, &wbuf) == 0)
        as__civ_set_work(e->ci, wbuf, wb);
    if (cached) {
        as__civ_stats before;
        as__civ_get_stats(e->ci, &before);
        rc = as__civ_prepare(e->ci, st->w, st->version, NULL, why, sizeof why);
        if (rc == 0) {
            as__civ_stats after;
            as__civ_get_stats(e->ci, &after);
            if (after.factor_builds != before.factor_builds)
                as_pctx_account(ctx, (int64_t)after.cache_bytes);
            rc = as__civ_restore(e->ci, st->n, y, st->bias, frame, out);
        }
    } else {
        rc = as__civ_restore_stream(e->ci, st->w, st->version, st->n,
                                    y, st->bias, frame, out, why, sizeof why);
    }
    if (rc == 0)
        e->restores++;
    as__civ_set_work(e->ci, NULL, 0);
    as__civ_admit(e->ci, 0);
    pthread_mutex_unlock(&e->mu);
    if (rc == 0)
        fix_signs(st, out, out_bytes / sizeof(float));
    if (rc == 0 && st->resid)
        resid_apply(st, out, out_bytes / sizeof(float));
    if (rc == AS_EFALLBACK) {
        /* Cannot happen for a version accepted at save unless the weights
         * changed under the same version. */
        as_pctx_errorf(ctx, "weights changed since the save: %s", why);
        return AS_ESTATE;
    }
    return rc;
}

static int inv_decode(as_pctx *ctx, const void *params, void *state,
                      as_tensor *dst)
{
    inv_state *st = state;
    if (st->derived)
        return as_policy_recompute.decode(ctx, NULL, st->derived, dst);
    const as_tensor *y;
    int rc = as_pctx_restore_dep(ctx, st->y, &y);
    if (rc < 0)
        return rc;
    return restore_into(ctx, params, st, y->data, dst->data, as_tensor_bytes(dst));
}

static void inv_drop(void *params, void *state)
{
    (void)params;
    inv_state *st = state;
    if (st->derived) {
        as_policy_recompute.drop(NULL, st->derived);
        free(st);
        return;
    }
    inv_entry *e = st->e;
    pthread_mutex_lock(&e->mu);
    if (--e->users == 0)
        as__civ_trim(e->ci);   /* nobody can restore through it now */
    pthread_mutex_unlock(&e->mu);
    free(st);
}

const as_policy_ops as_policy_invert = {
    .name = "invert",
    .summary = "conv inputs: keep only the border frame; rebuild the input "
               "from the conv output by inverting the convolution",
    .kinds = 1u << AS_KIND_CONV_INPUT,
    .regenerator = true,
    .parse = inv_parse,
    .free_params = inv_free_params,
    .applies = inv_applies,
    .encode = inv_encode,
    .decode = inv_decode,
    .drop = inv_drop,
};

/* ---- introspection (tests, bench) ------------------------------------------ */

static void add_entry(const inv_entry *e, as__civ_lstats *out)
{
    as__civ_stats s;
    as__civ_get_stats(e->ci, &s);
    out->factor_builds += s.factor_builds;
    out->factor_hits += s.factor_hits;
    out->cond_checks += s.cond_checks;
    out->cond_bounded += s.cond_bounded;
    out->streamed += s.streamed;
    out->restores += e->restores;
    out->saves += e->saves;
    out->verified += e->verified;
    out->residuals += e->residuals;
    out->users += (uint64_t)e->users;
    out->cache_bytes += s.cache_bytes;
    if (s.cond > out->cond || out->entries == 0)
        out->cond = s.cond;
    out->entries++;
}

int as__civ_layer_stats(as_store *s, const char *layer,
                        as__civ_lstats *out)
{
    memset(out, 0, sizeof *out);
    as_rules *r = as__rules_get(s);
    for (size_t i = 0; i < r->n; i++) {
        const as_polref *refs[2] = {&r->rules[i].pol,
                                    r->rules[i].has_fallback ? &r->rules[i].fallback : NULL};
        for (int k = 0; k < 2; k++) {
            if (!refs[k] || refs[k]->ops != &as_policy_invert || !refs[k]->params)
                continue;
            inv_params *p = refs[k]->params;
            pthread_mutex_lock(&p->mu);
            if (!layer)
                out->derived += p->derived;
            for (inv_entry *e = p->entries; e; e = e->next) {
                if (layer && strcmp(e->layer, layer))
                    continue;
                pthread_mutex_lock(&e->mu);
                add_entry(e, out);
                pthread_mutex_unlock(&e->mu);
            }
            pthread_mutex_unlock(&p->mu);
        }
    }
    as__rules_unref(r);
    return out->entries || out->derived ? 0 : AS_ENOTFOUND;
}
