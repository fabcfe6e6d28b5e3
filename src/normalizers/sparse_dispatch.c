/*
 * sparse_dispatch.c - the sparse normalizers' kernel table, filled once
 * from sparse_manifest.inc: every REF line, then each line whose ISA is at
 * most sg_active_isa() (the CPU's best level, restricted by SOFTGATE_ISA).
 */
#include <pthread.h>

#include "normalizers/sparse_kernels.h"

#define SG_SPARSE_KERNEL(slot, isa, fn, tile) sg_sparse_##slot##_fn fn;
#include "normalizers/sparse_manifest.inc"
#undef SG_SPARSE_KERNEL

static const sg_sparse_kernel_entry all_kernels[] = {
#define SG_SPARSE_KERNEL(slot, isa, fn, tile) \
    {SG_SPARSE_SLOT_##slot, SG_ISA_##isa, #fn, (void (*)(void))fn},
#include "normalizers/sparse_manifest.inc"
#undef SG_SPARSE_KERNEL
};

static sg_sparse_kernels table;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void install(enum sg_sparse_slot slot, void (*fn)(void)) {
    switch (slot) {
#define SG_SPARSE_SLOT(s) \
    case SG_SPARSE_SLOT_##s: table.s = (sg_sparse_##s##_fn *)fn; break;
#include "normalizers/sparse_slots.inc"
#undef SG_SPARSE_SLOT
    case SG_SPARSE_SLOT_COUNT: break;
    }
}

static void fill_table(void) {
    const sg_isa level = sg_active_isa();
    for (size_t i = 0; i < sizeof all_kernels / sizeof all_kernels[0]; i++) {
        const sg_sparse_kernel_entry *k = &all_kernels[i];
        if (k->isa > level) continue;
        install(k->slot, k->fn);
        table.impl_name[k->slot] = k->name;
        table.isa[k->slot] = k->isa;
    }
}

const sg_sparse_kernels *sg_sparse_kernels_get(void) {
    pthread_once(&once, fill_table);
    return &table;
}

const sg_sparse_kernel_entry *sg_sparse_kernel_entries(size_t *count) {
    *count = sizeof all_kernels / sizeof all_kernels[0];
    return all_kernels;
}

/* For `softgate info`: slot i of this family and the kernel chosen for it. */
size_t sg_sparse_kernel_list(size_t i, const char **slot, const char **impl) {
    static const char *const names[SG_SPARSE_SLOT_COUNT] = {
#define SG_SPARSE_SLOT(s) "sparse." #s,
#include "normalizers/sparse_slots.inc"
#undef SG_SPARSE_SLOT
    };
    if (i < SG_SPARSE_SLOT_COUNT) {
        *slot = names[i];
        *impl = sg_sparse_kernels_get()->impl_name[i];
    }
    return SG_SPARSE_SLOT_COUNT;
}
