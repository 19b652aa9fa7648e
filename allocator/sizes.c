/*
 * Usable sizes without asking jemalloc on the hot path, and the per-thread
 * bins of freed small blocks.
 *
 * nallocx costs about as much as the rest of the bookkeeping, so the usable
 * size of every request up to AS__TAB_MAX (and whether the alignment flag is
 * needed, and the bin of its size class) is tabulated once, per 8 bytes
 * (size classes are multiples of 8, so a request and its round-up to 8 share
 * a class). Above that, jemalloc's classes are four per doubling of the
 * size, which as__usable_large computes; the rule is checked against
 * nallocx once, and nallocx answers if the check fails (another jemalloc).
 */
#include <assert.h>
#include <string.h>

#include "allocator/internal.h"

uint32_t as__size_tab[AS__TAB_MAX / 8 + 1];
bool as__large_rule;
static uint32_t g_bin_usable[AS__NBINS];
static uint32_t g_bin_cap[AS__NBINS];
static pthread_once_t g_tab_once = PTHREAD_ONCE_INIT;

/* Alignment 64 for size >= 64, else 16. Size classes that are multiples
 * of the alignment are naturally aligned (slab regions sit at multiples of
 * their size in page-aligned slabs), so the flag is added only for the
 * others. */
size_t as__size_slow(size_t size, int *align_flag)
{
    size_t align = size >= 64 ? 64 : 16;
    size_t usable = nallocx(size, 0);
    *align_flag = 0;
    if (usable % align) {
        *align_flag = MALLOCX_LG_ALIGN(align == 64 ? 6 : 4);
        usable = nallocx(size, *align_flag);
    }
    return usable;
}

/* The four-per-doubling rule agrees with nallocx around every class
 * boundary from AS__TAB_MAX to AS__LARGE_RULE_MAX. */
static bool large_rule_holds(void)
{
    for (size_t p = AS__TAB_MAX; p < AS__LARGE_RULE_MAX; p <<= 1)
        for (size_t q = 0; q < 4; q++) {
            size_t c = p + q * (p / 4);
            size_t probe[3] = {c, c + 1, c + p / 8};
            for (int k = 0; k < 3; k++) {
                int fl;
                if (probe[k] <= AS__TAB_MAX)
                    continue;
                if (as__size_slow(probe[k], &fl) != as__usable_large(probe[k]) || fl)
                    return false;
            }
        }
    return true;
}

static void tab_init(void)
{
    unsigned nbins = 0;
    for (size_t i = 1; i <= AS__TAB_MAX / 8; i++) {
        int fl;
        size_t u = as__size_slow(i * 8, &fl);
        assert(u > 0 && u <= 0xffff);
        /* classes grow with the request: a new usable size opens a bin */
        unsigned bin = nbins && g_bin_usable[nbins - 1] == u ? nbins - 1 : nbins;
        if (bin == nbins && nbins < AS__NBINS) {
            g_bin_usable[nbins] = (uint32_t)u;
            uint32_t cap = AS__BIN_BYTES / (uint32_t)u;
            g_bin_cap[nbins] = cap < 1 ? 1 : cap > AS__BIN_SLOTS ? AS__BIN_SLOTS : cap;
            nbins++;
        } else if (bin == nbins) {
            bin = AS__NBINS;               /* more classes than bins: not kept */
        }
        as__size_tab[i] = (uint32_t)u | (uint32_t)bin << 16 | (fl ? AS__TAB_ALIGN : 0);
    }
    /* A block's usable size must map back to its own class (the free path
     * finds the bin from it); a class that does not is never kept. */
    for (unsigned b = 0; b < nbins; b++) {
        uint32_t e = as__size_tab[g_bin_usable[b] / 8];
        if ((e & 0xffff) != g_bin_usable[b])
            g_bin_cap[b] = 0;
    }
    as__large_rule = large_rule_holds();
}

void as__size_table_init(void)
{
    pthread_once(&g_tab_once, tab_init);
}

void as__bins_init(as__tblock *b, bool keep)
{
    for (unsigned i = 0; i <= AS__NBINS; i++) {
        b->bins[i].n = 0;
        b->bins[i].cap = keep && i < AS__NBINS ? g_bin_cap[i] : 0;
    }
}

void as__bins_drain(as__tblock *b)
{
    for (unsigned i = 0; i < AS__NBINS; i++) {
        as__bin *bn = &b->bins[i];
        for (uint32_t k = 0; k < bn->n; k++)
            sdallocx(bn->slot[k], g_bin_usable[i], b->flags);
        bn->n = 0;
    }
}
