/*
 * Context, allocation, store access and parameters of the reference
 * framework (see nn.h).
 *
 * Store access goes to the activation store when the context has one, else
 * to a minimal built-in keep table (copy at save).
 */
#include "layers/nn.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/simd.h"

struct as_nn_slot {
    bool      used;
    as_block  blk;
    as_tensor t;
};

void as_nn_ctx_init(as_nn_ctx *c, as_store *store, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->store = store;
    c->arena = store ? as_store_arena(store) : NULL;
    c->training = true;
    c->seed = seed;
}

void as_nn_ctx_fini(as_nn_ctx *c)
{
    as_nn_step_end(c);
    free(c->slots);
    c->slots = NULL;
    c->nslots = 0;
}

void as_nn_ctx_train(as_nn_ctx *c, bool training)
{
    c->training = training;
    if (c->store)
        as_store_set_grad(c->store, training);
}

int as_nn_fail(as_nn_ctx *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return code;
}

uint16_t as_nn_layer_id(as_nn_ctx *c, const char *name)
{
    uint16_t id = AS_LAYER_NONE;
    if (c->arena && as_arena_layer_register(c->arena, name, &id) != 0)
        id = AS_LAYER_NONE;
    return id;
}

int as_nn_alloc(as_nn_ctx *c, size_t bytes, uint16_t tag, uint16_t layer,
                bool zero, as_block *out)
{
    memset(out, 0, sizeof *out);
    if (bytes == 0)
        return 0;
    if (c->arena) {
        int rc = zero ? as_calloc(c->arena, bytes, tag, layer, out)
                      : as_alloc(c->arena, bytes, tag, layer, out);
        if (rc)
            return as_nn_fail(c, rc, "allocating %zu bytes: %s", bytes,
                              as_arena_last_error(c->arena));
        return 0;
    }
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0)
        return as_nn_fail(c, AS_ENOMEM, "allocating %zu bytes", bytes);
    if (zero)
        memset(p, 0, bytes);
    out->ptr = p;
    out->size = out->usable = bytes;
    out->tag = tag;
    out->layer = layer;
    return 0;
}

void as_nn_free(as_nn_ctx *c, as_block *b)
{
    if (!b->ptr)
        return;
    if (c->arena)
        as_free(c->arena, b);
    else
        free(b->ptr);
    memset(b, 0, sizeof *b);
}

void as_nn_free_all(as_nn_ctx *c, as_block *const *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        as_nn_free(c, b[i]);
}

int as_nn_head_bwd(as_nn_ctx *c, as_nn_xent *loss, as_nn_linear *head,
                   uint16_t dl_layer, as_block *dx)
{
    as_block dl;
    size_t rows = (size_t)loss->N;
    int rc = as_nn_alloc(c, rows * (size_t)loss->V * sizeof(float), AS_TAG_WORKSPACE,
                         dl_layer, false, &dl);
    if (!rc)
        rc = as_nn_xent_bwd(c, loss, AS_NN_F(dl));
    if (!rc)
        rc = as_nn_alloc(c, rows * (size_t)head->in * sizeof(float), AS_TAG_WORKSPACE,
                         head->id, false, dx);
    if (!rc)
        rc = as_nn_linear_bwd(c, head, AS_NN_F(dl), AS_NN_F(*dx));
    as_nn_free(c, &dl);
    return rc;
}

as_tensor as_nn_image(const void *data, int dtype, as_op_layout l, int N,
                      int C, int H, int W)
{
    if (l == AS_OP_BLK16)
        return AS_NN_T(data, dtype, N, (C + AS_OP_BLK - 1) / AS_OP_BLK, H, W,
                       AS_OP_BLK);
    return AS_NN_T(data, dtype, N, C, H, W);
}

as_tensor as_nn_tensor(const void *data, int dtype, int ndim,
                       const int64_t *shape)
{
    as_tensor t;
    memset(&t, 0, sizeof t);
    assert(ndim >= 0 && ndim <= AS_MAX_DIMS);
    t.data = (void *)data;
    t.dtype = dtype;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t.shape[i] = shape[i];
    return t;
}

/* ---- built-in keep table --------------------------------------------- */

static size_t dtype_size(int dtype)
{
    switch (dtype) {
    case AS_F32: case AS_I32: return 4;
    case AS_F16: case AS_BF16: return 2;
    case AS_U8: return 1;
    default: return 0;
    }
}

static size_t tensor_bytes(const as_tensor *t)
{
    size_t n = dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}

/* A failed store call (rc < 0) as the context's error: "[layer: ]what:
 * <store's last error>"; rc otherwise. */
static int store_rc(as_nn_ctx *c, int rc, const char *layer, const char *what)
{
    if (rc >= 0)
        return rc;
    if (layer)
        return as_nn_fail(c, rc, "%s: %s: %s", layer, what,
                          as_store_last_error(c->store));
    return as_nn_fail(c, rc, "%s: %s", what, as_store_last_error(c->store));
}

/* store_rc for a save: the message names the layer and the kind. */
static int save_rc(as_nn_ctx *c, int rc, const as_save_info *info, const char *what)
{
    if (rc >= 0)
        return rc;
    return as_nn_fail(c, rc, "%s: %s (%s): %s", info->layer, what, as_kind_name(info->kind),
                      as_store_last_error(c->store));
}

static int table_slot(as_nn_ctx *c, as_handle h, const char *layer,
                      as_nn_slot **out)
{
    if (h.v == 0 || h.v > c->nslots || !c->slots[h.v - 1].used)
        return as_nn_fail(c, AS_EHANDLE, "%s: invalid saved-tensor handle %llu",
                          layer ? layer : "?", (unsigned long long)h.v);
    *out = &c->slots[h.v - 1];
    return 0;
}

/* The f32 values of a table slot: n of them, L in the last dimension. */
static int table_floats(as_nn_ctx *c, as_handle h, const char *layer,
                        const float **x, size_t *n, int64_t *L)
{
    as_nn_slot *s = NULL;
    int rc = table_slot(c, h, layer, &s);
    if (rc)
        return rc;
    *x = s->t.data;
    *n = tensor_bytes(&s->t) / sizeof(float);
    *L = s->t.shape[s->t.ndim - 1];
    return 0;
}

static int table_save(as_nn_ctx *c, const as_save_info *info,
                      const as_tensor *t, as_handle *h)
{
    size_t i = 0;
    while (i < c->nslots && c->slots[i].used)
        i++;
    if (i == c->nslots) {
        size_t n = c->nslots ? 2 * c->nslots : 64;
        as_nn_slot *s = realloc(c->slots, n * sizeof *s);
        if (!s)
            return as_nn_fail(c, AS_ENOMEM, "save table");
        memset(s + c->nslots, 0, (n - c->nslots) * sizeof *s);
        c->slots = s;
        c->nslots = n;
    }
    as_nn_slot *s = &c->slots[i];
    size_t bytes = tensor_bytes(t);
    int rc = as_nn_alloc(c, bytes, AS_TAG_SAVED, AS_LAYER_NONE, false, &s->blk);
    if (rc)
        return rc;
    if (bytes && t->data)   /* no data: a row save fills it */
        memcpy(s->blk.ptr, t->data, bytes);
    s->t = *t;
    s->t.data = s->blk.ptr;
    s->used = true;
    h->v = i + 1;
    (void)info;
    return 0;
}

/* ---- store access ------------------------------------------------------ */

int as_nn_save(as_nn_ctx *c, const as_save_info *info, const as_tensor *t,
               as_handle *h)
{
    *h = AS_HANDLE_NULL;
    if (!c->training)
        return 0;
    if (c->store)
        return save_rc(c, as_store_save(c->store, info, t, h), info, "save");
    return table_save(c, info, t, h);
}

int as_nn_save_rows_begin(as_nn_ctx *c, const as_save_info *info,
                          const as_tensor *t, as_handle *h)
{
    *h = AS_HANDLE_NULL;
    if (!c->training)
        return 0;
    if (!c->store) {
        as_tensor shape = *t;
        shape.data = NULL;
        return table_save(c, info, &shape, h);
    }
    return save_rc(c, as_store_save_rows_begin(c->store, info, t, h), info, "save rows");
}

int as_nn_save_rows_append(as_nn_ctx *c, as_handle h, const char *layer,
                           int64_t row0, int64_t nrows, const void *rows)
{
    if (as_handle_is_null(h))
        return 0;
    if (!c->store) {
        as_nn_slot *s = NULL;
        int rc = table_slot(c, h, layer, &s);
        if (rc)
            return rc;
        size_t rb = tensor_bytes(&s->t) / (size_t)(as_tensor_numel(&s->t) /
                                                   s->t.shape[s->t.ndim - 1]);
        memcpy((char *)s->t.data + (size_t)row0 * rb, rows, (size_t)nrows * rb);
        return 0;
    }
    return store_rc(c, as_store_save_rows_append(c->store, h, rows, nrows),
                    layer, "save rows");
}

int as_nn_save_rows_end(as_nn_ctx *c, as_handle h, const char *layer)
{
    if (as_handle_is_null(h) || !c->store)
        return 0;
    return store_rc(c, as_store_save_rows_end(c->store, h), layer,
                    "save rows");
}

int as_nn_view(as_nn_ctx *c, as_handle h, const char *layer, const void **data)
{
    if (c->store) {
        const as_tensor *v = NULL;
        int rc = store_rc(c, as_store_restore_view(c->store, h, &v), layer,
                          "restore");
        if (rc)
            return rc;
        *data = v->data;
        return 0;
    }
    as_nn_slot *s = NULL;
    int rc = table_slot(c, h, layer, &s);
    if (rc)
        return rc;
    *data = s->t.data;
    return 0;
}

int as_nn_in_place(as_nn_ctx *c, as_handle h, const char *layer)
{
    if (!c->store)
        return 1;
    return store_rc(c, as_store_is_in_place(c->store, h), layer, "restore");
}

int as_nn_rows(as_nn_ctx *c, as_handle h, int64_t row0, int64_t nrows,
               float *dst)
{
    if (c->store)
        return store_rc(c, as_store_restore_rows(c->store, h, row0, nrows, dst),
                        NULL, "restore rows");
    const float *x;
    size_t n;
    int64_t L;
    int rc = table_floats(c, h, "rows", &x, &n, &L);
    if (rc)
        return rc;
    memcpy(dst, x + row0 * L, sizeof(float) * (size_t)(nrows * L));
    return 0;
}

int as_nn_softmax_bwd_saved(as_nn_ctx *c, as_handle h, const float *dy,
                            float *dx)
{
    if (c->store)
        return store_rc(c, as_store_softmax_backward(c->store, h, dy, dx), NULL,
                        "softmax backward");
    const float *y;
    size_t n;
    int64_t L;
    int rc = table_floats(c, h, "softmax", &y, &n, &L);
    if (rc)
        return rc;
    as_op_softmax_bwd(n / (size_t)L, (int)L, y, dy, dx);
    return 0;
}

int as_nn_act_bwd_saved(as_nn_ctx *c, as_handle h, int fn, float alpha,
                        const float *dy, float *dx)
{
    if (c->store)
        return store_rc(c, as_store_act_backward(c->store, h, dy, dx), NULL,
                        "activation backward");
    const float *x;
    size_t n;
    int64_t L;
    int rc = table_floats(c, h, "activation", &x, &n, &L);
    if (rc)
        return rc;
    if (fn == AS_FN_GELU)
        as_op_gelu_bwd(n, x, dy, dx);
    else
        as_op_leaky_bwd(n, fn == AS_FN_RELU ? 0.0f : alpha, x, dy, dx);
    return 0;
}

void as_nn_release(as_nn_ctx *c, as_handle *h)
{
    if (as_handle_is_null(*h))
        return;
    if (c->store) {
        as_store_release(c->store, *h);
        *h = AS_HANDLE_NULL;
        return;
    }
    if (h->v <= c->nslots && c->slots[h->v - 1].used) {
        as_nn_free(c, &c->slots[h->v - 1].blk);
        c->slots[h->v - 1].used = false;
    }
    *h = AS_HANDLE_NULL;
}

/* Sum of squares in double over 16 partial sums: one running sum is a
 * chain of dependent adds (the store validates the norm only, so the
 * order does not matter). */
AS_CLONES_V4_V3 static double sum_squares(const float *x, size_t n)
{
    double acc[16] = {0}, s = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            acc[k] += (double)x[i + k] * x[i + k];
    for (; i < n; i++)
        s += (double)x[i] * x[i];
    for (int k = 0; k < 16; k++)
        s += acc[k];
    return s;
}

void as_nn_report_grad(as_nn_ctx *c, as_handle h, const float *dy, size_t n)
{
    if (!c->store || as_handle_is_null(h))
        return;
    double s = sum_squares(dy, n);
    if (isfinite(s))
        as_store_report_grad(c->store, h, sqrt(s));
}

void as_nn_step_end(as_nn_ctx *c)
{
    for (size_t i = 0; i < c->nslots; i++)
        if (c->slots[i].used) {
            as_nn_free(c, &c->slots[i].blk);
            c->slots[i].used = false;
        }
}

/* ---- rng ---------------------------------------------------------------- */

uint64_t as_nn_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float as_nn_randu(uint64_t *s)
{
    return (float)(as_nn_rand(s) >> 40) * (1.0f / 16777216.0f);
}

float as_nn_randn(uint64_t *s)
{
    float u1 = as_nn_randu(s), u2 = as_nn_randu(s);
    if (u1 < 1e-12f)
        u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* ---- parameters ---------------------------------------------------------- */

int as_nn_param_new(as_nn_ctx *c, as_nn_params *ps, const char *name,
                    uint16_t layer, size_t n, float scale, float fill,
                    bool decay, uint64_t *rng, as_nn_param **out)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 32;
        as_nn_param **p = realloc(ps->p, cap * sizeof *p);
        if (!p)
            return as_nn_fail(c, AS_ENOMEM, "parameter list");
        ps->p = p;
        ps->cap = cap;
    }
    as_nn_param *p = calloc(1, sizeof *p);
    if (!p)
        return as_nn_fail(c, AS_ENOMEM, "parameter %s", name);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->n = n;
    p->decay = decay;
    p->layer = layer;
    p->version = 1;
    int rc = as_nn_alloc(c, n * sizeof(float), AS_TAG_WEIGHTS, layer, false, &p->w);
    if (!rc)
        rc = as_nn_alloc(c, n * sizeof(float), AS_TAG_GRADIENTS, layer, true, &p->g);
    if (rc) {
        as_nn_free(c, &p->w);
        free(p);
        return rc;
    }
    float *w = AS_NN_F(p->w);
    for (size_t i = 0; i < n; i++)
        w[i] = scale > 0.0f ? (2.0f * as_nn_randu(rng) - 1.0f) * scale : fill;
    ps->p[ps->n++] = p;
    if (out)
        *out = p;
    return 0;
}

void as_nn_params_free(as_nn_ctx *c, as_nn_params *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        as_nn_param *p = ps->p[i];
        as_nn_free(c, &p->w);
        as_nn_free(c, &p->g);
        as_nn_free(c, &p->m);
        as_nn_free(c, &p->v);
        free(p);
    }
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

void as_nn_params_zero_grad(as_nn_params *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        memset(ps->p[i]->g.ptr, 0, ps->p[i]->n * sizeof(float));
}

size_t as_nn_params_count(const as_nn_params *ps)
{
    size_t n = 0;
    for (size_t i = 0; i < ps->n; i++)
        n += ps->p[i]->n;
    return n;
}
