/*
 * Fleet labels: job, rank and host of the training process, on every
 * /metrics sample and in the snapshot JSON, so one Prometheus (or one
 * `actstore top`) can put many processes side by side and aggregate them.
 * Each comes from the config, else the environment, else a default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "svc.h"
#include "util/err.h"

/* First non-empty environment variable of names (NULL-terminated). */
static const char *env_first(const char *const *names)
{
    for (; *names; names++) {
        const char *v = getenv(*names);
        if (v && *v)
            return v;
    }
    return NULL;
}

static int fleet_pick(const char *given, const char *const *env,
                      const char *dflt, const char *what, char *dst,
                      size_t n, char *err, size_t errlen)
{
    const char *v = given ? given : env_first(env);
    if (!v)
        v = dflt;
    if (!*v || strlen(v) >= n)
        return as_set_err(err, errlen, AS_EINVAL, "fleet label %s '%s': "
                          "1..%zu bytes", what, v, n - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

int as__svc_fleet_init(as_service *svc, const as_service_config *c,
                       char *err, size_t errlen)
{
    static const char *const env_job[] = {"ACTSTORE_JOB", NULL};
    static const char *const env_rank[] = {"ACTSTORE_RANK", "RANK",
                                           "OMPI_COMM_WORLD_RANK", "PMI_RANK",
                                           NULL};
    static const char *const env_host[] = {"ACTSTORE_HOST", NULL};
    char host[sizeof svc->fleet_host] = "localhost";
    if (gethostname(host, sizeof host) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    int rc;
    if ((rc = fleet_pick(c->job, env_job, "actstore", "job", svc->fleet_job,
                         sizeof svc->fleet_job, err, errlen)) ||
        (rc = fleet_pick(c->rank, env_rank, "0", "rank", svc->fleet_rank,
                         sizeof svc->fleet_rank, err, errlen)) ||
        (rc = fleet_pick(c->host, env_host, host, "host", svc->fleet_host,
                         sizeof svc->fleet_host, err, errlen)))
        return rc;
    as__sb b;
    as__sb_init(&b);
    as__sb_puts(&b, "job=");
    as__sb_plabel(&b, svc->fleet_job);
    as__sb_puts(&b, ",rank=");
    as__sb_plabel(&b, svc->fleet_rank);
    as__sb_puts(&b, ",host=");
    as__sb_plabel(&b, svc->fleet_host);
    rc = b.oom || b.len >= sizeof svc->prom_labels ? AS_ENOMEM : 0;
    if (!rc)
        memcpy(svc->prom_labels, b.p, b.len + 1);
    as__sb_free(&b);
    return rc ? as_set_err(err, errlen, rc, "out of memory") : 0;
}
