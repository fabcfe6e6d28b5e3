/*
 * dispatch.c - fills the kernel table from the manifests and answers the
 * public introspection calls (sg_active_isa, sg_kernel_*). Kernels
 * themselves live in their family's folder.
 */
#include "core/dispatch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"

/* Prototypes of every kernel named in the manifests. */
#define SG_KERNEL(slot, isa, fn) sg_##slot##_fn fn;
#include "softmax/softmax_manifest.inc"
#undef SG_KERNEL

static const sg_kernel_entry all_kernels[] = {
#define SG_KERNEL(slot, isa, fn) {SG_SLOT_##slot, SG_ISA_##isa, #fn, (void (*)(void))fn},
#include "softmax/softmax_manifest.inc"
#undef SG_KERNEL
};

static const char *const slot_names[SG_SLOT_COUNT] = {
#define SG_SLOT(slot) #slot,
#include "softmax/softmax_slots.inc"
#undef SG_SLOT
};

static sg_cpu_info cpu;
static sg_kernels table;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static sg_isa cpu_best_isa(void) {
    if (cpu.has_avx512f && cpu.has_avx512bw && cpu.has_avx512dq &&
        cpu.has_avx512vl && cpu.has_fma)
        return SG_ISA_AVX512;
    if (cpu.has_avx2 && cpu.has_fma) return SG_ISA_AVX2;
    return SG_ISA_REF;
}

/* SOFTGATE_ISA=ref|avx2|avx512|native; unknown values mean native. */
static sg_isa requested_isa(void) {
    const char *env = getenv("SOFTGATE_ISA");
    if (!env || !*env || strcmp(env, "native") == 0) return SG_ISA_AVX512;
    if (strcmp(env, "ref") == 0) return SG_ISA_REF;
    if (strcmp(env, "avx2") == 0) return SG_ISA_AVX2;
    return SG_ISA_AVX512;
}

static size_t short_max_n(sg_isa isa) {
    switch (isa) {
    case SG_ISA_AVX512: return 128; /* 8 zmm registers */
    case SG_ISA_AVX2: return 64;    /* 8 ymm registers */
    default: return 64;
    }
}

static void install(enum sg_slot_id slot, void (*fn)(void)) {
    switch (slot) {
#define SG_SLOT(s) case SG_SLOT_##s: table.s = (sg_##s##_fn *)fn; break;
#include "softmax/softmax_slots.inc"
#undef SG_SLOT
    case SG_SLOT_COUNT: break;
    }
}

static void fill_table(void) {
    sg_cpu_detect(&cpu);
    sg_isa best = cpu_best_isa(), want = requested_isa();
    table.isa = want < best ? want : best;
    for (size_t i = 0; i < sizeof all_kernels / sizeof all_kernels[0]; i++) {
        const sg_kernel_entry *k = &all_kernels[i];
        if (k->isa > table.isa) continue;
        install(k->slot, k->fn);
        table.impl_name[k->slot] = k->name;
        table.impl_isa[k->slot] = k->isa;
    }
    table.softmax_short_max_n = short_max_n(table.impl_isa[SG_SLOT_softmax_short]);
}

const sg_kernels *sg_kernels_get(void) {
    pthread_once(&once, fill_table);
    return &table;
}

const sg_kernel_entry *sg_kernel_entries(size_t *count) {
    *count = sizeof all_kernels / sizeof all_kernels[0];
    return all_kernels;
}

const char *sg_isa_name(sg_isa isa) {
    switch (isa) {
    case SG_ISA_REF: return "ref";
    case SG_ISA_AVX2: return "avx2";
    case SG_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

sg_isa sg_active_isa(void) { return sg_kernels_get()->isa; }

int sg_cpu_supports(sg_isa isa) {
    sg_kernels_get();
    return isa <= cpu_best_isa();
}

const char *sg_cpu_features(void) {
    sg_kernels_get();
    return cpu.features;
}

static sg_kernel_list_fn *const families[] = {sg_sparse_kernel_list, sg_alt_kernel_list,
                                                sg_loss_kernel_list, sg_moe_kernel_list,
                                                sg_route_kernel_list};

/* Slot i over the core's table then each family's; 0 when out of range. */
static int kernel_at(size_t i, const char **slot, const char **impl) {
    if (i < SG_SLOT_COUNT) {
        *slot = slot_names[i];
        *impl = sg_kernels_get()->impl_name[i];
        return 1;
    }
    i -= SG_SLOT_COUNT;
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        size_t count = families[f](i, slot, impl);
        if (i < count) return 1;
        i -= count;
    }
    return 0;
}

size_t sg_kernel_count(void) {
    size_t total = SG_SLOT_COUNT;
    const char *slot, *impl;
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++)
        total += families[f]((size_t)-1, &slot, &impl);
    return total;
}

const char *sg_kernel_slot_name(size_t i) {
    const char *slot, *impl;
    return kernel_at(i, &slot, &impl) ? slot : NULL;
}

const char *sg_kernel_impl_name(size_t i) {
    const char *slot, *impl;
    return kernel_at(i, &slot, &impl) ? impl : NULL;
}
