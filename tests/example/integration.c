/*
 * A small C trainer with actstore plugged in, the way docs/integration.md
 * describes it. Public API only (actstore/store.h); built by the tests and
 * run by tests/cli_integration.sh, which compares arena peaks across
 * policies.
 *
 *   integration_example --shape layers|slab [--policy SPEC] [--steps N]
 *
 * The model: L layers of causal self-attention without projections,
 *   A = h h^T / sqrt(C),  P = softmax(w_l A) (causal),  h' = h + P h,
 * one learned temperature w_l per layer, loss 0.5 |h_L - target|^2, SGD.
 * Each layer saves its input h (B, T, C) and its probabilities P (B, T, T)
 * for backward; P is the big one (T / C times h).
 *
 * Two framework shapes:
 *   layers  per-layer buffers allocated on demand: P is computed into a
 *           fresh buffer, saved (the store copies or encodes it) and the
 *           buffer freed at once; h likewise.
 *   slab    a preallocated activation slab: before actstore the slab held
 *           every layer's h and P. Now it holds only the h's; each P is
 *           allocated from the store's arena and handed over with
 *           as_store_save_adopt (keep: no copy; an encoding policy frees
 *           the block during the save).
 * Either way backward gets P back one (batch) block at a time with
 * as_store_restore_rows, so no full P is materialized again.
 *
 * Prints one JSON line: arena peak over the steps, the softmax kind's raw
 * and stored peaks, losses. Exit 1 on any store error (strict mode: wrong
 * metadata is an error here, not a silent fallback).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <actstore/store.h>

enum { L = 4, B = 4, T = 64, C = 16 };

#define CHECK(call)                                                         \
    do {                                                                    \
        int rc_ = (call);                                                   \
        if (rc_ < 0) {                                                      \
            fprintf(stderr, "integration_example: %s: %s (%s)\n", #call,    \
                    as_strerror(rc_), as_store_last_error(S));              \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

static as_store *S;
static as_arena *A;
static float w[L];                          /* per-layer temperature */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5);
}

/* A block of `bytes` from the store's arena, tagged activations. */
static as_block act_alloc(size_t bytes)
{
    as_block b;
    CHECK(as_alloc(A, bytes, AS_TAG_ACTIVATIONS, AS_LAYER_NONE, &b));
    return b;
}

/* P = softmax(w A) causal and o = P h for one layer; P (B, T, T). */
static void attn_fwd(float wl, const float *h, float *P, float *out)
{
    const float sc = 1.0f / sqrtf((float)C);
    for (int b = 0; b < B; b++)
        for (int q = 0; q < T; q++) {
            const float *hq = h + ((size_t)b * T + q) * C;
            float *p = P + ((size_t)b * T + q) * T, mx = -INFINITY, z = 0;
            for (int k = 0; k <= q; k++) {
                const float *hk = h + ((size_t)b * T + k) * C;
                float a = 0;
                for (int c = 0; c < C; c++)
                    a += hq[c] * hk[c];
                p[k] = wl * a * sc;
                mx = p[k] > mx ? p[k] : mx;
            }
            for (int k = 0; k <= q; k++)
                z += (p[k] = expf(p[k] - mx));
            for (int k = 0; k < T; k++)
                p[k] = k <= q ? p[k] / z : 0.0f;   /* masked keys: exactly 0 */
            float *o = out + ((size_t)b * T + q) * C;
            for (int c = 0; c < C; c++)
                o[c] = hq[c];                      /* residual */
            for (int k = 0; k <= q; k++)
                for (int c = 0; c < C; c++)
                    o[c] += p[k] * h[((size_t)b * T + k) * C + c];
        }
}

/* Backward of one layer for batch item b, with Pb (T, T) restored from the
 * store: dh += g + Pb^T g + (dA + dA^T) h / sqrt(C), dw += <dS, A>. */
static float attn_bwd_block(float wl, int b, const float *h, const float *Pb,
                            const float *g, float *dh)
{
    const float sc = 1.0f / sqrtf((float)C);
    const float *hb = h + (size_t)b * T * C, *gb = g + (size_t)b * T * C;
    float *db = dh + (size_t)b * T * C, dw = 0;
    for (int i = 0; i < T * C; i++)
        db[i] += gb[i];
    for (int q = 0; q < T; q++) {
        const float *p = Pb + (size_t)q * T, *gq = gb + (size_t)q * C;
        float dp[T], dot = 0;
        for (int k = 0; k <= q; k++) {
            dp[k] = 0;
            for (int c = 0; c < C; c++)
                dp[k] += gq[c] * hb[(size_t)k * C + c];
            dot += dp[k] * p[k];
            for (int c = 0; c < C; c++)          /* P^T g */
                db[(size_t)k * C + c] += p[k] * gq[c];
        }
        for (int k = 0; k <= q; k++) {
            float ds = p[k] * (dp[k] - dot), a = 0;   /* softmax backward */
            for (int c = 0; c < C; c++)
                a += hb[(size_t)q * C + c] * hb[(size_t)k * C + c];
            dw += ds * a * sc;
            float da = wl * ds * sc;
            for (int c = 0; c < C; c++) {
                db[(size_t)q * C + c] += da * hb[(size_t)k * C + c];
                db[(size_t)k * C + c] += da * hb[(size_t)q * C + c];
            }
        }
    }
    return dw;
}

static as_save_info p_info(int l, char *name)
{
    snprintf(name, 32, "attn.%d.p", l);
    as_save_info si = {.kind = AS_KIND_SOFTMAX_OUTPUT, .layer = name};
    si.meta.softmax = (as_softmax_meta){.row_len = T, .queries = T,
                                        .causal = true};
    return si;
}

static as_tensor tensor(void *data, int64_t d1, int64_t d2)
{
    return (as_tensor){.data = data, .dtype = AS_F32, .ndim = 3,
                       .shape = {B, d1, d2}};
}

int main(int argc, char **argv)
{
    const char *shape = "layers", *policy = "default=keep";
    int steps = 12;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--shape"))
            shape = argv[i + 1];
        else if (!strcmp(argv[i], "--policy"))
            policy = argv[i + 1];
        else if (!strcmp(argv[i], "--steps"))
            steps = atoi(argv[i + 1]);
    }
    const bool slab = !strcmp(shape, "slab");
    if ((!slab && strcmp(shape, "layers")) || steps < 1) {
        fprintf(stderr, "usage: integration_example --shape layers|slab "
                "[--policy SPEC] [--steps N]\n");
        return 2;
    }
    /* 1. One store per training process; strict: a policy that does not
     * apply, or metadata that contradicts a tensor, is an error. */
    char err[256];
    as_store_config cfg = {.policy = policy, .strict = true,
                           .label = "example"};
    if (as_store_create(&cfg, &S, err, sizeof err)) {
        fprintf(stderr, "integration_example: %s\n", err);
        return 1;
    }
    A = as_store_arena(S);

    const size_t hsz = sizeof(float) * B * T * C, psz = sizeof(float) * B * T * T;
    float *target = malloc(hsz), *x0 = malloc(hsz);
    for (size_t i = 0; i < (size_t)B * T * C; i++) {
        x0[i] = 2 * frand();
        target[i] = 2 * frand();
    }
    for (int l = 0; l < L; l++)
        w[l] = 1.0f;
    /* the slab: h_0 .. h_L (it used to hold every P as well) */
    as_block slab_blk = {0};
    if (slab)
        slab_blk = act_alloc(hsz * (L + 1));
    as_block pb = act_alloc(sizeof(float) * T * T);   /* one block of P */
    as_block gbk = act_alloc(hsz), dbk = act_alloc(hsz);
    float *Pb = pb.ptr, *g = gbk.ptr, *dh = dbk.ptr;
    uint64_t arena_peak = 0, raw_peak = 0, stored_peak = 0;
    double loss0 = 0, loss = 0;

    for (int step = 0; step < steps; step++) {
        /* 2. Mark the step and its phases. */
        as_store_step_begin(S, (uint64_t)step);
        as_store_phase(S, AS_PHASE_FORWARD);
        as_handle hh[L], hp[L];
        as_block hblk[L + 1] = {{0}};
        float *h = slab ? (float *)slab_blk.ptr : (hblk[0] = act_alloc(hsz)).ptr;
        memcpy(h, x0, hsz);
        for (int l = 0; l < L; l++) {
            char name[32], hname[32];
            snprintf(hname, sizeof hname, "attn.%d.h", l);
            as_save_info hi = {.kind = AS_KIND_ATTENTION_INPUT, .layer = hname};
            float *next = slab ? (float *)slab_blk.ptr + (size_t)(l + 1) * B * T * C
                               : (hblk[l + 1] = act_alloc(hsz)).ptr;
            /* 3. Compute P into a buffer of its own and hand it over. */
            as_block p = act_alloc(psz);
            attn_fwd(w[l], h, p.ptr, next);
            as_save_info pi = p_info(l, name);
            as_tensor pt = tensor(p.ptr, T, T);
            if (slab) {
                /* the store owns the block from here on (keep: no copy) */
                CHECK(as_store_save_adopt(S, &pi, &pt, &p, &hp[l]));
            } else {
                CHECK(as_store_save(S, &pi, &pt, &hp[l]));
                as_free(A, &p);              /* the store has its own copy */
            }
            as_tensor ht = tensor(h, T, C);
            CHECK(as_store_save(S, &hi, &ht, &hh[l]));
            if (!slab)
                as_free(A, &hblk[l]);
            h = next;
        }
        loss = 0;
        for (size_t i = 0; i < (size_t)B * T * C; i++) {
            g[i] = h[i] - target[i];
            loss += 0.5 * g[i] * g[i];
        }
        if (!slab)
            as_free(A, &hblk[L]);
        if (step == 0)
            loss0 = loss;

        /* 4. Backward: everything comes back from the store. */
        as_store_phase(S, AS_PHASE_BACKWARD);
        for (int l = L - 1; l >= 0; l--) {
            const as_tensor *hv;
            CHECK(as_store_restore_view(S, hh[l], &hv));
            memset(dh, 0, hsz);
            float dw = 0;
            for (int b = 0; b < B; b++) {
                CHECK(as_store_restore_rows(S, hp[l], (int64_t)b * T, T, Pb));
                dw += attn_bwd_block(w[l], b, hv->data, Pb, g, dh);
            }
            CHECK(as_store_release(S, hp[l]));
            CHECK(as_store_release(S, hh[l]));
            memcpy(g, dh, hsz);
            w[l] -= 0.5f * dw / (float)(B * T);
        }
        as_store_phase(S, AS_PHASE_OPTIMIZER);

        /* 5. Per-step figures, then end the step. */
        as_arena_snapshot snap;
        CHECK(as_arena_snapshot_take(A, UINT64_MAX, &snap));
        if (snap.total.peak_usable > arena_peak)
            arena_peak = snap.total.peak_usable;
        as_arena_snapshot_free(&snap);
        as_store_stats st;
        CHECK(as_store_stats_take(S, &st));
        const as_store_counter *k = &st.kinds[AS_KIND_SOFTMAX_OUTPUT];
        if (k->raw_peak > raw_peak)
            raw_peak = k->raw_peak, stored_peak = k->stored_peak;
        as_store_stats_free(&st);
        as_store_step_end(S);
    }
    printf("{\"shape\":\"%s\",\"policy\":\"%s\",\"steps\":%d,"
           "\"arena_peak_bytes\":%llu,\"softmax_raw_peak_bytes\":%llu,"
           "\"softmax_stored_peak_bytes\":%llu,\"loss_first\":%.9g,"
           "\"loss_last\":%.9g}\n", shape, policy, steps,
           (unsigned long long)arena_peak, (unsigned long long)raw_peak,
           (unsigned long long)stored_peak, loss0, loss);
    as_free(A, &pb);
    as_free(A, &gbk);
    as_free(A, &dbk);
    as_free(A, &slab_blk);
    as_store_destroy(S);
    free(target);
    free(x0);
    return 0;
}
