/*
 * JSON documents of the service: /api/v1/snapshot, /api/v1/timeline, the
 * SSE frame and the Chrome trace-event export. Written straight into a
 * growable buffer (no per-node allocations); formats in docs/service.md.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "svc.h"
#include "util/clock.h"

/* ---- names ----------------------------------------------------------------- */

const char *as__svc_kind_name(int kind)
{
    static const char *const names[AS_KIND_COUNT] = {
        "generic", "softmax_output", "conv_input", "conv_output", "linear_input",
        "activation_output", "activation_input", "norm_input", "pool_input",
        "attention_input", "dropout_mask", "index"};
    return kind >= 0 && kind < AS_KIND_COUNT ? names[kind] : "unknown";
}

const char *as__svc_phase_name(int phase)
{
    static const char *const names[] = {"none", "forward", "backward", "optimizer", "eval"};
    return phase >= 0 && phase < 5 ? names[phase] : "unknown";
}

const char *as__svc_tag_name(const as__svc_view *v, size_t t)
{
    static const char *const fixed[AS_TAG_FIXED_COUNT] = {
        "weights", "gradients", "optimizer", "activations", "saved", "workspace",
        "service", "other"};
    if (v->has_arena && t < v->arena.ntags && v->arena.tag_names[t])
        return v->arena.tag_names[t];
    return t < AS_TAG_FIXED_COUNT ? fixed[t] : "tag";
}

/* Unix seconds of a CLOCK_MONOTONIC reading (charts show wall time). */
static double unix_s(uint64_t mono_ns)
{
    struct timespec rt, mo;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mo);
    double off = (double)rt.tv_sec + rt.tv_nsec * 1e-9 - ((double)mo.tv_sec + mo.tv_nsec * 1e-9);
    return (double)mono_ns * 1e-9 + off;
}

double as__ns_to_s(uint64_t ns, uint64_t origin)
{
    return ns >= origin ? (double)(ns - origin) * 1e-9 : -(double)(origin - ns) * 1e-9;
}

/* ---- pieces ------------------------------------------------------------------ */

#define KEY(b, k) as__sb_puts(b, "\"" k "\":")

static void put_kv_u64(as__sb *b, const char *k, uint64_t v, bool comma)
{
    as__sb_printf(b, "%s\"%s\":", comma ? "," : "", k);
    as__sb_u64(b, v);
}

static void put_kv_str(as__sb *b, const char *k, const char *v)
{
    as__sb_printf(b, ",\"%s\":", k);
    as__sb_jstr(b, v);
}

static void put_kv_dbl(as__sb *b, const char *k, double v)
{
    as__sb_printf(b, ",\"%s\":", k);
    as__sb_dbl(b, v);
}

static double ratio(uint64_t raw, uint64_t stored)
{
    return stored ? (double)raw / (double)stored : (raw ? 0.0 : 1.0);
}

static void put_counter(as__sb *b, const as_store_counter *c)
{
    put_kv_u64(b, "raw_bytes", c->raw_live, false);
    put_kv_u64(b, "stored_bytes", c->stored_live, true);
    put_kv_u64(b, "raw_peak_bytes", c->raw_peak, true);
    put_kv_u64(b, "stored_peak_bytes", c->stored_peak, true);
    put_kv_dbl(b, "ratio", ratio(c->raw_peak ? c->raw_peak : c->raw_live,
                        c->raw_peak ? c->stored_peak : c->stored_live));
    put_kv_u64(b, "saves", c->saves, true);
    put_kv_u64(b, "restores", c->restores, true);
    put_kv_u64(b, "releases", c->releases, true);
    put_kv_u64(b, "fallbacks", c->fallbacks, true);
    put_kv_u64(b, "meta_mismatches", c->meta_mismatches, true);
    put_kv_dbl(b, "encode_s", c->encode_ns * 1e-9);
    put_kv_dbl(b, "decode_s", c->decode_ns * 1e-9);
}

static const as_store_layer_stats *g_layers;   /* for qsort (service thread only) */
static int cmp_layer(const void *x, const void *y)
{
    const as_store_layer_stats *a = &g_layers[*(const size_t *)x];
    const as_store_layer_stats *b = &g_layers[*(const size_t *)y];
    uint64_t ka = a->c.raw_peak > a->c.raw_live ? a->c.raw_peak : a->c.raw_live;
    uint64_t kb = b->c.raw_peak > b->c.raw_live ? b->c.raw_peak : b->c.raw_live;
    if (ka != kb)
        return ka < kb ? 1 : -1;
    return strcmp(a->name ? a->name : "", b->name ? b->name : "");
}

/* Indices of the store's layers, largest (raw peak) first; caller frees.
 * *n receives the count (capped at limit when limit > 0). */
size_t *as__svc_top_layers(const as_store_stats *st, size_t limit, size_t *n);
size_t *as__svc_top_layers(const as_store_stats *st, size_t limit, size_t *n)
{
    *n = 0;
    if (!st->nlayers)
        return NULL;
    size_t *idx = as__svc_malloc(st->nlayers * sizeof *idx);
    if (!idx)
        return NULL;
    for (size_t i = 0; i < st->nlayers; i++)
        idx[i] = i;
    g_layers = st->layers;
    qsort(idx, st->nlayers, sizeof *idx, cmp_layer);
    *n = limit && limit < st->nlayers ? limit : st->nlayers;
    return idx;
}

static void put_arena(as__sb *b, const as__svc_view *v, bool full)
{
    const as_arena_snapshot *a = &v->arena;
    as__sb_puts(b, "\"arena\":{");
    bool comma = false;
#define JSON_ROW(key, field) put_kv_u64(b, key, a->field, comma), comma = true;
#define BOTH_ROW(key, name, type, help, field) JSON_ROW(key, field)
    AS__SVC_ARENA(BOTH_ROW, JSON_ROW)
#undef BOTH_ROW
#undef JSON_ROW
    as__sb_puts(b, ",\"tags\":[");
    bool first = true;
    for (size_t t = 0; t < a->ntags && t < AS_TAG_MAX; t++) {
        const as_counter *c = &a->tags[t];
        if (!full && !c->live_usable && !c->peak_usable)
            continue;
        as__sb_puts(b, first ? "{\"name\":" : ",{\"name\":");
        first = false;
        as__sb_jstr(b, as__svc_tag_name(v, t));
        put_kv_u64(b, "live_bytes", c->live_usable, true);
        put_kv_u64(b, "peak_bytes", c->peak_usable, true);
        put_kv_u64(b, "allocs", c->allocs, true);
        put_kv_u64(b, "frees", c->frees, true);
        as__sb_puts(b, "}");
    }
    as__sb_puts(b, "]");
    if (full && a->layers) {
        /* allocator-side attribution per layer (live > 0 only) */
        as__sb_puts(b, ",\"layers\":[");
        first = true;
        for (size_t l = 1; l < a->nlayers; l++) {
            const as_counter *c = &a->layers[l];
            if (!c->live_usable && !c->peak_usable)
                continue;
            as__sb_puts(b, first ? "{\"name\":" : ",{\"name\":");
            first = false;
            as__sb_jstr(b, a->layer_names ? a->layer_names[l] : "");
            put_kv_u64(b, "live_bytes", c->live_usable, true);
            put_kv_u64(b, "peak_bytes", c->peak_usable, true);
            as__sb_puts(b, "}");
        }
        as__sb_puts(b, "]");
    }
    as__sb_puts(b, "}");
}

static void put_store(as__sb *b, const as_store_stats *st, size_t layer_limit)
{
    as__sb_puts(b, "\"saved\":{");
    put_counter(b, &st->total);
    put_kv_u64(b, "live_handles", st->live_handles, true);
    put_kv_u64(b, "auto_released", st->auto_released, true);
    as__sb_puts(b, "},\"spec\":");
    as__sb_jstr(b, st->spec);
    as__sb_puts(b, ",\"metrics\":[");
    for (size_t m = 0; m < st->nmetrics; m++) {
        as__sb_puts(b, m ? ",{\"name\":" : "{\"name\":");
        as__sb_jstr(b, st->metrics[m].name);
        put_kv_dbl(b, "value", st->metrics[m].value);
        as__sb_printf(b, ",\"step\":%llu}", (unsigned long long)st->metrics[m].step);
    }
    as__sb_puts(b, "]");
    as__sb_puts(b, ",\"kinds\":[");
    bool first = true;
    for (int k = 0; k < AS_KIND_COUNT; k++) {
        const as_store_counter *c = &st->kinds[k];
        if (!c->saves && !c->raw_live && !c->raw_peak)
            continue;
        as__sb_puts(b, first ? "{\"name\":" : ",{\"name\":");
        first = false;
        as__sb_jstr(b, as__svc_kind_name(k));
        as__sb_puts(b, ",");
        put_counter(b, c);
        as__sb_puts(b, "}");
    }
    as__sb_puts(b, "],\"policies\":[");
    for (size_t i = 0; i < st->npolicies; i++) {
        as__sb_puts(b, i ? ",{\"name\":" : "{\"name\":");
        as__sb_jstr(b, st->policies[i].name);
        as__sb_puts(b, ",");
        put_counter(b, &st->policies[i].c);
        as__sb_puts(b, "}");
    }
    size_t n = 0;
    size_t *idx = as__svc_top_layers(st, layer_limit, &n);
    as__sb_printf(b, "],\"layers_total\":%zu,\"layers\":[", st->nlayers);
    for (size_t j = 0; j < n; j++) {
        const as_store_layer_stats *l = &st->layers[idx[j]];
        as__sb_puts(b, j ? ",{\"name\":" : "{\"name\":");
        as__sb_jstr(b, l->name);
        put_kv_str(b, "policy", l->policy);
        put_kv_str(b, "last_fallback", l->last_fallback);
        put_kv_str(b, "last_meta_mismatch", l->last_meta_mismatch);
        as__sb_puts(b, ",");
        put_counter(b, &l->c);
        as__sb_puts(b, "}");
    }
    as__svc_free(idx);
    as__sb_puts(b, "]");
}

/* One store's "now": used by the snapshot (all layers) and the SSE frame. */
static void put_source(as_service *svc, size_t i, as__sb *b, size_t layer_limit, bool full)
{
    const as__svc_view *v = &svc->views[i];
    as__sb_puts(b, "{\"label\":");
    as__sb_jstr(b, svc->labels[i]);
    as__sb_printf(b, ",\"available\":%s", svc->view_rc[i] ? "false" : "true");
    if (svc->view_rc[i]) {
        put_kv_str(b, "error", as_strerror(svc->view_rc[i]));
        as__sb_puts(b, "}");
        return;
    }
    uint64_t step = v->has_store ? v->store.step : v->arena.step;
    int phase = v->has_store ? v->store.phase : v->arena.phase;
    as__sb_printf(b, ",\"step\":%llu,\"phase\":", (unsigned long long)step);
    as__sb_jstr(b, as__svc_phase_name(phase));
    if (v->has_arena) {
        as__sb_puts(b, ",");
        put_arena(b, v, full);
    }
    if (v->has_store) {
        as__sb_puts(b, ",");
        put_store(b, &v->store, layer_limit);
    }
    as__sb_puts(b, "}");
}

static void put_header(as_service *svc, as__sb *b)
{
    as__sb_puts(b, "{\"version\":");
    as__sb_jstr(b, AS_VERSION_STRING);
    put_kv_str(b, "job", svc->fleet_job);
    put_kv_str(b, "rank", svc->fleet_rank);
    put_kv_str(b, "host", svc->fleet_host);
    as__sb_printf(b, ",\"seq\":%llu,\"time\":", (unsigned long long)svc->tl_seq);
    as__sb_printf(b, "%.3f", unix_s(svc->now_ns));
    put_kv_dbl(b, "uptime_s", as__ns_to_s(svc->now_ns, svc->start_ns));
    as__sb_printf(b, ",\"tick_hz\":%u,\"service\":{\"connections\":%u,\"sse_clients\":%u,"
                     "\"memory_bytes\":%llu}",
                  svc->cfg.tick_hz, svc->nconns, svc->nsse,
                  (unsigned long long)as__svc_memory());
}

/* ,"KEY":[every store] and the closing brace of the document. */
static void put_sources(as_service *svc, as__sb *b, const char *key,
                        size_t layer_limit, bool full)
{
    as__sb_printf(b, ",\"%s\":[", key);
    for (size_t i = 0; i < svc->nsrc; i++) {
        if (i)
            as__sb_puts(b, ",");
        put_source(svc, i, b, layer_limit, full);
    }
    as__sb_puts(b, "]}\n");
}

void as__render_snapshot(as_service *svc, as__sb *b)
{
    put_header(svc, b);
    put_sources(svc, b, "stores", 0, true);
}

/* auto's plan of one store: the budget and one entry per (layer, kind). */
static void put_plan(as__sb *b, const as_store_plan *p)
{
    as__sb_printf(b, "{\"active\":%s,\"measured\":%s,\"feasible\":%s",
                  p->active ? "true" : "false", p->measured ? "true" : "false",
                  p->feasible ? "true" : "false");
    put_kv_u64(b, "budget_bytes", p->budget, true);
    put_kv_u64(b, "keep_bytes", p->keep_bytes, true);
    put_kv_u64(b, "planned_bytes", p->planned_bytes, true);
    put_kv_u64(b, "fixed_bytes", p->fixed_bytes, true);
    put_kv_u64(b, "min_bytes", p->min_bytes, true);
    put_kv_u64(b, "step", p->step, true);
    put_kv_u64(b, "probes", p->probes, true);
    put_kv_u64(b, "replans", p->replans, true);
    put_kv_u64(b, "period", p->period, true);
    as__sb_puts(b, ",\"layers\":[");
    for (size_t i = 0; i < p->n; i++) {
        const as_store_plan_entry *e = &p->entries[i];
        as__sb_puts(b, i ? ",{\"layer\":" : "{\"layer\":");
        as__sb_jstr(b, e->layer);
        put_kv_str(b, "kind", as__svc_kind_name(e->kind));
        put_kv_str(b, "policy", e->policy);
        put_kv_u64(b, "raw_bytes", e->raw_bytes, true);
        put_kv_u64(b, "stored_bytes", e->stored_bytes, true);
        put_kv_dbl(b, "rel_error", e->rel_error);
        put_kv_dbl(b, "cosine", e->cosine);
        put_kv_dbl(b, "time_ns", e->time_ns);
        put_kv_dbl(b, "weight", e->weight);
        put_kv_u64(b, "items", e->items, true);
        put_kv_u64(b, "candidates", e->candidates, true);
        as__sb_puts(b, "}");
    }
    as__sb_puts(b, "]}");
}

void as__render_plan(as_service *svc, as__sb *b)
{
    put_header(svc, b);
    as__sb_puts(b, ",\"stores\":[");
    for (size_t i = 0; i < svc->nsrc; i++) {
        const as__svc_view *v = &svc->views[i];
        as__sb_puts(b, i ? ",{\"label\":" : "{\"label\":");
        as__sb_jstr(b, svc->labels[i]);
        bool ok = !svc->view_rc[i] && v->has_plan;
        as__sb_printf(b, ",\"available\":%s,\"plan\":", ok ? "true" : "false");
        if (ok)
            put_plan(b, &v->plan);
        else
            as__sb_puts(b, "null");
        as__sb_puts(b, "}");
    }
    as__sb_puts(b, "]}\n");
}

/* ---- timeline (columnar: one array per series, ready for uPlot) -------------------- */

static void put_marks(as_service *svc, as__sb *b, uint64_t since)
{
    as__sb_puts(b, "\"marks\":[");
    bool first = true;
    for (size_t k = 0; k < svc->mk_count; k++) {
        size_t slot = (svc->mk_head + svc->mk_cap - svc->mk_count + k) % svc->mk_cap;
        const as__svc_mark *m = &svc->marks[slot];
        if (m->seq <= since)
            continue;
        as__sb_printf(b, "%s{\"seq\":%llu,\"t\":", first ? "" : ",",
                      (unsigned long long)m->seq);
        first = false;
        as__sb_printf(b, "%.3f", unix_s(m->t_ns));
        as__sb_printf(b, ",\"store\":%u,\"type\":\"%s\",\"step\":%llu,\"phase\":\"%s\"}",
                      m->src, m->type == AS_SAMPLE_STEP ? "step" : "phase",
                      (unsigned long long)m->step, as__svc_phase_name(m->phase));
    }
    as__sb_puts(b, "]");
}

#define SERIES(name, expr)                                                        \
    do {                                                                          \
        as__sb_puts(b, ",\"" name "\":[");                                       \
        for (size_t j = first; j < svc->tl_count; j++) {                          \
            const as__svc_point *p = &svc->tl_pts[as__tl_slot(svc, j) * svc->nsrc + i]; \
            if (j > first)                                                        \
                as__sb_puts(b, ",");                                             \
            if (!p->valid)                                                        \
                as__sb_puts(b, "null");                                          \
            else                                                                  \
                as__sb_u64(b, (expr));                                            \
        }                                                                         \
        as__sb_puts(b, "]");                                                     \
    } while (0)

void as__render_timeline(as_service *svc, uint64_t since, as__sb *b)
{
    /* points with seq > since: the ring holds consecutive seqs */
    size_t first = 0;
    if (svc->tl_count) {
        uint64_t oldest = svc->tl_seq - svc->tl_count + 1;
        if (since >= svc->tl_seq)
            first = svc->tl_count;
        else if (since >= oldest)
            first = (size_t)(since - oldest + 1);
    }
    put_header(svc, b);
    as__sb_puts(b, ",\"since\":");
    as__sb_u64(b, since);
    as__sb_puts(b, ",\"t\":[");
    for (size_t j = first; j < svc->tl_count; j++) {
        if (j > first)
            as__sb_puts(b, ",");
        as__sb_printf(b, "%.3f", unix_s(svc->tl_t[as__tl_slot(svc, j)]));
    }
    as__sb_puts(b, "],\"stores\":[");
    for (size_t i = 0; i < svc->nsrc; i++) {
        as__sb_puts(b, i ? ",{\"label\":" : "{\"label\":");
        as__sb_jstr(b, svc->labels[i]);
        SERIES("live", p->live);
        SERIES("peak", p->peak);
        SERIES("resident", p->resident);
        SERIES("saved_raw", p->saved_raw);
        SERIES("saved_stored", p->saved_stored);
        SERIES("saved_raw_peak", p->saved_raw_peak);
        SERIES("saved_stored_peak", p->saved_stored_peak);
        SERIES("step", p->step);
        SERIES("phase", p->phase);
        as__sb_puts(b, ",\"tags\":{");
        bool any = false;
        const as__svc_view *v = &svc->views[i];
        for (size_t t = 0; t < AS_TAG_FIXED_COUNT; t++) {
            as__sb_printf(b, "%s", any ? "," : "");
            any = true;
            as__sb_jstr(b, as__svc_tag_name(v, t));
            as__sb_puts(b, ":[");
            for (size_t j = first; j < svc->tl_count; j++) {
                const as__svc_point *p = &svc->tl_pts[as__tl_slot(svc, j) * svc->nsrc + i];
                if (j > first)
                    as__sb_puts(b, ",");
                as__sb_u64(b, p->tags[t]);
            }
            as__sb_puts(b, "]");
        }
        for (int grp = 0; grp < 2; grp++) {     /* stored now, stored step peak */
            as__sb_puts(b, grp ? "},\"kinds_peak\":{" : "},\"kinds\":{");
            for (int k = 0; k < AS_KIND_COUNT; k++) {
                as__sb_puts(b, k ? "," : "");
                as__sb_jstr(b, as__svc_kind_name(k));
                as__sb_puts(b, ":[");
                for (size_t j = first; j < svc->tl_count; j++) {
                    const as__svc_point *p = &svc->tl_pts[as__tl_slot(svc, j) * svc->nsrc + i];
                    if (j > first)
                        as__sb_puts(b, ",");
                    as__sb_u64(b, grp ? p->kind_stored_peak[k] : p->kind_stored[k]);
                }
                as__sb_puts(b, "]");
            }
        }
        as__sb_puts(b, "}}");
    }
    as__sb_puts(b, "],");
    put_marks(svc, b, since);
    as__sb_puts(b, "}\n");
}

/* ---- the SSE frame: the newest point, new marks and each store's "now" ---------- */

void as__render_frame(as_service *svc, as__sb *b)
{
    as__sb_printf(b, "id: %llu\ndata: ", (unsigned long long)svc->tl_seq);
    uint64_t since = svc->tl_seq ? svc->tl_seq - 1 : 0;
    /* the timeline increment (exactly one point) ... */
    as__render_timeline(svc, since, b);
    if (b->oom || b->len < 2)
        return;
    b->len -= 2;                    /* drop its closing brace and newline */
    /* ... extended with the stores' current tables */
    put_sources(svc, b, "now", 20, false);
    as__sb_puts(b, "\n");             /* the end of the SSE event */
}

/* ---- Chrome trace-event JSON --------------------------------------------------- */

void as__render_trace(as_service *svc, as__sb *b)
{
    as__sb_puts(b, "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"generator\":\"actstore ");
    as__sb_puts(b, AS_VERSION_STRING);
    as__sb_puts(b, "\"},\"traceEvents\":[");
    for (size_t i = 0; i < svc->nsrc; i++) {
        as__sb_printf(b, "%s{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%zu,\"tid\":0,"
                         "\"args\":{\"name\":",
                      i ? "," : "", i + 1);
        as__sb_jstr(b, svc->labels[i]);
        as__sb_puts(b, "}}");
    }
    /* marks taken from the arena's ring may predate the service */
    uint64_t origin = svc->start_ns;
    for (size_t k = 0; k < svc->mk_count; k++) {
        const as__svc_mark *m = &svc->marks[(svc->mk_head + svc->mk_cap - svc->mk_count + k) % svc->mk_cap];
        if (m->t_ns < origin)
            origin = m->t_ns;
    }
    for (size_t j = 0; j < svc->tl_count; j++) {
        size_t slot = as__tl_slot(svc, j);
        double ts = as__ns_to_s(svc->tl_t[slot], origin) * 1e6;
        for (size_t i = 0; i < svc->nsrc; i++) {
            const as__svc_point *p = &svc->tl_pts[slot * svc->nsrc + i];
            if (!p->valid)
                continue;
            as__sb_printf(b, ",{\"name\":\"memory\",\"ph\":\"C\",\"pid\":%zu,\"tid\":0,\"ts\":", i + 1);
            as__sb_printf(b, "%.1f", ts);
            as__sb_printf(b, ",\"args\":{\"live\":%llu,\"resident\":%llu,\"saved_stored\":%llu,"
                             "\"saved_raw\":%llu}}",
                          (unsigned long long)p->live, (unsigned long long)p->resident,
                          (unsigned long long)p->saved_stored, (unsigned long long)p->saved_raw);
            as__sb_printf(b, ",{\"name\":\"memory by tag\",\"ph\":\"C\",\"pid\":%zu,\"tid\":0,\"ts\":", i + 1);
            as__sb_printf(b, "%.1f", ts);
            as__sb_puts(b, ",\"args\":{");
            for (size_t t = 0; t < AS_TAG_FIXED_COUNT; t++) {
                as__sb_printf(b, "%s", t ? "," : "");
                as__sb_jstr(b, as__svc_tag_name(&svc->views[i], t));
                as__sb_printf(b, ":%llu", (unsigned long long)p->tags[t]);
            }
            as__sb_printf(b, "}},{\"name\":\"saved by kind\",\"ph\":\"C\",\"pid\":%zu,\"tid\":0,\"ts\":", i + 1);
            as__sb_printf(b, "%.1f", ts);
            as__sb_puts(b, ",\"args\":{");
            for (int k = 0; k < AS_KIND_COUNT; k++) {
                as__sb_printf(b, "%s", k ? "," : "");
                as__sb_jstr(b, as__svc_kind_name(k));
                as__sb_printf(b, ":%llu", (unsigned long long)p->kind_stored[k]);
            }
            as__sb_puts(b, "}}");
        }
    }
    for (size_t k = 0; k < svc->mk_count; k++) {
        size_t slot = (svc->mk_head + svc->mk_cap - svc->mk_count + k) % svc->mk_cap;
        const as__svc_mark *m = &svc->marks[slot];
        if (m->type == AS_SAMPLE_STEP)
            as__sb_printf(b, ",{\"name\":\"step %llu\",\"cat\":\"step\"",
                          (unsigned long long)m->step);
        else
            as__sb_printf(b, ",{\"name\":\"%s\",\"cat\":\"phase\"", as__svc_phase_name(m->phase));
        as__sb_printf(b, ",\"ph\":\"i\",\"s\":\"p\",\"pid\":%u,\"tid\":0,\"ts\":", m->src + 1u);
        as__sb_printf(b, "%.1f", as__ns_to_s(m->t_ns, origin) * 1e6);
        as__sb_printf(b, ",\"args\":{\"step\":%llu}}", (unsigned long long)m->step);
    }
    as__sb_puts(b, "]}\n");
}
