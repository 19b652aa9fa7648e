/*
 * /metrics: Prometheus text exposition format 0.0.4.
 *
 * Names: actstore_ prefix, base units (bytes, seconds), _bytes and _total
 * suffixes; one HELP and TYPE line per family, all its samples together.
 * Labels: job, rank, host (the fleet labels, on every sample: fleet.c),
 * store, tag, kind, policy, layer. Per-layer series are capped to
 * the metrics_top_layers largest layers (raw peak) per store.
 *
 * actstore_peak_since_scrape_bytes: the largest live figure seen since the
 * previous scrape (from the tick samples and the allocator's own peak,
 * which is exact at allocation time), so a scrape every 15 s still sees
 * the per-step peaks. Reading /metrics resets it (one scraper assumed).
 */
#include <string.h>

#include "svc.h"

size_t *as__svc_top_layers(const as_store_stats *st, size_t limit, size_t *n);

static void family(as__sb *b, const char *name, const char *type, const char *help)
{
    as__sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{labels,store="...",k2="v2",k3="v3"} : the value follows the brace. */
static void sample_labels(const as_service *svc, as__sb *b, const char *name,
                          const char *store, const char *k2, const char *v2,
                          const char *k3, const char *v3)
{
    as__sb_puts(b, name);
    as__sb_puts(b, "{");
    as__sb_puts(b, svc->prom_labels);
    as__sb_puts(b, ",store=");
    as__sb_plabel(b, store);
    const char *k[2] = { k2, k3 }, *v[2] = { v2, v3 };
    for (int i = 0; i < 2; i++) {
        if (k[i]) {
            as__sb_printf(b, ",%s=", k[i]);
            as__sb_plabel(b, v[i]);
        }
    }
    as__sb_puts(b, "} ");
}

static void sample_u64(const as_service *svc, as__sb *b, const char *name,
                       const char *store, const char *k2, const char *v2,
                       const char *k3, const char *v3, uint64_t v)
{
    sample_labels(svc, b, name, store, k2, v2, k3, v3);
    as__sb_u64(b, v);
    as__sb_puts(b, "\n");
}

static void sample_dbl(const as_service *svc, as__sb *b, const char *name,
                       const char *store, const char *k2, const char *v2,
                       double v)
{
    sample_labels(svc, b, name, store, k2, v2, NULL, NULL);
    as__sb_printf(b, "%.9g\n", v);
}

#define FOR_ARENA(i, v)                                                        \
    for (size_t i = 0; i < svc->nsrc; i++)                                     \
        for (const as__svc_view *v = &svc->views[i]; v && !svc->view_rc[i] &&  \
                                                     v->has_arena; v = NULL)
#define FOR_STORE(i, v)                                                        \
    for (size_t i = 0; i < svc->nsrc; i++)                                     \
        for (const as__svc_view *v = &svc->views[i]; v && !svc->view_rc[i] &&  \
                                                     v->has_store; v = NULL)

/* One gauge per store read from the arena snapshot. */
#define ARENA_GAUGE(name, type, help, expr)                                    \
    do {                                                                       \
        family(b, name, type, help);                                           \
        FOR_ARENA(i, v) sample_u64(svc, b, name, svc->labels[i], NULL, NULL, NULL, NULL, (expr)); \
    } while (0)

#define KIND_SERIES(name, type, help, field)                                   \
    do {                                                                       \
        family(b, name, type, help);                                           \
        FOR_STORE(i, v) for (int k = 0; k < AS_KIND_COUNT; k++)                \
            if (v->store.kinds[k].saves || v->store.kinds[k].raw_live)         \
                sample_u64(svc, b, name, svc->labels[i], "kind", as__svc_kind_name(k), \
                           NULL, NULL, v->store.kinds[k].field);               \
    } while (0)

#define POLICY_SERIES(N, T, H, F)                                              \
    do {                                                                       \
        family(b, N, T, H);                                                    \
        FOR_STORE(i, v) for (size_t p = 0; p < v->store.npolicies; p++)        \
            sample_u64(svc, b, N, svc->labels[i], "policy", v->store.policies[p].name, \
                       NULL, NULL, v->store.policies[p].c.F);                  \
    } while (0)

static void arena_metrics(as_service *svc, as__sb *b)
{
#define GAUGE_ROW(key, name, type, help, field) ARENA_GAUGE(name, type, help, v->arena.field);
#define NO_ROW(key, field)
    AS__SVC_ARENA(GAUGE_ROW, NO_ROW)
#undef NO_ROW
#undef GAUGE_ROW
    family(b, "actstore_peak_since_scrape_bytes", "gauge",
           "Largest live bytes seen since the previous scrape of /metrics.");
    FOR_ARENA(i, v) {
        uint64_t peak = svc->scrape_peak[i];
        if (v->arena.total.live_usable > peak)
            peak = v->arena.total.live_usable;
        sample_u64(svc, b, "actstore_peak_since_scrape_bytes", svc->labels[i], NULL, NULL,
                   NULL, NULL, peak);
        svc->scrape_peak[i] = v->arena.total.live_usable;
    }

    family(b, "actstore_tag_live_bytes", "gauge", "Live bytes per allocation tag.");
    FOR_ARENA(i, v) for (size_t t = 0; t < v->arena.ntags && t < AS_TAG_MAX; t++)
        sample_u64(svc, b, "actstore_tag_live_bytes", svc->labels[i], "tag",
                   as__svc_tag_name(v, t), NULL, NULL, v->arena.tags[t].live_usable);
    family(b, "actstore_tag_peak_bytes", "gauge",
           "Peak live bytes per allocation tag since the last peak reset.");
    FOR_ARENA(i, v) for (size_t t = 0; t < v->arena.ntags && t < AS_TAG_MAX; t++)
        sample_u64(svc, b, "actstore_tag_peak_bytes", svc->labels[i], "tag",
                   as__svc_tag_name(v, t), NULL, NULL, v->arena.tags[t].peak_usable);
}

static void store_metrics(as_service *svc, as__sb *b)
{
    family(b, "actstore_training_step", "gauge", "Current training step.");
    FOR_STORE(i, v) sample_u64(svc, b, "actstore_training_step", svc->labels[i], NULL, NULL,
                               NULL, NULL, v->store.step);
    family(b, "actstore_saved_raw_bytes", "gauge",
           "Bytes the saved tensors would hold if kept exactly (live).");
    FOR_STORE(i, v) sample_u64(svc, b, "actstore_saved_raw_bytes", svc->labels[i], NULL, NULL,
                               NULL, NULL, v->store.total.raw_live);
    family(b, "actstore_saved_stored_bytes", "gauge",
           "Bytes the store actually holds for saved tensors (live).");
    FOR_STORE(i, v) sample_u64(svc, b, "actstore_saved_stored_bytes", svc->labels[i], NULL,
                               NULL, NULL, NULL, v->store.total.stored_live);
    family(b, "actstore_saved_raw_peak_bytes", "gauge",
           "Peak raw bytes of saved tensors since the last peak reset.");
    FOR_STORE(i, v) sample_u64(svc, b, "actstore_saved_raw_peak_bytes", svc->labels[i], NULL,
                               NULL, NULL, NULL, v->store.total.raw_peak);
    family(b, "actstore_saved_stored_peak_bytes", "gauge",
           "Peak stored bytes of saved tensors since the last peak reset.");
    FOR_STORE(i, v) sample_u64(svc, b, "actstore_saved_stored_peak_bytes", svc->labels[i], NULL,
                               NULL, NULL, NULL, v->store.total.stored_peak);
    family(b, "actstore_live_handles", "gauge", "Handles saved and not yet released.");
    FOR_STORE(i, v) sample_u64(svc, b, "actstore_live_handles", svc->labels[i], NULL, NULL,
                               NULL, NULL, v->store.live_handles);
    family(b, "actstore_auto_released_total", "counter",
           "Handles released by step_end because the framework did not release them.");
    FOR_STORE(i, v) sample_u64(svc, b, "actstore_auto_released_total", svc->labels[i], NULL,
                               NULL, NULL, NULL, v->store.auto_released);

    family(b, "actstore_training_metric", "gauge",
           "Latest figure the training loop reported (as_store_report_metric), by name.");
    FOR_STORE(i, v) for (size_t m = 0; m < v->store.nmetrics; m++)
        sample_dbl(svc, b, "actstore_training_metric", svc->labels[i], "name",
                   v->store.metrics[m].name, v->store.metrics[m].value);
    KIND_SERIES("actstore_kind_raw_bytes", "gauge", "Raw bytes of live saved tensors per kind.", raw_live);
    KIND_SERIES("actstore_kind_stored_bytes", "gauge", "Stored bytes of live saved tensors per kind.", stored_live);
    KIND_SERIES("actstore_kind_raw_peak_bytes", "gauge", "Peak raw bytes per kind since the last peak reset.", raw_peak);
    KIND_SERIES("actstore_kind_stored_peak_bytes", "gauge", "Peak stored bytes per kind since the last peak reset.", stored_peak);
    KIND_SERIES("actstore_saves_total", "counter", "Tensors saved, per kind.", saves);
    KIND_SERIES("actstore_restores_total", "counter", "Tensors restored, per kind.", restores);
    KIND_SERIES("actstore_fallbacks_total", "counter",
                "Saves whose policy did not apply and fell back, per kind.", fallbacks);
    KIND_SERIES("actstore_meta_mismatches_total", "counter",
                "Saves whose metadata contradicted the tensor (fell back, or "
                "failed in strict mode), per kind.", meta_mismatches);
    family(b, "actstore_encode_seconds_total", "counter", "Time spent encoding, per kind.");
    FOR_STORE(i, v) for (int k = 0; k < AS_KIND_COUNT; k++)
        if (v->store.kinds[k].saves)
            sample_dbl(svc, b, "actstore_encode_seconds_total", svc->labels[i], "kind",
                       as__svc_kind_name(k), v->store.kinds[k].encode_ns * 1e-9);
    family(b, "actstore_decode_seconds_total", "counter", "Time spent decoding or regenerating, per kind.");
    FOR_STORE(i, v) for (int k = 0; k < AS_KIND_COUNT; k++)
        if (v->store.kinds[k].saves)
            sample_dbl(svc, b, "actstore_decode_seconds_total", svc->labels[i], "kind",
                       as__svc_kind_name(k), v->store.kinds[k].decode_ns * 1e-9);

    POLICY_SERIES("actstore_policy_raw_bytes", "gauge", "Raw bytes of live saved tensors per policy.", raw_live);
    POLICY_SERIES("actstore_policy_stored_bytes", "gauge", "Stored bytes of live saved tensors per policy.", stored_live);
    POLICY_SERIES("actstore_policy_raw_peak_bytes", "gauge", "Peak raw bytes per policy since the last peak reset.", raw_peak);
    POLICY_SERIES("actstore_policy_stored_peak_bytes", "gauge", "Peak stored bytes per policy since the last peak reset.", stored_peak);
    POLICY_SERIES("actstore_policy_saves_total", "counter", "Tensors saved per policy.", saves);

    /* per layer: top N by raw peak */
    static const struct { const char *name, *help; int field; } lf[] = {
        {"actstore_layer_raw_bytes", "Raw bytes of live saved tensors per layer (top layers only).", 0},
        {"actstore_layer_stored_bytes", "Stored bytes of live saved tensors per layer (top layers only).", 1},
        {"actstore_layer_raw_peak_bytes", "Peak raw bytes per layer since the last peak reset (top layers only).", 2},
        {"actstore_layer_stored_peak_bytes", "Peak stored bytes per layer since the last peak reset (top layers only).", 3},
        {"actstore_layer_fallbacks_total", "Fallbacks per layer (top layers only).", 4},
    };
    size_t *idx[16] = {0}, nidx[16] = {0};
    FOR_STORE(i, v) idx[i] = as__svc_top_layers(&v->store, svc->cfg.metrics_top_layers, &nidx[i]);
    for (size_t f = 0; f < sizeof lf / sizeof lf[0]; f++) {
        family(b, lf[f].name, f == 4 ? "counter" : "gauge", lf[f].help);
        FOR_STORE(i, v) for (size_t j = 0; j < nidx[i] && idx[i]; j++) {
            const as_store_layer_stats *l = &v->store.layers[idx[i][j]];
            const uint64_t vals[5] = {l->c.raw_live, l->c.stored_live, l->c.raw_peak,
                                      l->c.stored_peak, l->c.fallbacks};
            sample_u64(svc, b, lf[f].name, svc->labels[i], "layer", l->name ? l->name : "",
                       "policy", l->policy, vals[lf[f].field]);
        }
    }
    for (size_t i = 0; i < svc->nsrc && i < 16; i++)
        as__svc_free(idx[i]);
}

static void service_metrics(as_service *svc, as__sb *b)
{
    as_service_stats st;
    as_service_get_stats(svc, &st);
    static const char *const names[][3] = {
        {"actstore_service_memory_bytes", "gauge", "Bytes the service itself holds (not in the arena)."},
        {"actstore_service_connections", "gauge", "Open HTTP connections."},
        {"actstore_service_sse_clients", "gauge", "Connected event-stream clients."},
        {"actstore_service_requests_total", "counter", "HTTP requests served."},
        {"actstore_service_sse_dropped_total", "counter", "Clients dropped for not reading (slow event-stream readers, pipelining floods)."},
        {"actstore_service_ticks_total", "counter", "Sampling ticks of the service."},
    };
    const uint64_t vals[] = {st.memory_bytes, st.connections_open, st.sse_clients,
                             st.requests, st.sse_dropped, st.ticks};
    for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++) {
        family(b, names[k][0], names[k][1], names[k][2]);
        as__sb_printf(b, "%s{%s} ", names[k][0], svc->prom_labels);
        as__sb_u64(b, vals[k]);
        as__sb_puts(b, "\n");
    }
    family(b, "actstore_service_tick_seconds", "gauge",
           "Time the last tick took (snapshots, timeline, SSE frame).");
    as__sb_printf(b, "actstore_service_tick_seconds{%s} %.9g\n", svc->prom_labels,
                  st.tick_ns_last * 1e-9);
    family(b, "actstore_service_cpu_seconds_total", "counter",
           "CPU time used by the service thread.");
    as__sb_printf(b, "actstore_service_cpu_seconds_total{%s} %.9g\n", svc->prom_labels,
                  st.cpu_ns * 1e-9);
}

void as__render_metrics(as_service *svc, as__sb *b)
{
    as__sb_reserve(b, 16384);
    family(b, "actstore_build_info", "gauge", "Always 1; the version of actstore serving these figures.");
    as__sb_printf(b, "actstore_build_info{%s,version=", svc->prom_labels);
    as__sb_plabel(b, AS_VERSION_STRING);
    as__sb_puts(b, "} 1\n");
    arena_metrics(svc, b);
    store_metrics(svc, b);
    service_metrics(svc, b);
}
