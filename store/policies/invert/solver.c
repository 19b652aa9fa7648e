/*
 * Conv inversion: the solver object (create / destroy), the condition
 * verdict and the factor cache per weight version, the work space sizes,
 * and the two restore entry points (cached factor, streamed factor). The
 * restore's passes are in invert/restore.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/policies/invert/impl.h"
#include "allocator/fault.h"

#define WHY(...) do { if (why && whylen) snprintf(why, whylen, __VA_ARGS__); } while (0)

int as__civ_create(const as__civ_geom *g, const as__civ_cfg *cfg,
                   as__civ **out, char *why, size_t whylen)
{
    *out = NULL;
    int rc = as__civ_check(g, why, whylen);
    if (rc)
        return rc;
    as__civ *ci = as__fcalloc(1, sizeof *ci);
    if (!ci)
        return AS_ENOMEM;
    ci->g = *g;
    ci->cfg.cond_max = cfg && cfg->cond_max > 0 ? cfg->cond_max : 1e4;
    ci->cfg.eps_rel = cfg && cfg->eps_rel >= 0 ? cfg->eps_rel : 1e-14;
    ci->cfg.no_adjoint = cfg ? cfg->no_adjoint : 0;
    ci->cfg.no_bound = cfg ? cfg->no_bound : 0;
    ci->cfg.no_lu = cfg ? cfg->no_lu : 0;
    ci->ho = as__civ_out_h(g);
    ci->wo = as__civ_out_w(g);
    ci->dh = g->kh - 1 - g->pad_h;
    ci->dw = g->kw - 1 - g->pad_w;
    as__civ_frame_widths(g, &ci->top, &ci->bot, &ci->left, &ci->right);
    /* A 1x1 kernel has A(f) = W at every frequency: one "frequency", and
     * the restore is a per-pixel channel mix (no transforms). */
    ci->pointwise = g->kh == 1 && g->kw == 1;
    ci->P = ci->pointwise ? 1 : as__civ_fft_good_size(g->h + g->kh - 1);
    ci->Q = ci->pointwise ? 1 : as__civ_fft_good_size(g->w + g->kw - 1);
    ci->Qh = ci->Q / 2 + 1;
    if (as__civ_fft_init(&ci->fp, ci->P, -1) || as__civ_fft_init(&ci->fq, ci->Q, -1) ||
        as__civ_fft_init(&ci->ip, ci->P, 1) || as__civ_fft_init(&ci->iq, ci->Q, 1)) {
        as__civ_destroy(ci);
        return AS_ENOMEM;
    }
    ci->wt = as__fmalloc(sizeof(float) * (size_t)g->kh * g->kw * g->cout * g->cin);
    if (g->cin == 1 && !ci->pointwise) {
        ci->c1_gi = as__fmalloc(sizeof(float) * (size_t)ci->P * ci->Qh);
        ci->c1_sel = as__fmalloc(sizeof(int) * (size_t)g->cout);
    }
    if (!ci->wt || (g->cin == 1 && !ci->pointwise && (!ci->c1_gi || !ci->c1_sel))) {
        as__civ_destroy(ci);
        return AS_ENOMEM;
    }
    *out = ci;
    return 0;
}

void as__civ_destroy(as__civ *ci)
{
    if (!ci)
        return;
    as__civ_fft_free(&ci->fp);
    as__civ_fft_free(&ci->fq);
    as__civ_fft_free(&ci->ip);
    as__civ_fft_free(&ci->iq);
    free(ci->m);
    free(ci->wt);
    free(ci->gram);
    free(ci->fscr);
    free(ci->ref_w);
    free(ci->ref_eig);
    free(ci->c1_gi);
    free(ci->c1_sel);
    free(ci);
}

void as__civ_trim(as__civ *ci)
{
    free(ci->m);
    ci->m = NULL;
    free(ci->fscr);
    ci->fscr = NULL;
    ci->state = 0;
    ci->st.cache_bytes = 0;
}

void as__civ_get_stats(const as__civ *ci, as__civ_stats *st)
{
    *st = ci->st;
}

static int reject(as__civ *ci, char *why, size_t whylen)
{
    WHY("%s", ci->reject);
    return AS_EFALLBACK;
}

static void set_verdict(as__civ *ci, uint64_t version, double cond)
{
    ci->cond_version = version;
    ci->cond = cond;
    ci->st.cond = cond;
    ci->st.cond_checks++;
    ci->cond_state = cond <= ci->cfg.cond_max ? 1 : 2;
    if (ci->cond_state == 2)
        snprintf(ci->reject, sizeof ci->reject,
                 "condition number %.3g above the threshold %.3g", cond,
                 ci->cfg.cond_max);
}

/* The factorization's scratch (the kernels' DFTs, one group's A and L, the
 * Gram's weight rows), kept while the solver holds a factor or restores
 * (a fresh block per version is page-faulted in again each time) and
 * freed with the factor (as__civ_trim) or after a check at save that
 * leaves no factor; NULL when out of memory (the callee then mallocs its
 * own). */
static void *fscratch(as__civ *ci)
{
    if (!ci->fscr)
        ci->fscr = as__fmalloc(as__civ_factor_scratch_bytes(&ci->g, ci->P, ci->Q));
    return ci->fscr;
}

/* The kernels' cross-correlation of version `version` (computed on first
 * use, kept for the factorization of the same version); NULL when out of
 * memory (the factorization then computes its own). */
static const double *gram_of(as__civ *ci, const float *w, uint64_t version)
{
    if (ci->gram_ok && ci->gram_version == version)
        return ci->gram;
    if (!ci->gram && !(ci->gram = as__fmalloc(sizeof(double) * as__civ_gram_len(&ci->g))))
        return NULL;
    ci->gram_ok = 0;
    if (as__civ_gram(&ci->g, w, ci->gram, fscratch(ci)))
        return NULL;
    ci->gram_ok = 1;
    ci->gram_version = version;
    return ci->gram;
}

/* The smallest decision threshold at or above c: the acceptance threshold,
 * and the adjoint path's and the 16-bit frames' bounds where they apply. A
 * version bounded below the threshold its reference was below takes the
 * same decisions as the reference. */
static double next_threshold(const as__civ *ci, double c)
{
    double t = ci->cfg.cond_max;
    const double more[2] = {AS__CIV_ADJ_COND, AS__CIV_Q16_COND};
    for (int k = 0; k < 2; k++)
        if (more[k] >= c && more[k] < t)
            t = more[k];
    return t;
}

/* ||W - W_ref|| bounded as an operator on every frequency: at frequency f,
 * dA(f)[o][c] = sum_t dW[o,c,t] e_t(f) with |e_t(f)| = 1, so
 * ||dA(f)||_2 <= ||dA(f)||_F <= sqrt(sum_{o,c} (sum_t |dW[o,c,t]|)^2). */
static double weight_step_norm(const as__civ *ci, const float *w)
{
    const size_t oc = (size_t)ci->g.cout * ci->g.cin, nt = (size_t)ci->g.kh * ci->g.kw;
    double s2 = 0;
    for (size_t i = 0; i < oc; i++) {
        double s = 0;
        for (size_t t = 0; t < nt; t++)
            s += fabs((double)w[i * nt + t] - (double)ci->ref_w[i * nt + t]);
        s2 += s * s;
    }
    return sqrt(s2);
}

/* Weyl's inequality for singular values: sigma_k(A + dA) is within
 * ||dA||_2 of sigma_k(A), so cond(A_new(f)) <= (smax(f) + B) / (smin(f) - B)
 * with B >= ||dA(f)||_2 and the reference's smax, smin (estimates, as in
 * the check itself). Returns that bound over all frequencies, or infinity
 * when some smin(f) <= B. */
static double cond_bound(const as__civ *ci, const float *w)
{
    const double B = weight_step_norm(ci, w);
    const size_t nf = (size_t)ci->P * ci->Qh;
    double worst = 0;
    for (size_t f = 0; f < nf; f++) {
        const double smax = sqrt(ci->ref_eig[2 * f]), smin = sqrt(ci->ref_eig[2 * f + 1]);
        if (!(smin > B))
            return INFINITY;
        const double c = (smax + B) / (smin - B);
        if (c > worst)
            worst = c;
    }
    return worst;
}

/* The condition number of w computed, and w kept as the bound's reference
 * (when its buffers can be had). */
static int check_and_reference(as__civ *ci, const float *w, uint64_t version, double *cond)
{
    const as__civ_geom *g = &ci->g;
    const size_t nw = (size_t)g->cout * g->cin * g->kh * g->kw, nf = (size_t)ci->P * ci->Qh;
    if (!ci->cfg.no_bound && !ci->ref_w) {
        ci->ref_w = as__fmalloc(sizeof(float) * nw);
        ci->ref_eig = as__fmalloc(sizeof(double) * 2 * nf);
    }
    const int keep = !ci->cfg.no_bound && ci->ref_w && ci->ref_eig;
    ci->ref_ok = 0;
    const double *R = gram_of(ci, w, version);
    int rc = as__civ_factor(g, ci->P, ci->Q, w, R, ci->cfg.eps_rel, NULL, cond,
                            keep ? ci->ref_eig : NULL, fscratch(ci));
    if (rc || !keep)
        return rc;
    memcpy(ci->ref_w, w, sizeof(float) * nw);
    ci->ref_cond = *cond;
    ci->ref_ok = 1;
    return 0;
}

/* A version near the reference is accepted without a check when the
 * perturbation bound stays at or below the threshold above the reference's
 * condition number (so every decision taken on cond is the reference's);
 * its verdict is the bound. Returns 1 when accepted. */
static int try_bound(as__civ *ci, const float *w, uint64_t version)
{
    if (!ci->ref_ok || ci->c1_gi || !(ci->ref_cond <= ci->cfg.cond_max))
        return 0;
    const double b = cond_bound(ci, w);
    if (!(b <= next_threshold(ci, ci->ref_cond)))
        return 0;
    set_verdict(ci, version, b);
    ci->st.cond_checks--;   /* set_verdict counts a check */
    ci->st.cond_bounded++;
    return 1;
}

int as__civ_condition(as__civ *ci, const float *w, uint64_t version,
                      double *cond_out, char *why, size_t whylen)
{
    if (!(ci->cond_state && ci->cond_version == version)) {
        double t0 = as__civ_cpu_ms(), cond = 0;
        if (!try_bound(ci, w, version)) {
            /* Cin = 1: the verdict comes with the closed form's own state */
            int rc = ci->c1_gi ? as__civ_c1_prepare(ci, w, (size_t)ci->g.kh * ci->g.kw, 1,
                                                    version, &cond)
                               : check_and_reference(ci, w, version, &cond);
            if (ci->state != 1) {   /* nothing cached: no scratch kept */
                free(ci->fscr);
                ci->fscr = NULL;
            }
            if (rc)
                return rc;
            set_verdict(ci, version, cond);
        }
        ci->st.cond_ms = as__civ_cpu_ms() - t0;
    }
    if (cond_out)
        *cond_out = ci->cond;
    return ci->cond_state == 2 && !ci->admit ? reject(ci, why, whylen) : 0;
}

void as__civ_admit(as__civ *ci, int on)
{
    ci->admit = on;
}

/* Weights as (kh, kw, Cout, Cin) for the border build. */
static void set_wt(as__civ *ci, const float *w)
{
    const as__civ_geom *g = &ci->g;
    for (int u = 0; u < g->kh; u++)
        for (int v = 0; v < g->kw; v++)
            for (int o = 0; o < g->cout; o++)
                for (int c = 0; c < g->cin; c++) {
                    const float x = w[(((size_t)o * g->cin + c) * g->kh + u) * g->kw + v];
                    ci->wt[(((size_t)u * g->kw + v) * g->cout + o) * g->cin + c] = x;
                }
}

int as__civ_prepare(as__civ *ci, const float *w, uint64_t version,
                    double *cond_out, char *why, size_t whylen)
{
    const as__civ_geom *g = &ci->g;
    const int known = ci->cond_state && ci->cond_version == version;
    if (known && cond_out)
        *cond_out = ci->cond;
    if (known && ci->cond_state == 2 && !ci->admit)
        return reject(ci, why, whylen);
    if (ci->state == 1 && ci->version == version) {
        ci->st.factor_hits++;
        return 0;
    }
    /* A new version overwrites the factor in place (its pages stay). */
    ci->state = 0;
    double t0 = as__civ_cpu_ms();
    size_t mlen = (size_t)ci->P * ci->Qh * 2 * g->cin * g->cout;
    if (!ci->m && !(ci->m = as__fmalloc(sizeof(float) * mlen))) {
        ci->st.cache_bytes = 0;
        return AS_ENOMEM;
    }
    /* The condition number comes along when this version was not checked
     * yet (one pass over the frequencies for both). */
    double cond = 0;
    const double *R = gram_of(ci, w, version);
    int rc = as__civ_factor(g, ci->P, ci->Q, w, R, ci->cfg.eps_rel, ci->m,
                            known ? NULL : &cond, NULL, fscratch(ci));
    if (rc) {
        as__civ_trim(ci);
        return rc;
    }
    set_wt(ci, w);
    ci->st.factor_builds++;
    ci->st.factor_ms = as__civ_cpu_ms() - t0;
    if (!known) {
        set_verdict(ci, version, cond);
        if (cond_out)
            *cond_out = cond;
        if (ci->cond_state == 2) {
            as__civ_trim(ci);
            return reject(ci, why, whylen);
        }
    }
    ci->version = version;
    ci->state = 1;
    ci->st.cache_bytes = sizeof(float) * mlen;
    return 0;
}


/* A streamed restore of more than one pass builds the factor of every
 * frequency once, before the passes, into work space (instead of once per
 * column in every pass: the factor work would grow with the batch), when
 * it is at most twice the work space of one pass (so the work space at
 * most triples; wide layers at small maps, e.g. 64->64 at 28x28 on the
 * direct path, where the factor is several times a pass, keep factoring
 * per column in every pass). Bytes of that factor for n images on the
 * given path, or 0. */
static size_t stream_factor_bytes(const as__civ *ci, int n, int path)
{
    /* Cin = 1 takes no factor (the closed form, invert/adjoint.c) */
    if (ci->pointwise || n <= AS__CIV_CHUNK || ci->g.cin == 1)
        return 0;
    const size_t b = sizeof(float) * (size_t)ci->P * ci->Qh * as__civ_msz(&ci->g, path);
    return b <= 2 * as__civ_work_need(ci, AS__CIV_CHUNK, path) ? b : 0;
}

/* The path of a streamed restore of the version whose verdict is held:
 * adjoint when Cout >= 2 Cin at a small condition number, LU when Cout =
 * Cin <= AS__CIV_LU_MAX_CIN, else M. */
static int stream_path(const as__civ *ci)
{
    if (!ci->cfg.no_adjoint && ci->g.cout >= 2 * ci->g.cin && ci->cond <= AS__CIV_ADJ_COND)
        return AS__CIV_PATH_ADJ;
    return ci->g.cout == ci->g.cin && ci->g.cin <= AS__CIV_LU_MAX_CIN && !ci->cfg.no_lu
               ? AS__CIV_PATH_LU : AS__CIV_PATH_M;
}

/* Images per pass of a streamed restore of n images. When the factor of
 * every frequency does not fit (stream_factor_bytes 0), each pass factors
 * its columns again, so the passes are made larger: as few as fit in the
 * work space the up-front factor may take (3 passes of AS__CIV_CHUNK),
 * of equal size rounded up to a multiple of AS__CIV_CHUNK (64->64 at
 * 28x28, 64 images: 2 passes of 32 instead of 4 of 16). */
static int stream_chunk(const as__civ *ci, int n, int path)
{
    if (ci->pointwise || n <= AS__CIV_CHUNK || ci->g.cin == 1 ||
        stream_factor_bytes(ci, n, path))
        return AS__CIV_CHUNK;
    const size_t cap = 3 * as__civ_work_need(ci, AS__CIV_CHUNK, path);
    int big = AS__CIV_CHUNK;
    while (big < n && as__civ_work_need(ci, big + AS__CIV_CHUNK, path) <= cap)
        big += AS__CIV_CHUNK;
    const int passes = (n + big - 1) / big, per = (n + passes - 1) / passes;
    return (per + AS__CIV_CHUNK - 1) / AS__CIV_CHUNK * AS__CIV_CHUNK;
}

/* Work space of one restore: one pass, plus the streamed factor. */
static size_t path_need(const as__civ *ci, int n, int path, int stream)
{
    const int chunk = stream ? stream_chunk(ci, n, path) : AS__CIV_CHUNK;
    return as__civ_work_need(ci, n < chunk ? n : chunk, path) +
           (stream ? as__civ_wround(stream_factor_bytes(ci, n, path)) : 0);
}

size_t as__civ_work_bytes(const as__civ *ci, int n)
{
    if (ci->pointwise)
        return 0;
    size_t m = 0;
    for (int p = AS__CIV_PATH_M; p <= AS__CIV_PATH_LU; p++) {
        const size_t b = path_need(ci, n, p, 1);
        m = b > m ? b : m;
    }
    return m;
}

size_t as__civ_path_work_bytes(const as__civ *ci, uint64_t version, int n,
                               int stream)
{
    if (ci->pointwise)
        return 0;
    if (!stream || (ci->state == 1 && ci->version == version))
        return path_need(ci, n, 0, 0);
    if (!((ci->cond_state == 1 || ci->admit) && ci->cond_version == version))
        return as__civ_work_bytes(ci, n);
    return path_need(ci, n, stream_path(ci), 1);
}

void as__civ_set_work(as__civ *ci, void *block, size_t bytes)
{
    ci->ext_work = block;
    ci->ext_bytes = block ? bytes : 0;
}

int as__civ_restore(as__civ *ci, int n, const float *y,
                    const float *bias, const float *frame, float *x)
{
    if (ci->state != 1 || !ci->m)
        return AS_ESTATE;
    if (n < 1)
        return n == 0 ? 0 : AS_EINVAL;
    return as__civ_restore_passes(ci, NULL, AS__CIV_PATH_M, AS__CIV_CHUNK, ci->version, n, y,
                                  bias, frame, x);
}

size_t as__civ_factor_bytes(const as__civ *ci)
{
    return sizeof(float) * (size_t)ci->P * ci->Qh * 2 * ci->g.cin * ci->g.cout;
}

int as__civ_restore_stream(as__civ *ci, const float *w, uint64_t version,
                           int n, const float *y, const float *bias,
                           const float *frame, float *x, char *why, size_t whylen)
{
    if (ci->state == 1 && ci->version == version) {   /* cached anyway */
        ci->st.factor_hits++;
        return as__civ_restore(ci, n, y, bias, frame, x);
    }
    int rc = as__civ_condition(ci, w, version, NULL, why, whylen);
    if (rc)
        return rc;
    if (n < 1)
        return n == 0 ? 0 : AS_EINVAL;
    if (ci->pointwise) {   /* one frequency: the cached factor is tiny */
        if ((rc = as__civ_prepare(ci, w, version, NULL, why, whylen)))
            return rc;
        return as__civ_restore(ci, n, y, bias, frame, x);
    }
    if (ci->c1_gi) {
        /* Cin = 1 never needs a factor: the closed form's state of this
         * version is in the c1 cache (filled by the check above), or is
         * built from the weights by the restore */
        set_wt(ci, w);
        ci->st.factor_hits++;
        if ((rc = as__civ_restore_passes(ci, NULL, AS__CIV_PATH_M, AS__CIV_CHUNK, version, n, y,
                                         bias, frame, x)))
            return rc;
        ci->st.streamed++;
        return 0;
    }
    as__civ_fctx fc;
    double t0 = as__civ_cpu_ms();
    const int path = stream_path(ci), lu = path == AS__CIV_PATH_LU;
    /* the LU path needs no Gram matrices, so not their cross-correlation */
    const double *R = lu ? NULL : gram_of(ci, w, version);
    if ((rc = as__civ_factor_begin(&fc, &ci->g, ci->P, ci->Q, w, R, fscratch(ci), lu)))
        return rc;
    set_wt(ci, w);
    ci->st.factor_ms = as__civ_cpu_ms() - t0;   /* the rest is inside the solve */
    fc.ginv = path == AS__CIV_PATH_ADJ;
    /* Several passes: the factor of every frequency once, up front, at the
     * end of the lent work space (after the pass's part) or malloc'ed. */
    const size_t sfb = stream_factor_bytes(ci, n, path);
    float *mown = NULL;
    if (sfb) {
        const size_t pass = as__civ_wround(as__civ_work_need(ci, AS__CIV_CHUNK, path));
        float *mbuf;
        if (ci->ext_work && ci->ext_bytes >= pass + sfb)
            mbuf = (float *)((char *)ci->ext_work + pass);
        else if (!(mbuf = mown = as__fmalloc(sfb))) {
            as__civ_factor_end(&fc);
            return AS_ENOMEM;
        }
        t0 = as__civ_cpu_ms();
        as__civ_factor_range(&fc, 0, fc.nf, ci->cfg.eps_rel, mbuf, NULL);
        ci->st.factor_ms += as__civ_cpu_ms() - t0;
        ci->mstream = mbuf;
    }
    rc = as__civ_restore_passes(ci, &fc, path, stream_chunk(ci, n, path), version, n, y, bias,
                                frame, x);
    ci->mstream = NULL;
    free(mown);
    as__civ_factor_end(&fc);
    if (rc == 0) {
        ci->st.factor_builds++;
        ci->st.streamed++;
        ci->st.adjoint += (uint64_t)(path == AS__CIV_PATH_ADJ);
        ci->st.lu += (uint64_t)lu;
    }
    return rc;
}
