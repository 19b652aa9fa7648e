/*
 * oneDNN behind ops.h: sgemm, and conv forward / backward-data /
 * backward-weights (see ops_dnnl.h).
 *
 * Conv: the primitives pick their own (blocked, e.g. nChw16c) layouts,
 * which run 3-4x faster than on NCHW; each call reorders x, W, dy into
 * those layouts inside the caller's workspace and the results back to
 * NCHW / OIHW, as PyTorch does for NCHW tensors; entries for the blocked
 * activation layout (ops_dnnl.h, lay) run on the caller's nChw16c x, y,
 * dy, dx directly and reorder only the weights. Primitives, reorders and
 * the workspace layout are built once per geometry and kept in a small
 * table; every scratch byte (the primitives' scratchpads included) comes
 * from the caller's workspace, so a call allocates nothing but the
 * library's per-call memory objects and stream.
 * A geometry the library only runs with its reference (ref:*) kernels is
 * marked unsupported: the builtin im2col path is faster there.
 */
#include "layers/ops_dnnl.h"

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 64
#define MAX_GEOMS 64   /* geometries kept; later ones build per call */

static dnnl_engine_t engine;
static bool engine_ok;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static atomic_int want_threads;

static void engine_init(void)
{
    engine_ok = dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success;
}

bool as_dnnl_available(void)
{
    pthread_once(&engine_once, engine_init);
    return engine_ok;
}

void as_dnnl_set_threads(int threads)
{
    atomic_store(&want_threads, threads);
    if (threads > 0)
        omp_set_num_threads(threads);
}

/* OpenMP's thread count is per calling thread: apply the process-wide
 * choice on whichever thread runs the kernel. */
static void use_threads(void)
{
    int t = atomic_load(&want_threads);
    if (t > 0 && omp_get_max_threads() != t)
        omp_set_num_threads(t);
}

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "any";
    }
}

void as_dnnl_describe(char *buf, size_t len)
{
    if (!as_dnnl_available()) {
        snprintf(buf, len, "%s", "");
        return;
    }
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, len, "oneDNN %d.%d.%d, %s", v->major, v->minor, v->patch,
             isa_name(dnnl_get_effective_cpu_isa()));
}

int as_dnnl_sgemm(bool ta, bool tb, int M, int N, int K, float alpha,
                  const float *A, int lda, const float *B, int ldb,
                  float beta, float *C, int ldc)
{
    if (!as_dnnl_available())
        return -1;
    use_threads();
    return dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda,
                      B, ldb, beta, C, ldc) == dnnl_success ? 0 : -1;
}

/* ---- conv ------------------------------------------------------------- */

typedef struct prim {
    dnnl_primitive_t p;          /* NULL: not needed */
    dnnl_memory_desc_t scratch;  /* its scratchpad (may be empty) */
} prim;

/* One operand of a primitive: the layout it runs on and, when that is not
 * the user's NCHW / OIHW one, the reorder and the workspace offset. */
typedef struct slot {
    dnnl_memory_desc_t md;
    prim re;
    size_t off;
} slot;

typedef struct conv_ent {
    as_op_conv_geom g;
    int lay;                    /* AS_DNNL_NCHW, _XNCHW_YBLK, _BLK */
    int state;                  /* 0 empty, 1 ready, -1 not supported */
    dnnl_memory_desc_t u_x, u_w, u_y, u_b;
    prim fwd, bwd_d, bwd_w;
    slot fx, fw, fy;            /* forward */
    slot dx_dy, dx_w, dx_dx;    /* backward data */
    slot dw_x, dw_dy;           /* backward weights: inputs */
    dnnl_memory_desc_t dw_dw;   /* ... its dW layout, accumulated by: */
    prim dw_acc;                /* reorder dw_dw -> OIHW with sum */
    bool dy_shared;             /* dw_dy is dx_dy's layout: one reorder */
    bool dx_ref;                /* backward data on a reference kernel */
    size_t f_b, f_scr, f_end;   /* forward: bias, scratch offsets, size */
    size_t b_dw, b_db, b_scr, b_end;
    size_t scr;                 /* largest scratchpad */
} conv_ent;

static conv_ent table[MAX_GEOMS];
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;

static size_t md_size(const dnnl_memory_desc_t *md)
{
    return dnnl_memory_desc_get_size(md);
}

static size_t up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static void prim_free(prim *p)
{
    if (p->p)
        dnnl_primitive_destroy(p->p);
    p->p = NULL;
}

static void ent_free(conv_ent *e)
{
    prim *ps[] = {&e->fwd, &e->bwd_d, &e->bwd_w, &e->fx.re, &e->fw.re,
                  &e->fy.re, &e->dx_dy.re, &e->dx_w.re, &e->dx_dx.re,
                  &e->dw_x.re, &e->dw_dy.re, &e->dw_acc};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        prim_free(ps[i]);
}

/* Primitive from a descriptor; fails on error. */
static int prim_make(prim *out, dnnl_primitive_desc_t pd)
{
    out->scratch = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    return dnnl_primitive_create(&out->p, pd) == dnnl_success ? 0 : -1;
}

static int reorder_make(prim *out, const dnnl_memory_desc_t *from,
                        const dnnl_memory_desc_t *to, const_dnnl_primitive_attr_t attr)
{
    dnnl_primitive_desc_t pd;
    if (dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr))
        return -1;
    int rc = prim_make(out, pd);
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

/* slot for a primitive operand of layout `want` (user layout `user`);
 * to_user: the reorder runs from `want` to `user` (outputs). */
static int slot_make(slot *s, const dnnl_memory_desc_t *want,
                     const dnnl_memory_desc_t *user, bool to_user,
                     const_dnnl_primitive_attr_t attr)
{
    s->md = *want;
    s->re.p = NULL;
    if (dnnl_memory_desc_equal(want, user))
        return 0;
    return to_user ? reorder_make(&s->re, want, user, attr)
                   : reorder_make(&s->re, user, want, attr);
}

/* Whether a primitive descriptor runs one of the library's reference
 * (plain C) implementations. */
static bool is_ref(dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) ||
        !impl)
        return true;
    return !strncmp(impl, "ref", 3);
}

/* The forward / backward-data / backward-weights descriptors of a build
 * and its attribute (each may be NULL). */
static void pds_destroy(dnnl_primitive_desc_t f, dnnl_primitive_desc_t d,
                        dnnl_primitive_desc_t w, dnnl_primitive_attr_t attr)
{
    dnnl_primitive_desc_t all[3] = {f, d, w};
    for (int i = 0; i < 3; i++)
        if (all[i])
            dnnl_primitive_desc_destroy(all[i]);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
}

static size_t place(size_t *at, const slot *s)
{
    size_t o = *at;
    if (s->re.p)
        *at += up(md_size(&s->md));
    return o;
}

static void scr_max(conv_ent *e, const prim *p)
{
    if (p->p && md_size(&p->scratch) > e->scr)
        e->scr = md_size(&p->scratch);
}

static int ent_build(conv_ent *e)
{
    const as_op_conv_geom *g = &e->g;
    dnnl_dims_t xd = {g->N, g->Cin, g->H, g->W};
    dnnl_dims_t wd = {g->Cout, g->Cin, g->kh, g->kw};
    dnnl_dims_t bd = {g->Cout};
    dnnl_dims_t yd = {g->N, g->Cout, g->Ho, g->Wo};
    dnnl_dims_t st = {g->stride, g->stride}, pad = {g->pad, g->pad};
    dnnl_memory_desc_t a_x, a_w, a_y;
    /* Blocked entries run on the caller's layouts: no activation reorder. */
    const dnnl_format_tag_t xt = e->lay == AS_DNNL_BLK ? dnnl_nChw16c : dnnl_nchw;
    const dnnl_format_tag_t yt = e->lay != AS_DNNL_NCHW ? dnnl_nChw16c : dnnl_nchw;
    const dnnl_format_tag_t ax = e->lay == AS_DNNL_NCHW ? dnnl_format_tag_any : xt;
    const dnnl_format_tag_t ay = e->lay == AS_DNNL_NCHW ? dnnl_format_tag_any : yt;
    dnnl_primitive_attr_t attr = NULL, acc = NULL;
    dnnl_post_ops_t sum = NULL;
    dnnl_primitive_desc_t fpd = NULL, dpd = NULL, wpd = NULL;
    dnnl_convolution_desc_t cd;
    int rc = -1;
    if (dnnl_memory_desc_init_by_tag(&e->u_x, 4, xd, dnnl_f32, xt) ||
        dnnl_memory_desc_init_by_tag(&e->u_w, 4, wd, dnnl_f32, dnnl_oihw) ||
        dnnl_memory_desc_init_by_tag(&e->u_b, 1, bd, dnnl_f32, dnnl_x) ||
        dnnl_memory_desc_init_by_tag(&e->u_y, 4, yd, dnnl_f32, yt) ||
        dnnl_memory_desc_init_by_tag(&a_x, 4, xd, dnnl_f32, ax) ||
        dnnl_memory_desc_init_by_tag(&a_w, 4, wd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&a_y, 4, yd, dnnl_f32, ay))
        return -1;
    if (dnnl_primitive_attr_create(&attr) ||
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) ||
        dnnl_primitive_attr_create(&acc) ||
        dnnl_primitive_attr_set_scratchpad_mode(acc, dnnl_scratchpad_mode_user) ||
        dnnl_post_ops_create(&sum) || dnnl_post_ops_append_sum(sum, 1.0f) ||
        dnnl_primitive_attr_set_post_ops(acc, sum))
        goto out;
    if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training,
                                           dnnl_convolution_direct, &a_x, &a_w,
                                           &e->u_b, &a_y, st, pad, pad) ||
        dnnl_primitive_desc_create(&fpd, &cd, attr, engine, NULL))
        goto out;
    if (dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct,
                                                 &a_x, &a_w, &a_y, st, pad, pad) ||
        dnnl_primitive_desc_create(&dpd, &cd, attr, engine, fpd))
        goto out;
    if (dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct,
                                                    &a_x, &a_w, &e->u_b, &a_y,
                                                    st, pad, pad) ||
        dnnl_primitive_desc_create(&wpd, &cd, attr, engine, fpd))
        goto out;
    /* An NCHW input keeps its backward-data on the reference kernel only
     * when no caller asks for dx there (the first conv): marked, not run. */
    e->dx_ref = is_ref(dpd);
    if (is_ref(fpd) || is_ref(wpd) || (e->dx_ref && e->lay != AS_DNNL_XNCHW_YBLK)) {
        rc = 1;   /* supported only by reference kernels */
        goto out;
    }
    if (prim_make(&e->fwd, fpd) || prim_make(&e->bwd_d, dpd) ||
        prim_make(&e->bwd_w, wpd))
        goto out;
#define MD(pd, what, i) dnnl_primitive_desc_query_md(pd, what, i)
    if (slot_make(&e->fx, MD(fpd, dnnl_query_src_md, 0), &e->u_x, false, attr) ||
        slot_make(&e->fw, MD(fpd, dnnl_query_weights_md, 0), &e->u_w, false, attr) ||
        slot_make(&e->fy, MD(fpd, dnnl_query_dst_md, 0), &e->u_y, true, attr) ||
        slot_make(&e->dx_dy, MD(dpd, dnnl_query_diff_dst_md, 0), &e->u_y, false, attr) ||
        slot_make(&e->dx_w, MD(dpd, dnnl_query_weights_md, 0), &e->u_w, false, attr) ||
        slot_make(&e->dx_dx, MD(dpd, dnnl_query_diff_src_md, 0), &e->u_x, true, attr) ||
        slot_make(&e->dw_x, MD(wpd, dnnl_query_src_md, 0), &e->u_x, false, attr))
        goto out;
    e->dy_shared = dnnl_memory_desc_equal(MD(wpd, dnnl_query_diff_dst_md, 0),
                                          &e->dx_dy.md);
    if (e->dy_shared)   /* reordered through dx_dy's slot */
        e->dw_dy = (slot){.md = e->dx_dy.md};
    else if (slot_make(&e->dw_dy, MD(wpd, dnnl_query_diff_dst_md, 0), &e->u_y,
                       false, attr))
        goto out;
    e->dw_dw = *MD(wpd, dnnl_query_diff_weights_md, 0);
    if (reorder_make(&e->dw_acc, &e->dw_dw, &e->u_w, acc))
        goto out;
#undef MD
    prim *all[] = {&e->fwd, &e->bwd_d, &e->bwd_w, &e->fx.re, &e->fw.re,
                   &e->fy.re, &e->dx_dy.re, &e->dx_w.re, &e->dx_dx.re,
                   &e->dw_x.re, &e->dw_dy.re, &e->dw_acc};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        scr_max(e, all[i]);
    size_t at = 0;
    e->fx.off = place(&at, &e->fx);
    e->fw.off = place(&at, &e->fw);
    e->fy.off = place(&at, &e->fy);
    e->f_b = at;
    at += up(sizeof(float) * (size_t)g->Cout);
    e->f_scr = at;
    e->f_end = at + up(e->scr);
    at = 0;
    e->dx_dy.off = place(&at, &e->dx_dy);
    e->dx_w.off = place(&at, &e->dx_w);
    e->dx_dx.off = place(&at, &e->dx_dx);
    e->dw_x.off = place(&at, &e->dw_x);
    e->dw_dy.off = e->dy_shared ? e->dx_dy.off : place(&at, &e->dw_dy);
    e->b_dw = at;
    at += up(md_size(&e->dw_dw));
    e->b_db = at;
    at += up(sizeof(float) * (size_t)g->Cout);
    e->b_scr = at;
    e->b_end = at + up(e->scr);
    rc = 0;
out:
    pds_destroy(fpd, dpd, wpd, attr);
    if (acc)
        dnnl_primitive_attr_destroy(acc);
    if (sum)
        dnnl_post_ops_destroy(sum);
    if (rc)
        ent_free(e);
    return rc;
}

static bool geom_eq(const as_op_conv_geom *a, const as_op_conv_geom *b)
{
    return a->N == b->N && a->Cin == b->Cin && a->H == b->H && a->W == b->W &&
           a->Cout == b->Cout && a->kh == b->kh && a->kw == b->kw &&
           a->stride == b->stride && a->pad == b->pad;
}

/* The table's entry for g (built on first use), or a private one in *tmp
 * when the table is full (the caller frees it). NULL: not supported. */
static conv_ent *ent_get(const as_op_conv_geom *g, int lay, conv_ent *tmp)
{
    if (!as_dnnl_available())
        return NULL;
    conv_ent *e = NULL;
    pthread_mutex_lock(&table_mu);
    for (int i = 0; i < MAX_GEOMS; i++) {
        if (table[i].state && table[i].lay == lay && geom_eq(&table[i].g, g)) {
            e = &table[i];
            break;
        }
        if (!table[i].state) {
            e = &table[i];
            e->g = *g;
            e->lay = lay;
            int rc = ent_build(e);
            /* a build failure (out of memory) is not remembered */
            e->state = rc == 0 ? 1 : rc > 0 ? -1 : 0;
            break;
        }
    }
    pthread_mutex_unlock(&table_mu);
    if (!e) {
        memset(tmp, 0, sizeof *tmp);
        tmp->g = *g;
        tmp->lay = lay;
        if (ent_build(tmp))
            return NULL;
        tmp->state = 1;
        return tmp;
    }
    return e->state == 1 ? e : NULL;
}

static void ent_put(conv_ent *e, conv_ent *tmp)
{
    if (e == tmp)
        ent_free(tmp);
}

size_t as_dnnl_conv_workspace(const as_op_conv_geom *g, int lay)
{
    conv_ent tmp, *e = ent_get(g, lay, &tmp);
    if (!e)
        return 0;
    size_t bytes = e->f_end > e->b_end ? e->f_end : e->b_end;
    ent_put(e, &tmp);
    return (bytes + ALIGN) / sizeof(float) + 1;   /* + base alignment */
}

/* One call's memory objects and stream. */
typedef struct run {
    dnnl_stream_t s;
    dnnl_memory_t m[24];
    int nm;
    char *ws;       /* aligned workspace */
    size_t scr;     /* scratchpad offset */
    int err;
} run;

static int run_begin(run *r, float *ws, size_t scr_off)
{
    memset(r, 0, sizeof *r);
    uintptr_t a = ((uintptr_t)ws + ALIGN - 1) / ALIGN * ALIGN;
    r->ws = (char *)a;
    r->scr = scr_off;
    use_threads();
    return dnnl_stream_create(&r->s, engine, dnnl_stream_default_flags) ? -1 : 0;
}

static dnnl_memory_t run_mem(run *r, const dnnl_memory_desc_t *md, const void *p)
{
    dnnl_memory_t m = NULL;
    if (r->err || r->nm == (int)(sizeof r->m / sizeof r->m[0]) ||
        dnnl_memory_create(&m, md, engine, (void *)p)) {
        r->err = 1;
        return NULL;
    }
    r->m[r->nm++] = m;
    return m;
}

/* Execute p with args (plus its scratchpad at the run's offset). */
static void run_exec(run *r, const prim *p, int n, dnnl_exec_arg_t *args)
{
    dnnl_exec_arg_t a[8];
    memcpy(a, args, sizeof *a * (size_t)n);
    if (md_size(&p->scratch))
        a[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD,
                                   run_mem(r, &p->scratch, r->ws + r->scr)};
    for (int i = 0; i < n; i++)
        if (!a[i].memory)
            r->err = 1;
    if (!r->err && dnnl_primitive_execute(p->p, r->s, n, a))
        r->err = 1;
}

/* Memory for slot s holding user data u: the user buffer itself when the
 * layouts agree, else the slot's workspace copy (reordered from u when
 * `in`). */
static dnnl_memory_t run_in(run *r, const slot *s, const dnnl_memory_desc_t *umd,
                            const void *u, bool in)
{
    if (!s->re.p)
        return run_mem(r, umd, u);
    dnnl_memory_t m = run_mem(r, &s->md, r->ws + s->off);
    if (in) {
        dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, run_mem(r, umd, u)},
                                {DNNL_ARG_TO, m}};
        run_exec(r, &s->re, 2, a);
    }
    return m;
}

/* Reorder the slot's workspace result into user buffer u. */
static void run_out(run *r, const slot *s, dnnl_memory_t m,
                    const dnnl_memory_desc_t *umd, void *u)
{
    if (!s->re.p)
        return;
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, m}, {DNNL_ARG_TO, run_mem(r, umd, u)}};
    run_exec(r, &s->re, 2, a);
}

static int run_end(run *r)
{
    if (!r->err && dnnl_stream_wait(r->s))
        r->err = 1;
    for (int i = 0; i < r->nm; i++)
        dnnl_memory_destroy(r->m[i]);
    if (r->s)
        dnnl_stream_destroy(r->s);
    return r->err ? -1 : 0;
}

/* A run on ws for the entry e of ent_get, its scratchpad at scr bytes; on
 * failure e is put back and -1 returned. */
static int ent_run_begin(conv_ent *e, conv_ent *tmp, run *r, float *ws, size_t scr)
{
    if (run_begin(r, ws, scr) == 0)
        return 0;
    ent_put(e, tmp);
    return -1;
}

/* End the run and put e back: the run's result. */
static int ent_run_end(conv_ent *e, conv_ent *tmp, run *r)
{
    int rc = run_end(r);
    ent_put(e, tmp);
    return rc;
}

int as_dnnl_conv_fwd(const as_op_conv_geom *g, int lay, const float *x,
                     const float *W, const float *b, float *y, float *ws)
{
    conv_ent tmp, *e = ent_get(g, lay, &tmp);
    run r;
    if (!e || ent_run_begin(e, &tmp, &r, ws, e->f_scr))
        return -1;
    if (!b) {   /* the primitive has a bias operand: give it zeros */
        float *z = (float *)(r.ws + e->f_b);
        memset(z, 0, sizeof(float) * (size_t)g->Cout);
        b = z;
    }
    dnnl_memory_t mx = run_in(&r, &e->fx, &e->u_x, x, true);
    dnnl_memory_t mw = run_in(&r, &e->fw, &e->u_w, W, true);
    dnnl_memory_t my = run_in(&r, &e->fy, &e->u_y, y, false);
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, mx}, {DNNL_ARG_WEIGHTS, mw},
                            {DNNL_ARG_BIAS, run_mem(&r, &e->u_b, b)},
                            {DNNL_ARG_DST, my}};
    run_exec(&r, &e->fwd, 4, a);
    run_out(&r, &e->fy, my, &e->u_y, y);
    return ent_run_end(e, &tmp, &r);
}

int as_dnnl_conv_bwd(const as_op_conv_geom *g, int lay, const float *x,
                     const float *W, const float *dy, float *dx, float *dW,
                     float *db, float *ws)
{
    conv_ent tmp, *e = ent_get(g, lay, &tmp);
    if (e && dx && e->dx_ref) {
        ent_put(e, &tmp);
        return -1;
    }
    run r;
    if (!e || ent_run_begin(e, &tmp, &r, ws, e->b_scr))
        return -1;
    dnnl_memory_t mdy = NULL;
    if (dx) {
        mdy = run_in(&r, &e->dx_dy, &e->u_y, dy, true);
        dnnl_memory_t mw = run_in(&r, &e->dx_w, &e->u_w, W, true);
        dnnl_memory_t mdx = run_in(&r, &e->dx_dx, &e->u_x, dx, false);
        dnnl_exec_arg_t a[3] = {{DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_WEIGHTS, mw},
                                {DNNL_ARG_DIFF_SRC, mdx}};
        run_exec(&r, &e->bwd_d, 3, a);
        run_out(&r, &e->dx_dx, mdx, &e->u_x, dx);
    }
    float *dbw = (float *)(r.ws + e->b_db);
    if (dW || db) {
        const slot *sdy = e->dy_shared ? &e->dx_dy : &e->dw_dy;
        dnnl_memory_t mdy2 = e->dy_shared && mdy ? mdy
                             : run_in(&r, sdy, &e->u_y, dy, true);
        dnnl_memory_t mdw = run_mem(&r, &e->dw_dw, r.ws + e->b_dw);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, run_in(&r, &e->dw_x, &e->u_x, x, true)},
                                {DNNL_ARG_DIFF_DST, mdy2},
                                {DNNL_ARG_DIFF_WEIGHTS, mdw},
                                {DNNL_ARG_DIFF_BIAS, run_mem(&r, &e->u_b, dbw)}};
        run_exec(&r, &e->bwd_w, 4, a);
        if (dW) {   /* dW += */
            dnnl_exec_arg_t c[2] = {{DNNL_ARG_FROM, mdw},
                                    {DNNL_ARG_TO, run_mem(&r, &e->u_w, dW)}};
            run_exec(&r, &e->dw_acc, 2, c);
        }
    }
    int rc = ent_run_end(e, &tmp, &r);
    if (!rc && db)
        for (int o = 0; o < g->Cout; o++)
            db[o] += dbw[o];
    return rc;
}

/* Bytes of the native operands of a pass, laid out one after another. */
static size_t native_bytes(const conv_ent *e, int pass)
{
    const dnnl_memory_desc_t *f[] = {&e->fx.md, &e->fw.md, &e->u_b, &e->fy.md};
    const dnnl_memory_desc_t *w[] = {&e->dw_x.md, &e->dw_dy.md, &e->dw_dw, &e->u_b};
    const dnnl_memory_desc_t *d[] = {&e->dx_dy.md, &e->dx_w.md, &e->dx_dx.md};
    const dnnl_memory_desc_t **m = pass == 0 ? f : pass == 1 ? w : d;
    size_t n = pass == 2 ? 3 : 4, at = 0;
    for (size_t i = 0; i < n; i++)
        at += up(md_size(m[i]));
    return at;
}

size_t as_dnnl_conv_native_workspace(const as_op_conv_geom *g)
{
    conv_ent tmp, *e = ent_get(g, AS_DNNL_NCHW, &tmp);
    if (!e)
        return 0;
    size_t bytes = 0;
    for (int p = 0; p < 3; p++)
        if (native_bytes(e, p) > bytes)
            bytes = native_bytes(e, p);
    bytes += up(e->scr);
    ent_put(e, &tmp);
    return (bytes + ALIGN) / sizeof(float) + 1;
}

int as_dnnl_conv_native(const as_op_conv_geom *g, int pass, float *ws)
{
    if (pass < 0 || pass > 2)
        return -1;
    conv_ent tmp, *e = ent_get(g, AS_DNNL_NCHW, &tmp);
    run r;
    if (!e || ent_run_begin(e, &tmp, &r, ws, native_bytes(e, pass)))
        return -1;
    /* operands one after another in the primitive's layouts, then the
     * scratchpad */
    size_t at = 0;
#define NATIVE(md) run_mem(&r, md, r.ws + (at += up(md_size(md))) - up(md_size(md)))
    if (pass == 0) {
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, NATIVE(&e->fx.md)},
                                {DNNL_ARG_WEIGHTS, NATIVE(&e->fw.md)},
                                {DNNL_ARG_BIAS, NATIVE(&e->u_b)},
                                {DNNL_ARG_DST, NATIVE(&e->fy.md)}};
        run_exec(&r, &e->fwd, 4, a);
    } else if (pass == 1) {
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, NATIVE(&e->dw_x.md)},
                                {DNNL_ARG_DIFF_DST, NATIVE(&e->dw_dy.md)},
                                {DNNL_ARG_DIFF_WEIGHTS, NATIVE(&e->dw_dw)},
                                {DNNL_ARG_DIFF_BIAS, NATIVE(&e->u_b)}};
        run_exec(&r, &e->bwd_w, 4, a);
    } else {
        dnnl_exec_arg_t a[3] = {{DNNL_ARG_DIFF_DST, NATIVE(&e->dx_dy.md)},
                                {DNNL_ARG_WEIGHTS, NATIVE(&e->dx_w.md)},
                                {DNNL_ARG_DIFF_SRC, NATIVE(&e->dx_dx.md)}};
        run_exec(&r, &e->bwd_d, 3, a);
    }
#undef NATIVE
    return ent_run_end(e, &tmp, &r);
}

/* ---- linear: the inner-product primitives alone (benchmarks) ----------- */

typedef struct ip_ent {
    int N, in, out;
    int state;                  /* 0 empty, 1 ready, -1 failed */
    prim fwd, bwd_d, bwd_w;
    dnnl_memory_desc_t f[4];    /* forward: src, weights, bias, dst */
    dnnl_memory_desc_t d[3];    /* backward data: diff_dst, weights, diff_src */
    dnnl_memory_desc_t w[4];    /* backward weights: src, diff_dst, diff_w, diff_b */
    size_t scr;
} ip_ent;

#define MAX_IPS 16
static ip_ent ips[MAX_IPS];

static size_t mds_bytes(const dnnl_memory_desc_t *m, int n)
{
    size_t at = 0;
    for (int i = 0; i < n; i++)
        at += up(md_size(&m[i]));
    return at;
}

static int ip_build(ip_ent *e)
{
    dnnl_dims_t xd = {e->N, e->in}, wd = {e->out, e->in}, bd = {e->out}, yd = {e->N, e->out};
    dnnl_memory_desc_t x, w, b, y;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fpd = NULL, dpd = NULL, wpd = NULL;
    dnnl_inner_product_desc_t id;
    int rc = -1;
    if (dnnl_memory_desc_init_by_tag(&x, 2, xd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&w, 2, wd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&b, 1, bd, dnnl_f32, dnnl_x) ||
        dnnl_memory_desc_init_by_tag(&y, 2, yd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_primitive_attr_create(&attr) ||
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) ||
        dnnl_inner_product_forward_desc_init(&id, dnnl_forward_training, &x, &w, &b, &y) ||
        dnnl_primitive_desc_create(&fpd, &id, attr, engine, NULL) ||
        dnnl_inner_product_backward_data_desc_init(&id, &x, &w, &y) ||
        dnnl_primitive_desc_create(&dpd, &id, attr, engine, fpd) ||
        dnnl_inner_product_backward_weights_desc_init(&id, &x, &w, &b, &y) ||
        dnnl_primitive_desc_create(&wpd, &id, attr, engine, fpd) ||
        prim_make(&e->fwd, fpd) || prim_make(&e->bwd_d, dpd) || prim_make(&e->bwd_w, wpd))
        goto out;
#define MD(pd, what) *dnnl_primitive_desc_query_md(pd, what, 0)
    e->f[0] = MD(fpd, dnnl_query_src_md), e->f[1] = MD(fpd, dnnl_query_weights_md);
    e->f[2] = b, e->f[3] = MD(fpd, dnnl_query_dst_md);
    e->d[0] = MD(dpd, dnnl_query_diff_dst_md), e->d[1] = MD(dpd, dnnl_query_weights_md);
    e->d[2] = MD(dpd, dnnl_query_diff_src_md);
    e->w[0] = MD(wpd, dnnl_query_src_md), e->w[1] = MD(wpd, dnnl_query_diff_dst_md);
    e->w[2] = MD(wpd, dnnl_query_diff_weights_md), e->w[3] = b;
#undef MD
    e->scr = 0;
    const prim *ps[] = {&e->fwd, &e->bwd_d, &e->bwd_w};
    for (int i = 0; i < 3; i++)
        if (md_size(&ps[i]->scratch) > e->scr)
            e->scr = md_size(&ps[i]->scratch);
    rc = 0;
out:
    pds_destroy(fpd, dpd, wpd, attr);
    if (rc) {
        prim_free(&e->fwd);
        prim_free(&e->bwd_d);
        prim_free(&e->bwd_w);
    }
    return rc;
}

/* The table's entry for the shape, built on first use; NULL when the
 * library did not start, the build failed or the table is full. */
static ip_ent *ip_get(int N, int in, int out)
{
    if (N <= 0 || in <= 0 || out <= 0 || !as_dnnl_available())
        return NULL;
    ip_ent *e = NULL;
    pthread_mutex_lock(&table_mu);
    for (int i = 0; i < MAX_IPS; i++) {
        ip_ent *t = &ips[i];
        if (t->state && t->N == N && t->in == in && t->out == out) {
            e = t;
            break;
        }
        if (!t->state) {
            *t = (ip_ent){.N = N, .in = in, .out = out};
            t->state = ip_build(t) == 0 ? 1 : -1;
            e = t;
            break;
        }
    }
    pthread_mutex_unlock(&table_mu);
    return e && e->state == 1 ? e : NULL;
}

size_t as_dnnl_linear_native_workspace(int N, int in, int out)
{
    const ip_ent *e = ip_get(N, in, out);
    if (!e)
        return 0;
    size_t f = mds_bytes(e->f, 4), d = mds_bytes(e->d, 3) + mds_bytes(e->w, 4);
    return ((f > d ? f : d) + up(e->scr) + ALIGN) / sizeof(float) + 1;
}

int as_dnnl_linear_native(int N, int in, int out, int pass, float *ws)
{
    const ip_ent *e = ip_get(N, in, out);
    run r;
    if (!e || pass < 0 || pass > 1 ||
        run_begin(&r, ws, pass ? mds_bytes(e->d, 3) + mds_bytes(e->w, 4) : mds_bytes(e->f, 4)))
        return -1;
    dnnl_memory_t m[7];
    const dnnl_memory_desc_t *mds[7] = {&e->f[0], &e->f[1], &e->f[2], &e->f[3]};
    int n = 4;
    if (pass) {
        n = 7;
        for (int i = 0; i < 3; i++)
            mds[i] = &e->d[i];
        for (int i = 0; i < 4; i++)
            mds[3 + i] = &e->w[i];
    }
    for (int i = 0, at = 0; i < n; at += (int)up(md_size(mds[i])), i++)
        m[i] = run_mem(&r, mds[i], r.ws + at);
    if (!pass) {
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, m[0]}, {DNNL_ARG_WEIGHTS, m[1]},
                                {DNNL_ARG_BIAS, m[2]}, {DNNL_ARG_DST, m[3]}};
        run_exec(&r, &e->fwd, 4, a);
    } else {
        dnnl_exec_arg_t a[3] = {{DNNL_ARG_DIFF_DST, m[0]}, {DNNL_ARG_WEIGHTS, m[1]},
                                {DNNL_ARG_DIFF_SRC, m[2]}};
        dnnl_exec_arg_t b[4] = {{DNNL_ARG_SRC, m[3]}, {DNNL_ARG_DIFF_DST, m[4]},
                                {DNNL_ARG_DIFF_WEIGHTS, m[5]}, {DNNL_ARG_DIFF_BIAS, m[6]}};
        run_exec(&r, &e->bwd_d, 3, a);
        run_exec(&r, &e->bwd_w, 4, b);
    }
    return run_end(&r);
}
