/*
 * Where the oneDNN conv path loses against the library's bare primitive:
 * the layout changes NCHW <-> nChw16c of the activations. Times, in one
 * process, alternating call by call (thread CPU time, one thread, median
 * of 41 repeats of 3 calls; the order rotates by one variant per repeat,
 * so each follows each as often), on the cnn bench preset's three conv
 * shapes:
 *   fwd / bwd with the activations through ops_blk.c's transposes,
 *   fwd / bwd with the library's reorders (as_dnnl_set_own_reorders(false)),
 *   the library's primitives alone on blocked tensors (as_op_conv_native).
 * With "cold", a 12 MiB buffer is walked before every call, so operands
 * come from L3 or memory, as in `actstore bench layers` (where the
 * same-shape sgemm runs between the kernel's calls); without it they
 * stay in L2 / L3 from the previous call.
 *
 * Not part of the build. From the repository root, after the build:
 *   gcc -O2 -I. -Iinclude -Ibuild/include scripts/experiments/conv_reorder_ab.c \
 *       build/layers/libactstore_layers.a build/libactstore_static.a -ldnnl -lopenblas \
 *       -ljemalloc -lzstd -luv -lcjson -lz -lm -lpthread -fopenmp -o /tmp/conv_reorder_ab
 *   /tmp/conv_reorder_ab [cold]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layers/ops.h"
#include "layers/ops_dnnl.h"

enum { REPS = 41, CALLS = 3, FLUSH = 12 << 20 };

static char *flush_buf;

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct conv {
    as_op_conv_geom g;
    float *x, *dx, *y, *dy, *W, *dW, *b, *db, *ws, *nws;
} conv;

/* kind: 0 fwd, 1 bwd (dW, db and, past the first layer, dx), 2 / 3 the
 * library alone (forward / both backward passes). */
static void call(conv *c, int kind)
{
    const as_op_conv_geom *g = &c->g;
    if (kind == 0)
        as_op_conv_fwd(g, c->x, c->W, c->b, c->y, c->ws);
    else if (kind == 1)
        as_op_conv_bwd(g, c->x, c->W, c->dy, g->Cin > 1 ? c->dx : NULL, c->dW, c->db, c->ws);
    else if (kind == 2)
        as_op_conv_native(g, 0, c->nws);
    else {
        as_op_conv_native(g, 1, c->nws);
        if (g->Cin > 1)
            as_op_conv_native(g, 2, c->nws);
    }
}

static float *buf(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(i % 17) * 0.1f - 0.8f;
    return p;
}

int main(int argc, char **argv)
{
    const int cold = argc > 1 && !strcmp(argv[1], "cold");
    const int shp[3][4] = {{64, 1, 28, 16}, {64, 16, 14, 32}, {64, 32, 7, 64}};
    as_op_set_threads(1);
    if (as_op_set_backend(AS_OP_ONEDNN)) {
        fprintf(stderr, "oneDNN not available\n");
        return 1;
    }
    flush_buf = calloc(FLUSH, 1);
    printf("%s; %s operands\n", as_op_kernels_info(), cold ? "cold" : "warm");
    for (int s = 0; s < 3; s++) {
        conv c = {.g = {.N = shp[s][0], .Cin = shp[s][1], .H = shp[s][2], .W = shp[s][2],
                        .Cout = shp[s][3], .kh = 3, .kw = 3, .stride = 1, .pad = 1}};
        as_op_conv_geom_init(&c.g);
        const size_t nx = (size_t)c.g.N * c.g.Cin * c.g.H * c.g.W;
        const size_t ny = (size_t)c.g.N * c.g.Cout * c.g.Ho * c.g.Wo;
        const size_t nw = (size_t)c.g.Cout * c.g.Cin * 9;
        c.x = buf(nx), c.dx = buf(nx), c.y = buf(ny), c.dy = buf(ny), c.W = buf(nw);
        c.dW = buf(nw), c.b = buf((size_t)c.g.Cout), c.db = buf((size_t)c.g.Cout);
        c.ws = buf(as_op_conv_workspace(&c.g)), c.nws = buf(as_op_conv_native_workspace(&c.g));
        /* columns: fwd own, fwd lib-reorders, fwd alone, bwd own, bwd lib, bwd alone */
        const int kind[6] = {0, 0, 2, 1, 1, 3}, own[6] = {1, 0, 1, 1, 0, 1};
        static double t[6][REPS];
        for (int r = 0; r < REPS; r++)
            for (int j = 0; j < 6; j++) {   /* each variant first in turn */
                const int k = (j + r) % 6;
                as_dnnl_set_own_reorders(own[k]);
                double sum = 0;
                for (int i = 0; i < CALLS; i++) {
                    if (cold)
                        for (size_t j = 0; j < FLUSH; j += 64)
                            flush_buf[j]++;
                    double t0 = cpu_s();
                    call(&c, kind[k]);
                    sum += cpu_s() - t0;
                }
                t[k][r] = sum / CALLS;
            }
        double m[6];
        for (int k = 0; k < 6; k++) {
            qsort(t[k], REPS, sizeof(double), cmp);
            m[k] = t[k][REPS / 2];
        }
        printf("%d %d>%d %dx%d: fwd %.3f ms (transposes) %.3f (library reorders) %.3f (alone): "
               "/alone %.2f %.2f | bwd %.3f %.3f %.3f: /alone %.2f %.2f\n",
               c.g.N, c.g.Cin, c.g.Cout, c.g.H, c.g.W, 1e3 * m[0], 1e3 * m[1], 1e3 * m[2],
               m[2] / m[0], m[2] / m[1], 1e3 * m[3], 1e3 * m[4], 1e3 * m[5], m[5] / m[3],
               m[5] / m[4]);
        free(c.x), free(c.dx), free(c.y), free(c.dy), free(c.W), free(c.dW), free(c.b);
        free(c.db), free(c.ws), free(c.nws);
    }
    free(flush_buf);
    return 0;
}
