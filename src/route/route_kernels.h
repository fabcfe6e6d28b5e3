/*
 * route_kernels.h - the routers' kernel table: the selection of the k
 * largest of n keys per token (the hot part of the top-k gates), one
 * reference kernel and AVX2 / AVX-512 ones chosen by sg_active_isa() (so
 * SOFTGATE_ISA applies). Internal.
 */
#ifndef SG_ROUTE_KERNELS_H
#define SG_ROUTE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dispatch.h"

/*
 * topk(key, n, k, ids, top): the k largest of key[0..n) (1 <= k <= n,
 * keys NaN-free: the caller checks) into ids[0..k) in descending order of
 * key, ties to the lower index (keys compared as floats: -0 == +0; -inf
 * and +inf allowed); top[l] = key[ids[l]]. Every kernel gives exactly the
 * reference's ids and order. No allocation; reads key only.
 */
typedef void sg_route_topk_fn(const float *key, size_t n, size_t k, int32_t *ids, float *top);

enum sg_route_slot { SG_ROUTE_SLOT_topk, SG_ROUTE_SLOT_COUNT };

typedef struct sg_route_kernels {
    sg_route_topk_fn *topk;
    const char *impl_name[SG_ROUTE_SLOT_COUNT];
} sg_route_kernels;

typedef struct sg_route_kernel_entry {
    enum sg_route_slot slot;
    sg_isa isa;
    const char *name;
    void (*fn)(void);
} sg_route_kernel_entry;

/* The table for the active ISA level (filled once, thread-safe). */
const sg_route_kernels *sg_route_kernels_get(void);
/* Every kernel compiled in, whatever the level (tests compare each against
 * the reference when the CPU has its ISA). */
const sg_route_kernel_entry *sg_route_kernel_entries(size_t *count);

sg_route_topk_fn sg_route_topk__ref;
#if defined(__x86_64__) || defined(_M_X64)
sg_route_topk_fn sg_route_topk__avx2, sg_route_topk__avx512;
#endif

#endif
