/* The testing hook of util/simd.h: force the portable kernel paths. */
#include <stdatomic.h>

#include "util/simd.h"

static _Atomic bool force_portable;

bool as__simd_force_portable(bool on)
{
    return atomic_exchange(&force_portable, on);
}

bool as__simd_portable(void)
{
    return atomic_load_explicit(&force_portable, memory_order_relaxed);
}
