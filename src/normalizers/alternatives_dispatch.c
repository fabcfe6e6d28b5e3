/*
 * alternatives_dispatch.c - the kernel table of the softmax alternatives,
 * filled once from alternatives_manifest.inc at the ISA level the core's
 * dispatch chose (sg_active_isa: CPU features and SOFTGATE_ISA), reference
 * kernels first. A table of its own keeps this family's slots out of the
 * core's table; the level, and so the forced paths of the tests, are the
 * same.
 */
#include <pthread.h>

#include "core/dispatch.h"
#include "normalizers/alternatives_kernels.h"

#define SG_ALT_KERNEL(slot, isa, fn) sg_##slot##_fn fn;
#include "normalizers/alternatives_manifest.inc"
#undef SG_ALT_KERNEL

static const sg_alt_kernel_entry entries[] = {
#define SG_ALT_KERNEL(slot, isa, fn) {SG_ALT_SLOT_##slot, SG_ISA_##isa, #fn, (void (*)(void))fn},
#include "normalizers/alternatives_manifest.inc"
#undef SG_ALT_KERNEL
};

static const char *const slot_names[SG_ALT_SLOT_COUNT] = {
#define SG_ALT_SLOT(slot) #slot,
#include "normalizers/alternatives_slots.inc"
#undef SG_ALT_SLOT
};

static sg_alt_kernels table;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void install(enum sg_alt_slot_id slot, void (*fn)(void)) {
    switch (slot) {
#define SG_ALT_SLOT(s) case SG_ALT_SLOT_##s: table.s = (sg_##s##_fn *)fn; break;
#include "normalizers/alternatives_slots.inc"
#undef SG_ALT_SLOT
    case SG_ALT_SLOT_COUNT: break;
    }
}

static void fill(void) {
    const sg_isa level = sg_active_isa();
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        if (entries[i].isa > level) continue;
        install(entries[i].slot, entries[i].fn);
        table.impl_name[entries[i].slot] = entries[i].name;
    }
}

const sg_alt_kernels *sg_alt_kernels_get(void) {
    pthread_once(&once, fill);
    return &table;
}

const sg_alt_kernel_entry *sg_alt_kernel_entries(size_t *count) {
    *count = sizeof entries / sizeof entries[0];
    return entries;
}

const char *sg_alt_slot_name(enum sg_alt_slot_id slot) {
    return slot < SG_ALT_SLOT_COUNT ? slot_names[slot] : "?";
}

/* For `softgate info`: slot i of this family and the kernel chosen for it. */
size_t sg_alt_kernel_list(size_t i, const char **slot, const char **impl) {
    static const char *const names[SG_ALT_SLOT_COUNT] = {
#define SG_ALT_SLOT(s) "alternatives." #s,
#include "normalizers/alternatives_slots.inc"
#undef SG_ALT_SLOT
    };
    if (i < SG_ALT_SLOT_COUNT) {
        *slot = names[i];
        *impl = sg_alt_kernels_get()->impl_name[i];
    }
    return SG_ALT_SLOT_COUNT;
}
