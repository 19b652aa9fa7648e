/* The softmax blob's block checksums against its decode: per (batch,
 * head) block of (8, 256, 256) rows, the hash of its compressed bytes vs
 * the decode of its rows (checks included), thread CPU time, alternating,
 * medians of 15. Build and run from the repository root after a build:
 *   gcc -O2 -I. -Iinclude scripts/experiments/softmax_block_sums.c \
 *     build/libactstore_static.a build/libas_llhttp.a -o /tmp/sm_sums \
 *     -lm -lzstd -ljemalloc -lpthread -luv -lopenblas && /tmp/sm_sums */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "store/policies/quant.h"
#include "store/policies/softmax/softmax.h"
#include "util/clock.h"
#include "util/median.h"
int main(void)
{
    const char *specs[] = {"soa:5", "solog:4", "sotk:16:3"};
    enum { B = 8, T = 256 };
    size_t n = (size_t)B * T * T;
    float *y = malloc(n * 4), *out = malloc((size_t)T * T * 4);
    uint32_t h = 1;
    for (size_t r = 0; r < (size_t)B * T; r++) {
        double s = 0;
        for (size_t c = 0; c < T; c++) { h ^= h << 13, h ^= h >> 17, h ^= h << 5; s += y[r*T+c] = expf((float)(h % 1000) * 0.006f); }
        for (size_t c = 0; c < T; c++) y[r*T+c] = (float)(y[r*T+c] / s);
    }
    for (int k = 0; k < 3; k++) {
        as__sm_params p; char err[128]; size_t off;
        if (as__sm_parse(specs[k], strlen(specs[k]), &p, err, sizeof err, &off)) return 1;
        as__sm_layout lay = {.rows = B * T, .len = T, .queries = T};
        size_t cap = as__sm_encode_bound(&p, &lay), used;
        void *blob = malloc(cap);
        if (as__sm_encode(&p, &lay, y, blob, cap, &used)) return 2;
        as__sm_info info; as__sm_blob_info(blob, used, &info);
        double td[15], th[15]; volatile uint64_t sink = 0;
        for (int rep = 0; rep < 15; rep++) {
            double t0 = as_clock_thread_cpu_s();
            for (int b = 0; b < B; b++) as__sm_decode_rows(blob, (int64_t)b * T, T, out);
            double t1 = as_clock_thread_cpu_s();
            for (int b = 0; b < B; b++) sink += as__hash64((const char *)blob + (used - info.payload_bytes) + b * (info.payload_bytes / B), info.payload_bytes / B);
            double t2 = as_clock_thread_cpu_s();
            td[rep] = t1 - t0; th[rep] = t2 - t1;
        }
        double md = as_stats_median(td, 15), mh = as_stats_median(th, 15);
        printf("%-10s blob %7zu B: decode %.3f ms (incl. checks), hash of the blocks %.4f ms = %.2f%% of decode\n",
               specs[k], used, md * 1e3, mh * 1e3, 100 * mh / md);
    }
    return 0;
}
