/*
 * test_dispatch.c - the kernel listing behind `softgate info`: every slot
 * of the core and of each family is named, has a kernel, and that kernel
 * belongs to an ISA level no higher than the active one (so SOFTGATE_ISA
 * really restricts every family).
 */
#include <string.h>

#include "test.h"

/* The ISA level a kernel's name says it needs (its "__isa" suffix). */
static int level_of(const char *impl) {
    const char *s = strstr(impl, "__");
    if (!s) return -1;
    s += 2;
    if (strncmp(s, "avx512", 6) == 0) return SG_ISA_AVX512;
    if (strncmp(s, "avx2", 4) == 0) return SG_ISA_AVX2;
    if (strncmp(s, "ref", 3) == 0) return SG_ISA_REF;
    return -2; /* another architecture's level (e.g. neon): not checked */
}

TEST(dispatch_listing_every_family) {
    size_t count = sg_kernel_count();
    const char *families[] = {"sparse.", "alternatives.", "losses.", "moe.", "route."};
    size_t seen[5] = {0};
    int active = (int)sg_active_isa();
    for (size_t i = 0; i < count; i++) {
        const char *slot = sg_kernel_slot_name(i), *impl = sg_kernel_impl_name(i);
        CHECK(slot && impl, "slot %zu has no name or no kernel", i);
        if (!slot || !impl) continue;
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(slot, sg_kernel_slot_name(j)) != 0, "slot name %s listed twice", slot);
        for (size_t f = 0; f < 5; f++)
            if (strncmp(slot, families[f], strlen(families[f])) == 0) seen[f]++;
        int level = level_of(impl);
        CHECK(level != -1, "kernel %s of slot %s has no __isa suffix", impl, slot);
        if (level >= 0)
            CHECK(level <= active, "slot %s uses %s above the active level %s", slot, impl,
                  sg_isa_name((sg_isa)active));
    }
    for (size_t f = 0; f < 5; f++) CHECK(seen[f] > 0, "no %s slots listed", families[f]);
    CHECK(sg_kernel_slot_name(count) == NULL && sg_kernel_impl_name(count) == NULL,
          "slot %zu (one past the end) is not NULL", count);
}
