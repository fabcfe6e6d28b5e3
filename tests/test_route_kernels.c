/*
 * test_route_kernels.c - the routers' top-k selection kernels (every one
 * compiled in whose ISA the CPU has, whatever SOFTGATE_ISA says) against a
 * straightforward selection written here: repeatedly the largest
 * remaining key, the lowest index among equals. Rows of n = 1..300 (around
 * the 8/16/32-key tiles) and a few past the stack limit, k = 1..20, with
 * random keys, many ties (few distinct values), +-inf, -0/+0, and rows
 * built to defeat the candidate threshold.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "route/route_kernels.h"
#include "test.h"

static void reference_topk(const float *key, size_t n, size_t k, int32_t *ids) {
    unsigned char *used = calloc(n, 1);
    for (size_t l = 0; l < k; l++) {
        size_t best = n;
        for (size_t i = 0; i < n; i++) {
            if (used[i]) continue;
            if (best == n || (double)key[i] > (double)key[best]) best = i;
        }
        used[best] = 1;
        ids[l] = (int32_t)best;
    }
    free(used);
}

static void fill_row(test_rng *r, int kind, float *key, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case 0: key[i] = (float)test_normal(r); break;
        case 1: key[i] = (float)(int)(test_uniform(r) * 4.0); break; /* ties */
        case 2: { /* +-inf and signed zeros among normals */
            double u = test_uniform(r);
            key[i] = u < 0.1 ? INFINITY : u < 0.3 ? -INFINITY : u < 0.4 ? 0.0f : u < 0.5 ? -0.0f
                                                                              : (float)test_normal(r);
            break;
        }
        case 3: key[i] = 1.0f; break; /* all tied */
        case 4: key[i] = -INFINITY; break;
        default: key[i] = (float)i * 1e-3f; break; /* ascending: largest last */
        }
    }
}

TEST(route_topk_kernels_reference) {
    size_t count;
    const sg_route_kernel_entry *ents = sg_route_kernel_entries(&count);
    test_rng r = test_rng_seed(77);
    const size_t nmax = 1100;
    float *key = malloc(nmax * sizeof *key), top[32];
    int32_t ids[32], want[32];
    const size_t extra[] = {511, 512, 1023, 1024, 1025, 1100};
    const size_t step = test_quick ? 7 : 1;
    size_t tested = 0;
    for (size_t e = 0; e < count; e++) {
        if (!sg_cpu_supports(ents[e].isa)) continue;
        sg_route_topk_fn *fn = (sg_route_topk_fn *)ents[e].fn;
        tested++;
        for (size_t t = 0; t < 300 / step + 6; t++) {
            const size_t n = t < 300 / step ? 1 + t * step : extra[t - 300 / step];
            for (int kind = 0; kind < 6; kind++) {
                for (size_t k = 1; k <= 20 && k <= n; k += (k < 10 ? 1 : 5)) {
                    fill_row(&r, kind, key, n);
                    reference_topk(key, n, k, want);
                    memset(ids, 0xff, sizeof ids);
                    fn(key, n, k, ids, top);
                    int same = 1;
                    for (size_t l = 0; l < k; l++)
                        same &= ids[l] == want[l] && ids[l] >= 0 &&
                                memcmp(&top[l], &key[want[l]], sizeof(float)) == 0;
                    CHECK(same, "%s n=%zu k=%zu kind=%d: id[0]=%d want %d, id[k-1]=%d want %d",
                          ents[e].name, n, k, kind, ids[0], want[0], ids[k - 1], want[k - 1]);
                    if (!same) goto done;
                }
            }
        }
    }
done:
    CHECK(tested >= 1, "no top-k kernel tested");
    CHECK(sg_route_kernels_get()->topk != NULL, "no top-k kernel installed");
    free(key);
}
