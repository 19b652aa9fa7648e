/*
 * actstore top with several endpoints (client/top_fleet.c): one line per
 * store of every endpoint, and the total.
 */
#ifndef AS_CLIENT_TOP_FLEET_H
#define AS_CLIENT_TOP_FLEET_H

#include <stdbool.h>

/* Show addrs[0..n) (n >= 1); once: one table, exit status 1 when an
 * endpoint did not answer. Returns an AS_EXIT_* code. */
int as_top_fleet(const char *const *addrs, int n, bool once);

#endif
