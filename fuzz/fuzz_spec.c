/*
 * libFuzzer target: the policy-spec parser (as_policy_check and the rule
 * parser behind as_store_set_policy). Any input must give 0 or AS_ESPEC /
 * AS_ENOMEM with a message, never a crash or a read past the input; an
 * accepted spec's normalized form must parse again to itself (the form
 * the store reports and the dashboard shows is a valid spec).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actstore/store.h"
#include "store/store_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *spec = malloc(size + 1);   /* exact size: ASan sees any overread */
    if (!spec)
        return 0;
    memcpy(spec, data, size);
    spec[size] = 0;
    char err[256];
    as_rules *r = NULL;
    int rc = as__rules_parse(spec, &r, err, sizeof err);
    if (rc == 0) {
        size_t len = strlen(r->spec);
        if (len + 1 < sizeof r->spec) {   /* not truncated */
            as_rules *again = NULL;
            char err2[256];
            if (as__rules_parse(r->spec, &again, err2, sizeof err2) != 0 ||
                strcmp(again->spec, r->spec) != 0) {
                fprintf(stderr, "normalized spec '%s' does not parse to itself: %s\n",
                        r->spec, again ? again->spec : err2);
                abort();
            }
            as__rules_unref(again);
        }
        as__rules_unref(r);
    } else if (rc != AS_ESPEC && rc != AS_ENOMEM) {
        fprintf(stderr, "unexpected code %d for '%s'\n", rc, spec);
        abort();
    } else if (rc == AS_ESPEC && strncmp(err, "offset ", 7) != 0) {
        fprintf(stderr, "spec error without an offset: '%s'\n", err);
        abort();
    }
    free(spec);
    return 0;
}
