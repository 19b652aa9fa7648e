/* The instrumented jemalloc arena: being written (see include/actstore/alloc.h). */
