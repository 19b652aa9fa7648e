/*
 * Policy rules: the spec parser and the choice of a policy per tensor.
 *
 *     spec     := rule? (';' rule?)*          whitespace around tokens ignored
 *     rule     := selector '=' policy ('|' policy)?
 *     selector := 'default' | KIND | 'layer:' GLOB
 *     policy   := NAME (':' ARGS)?            ARGS: up to '|', ';' or end,
 *                                             parsed by the policy itself
 *
 * Errors name the byte offset in the spec and what was expected there. The
 * choice: the longest matching layer glob whose policy applies to the kind,
 * else the kind's rule, else default, else keep. A rule whose policy does
 * not handle the tensor's kind at all (soa on a conv input) is skipped, not
 * counted as a fallback: "layer:blocks.0.*=soa:3" only concerns softmax.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_internal.h"

static void free_polref(as_polref *p)
{
    if (p->ops && p->ops->free_params && p->params)
        p->ops->free_params(p->params);
    p->params = NULL;
    free((char *)p->text);
    p->text = NULL;
}

void as__rules_unref(as_rules *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free_polref(&r->rules[i].pol);
        if (r->rules[i].has_fallback)
            free_polref(&r->rules[i].fallback);
        free(r->rules[i].glob);
    }
    free(r->rules);
    free(r);
}

typedef struct parser {
    const char *s;
    size_t      n, i;
    char       *err;
    size_t      errlen;
} parser;

__attribute__((format(printf, 3, 4)))
static int fail(parser *p, size_t off, const char *fmt, ...)
{
    if (p->err && p->errlen) {
        int k = snprintf(p->err, p->errlen, "offset %zu: expected ", off);
        if (k >= 0 && (size_t)k < p->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + k, p->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return AS_ESPEC;
}

static void skip_ws(parser *p)
{
    while (p->i < p->n && isspace((unsigned char)p->s[p->i]))
        p->i++;
}

static bool is_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

static size_t scan_name(parser *p)
{
    size_t st = p->i;
    while (p->i < p->n && is_name_char(p->s[p->i]))
        p->i++;
    return p->i - st;
}

static bool kind_ok(const as_policy_ops *o, int kind)
{
    return o->kinds == 0 || (o->kinds & (1u << kind));
}

static void kinds_text(const as_policy_ops *o, char *buf, size_t len)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < AS_KIND_COUNT && k < len; i++)
        if (o->kinds & (1u << i))
            k += (size_t)snprintf(buf + k, len - k, "%s%s", k ? ", " : "",
                                  as_kind_name(i));
}

/* policy := NAME (':' ARGS)? ; `kind` >= 0 checks applicability. */
static int parse_policy(parser *p, int kind, as_polref *out)
{
    skip_ws(p);
    size_t off = p->i, len = scan_name(p);
    if (len == 0)
        return fail(p, off, "a policy name");
    const as_policy_ops *o = as_policy_find(p->s + off, len);
    if (!o)
        return fail(p, off, "a policy name (unknown policy '%.*s')", (int)len,
                    p->s + off);
    if (kind >= 0 && !kind_ok(o, kind)) {
        char kt[200];
        kinds_text(o, kt, sizeof kt);
        return fail(p, off, "a policy for kind %s ('%s' applies to %s)",
                    as_kind_name(kind), o->name, kt);
    }
    size_t aoff = p->i, alen = 0;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == ':') {
        p->i++;
        skip_ws(p);
        aoff = p->i;
        while (p->i < p->n && p->s[p->i] != '|' && p->s[p->i] != ';')
            p->i++;
        alen = p->i - aoff;
        while (alen && isspace((unsigned char)p->s[aoff + alen - 1]))
            alen--;
    }
    char perr[160] = "";
    size_t eoff = 0;
    void *params = NULL;
    int rc = o->parse(p->s + aoff, alen, &params, perr, sizeof perr, &eoff);
    if (rc < 0) {
        if (eoff > alen)
            eoff = alen;
        /* Policies may phrase it "expected X" or just "X". */
        const char *what = perr[0] ? perr : "valid arguments";
        if (!strncmp(what, "expected ", 9))
            what += 9;
        return fail(p, aoff + eoff, "%s (arguments of %s)", what, o->name);
    }
    out->ops = o;
    out->params = params;
    size_t tl = strlen(o->name) + 1 + alen + 1;
    char *text = malloc(tl);
    if (!text)
        return AS_ENOMEM;   /* params are freed with the rule */
    snprintf(text, tl, "%s%s%.*s", o->name, alen ? ":" : "", (int)alen, p->s + aoff);
    out->text = text;
    return 0;
}

static int parse_rule(parser *p, as_rule *r)
{
    skip_ws(p);
    size_t off = p->i;
    r->offset = off;
    size_t len = scan_name(p);
    int kind = -1;
    if (len == 5 && !memcmp(p->s + off, "layer", 5) && p->i < p->n &&
        p->s[p->i] == ':') {
        p->i++;
        size_t g0 = p->i;
        while (p->i < p->n && p->s[p->i] != '=' && p->s[p->i] != ';' &&
               !isspace((unsigned char)p->s[p->i]))
            p->i++;
        if (p->i == g0)
            return fail(p, g0, "a layer glob after 'layer:'");
        r->sel = AS_SEL_LAYER;
        r->glob_len = p->i - g0;
        r->glob = strndup(p->s + g0, r->glob_len);
        if (!r->glob)
            return AS_ENOMEM;
    } else if (len == 7 && !memcmp(p->s + off, "default", 7)) {
        r->sel = AS_SEL_DEFAULT;
    } else if (len > 0 && (kind = as_kind_from_name(p->s + off, len)) >= 0) {
        r->sel = AS_SEL_KIND;
        r->kind = kind;
    } else if (len == 0) {
        return fail(p, off, "a selector (default, a kind name or layer:GLOB)");
    } else {
        return fail(p, off, "a selector (default, a kind name or layer:GLOB), "
                    "got '%.*s'", (int)len, p->s + off);
    }
    skip_ws(p);
    if (p->i >= p->n || p->s[p->i] != '=')
        return fail(p, p->i, "'=' after the selector");
    p->i++;
    int rc = parse_policy(p, kind, &r->pol);
    if (rc < 0)
        return rc;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == '|') {
        p->i++;
        size_t foff = p->i;
        if ((rc = parse_policy(p, kind, &r->fallback)) < 0)
            return rc;
        r->has_fallback = true;
        if (r->fallback.ops->regenerator)
            return fail(p, foff, "a codec as fallback ('%s' is a regenerator)",
                        r->fallback.ops->name);
        skip_ws(p);
    }
    if (p->i < p->n && p->s[p->i] != ';')
        return fail(p, p->i, "';' or the end of the spec");
    return 0;
}

static bool same_selector(const as_rule *a, const as_rule *b)
{
    if (a->sel != b->sel)
        return false;
    if (a->sel == AS_SEL_KIND)
        return a->kind == b->kind;
    if (a->sel == AS_SEL_LAYER)
        return a->glob_len == b->glob_len && !strcmp(a->glob, b->glob);
    return true;
}

/* Selectors seen so far, for the one-rule-per-selector check in linear
 * time (a spec may carry a rule for every layer of a large model). Open
 * addressing; each slot keeps the selector's hash, so a probe reads a rule
 * (a cache miss in a large spec) only when the hashes agree. */
typedef struct sel_slot {
    uint64_t hash;
    size_t   idx;      /* rule index + 1; 0 = empty */
} sel_slot;

typedef struct sel_set {
    sel_slot *slot;
    size_t    cap;     /* power of two, > 2 x entries */
} sel_set;

static uint64_t sel_hash(const as_rule *u)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)u->sel;
    if (u->sel == AS_SEL_KIND)
        h = (h ^ (uint64_t)u->kind) * 1099511628211ull;
    else if (u->sel == AS_SEL_LAYER)
        for (size_t i = 0; i < u->glob_len; i++)
            h = (h ^ (unsigned char)u->glob[i]) * 1099511628211ull;
    h ^= h >> 33;   /* mix the high bits down: the table uses the low ones */
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

/* The index of an earlier rule with the selector of rule `at`, or
 * SIZE_MAX after inserting it; AS_ENOMEM as (size_t)-2. */
static size_t sel_set_add(sel_set *t, const as_rule *rules, size_t at)
{
    if (2 * (at + 1) >= t->cap) {
        size_t ncap = t->cap ? 2 * t->cap : 64;
        sel_slot *ns = calloc(ncap, sizeof *ns);
        if (!ns)
            return (size_t)-2;
        for (size_t k = 0; k < t->cap; k++)
            if (t->slot[k].idx) {
                size_t h = (size_t)t->slot[k].hash & (ncap - 1);
                while (ns[h].idx)
                    h = (h + 1) & (ncap - 1);
                ns[h] = t->slot[k];
            }
        free(t->slot);
        t->slot = ns;
        t->cap = ncap;
    }
    uint64_t hv = sel_hash(&rules[at]);
    size_t h = (size_t)hv & (t->cap - 1);
    for (; t->slot[h].idx; h = (h + 1) & (t->cap - 1))
        if (t->slot[h].hash == hv && same_selector(&rules[t->slot[h].idx - 1], &rules[at]))
            return t->slot[h].idx - 1;
    t->slot[h] = (sel_slot){hv, at + 1};
    return SIZE_MAX;
}

static void normalize(as_rules *r)
{
    size_t k = 0, cap = sizeof r->spec;
    r->spec[0] = 0;
    for (size_t i = 0; i < r->n && k < cap; i++) {
        const as_rule *u = &r->rules[i];
        const char *sel = u->sel == AS_SEL_DEFAULT ? "default"
                        : u->sel == AS_SEL_KIND ? as_kind_name(u->kind) : NULL;
        int w = sel ? snprintf(r->spec + k, cap - k, "%s%s=%s", i ? "; " : "",
                               sel, u->pol.text)
                    : snprintf(r->spec + k, cap - k, "%slayer:%s=%s",
                               i ? "; " : "", u->glob, u->pol.text);
        if (w < 0)
            break;
        k += (size_t)w;
        if (u->has_fallback && k < cap) {
            w = snprintf(r->spec + k, cap - k, "|%s", u->fallback.text);
            if (w > 0)
                k += (size_t)w;
        }
    }
}

int as__rules_parse(const char *spec, as_rules **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    if (!spec)
        spec = "default=keep";
    as_rules *r = calloc(1, sizeof *r);
    if (!r)
        return AS_ENOMEM;
    atomic_init(&r->refs, 1);
    parser p = {spec, strlen(spec), 0, err, errlen};
    size_t cap = 0;
    int rc = 0;
    sel_set seen = {0};
    while (p.i <= p.n) {
        skip_ws(&p);
        if (p.i >= p.n)
            break;
        if (p.s[p.i] == ';') {
            p.i++;
            continue;
        }
        if (r->n == cap) {
            cap = cap ? cap * 2 : 8;
            as_rule *nr = realloc(r->rules, cap * sizeof *nr);
            if (!nr) {
                rc = AS_ENOMEM;
                break;
            }
            r->rules = nr;
        }
        as_rule *u = &r->rules[r->n++];
        memset(u, 0, sizeof *u);
        if ((rc = parse_rule(&p, u)) < 0)
            break;
        size_t j = sel_set_add(&seen, r->rules, r->n - 1);
        if (j == (size_t)-2) {
            rc = AS_ENOMEM;
            break;
        }
        if (j != SIZE_MAX) {
            rc = fail(&p, u->offset, "one rule per selector (this one is "
                      "already set at offset %zu)", r->rules[j].offset);
            break;
        }
    }
    free(seen.slot);
    if (rc < 0) {
        if (rc == AS_ENOMEM && err && errlen)
            snprintf(err, errlen, "out of memory parsing the spec");
        as__rules_unref(r);
        return rc;
    }
    normalize(r);
    for (size_t i = 0; i < r->n; i++)
        r->has_auto |= !strcmp(r->rules[i].pol.ops->name, "auto");
    *out = r;
    return 0;
}

int as_policy_check(const char *spec, char *err, size_t errlen)
{
    as_rules *r;
    int rc = as__rules_parse(spec, &r, err, errlen);
    as__rules_unref(r);
    return rc;
}

/* '*' matches any run (dots included), '?' one character. Iterative with
 * one backtrack point, so linear in practice. */
bool as__glob_match(const char *pat, size_t plen, const char *s)
{
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;
    size_t slen = strlen(s);
    while (si < slen) {
        if (pi < plen && (pat[pi] == '?' || pat[pi] == s[si])) {
            pi++;
            si++;
        } else if (pi < plen && pat[pi] == '*') {
            star = pi++;
            mark = si;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++mark;
        } else {
            return false;
        }
    }
    while (pi < plen && pat[pi] == '*')
        pi++;
    return pi == plen;
}

static bool is_conv_input_regenerator(const as_polref *p)
{
    return p && p->ops->regenerator &&
           p->ops->kinds == (1u << AS_KIND_CONV_INPUT);
}

void as__rules_select(const as_rules *r, int kind, const char *layer,
                      as_plan *plan)
{
    const as_rule *best = NULL, *bykind = NULL, *def = NULL, *convin = NULL;
    for (size_t i = 0; i < r->n; i++) {
        const as_rule *u = &r->rules[i];
        if (u->sel == AS_SEL_KIND && u->kind == AS_KIND_CONV_INPUT)
            convin = u;
        if (!kind_ok(u->pol.ops, kind))
            continue;
        if (u->sel == AS_SEL_LAYER) {
            if (layer && (!best || u->glob_len > best->glob_len) &&
                as__glob_match(u->glob, u->glob_len, layer))
                best = u;
        } else if (u->sel == AS_SEL_KIND) {
            if (u->kind == kind)
                bykind = u;
        } else {
            def = u;
        }
    }
    const as_rule *u = best ? best : bykind ? bykind : def;
    plan->pol = u ? &u->pol : NULL;
    plan->fallback = u && u->has_fallback ? &u->fallback : NULL;
    plan->pending_inverse = 0;
    if (plan->pol && plan->pol->ops == &as_policy_inverse) {
        /* Decided later, when a consumer declares this tensor its source;
         * held by the fallback meanwhile. */
        plan->pending_inverse = 1;
        plan->pol = plan->fallback;
        plan->fallback = NULL;
    } else if (kind == AS_KIND_CONV_OUTPUT && !best && !bykind && convin &&
               is_conv_input_regenerator(&convin->pol)) {
        /* The implicit chain rule (docs/store.md). */
        plan->pending_inverse = 2;
    }
}
