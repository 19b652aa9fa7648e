/*
 * Policy rules: the spec parser (tables of valid specs with their
 * normalized form, and of invalid specs with the exact offset and what was
 * expected), glob matching, and the choice of a policy per tensor (layer
 * glob > kind > default, longest glob first, rules whose policy does not
 * handle the kind skipped).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "actstore/store.h"
#include "store/store_internal.h"
#include "support/test_main.h"

static void test_valid_specs(void **st)
{
    (void)st;
    static const struct { const char *spec, *norm; } tab[] = {
        {NULL, "default=keep"},
        {"", ""},
        {";;", ""},
        {"default=keep", "default=keep"},
        {" softmax = soa:5 ; conv_input=invert|zstd; layer:blocks.0.*=keep; default=keep",
         "softmax_output=soa:5; conv_input=invert|zstd; layer:blocks.0.*=keep; default=keep"},
        {"default=zstd:3", "default=zstd:3"},
        {"default=zstd:-3", "default=zstd:-3"},
        {"default=q4:64", "default=q4:64"},
        {"default=q2:g=64:seed=7", "default=q2:g=64:seed=7"},
        {"layer:a.?=fp16", "layer:a.?=fp16"},
        {"default=offload:/tmp/x", "default=offload:/tmp/x"},
        /* a policy's text is kept whole (it was cut at 47 bytes: the
         * normalized spec named another directory) */
        {"default=offload:/scratch/a-rather-long-directory/for-activations/run-0001",
         "default=offload:/scratch/a-rather-long-directory/for-activations/run-0001"},
        {"default=offload:", "default=offload"},
        {"linear_input=fp16 | bf16", "linear_input=fp16|bf16"},
        {"softmax_output=q8; generic=bf16;", "softmax_output=q8; generic=bf16"},
        {"layer:*=soa:3; default=fp16", "layer:*=soa:3; default=fp16"},
        {"conv_output=inverse|zstd; activation_output=derive",
         "conv_output=inverse|zstd; activation_output=derive"},
        {"index=keep; dropout_mask=zstd:19; pool_input=q8:8",
         "index=keep; dropout_mask=zstd:19; pool_input=q8:8"},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        char err[256] = "x";
        if (as_policy_check(tab[i].spec, err, sizeof err) != 0)
            fail_msg("spec '%s' rejected: %s", tab[i].spec, err);
        assert_string_equal(err, "");
        as_store_config cfg = {.policy = tab[i].spec};
        as_store *s = NULL;
        assert_int_equal(as_store_create(&cfg, &s, err, sizeof err), 0);
        as_store_stats a;
        assert_int_equal(as_store_stats_take(s, &a), 0);
        if (strcmp(a.spec, tab[i].norm))
            fail_msg("spec '%s' normalized to '%s', expected '%s'", tab[i].spec, a.spec,
                     tab[i].norm);
        as_store_stats_free(&a);
        as_store_destroy(s);
    }
}

static void test_invalid_specs(void **st)
{
    (void)st;
    static const struct { const char *spec, *msg; } tab[] = {
        {"default", "offset 7: expected '=' after the selector"},
        {"default=", "offset 8: expected a policy name"},
        {"default=nope", "offset 8: expected a policy name (unknown policy 'nope')"},
        {"defualt=keep", "offset 0: expected a selector (default, a kind name or "
                         "layer:GLOB), got 'defualt'"},
        {"=keep", "offset 0: expected a selector"},
        {"kind=keep", "got 'kind'"},
        {"layer:=keep", "offset 6: expected a layer glob after 'layer:'"},
        {"layer:x", "offset 7: expected '=' after the selector"},
        {"default=keep;default=zstd", "offset 13: expected one rule per selector (this one "
                                      "is already set at offset 0)"},
        {"layer:a=zstd; layer:a=keep", "offset 14: expected one rule per selector"},
        {"default=zstd:0", "offset 13: expected a level in [-7, 19] other than 0 "
                           "(arguments of zstd)"},
        {"default=zstd:20", "offset 13: expected a level in [-7, 19]"},
        {"default=zstd:abc", "offset 13: expected a level in [-7, 19] (arguments of zstd)"},
        {"default=zstd:3x", "offset 14: expected a level"},
        {"default=q4:g=7", "offset 13: expected a group size that is a multiple of 8 in "
                           "[8, 4096] (arguments of q4)"},
        {"default=q8:12", "offset 11: expected a group size that is a multiple of 8"},
        {"default=q2:x=1", "offset 11: expected group size (N or g=N) or seed=N"},
        {"default=q2:g=64:seed=", "offset 21: expected a number"},
        {"default=q8:g=8:g=16", "offset 15: expected group size given twice"},
        {"default=q8:16:g=32", "offset 14: expected group size given twice"},
        {"default=q4:seed=1:seed=2", "offset 18: expected seed given twice"},
        {"default=aq:g=8:g=16", "offset 15: expected an argument given twice"},
        {"default=aq:4:8", "offset 13: expected an argument given twice"},
        {"default=aq:rn:sr", "offset 14: expected an argument given twice"},
        {"default=keep:1", "offset 13: expected no arguments (arguments of keep)"},
        {"default=fp16:3", "offset 13: expected no arguments (arguments of fp16)"},
        {"default=keep|", "offset 13: expected a policy name"},
        {"default=keep|recompute", "offset 13: expected a codec as fallback ('recompute' "
                                   "is a regenerator)"},
        {"conv_input=soa:5", "offset 11: expected a policy for kind conv_input ('soa' "
                             "applies to softmax_output)"},
        {"default=keep extra", "offset 13: expected ';' or the end of the spec"},
        {"default=keep|zstd|fp16", "offset 17: expected ';' or the end of the spec"},
        {"softmax=soa:5; default=keep; generic", "offset 36: expected '=' after the "
                                                 "selector"},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        char err[256] = "";
        int rc = as_policy_check(tab[i].spec, err, sizeof err);
        if (rc != AS_ESPEC)
            fail_msg("spec '%s' accepted (rc %d)", tab[i].spec, rc);
        if (!strstr(err, tab[i].msg))
            fail_msg("spec '%s': message '%s', expected '%s'", tab[i].spec, err, tab[i].msg);
        /* the same through the store constructor */
        as_store_config cfg = {.policy = tab[i].spec};
        as_store *s = (as_store *)(uintptr_t)1;
        char err2[256] = "";
        assert_int_equal(as_store_create(&cfg, &s, err2, sizeof err2), AS_ESPEC);
        assert_null(s);
        assert_string_equal(err, err2);
    }
    /* a short error buffer truncates, never overflows; NULL is allowed */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    assert_int_equal(as_policy_check("default=", tiny, sizeof tiny), AS_ESPEC);
    assert_int_equal(tiny[7], 0);
    assert_int_equal(as_policy_check("default=", NULL, 0), AS_ESPEC);
}

static void test_set_policy_error_keeps_rules(void **st)
{
    (void)st;
    as_store *s = NULL;
    as_store_config cfg = {.policy = "default=zstd"};
    assert_int_equal(as_store_create(&cfg, &s, NULL, 0), 0);
    char err[128];
    assert_int_equal(as_store_set_policy(s, "default=zstd; layer:x=bogus", err, sizeof err),
                     AS_ESPEC);
    assert_string_equal(err, "offset 22: expected a policy name (unknown policy 'bogus')");
    as_store_stats a;
    assert_int_equal(as_store_stats_take(s, &a), 0);
    assert_string_equal(a.spec, "default=zstd");
    as_store_stats_free(&a);
    assert_int_equal(as_store_set_policy(s, "default=fp16", err, sizeof err), 0);
    assert_int_equal(as_store_stats_take(s, &a), 0);
    assert_string_equal(a.spec, "default=fp16");
    as_store_stats_free(&a);
    /* NULL is an error, not a silent reset to default=keep */
    assert_int_equal(as_store_set_policy(s, NULL, err, sizeof err), AS_EINVAL);
    assert_non_null(strstr(err, "NULL"));
    assert_int_equal(as_store_stats_take(s, &a), 0);
    assert_string_equal(a.spec, "default=fp16");
    as_store_stats_free(&a);
    as_store_destroy(s);
}

/* One rule per layer of a large model parses in linear time (the
 * duplicate-selector check was quadratic: 64k rules took 25 s): 64x the
 * rules take far less than 64^2 x the time (caches make it ~500x),
 * in any build. A duplicate far apart is still found. */
static char *many_rules(int n, size_t *len)
{
    size_t cap = (size_t)n * 40 + 64, k = 0;
    char *spec = malloc(cap);
    assert_non_null(spec);
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(spec + k, cap - k, "layer:blocks.%d.attn=%s; ", i,
                              i % 3 ? "keep" : "zstd");
    snprintf(spec + k, cap - k, "default=keep");
    *len = k;
    return spec;
}

static double parse_s(const char *spec)
{
    struct timespec t0, t1;
    char err[256] = "";
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(as_policy_check(spec, err, sizeof err), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

static void test_many_rules_linear(void **st)
{
    (void)st;
    size_t ks, kl;
    char *small = many_rules(1024, &ks), *large = many_rules(65536, &kl);
    double ts = 1e9, tl = 1e9;
    for (int r = 0; r < 3; r++) {   /* best of 3: a loaded host only slows */
        double a = parse_s(small), b = parse_s(large);
        ts = a < ts ? a : ts;
        tl = b < tl ? b : tl;
    }
    fprintf(stderr, "layer rules: 1024 parsed in %.4f s, 65536 in %.3f s (%.0fx)\n", ts, tl,
            tl / ts);
    assert_true(tl < 2000.0 * ts);
    /* the same selector again at the very end */
    char err[256];
    snprintf(large + kl, 64, "layer:blocks.7.attn=fp16");
    assert_int_equal(as_policy_check(large, err, sizeof err), AS_ESPEC);
    assert_non_null(strstr(err, "one rule per selector"));
    free(small);
    free(large);
}

static void test_glob(void **st)
{
    (void)st;
    static const struct { const char *pat, *s; bool match; } tab[] = {
        {"blocks.0.*", "blocks.0.attn", true},
        {"blocks.0.*", "blocks.0.", true},
        {"blocks.0.*", "blocks.01.attn", false},
        {"blocks.*.mlp", "blocks.11.mlp", true},
        {"blocks.*.mlp", "blocks.1.attn.mlp", true},   /* '*' crosses dots */
        {"blocks.*.mlp", "blocks.1.mlp.fc", false},
        {"*", "", true}, {"*", "anything.at.all", true},
        {"a?c", "abc", true}, {"a?c", "ac", false},
        {"*.fc?", "enc.fc1", true}, {"*.fc?", "enc.fc12", false},
        {"**a", "bbba", true},
        {"exact", "exact", true}, {"exact", "exac", false}, {"exact", "exactly", false},
        {"*a*b*c", "xxaxxbxxc", true}, {"*a*b*c", "xxaxxcxxb", false},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (as__glob_match(tab[i].pat, strlen(tab[i].pat), tab[i].s) != tab[i].match)
            fail_msg("glob '%s' on '%s': expected %s", tab[i].pat, tab[i].s,
                     tab[i].match ? "match" : "no match");
}

static const char *policy_for(as_store *s, int kind, const char *layer, int dtype)
{
    static float buf[64];
    as_tensor t = {.data = buf, .dtype = dtype, .ndim = 1, .shape = {16}};
    as_save_info i = {.kind = kind, .layer = layer};
    as_handle h;
    if (as_store_save(s, &i, &t, &h) != 0)
        return as_store_last_error(s);
    static char out[128];
    snprintf(out, sizeof out, "%s", as_store_policy_of(s, h));
    as_store_release(s, h);
    return out;
}

static void test_most_specific_wins(void **st)
{
    (void)st;
    as_store *s = NULL;
    as_store_config cfg = {
        .policy = "default=fp16; linear_input=bf16; norm_input=zstd:2; "
                  "layer:blocks.*=q8; layer:blocks.0.*=q4; layer:blocks.0.attn=keep; "
                  "layer:*.sm=soa:3"};
    char err[256] = "";
    assert_int_equal(as_store_create(&cfg, &s, err, sizeof err), 0);
    static const struct { int kind; const char *layer, *want; } tab[] = {
        {AS_KIND_GENERIC, "head", "fp16"},                    /* default */
        {AS_KIND_GENERIC, NULL, "fp16"},                      /* no layer */
        {AS_KIND_LINEAR_INPUT, "head", "bf16"},               /* kind > default */
        {AS_KIND_NORM_INPUT, "head", "zstd:2"},
        {AS_KIND_LINEAR_INPUT, "blocks.3.fc", "q8"},          /* layer > kind */
        {AS_KIND_LINEAR_INPUT, "blocks.0.fc", "q4"},          /* longer glob wins */
        {AS_KIND_LINEAR_INPUT, "blocks.0.attn", "keep"},      /* longest: exact */
        {AS_KIND_LINEAR_INPUT, "blocks.0.attnx", "q4"},
        /* soa only handles softmax outputs: the layer rule is skipped */
        {AS_KIND_LINEAR_INPUT, "enc.sm", "bf16"},
        {AS_KIND_GENERIC, "enc.sm", "fp16"},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        const char *got = policy_for(s, tab[i].kind, tab[i].layer, AS_F32);
        if (strcmp(got, tab[i].want))
            fail_msg("kind %s layer %s: policy '%s', expected '%s'",
                     as_kind_name(tab[i].kind), tab[i].layer ? tab[i].layer : "(null)",
                     got, tab[i].want);
    }
    /* no default rule at all: keep */
    assert_int_equal(as_store_set_policy(s, "generic=zstd", err, sizeof err), 0);
    assert_string_equal(policy_for(s, AS_KIND_LINEAR_INPUT, "x", AS_F32), "keep");
    assert_string_equal(policy_for(s, AS_KIND_GENERIC, "x", AS_F32), "zstd");
    /* a named fallback is used when the policy does not apply */
    assert_int_equal(as_store_set_policy(s, "default=q8|zstd", err, sizeof err), 0);
    const char *p = policy_for(s, AS_KIND_GENERIC, "ints", AS_I32);
    assert_non_null(strstr(p, "zstd (fallback from q8: dtype i32"));
    as_store_destroy(s);
}

static void test_kind_names(void **st)
{
    (void)st;
    for (int k = 0; k < AS_KIND_COUNT; k++) {
        const char *n = as_kind_name(k);
        assert_non_null(n);
        assert_int_equal(as_kind_from_name(n, strlen(n)), k);
    }
    assert_int_equal(as_kind_from_name("softmax", 7), AS_KIND_SOFTMAX_OUTPUT);
    assert_true(as_kind_from_name("softmaxx", 8) < 0);
    assert_true(as_kind_from_name("soft", 4) < 0);
    assert_null(as_kind_name(AS_KIND_COUNT));
    assert_null(as_kind_name(-1));
    assert_string_equal(as_dtype_name(AS_BF16), "bf16");
    assert_string_equal(as_dtype_name(42), "?");
    assert_int_equal(as_dtype_size(AS_U8), 1);
    assert_int_equal(as_dtype_size(42), 0);
}

/* Random specs built from the grammar's characters and words: every one
 * is accepted or rejected with "offset N: expected ...", N inside the
 * spec; never a crash (run under ASan in CI). */
static void test_random_specs(void **st)
{
    (void)st;
    static const char *const words[] = {
        "default", "softmax", "conv_input", "layer:", "blocks.*", "?", "=", "=", ";",
        ";", "|", ":", "keep", "zstd", "zstd:3", "q4", "g=", "64", "seed=", "fp16",
        "offload", "/tmp", "soa", "invert", "recompute", "inverse", " ", "-", "99999999999",
        "\t", "x", "*", "generic", "linear_input", "bf16:", "q2:g=8:seed=1"};
    uint64_t r = 12345;
    int accepted = 0;
    for (int k = 0; k < 20000; k++) {
        char spec[256] = "";
        size_t len = 0;
        int nw = 1 + (int)(r % 9);
        for (int w = 0; w < nw; w++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            const char *wd = words[(r >> 33) % (sizeof words / sizeof words[0])];
            size_t l = strlen(wd);
            if (len + l + 1 >= sizeof spec)
                break;
            memcpy(spec + len, wd, l + 1);
            len += l;
        }
        char err[200] = "";
        int rc = as_policy_check(spec, err, sizeof err);
        if (rc == 0) {
            accepted++;
            assert_string_equal(err, "");
            continue;
        }
        if (rc != AS_ESPEC)
            fail_msg("spec '%s': rc %d", spec, rc);
        unsigned long off = 0;
        if (sscanf(err, "offset %lu: expected ", &off) != 1 || off > len)
            fail_msg("spec '%s': message '%s'", spec, err);
    }
    assert_true(accepted > 0);
}

AS_TEST_MAIN(NULL, NULL,
             cmocka_unit_test(test_valid_specs),
             cmocka_unit_test(test_invalid_specs),
             cmocka_unit_test(test_set_policy_error_keeps_rules),
             cmocka_unit_test(test_many_rules_linear),
             cmocka_unit_test(test_glob),
             cmocka_unit_test(test_most_specific_wins),
             cmocka_unit_test(test_kind_names),
             cmocka_unit_test(test_random_specs))
