/*
 * moe_internal.h - what the MoE files share: route checks, the unchecked
 * dispatch plan, task sizing. Internal.
 */
#ifndef SG_MOE_INTERNAL_H
#define SG_MOE_INTERNAL_H

#include <stdint.h>

#include "core/context.h"
#include "softmax/softmax_internal.h" /* sg_check_matrix */

/* Output floats per row task of gather / combine (fixed: tasks depend on
 * shapes only, never on the thread count). */
#define SG_MOE_TASK_FLOATS ((size_t)16384)

size_t sg_moe_rows_per_task(size_t d);

/* Checks ids [T x K] (stride ldid) for E experts: T * K <= INT32_MAX, every
 * id in [-1, E). Nothing to check when T * K == 0. */
sg_status sg_moe_check_route(sg_context *ctx, const char *op, size_t t, size_t e, size_t k,
                             const int32_t *ids, size_t ldid);

/* sg_moe_dispatch_plan without the checks (T * K > 0). */
void sg_moe_plan_unchecked(size_t t, size_t e, size_t k, const int32_t *ids, size_t ldid,
                           int32_t *offsets, int32_t *order, int32_t *slot_pos);

#endif
