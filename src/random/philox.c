/*
 * philox.c - the counter-based generator that every stochastic operator of
 * softgate draws from: Philox4x32-10 (Salmon, Moraes, Dror and Shaw,
 * "Parallel Random Numbers: As Easy as 1, 2, 3", SC11), and uniforms keyed
 * by (seed, stream offset, row, column).
 *
 * Being a pure function of its key and counter, the generator gives the same
 * numbers whatever the thread count or the order in which rows are drawn,
 * and a caller that advances the offset between calls never repeats them.
 */
#include <stdint.h>

#include "core/context.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

static inline void philox_round(uint32_t c[4], const uint32_t k[2]) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0], p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t c1 = c[1], c3 = c[3];
    c[0] = hi1 ^ c1 ^ k[0];
    c[1] = lo1;
    c[2] = hi0 ^ c3 ^ k[1];
    c[3] = lo0;
}

void sg_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]}, k[2] = {key[0], key[1]};
    for (int round = 0; round < 10; round++) {
        if (round) { /* the key is bumped by the Weyl constants between rounds */
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    for (int i = 0; i < 4; i++) out[i] = c[i];
}

/* 32 random bits to a float strictly inside (0, 1): the top 23 bits plus
 * one half, times 2^-23, so u lies in [2^-24, 1 - 2^-24] and 0 and 1 are
 * never produced (log(-log(u)) of a Gumbel sample stays finite). With 23
 * bits, k + 0.5 < 2^23 is exact in float; with 24 it would round to even
 * above 2^23 and could reach 1. */
static inline float to_open_unit(uint32_t bits) {
    return ((float)(bits >> 9) + 0.5f) * 0x1p-23f;
}

typedef struct uniform_job {
    uint32_t key[2];
    uint64_t offset;
    size_t rows, n, ldu, rows_per_task;
    float *u;
} uniform_job;

static void uniform_rows(const uniform_job *j, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
        float *row = j->u + r * j->ldu;
        for (size_t i = 0; i < j->n; i += 4) {
            /* counter = (column block, row, offset): each value is a pure
             * function of (seed, offset, row, column). */
            const uint32_t ctr[4] = {(uint32_t)(i / 4), (uint32_t)r, (uint32_t)j->offset,
                                     (uint32_t)(j->offset >> 32)};
            uint32_t out[4];
            sg_philox4x32_10(ctr, j->key, out);
            for (size_t k = 0; k < 4 && i + k < j->n; k++) row[i + k] = to_open_unit(out[k]);
        }
    }
}

static void uniform_task(void *arg, size_t t) {
    const uniform_job *j = arg;
    size_t r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
    uniform_rows(j, r0, r1 < j->rows ? r1 : j->rows);
}

sg_status sg_random_uniform_f32(sg_context *ctx, uint64_t seed, uint64_t offset, size_t rows,
                                size_t n, float *u, size_t ldu) {
    static const char name[] = "sg_random_uniform_f32";
    if (!ctx) return SG_ERR_ARGUMENT;
    sg_ok(ctx);
    if (rows == 0 || n == 0) return SG_OK;
    if (!u) return sg_fail(ctx, SG_ERR_ARGUMENT, "%s: u is NULL", name);
    if (ldu < n) return sg_fail(ctx, SG_ERR_SHAPE, "%s: ldu (%zu) is less than n (%zu)", name, ldu, n);
    if (rows > 0xFFFFFFFFu || n / 4 > 0xFFFFFFFFu || n > SIZE_MAX / sizeof(float))
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: rows must be < 2^32 and n < 2^34 (got %zu, %zu)", name,
                       rows, n);
    if ((rows - 1) > (SIZE_MAX / sizeof(float) - n) / ldu)
        return sg_fail(ctx, SG_ERR_SHAPE, "%s: %zu rows of stride %zu overflow the address space", name,
                       rows, ldu);
    uniform_job j = {{(uint32_t)seed, (uint32_t)(seed >> 32)}, offset, rows, n, ldu, 0, u};
    j.rows_per_task = 16384 / n > 0 ? 16384 / n : 1;
    sg_parallel_for(ctx, (rows + j.rows_per_task - 1) / j.rows_per_task, uniform_task, &j);
    return SG_OK;
}
