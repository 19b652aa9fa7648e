/*
 * Softmax codecs: spec parsing, bytes per row, scratch, the
 * row dispatch over the row codecs of softmax/soa.c and softmax/log.c,
 * half floats. Whole tensors: softmax/tensor.c.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/common.h"
#include "store/policies/softmax/softmax.h"
#include "allocator/fault.h"

/* ---- half floats ------------------------------------------------------------ */

uint16_t as__sm_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ex = (x >> 23) & 0xffu, man = x & 0x7fffffu;
    if (ex == 0xffu)
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    int e = (int)ex - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        int sh = 14 - e;
        uint32_t h = man >> sh, rem = man & ((1u << sh) - 1), half = 1u << (sh - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++;    /* may carry into the exponent: still right (to inf) */
    return (uint16_t)(sign | h);
}

float as__sm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t ex = (h >> 10) & 31u, man = h & 1023u, x;
    if (ex == 0) {
        float f = (float)man * (1.0f / 16777216.0f);   /* man * 2^-24 */
        return sign ? -f : f;
    }
    if (ex == 31)
        x = sign | 0x7f800000u | (man << 13);
    else
        x = sign | ((ex + 112u) << 23) | (man << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* ---- specs -------------------------------------------------------------------- */

static int sm_spec_err(char *err, size_t errlen, size_t *err_off, size_t off,
                       const char *what)
{
    if (err && errlen)
        snprintf(err, errlen, "offset %zu: expected %s", off, what);
    if (err_off)
        *err_off = off;
    return AS_ESPEC;
}

/* Next ':'-separated field of s[*pos..len): [*a, *b). */
static bool sm_field(const char *s, size_t len, size_t *pos, size_t *a,
                     size_t *b)
{
    if (*pos > len)
        return false;
    *a = *pos;
    size_t i = *pos;
    while (i < len && s[i] != ':')
        i++;
    *b = i;
    *pos = i + 1;
    return true;
}

static bool sm_num(const char *s, size_t a, size_t b, double lo, double hi,
                   bool integer, double *out)
{
    char buf[32];
    if (b <= a || b - a >= sizeof buf)
        return false;
    memcpy(buf, s + a, b - a);
    buf[b - a] = 0;
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end || errno || !(v >= lo && v <= hi))
        return false;
    if (integer && v != floor(v))
        return false;
    *out = v;
    return true;
}

int as__sm_parse(const char *spec, size_t len, as__sm_params *out, char *err,
                size_t errlen, size_t *err_off)
{
    as__sm_params p = {.kind = AS_SM_SOA, .s = 5, .bits = 4, .k = 16};
    size_t pos = 0, a, b;
    double v;
    sm_field(spec, len, &pos, &a, &b);
#define IS(name) (b - a == strlen(name) && !memcmp(spec + a, name, b - a))
    if (IS("keep"))
        p.kind = AS_SM_KEEP;
    else if (IS("fp16"))
        p.kind = AS_SM_FP16;
    else if (IS("soa"))
        p.kind = AS_SM_SOA;
    else if (IS("solog"))
        p.kind = AS_SM_LOG;
    else if (IS("sotk")) {
        p.kind = AS_SM_TOPK;
        p.bits = 3;
    } else
        return sm_spec_err(err, errlen, err_off, a,
                           "softmax codec keep, fp16, soa, solog or sotk");
    int field = 0;
    while (pos <= len && sm_field(spec, len, &pos, &a, &b)) {
        field++;
        switch (p.kind) {
        case AS_SM_SOA:
            if (field == 1) {
                if (!sm_num(spec, a, b, 1, 128, true, &v))
                    return sm_spec_err(err, errlen, err_off, a,
                                       "S, an integer 1..128");
                p.s = (int)v;
            } else if (field == 2 && IS("fullden")) {
                p.fullden = true;
            } else {
                return sm_spec_err(err, errlen, err_off, a,
                                   field == 2 ? "'fullden' or end"
                                              : "end of soa arguments");
            }
            break;
        case AS_SM_LOG:
            if (field == 1 && sm_num(spec, a, b, 2, 4, true, &v))
                p.bits = (int)v;
            else
                return sm_spec_err(err, errlen, err_off, a,
                                   field == 1 ? "bits, 2..4"
                                              : "end of solog arguments");
            break;
        case AS_SM_TOPK:
            if (field == 1 && sm_num(spec, a, b, 1, 255, true, &v))
                p.k = (int)v;
            else if (field == 2 && sm_num(spec, a, b, 2, 4, true, &v))
                p.bits = (int)v;
            else if (field == 3 && sm_num(spec, a, b, 0, 1, false, &v) &&
                     v < 1)
                p.mass = (float)v;
            else
                return sm_spec_err(err, errlen, err_off, a,
                    field == 1 ? "F (fine entries = n / F), an integer 1..255"
                    : field == 2 ? "bits, 2..4"
                    : field == 3 ? "mass P, 0 <= P < 1"
                                 : "end of sotk arguments");
            break;
        default:
            return sm_spec_err(err, errlen, err_off, a, "no arguments");
        }
    }
#undef IS
    *out = p;
    return 0;
}

char *as__sm_format(const as__sm_params *p, char *buf, size_t n)
{
    switch (p->kind) {
    case AS_SM_KEEP: snprintf(buf, n, "keep"); break;
    case AS_SM_FP16: snprintf(buf, n, "fp16"); break;
    case AS_SM_SOA:
        snprintf(buf, n, "soa:%d%s", p->s, p->fullden ? ":fullden" : "");
        break;
    case AS_SM_LOG: snprintf(buf, n, "solog:%d", p->bits); break;
    default:
        if (p->mass > 0.0f)
            snprintf(buf, n, "sotk:%d:%d:%g", p->k, p->bits, (double)p->mass);
        else
            snprintf(buf, n, "sotk:%d:%d", p->k, p->bits);
    }
    return buf;
}

/* ---- rows ----------------------------------------------------------------------- */

size_t as__sm_row_bytes(const as__sm_params *p, size_t n, size_t len)
{
    (void)len;
    if (n == 0)
        return 0;
    switch (p->kind) {
    case AS_SM_KEEP: return 4 * n;
    case AS_SM_FP16: return 2 * n;
    case AS_SM_SOA:
        if (n <= 2 * (size_t)p->s)
            return 4 * n;
        return (2 * (size_t)p->s + 1) * 4 + n * (n <= 256 ? 1 : 2);
    case AS_SM_LOG: return (n * (size_t)p->bits + 7) / 8;
    default: {
        size_t k = n / (size_t)p->k;
        size_t k0 = n < AS_SM_MIN_FINE ? n : AS_SM_MIN_FINE;
        return (n * (size_t)p->bits + 7) / 8 + (k < k0 ? k0 : k);
    }
    }
}

int as__sm_work_init(as__sm_work *w, size_t len)
{
    memset(w, 0, sizeof *w);
    size_t c = len ? len : 1;
    const size_t L = AS_SM_SOA_LANES;
    /* doubles first (8-byte aligned), then the 4-byte arrays, bytes last */
    size_t bytes = c * (L * sizeof(double) + L * sizeof(float) +
                        4 * sizeof(uint32_t) + sizeof(float) + 1);
    uint8_t *m = as__fmalloc(bytes);
    if (!m)
        return AS_ENOMEM;
    w->cap = c;
    w->tab = (double *)(void *)m;
    m += c * L * sizeof(double);
    w->val = (float *)(void *)m;
    m += c * L * sizeof(float);
    w->ord = (uint32_t *)(void *)m;
    w->tmp = w->ord + c;
    w->key = w->tmp + c;
    w->key2 = w->key + c;
    w->vals = (float *)(void *)(w->key2 + c);
    w->codes = (uint8_t *)(void *)(w->vals + c);
    return 0;
}

void as__sm_work_free(as__sm_work *w)
{
    free(w->tab);
    memset(w, 0, sizeof *w);
}

size_t as__sm_row_encode(const as__sm_params *p, const float *v, size_t n,
                        size_t len, uint8_t *out, as__sm_work *w)
{
    if (n == 0)
        return 0;
    switch (p->kind) {
    case AS_SM_KEEP:
        memcpy(out, v, 4 * n);
        return 4 * n;
    case AS_SM_FP16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = as__sm_f32_to_f16(v[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        return 2 * n;
    case AS_SM_SOA:
        return as__sm_soa_encode(p, v, n, len, out, w);
    default:
        return as__sm_log_encode(p, v, n, out, w);
    }
}

size_t as__sm_row_decode(const as__sm_params *p, const uint8_t *in, size_t n,
                        size_t len, float *v, as__sm_work *w)
{
    (void)len;
    if (n == 0)
        return 0;
    switch (p->kind) {
    case AS_SM_KEEP:
        memcpy(v, in, 4 * n);
        return 4 * n;
    case AS_SM_FP16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, in + 2 * i, 2);
            v[i] = as__sm_f16_to_f32(h);
        }
        return 2 * n;
    case AS_SM_SOA:
        return as__sm_soa_decode(p, in, n, v, w);
    default:
        return as__sm_log_decode(p, in, n, v, w);
    }
}

size_t as__sm_row_size(const as__sm_params *p, const uint8_t *in, size_t n,
                      size_t len)
{
    if (p->kind == AS_SM_TOPK && n > 0)
        return as__sm_log_row_size(p, in, n);
    return as__sm_row_bytes(p, n, len);
}
