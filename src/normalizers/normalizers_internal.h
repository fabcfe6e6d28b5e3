/*
 * normalizers_internal.h - internals of the normalizer family that tests
 * reach directly. Internal.
 */
#ifndef SG_NORMALIZERS_INTERNAL_H
#define SG_NORMALIZERS_INTERNAL_H

#include <stddef.h>

/*
 * The sparsemax threshold of a row of shifted values d (max 0, -inf for
 * removed entries): Michelot's iteration for at most michelot_max_iter
 * steps, then bisection. Exposed so tests can force the bisection path.
 */
double sg_sparsemax_tau_f32(const float *d, size_t n, int michelot_max_iter);

#endif
