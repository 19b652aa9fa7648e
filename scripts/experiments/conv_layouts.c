/*
 * Which memory layouts do oneDNN 2.6's f32 conv primitives run fast on
 * here? For the cnn bench preset's three conv shapes (batch 64, 3x3,
 * stride 1, pad 1): forward, backward-data and backward-weights
 * primitives created with src / weights / dst descriptors
 *   any (the library picks: blocked nChw16c on AVX-512), nchw + any
 *   weights, nchw + oihw, nhwc + any weights,
 * each with the implementation the library chose, plus the reorders
 * NCHW <-> blocked the "any" case needs. Thread CPU time, one thread,
 * median of 41 repeats, all cases of a shape alternating.
 *
 * Not part of the build. From the repository root:
 *   gcc -O2 scripts/experiments/conv_layouts.c -ldnnl -o /tmp/conv_layouts
 *   OMP_NUM_THREADS=1 /tmp/conv_layouts
 */
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static dnnl_engine_t eng;
static dnnl_stream_t st;
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int cmpd(const void *a, const void *b) {
    double x = *(double *)a, y = *(double *)b;
    return x < y ? -1 : x > y;
}
typedef struct {
    dnnl_primitive_t p;
    int n;
    dnnl_exec_arg_t a[6];
} job;
static dnnl_memory_t mk(const dnnl_memory_desc_t *md) {
    dnnl_memory_t m;
    dnnl_memory_create(&m, md, eng, DNNL_MEMORY_ALLOCATE);
    float *p;
    dnnl_memory_get_data_handle(m, (void **)&p);
    size_t n = dnnl_memory_desc_get_size(md) / 4;
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((i * 7919) % 1000) / 1000.f - 0.5f;
    return m;
}
static double timejob(job *j, int it) {
    double t0 = now();
    for (int i = 0; i < it; i++) {
        dnnl_primitive_execute(j->p, st, j->n, j->a);
    }
    dnnl_stream_wait(st);
    return (now() - t0) / it;
}
static void timeall(int n, job **js, const char **names, double flops) {
    double v[8][41];
    int it[8];
    for (int k = 0; k < n; k++) {
        timejob(js[k], 1);
        double t = timejob(js[k], 3);
        it[k] = t > 0 ? (int)(0.002 / t) : 100;
        if (it[k] < 1)
            it[k] = 1;
    }
    for (int r = 0; r < 41; r++)
        for (int k = 0; k < n; k++)
            v[k][r] = timejob(js[k], it[k]);
    for (int k = 0; k < n; k++) {
        qsort(v[k], 41, sizeof(double), cmpd);
        printf("  %-28s %8.3f ms  %7.1f GF/s\n", names[k], v[k][20] * 1e3,
               flops > 0 ? flops / v[k][20] * 1e-9 : 0);
    }
}
static const char *impl(dnnl_primitive_desc_t pd) {
    const char *s = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s);
    return s;
}
static job reo(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b) {
    job j = {0};
    dnnl_primitive_desc_t pd;
    if (dnnl_reorder_primitive_desc_create(&pd, a, eng, b, eng, NULL)) {
        printf("reorder fail\n");
        exit(1);
    }
    printf("  reorder impl %s\n", impl(pd));
    dnnl_primitive_create(&j.p, pd);
    j.n = 2;
    j.a[0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, mk(a)};
    j.a[1] = (dnnl_exec_arg_t){DNNL_ARG_TO, mk(b)};
    return j;
}
/* src a, weights w, bias b, dst y descriptors of the shape, by tag. */
static void descs(int N, int Ci, int H, int Co, dnnl_format_tag_t ts, dnnl_format_tag_t tw,
                  dnnl_format_tag_t td, dnnl_memory_desc_t *a, dnnl_memory_desc_t *w,
                  dnnl_memory_desc_t *b, dnnl_memory_desc_t *y) {
    dnnl_dims_t xd = {N, Ci, H, H}, wd = {Co, Ci, 3, 3}, bd = {Co}, yd = {N, Co, H, H};
    dnnl_memory_desc_init_by_tag(a, 4, xd, dnnl_f32, ts);
    dnnl_memory_desc_init_by_tag(w, 4, wd, dnnl_f32, tw);
    dnnl_memory_desc_init_by_tag(b, 1, bd, dnnl_f32, dnnl_x);
    dnnl_memory_desc_init_by_tag(y, 4, yd, dnnl_f32, td);
}
static job fwd(int N, int Ci, int H, int Co, dnnl_format_tag_t ts, dnnl_format_tag_t tw,
               dnnl_format_tag_t td, dnnl_memory_desc_t *xs, dnnl_memory_desc_t *xw,
               dnnl_memory_desc_t *xd, dnnl_primitive_desc_t *fpd_out) {
    dnnl_dims_t s = {1, 1}, p = {1, 1};
    dnnl_memory_desc_t a, w, b, y;
    descs(N, Ci, H, Co, ts, tw, td, &a, &w, &b, &y);
    dnnl_convolution_desc_t cd;
    dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &a, &w,
                                       &b, &y, s, p, p);
    dnnl_primitive_desc_t pd;
    job j = {0};
    if (dnnl_primitive_desc_create(&pd, &cd, NULL, eng, NULL)) {
        printf("  fwd create fail\n");
        j.p = NULL;
        return j;
    }
    printf("  fwd impl %s\n", impl(pd));
    *xs = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    *xw = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    *xd = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    dnnl_primitive_create(&j.p, pd);
    j.n = 4;
    j.a[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, mk(xs)};
    j.a[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mk(xw)};
    j.a[2] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mk(&b)};
    j.a[3] = (dnnl_exec_arg_t){DNNL_ARG_DST, mk(xd)};
    if (fpd_out)
        *fpd_out = pd;
    return j;
}
/* A query's memory for the primitive of pd. */
static dnnl_exec_arg_t arg(int what, dnnl_primitive_desc_t pd, dnnl_query_t q) {
    return (dnnl_exec_arg_t){what, mk(dnnl_primitive_desc_query_md(pd, q, 0))};
}
/* Backward data (weights = 0) or backward weights (1). */
static job bwd(int N, int Ci, int H, int Co, dnnl_format_tag_t ts, dnnl_format_tag_t tw,
               dnnl_format_tag_t td, dnnl_primitive_desc_t hint, int weights) {
    dnnl_dims_t s = {1, 1}, p = {1, 1};
    dnnl_memory_desc_t a, w, b, y;
    descs(N, Ci, H, Co, ts, tw, td, &a, &w, &b, &y);
    dnnl_convolution_desc_t cd;
    if (weights)
        dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &a, &w, &b, &y,
                                                    s, p, p);
    else
        dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &a, &w, &y, s, p, p);
    dnnl_primitive_desc_t pd;
    job j = {0};
    if (dnnl_primitive_desc_create(&pd, &cd, NULL, eng, hint)) {
        printf("  %s create fail\n", weights ? "bwd_w" : "bwd_d");
        return j;
    }
    printf("  %s impl %s\n", weights ? "bwd_w" : "bwd_d", impl(pd));
    if (weights) {
        j.n = 4;
        j.a[0] = arg(DNNL_ARG_SRC, pd, dnnl_query_src_md);
        j.a[1] = arg(DNNL_ARG_DIFF_DST, pd, dnnl_query_diff_dst_md);
        j.a[2] = arg(DNNL_ARG_DIFF_WEIGHTS, pd, dnnl_query_diff_weights_md);
        j.a[3] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, mk(&b)};
    } else {
        j.n = 3;
        j.a[0] = arg(DNNL_ARG_DIFF_DST, pd, dnnl_query_diff_dst_md);
        j.a[1] = arg(DNNL_ARG_WEIGHTS, pd, dnnl_query_weights_md);
        j.a[2] = arg(DNNL_ARG_DIFF_SRC, pd, dnnl_query_diff_src_md);
    }
    dnnl_primitive_create(&j.p, pd);
    return j;
}
/* Append job j (skipped when its primitive did not build) as "cfg what". */
static void add(job *js, const char **nm, int *n, job j, const char *cfg, const char *what) {
    static char names[64][48];
    if (!j.p || *n >= 16)
        return;
    snprintf(names[*n], sizeof names[*n], "%s %s", cfg, what);
    js[*n] = j;
    nm[*n] = names[*n];
    (*n)++;
}

int main(int argc, char **argv) {
    dnnl_engine_create(&eng, dnnl_cpu, 0);
    dnnl_stream_create(&st, eng, dnnl_stream_default_flags);
    int shapes[3][4] = {{64, 1, 28, 16}, {64, 16, 14, 32}, {64, 32, 7, 64}};
    struct {
        const char *n;
        dnnl_format_tag_t s, w, d;
    } cfg[] = {{"any", dnnl_format_tag_any, dnnl_format_tag_any, dnnl_format_tag_any},
               {"nchw/any", dnnl_nchw, dnnl_format_tag_any, dnnl_nchw},
               {"nchw/oihw", dnnl_nchw, dnnl_oihw, dnnl_nchw},
               {"nhwc/any", dnnl_nhwc, dnnl_format_tag_any, dnnl_nhwc}};
    for (int si = 0; si < 3; si++) {
        int N = shapes[si][0], Ci = shapes[si][1], H = shapes[si][2], Co = shapes[si][3];
        double fl = 2.0 * N * Co * H * H * Ci * 9;
        printf("shape N%d %d->%d %dx%d  (%.1f MFLOP)\n", N, Ci, Co, H, H, fl * 1e-6);
        job js[16];
        const char *nm[16];
        int n = 0;
        for (int c = 0; c < 4; c++) {
            dnnl_memory_desc_t s, w, d;
            dnnl_primitive_desc_t fpd;
            printf(" cfg %s\n", cfg[c].n);
            job f = fwd(N, Ci, H, Co, cfg[c].s, cfg[c].w, cfg[c].d, &s, &w, &d, &fpd);
            if (!f.p)
                continue;
            add(js, nm, &n, f, cfg[c].n, "fwd");
            add(js, nm, &n, bwd(N, Ci, H, Co, cfg[c].s, cfg[c].w, cfg[c].d, fpd, 0), cfg[c].n,
                "bwd_d");
            add(js, nm, &n, bwd(N, Ci, H, Co, cfg[c].s, cfg[c].w, cfg[c].d, fpd, 1), cfg[c].n,
                "bwd_w");
            if (c == 0) {
                dnnl_dims_t xd_ = {N, Ci, H, H}, yd = {N, Co, H, H};
                dnnl_memory_desc_t ux, uy;
                dnnl_memory_desc_init_by_tag(&ux, 4, xd_, dnnl_f32, dnnl_nchw);
                dnnl_memory_desc_init_by_tag(&uy, 4, yd, dnnl_f32, dnnl_nchw);
                if (!dnnl_memory_desc_equal(&ux, &s)) {
                    js[n] = reo(&ux, &s);
                    nm[n++] = "reorder x nchw->blk";
                }
                js[n] = reo(&d, &uy);
                nm[n++] = "reorder y blk->nchw";
                js[n] = reo(&uy, &d);
                nm[n++] = "reorder y nchw->blk";
            }
        }
        /* time in groups of up to 8 */
        for (int k = 0; k < n; k += 8) {
            job *jp[8];
            const char *nn[8];
            int m = n - k < 8 ? n - k : 8;
            for (int i = 0; i < m; i++) {
                jp[i] = &js[k + i];
                nn[i] = nm[k + i];
            }
            timeall(m, jp, nn, fl);
        }
    }
}
