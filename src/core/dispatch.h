/*
 * dispatch.h - the kernel table: one function pointer per slot, filled with
 * the reference kernels first and then overridden by the strongest ISA the
 * CPU has and SOFTGATE_ISA allows. Internal.
 */
#ifndef SG_CORE_DISPATCH_H
#define SG_CORE_DISPATCH_H

#include "softgate.h"
#include "softmax/softmax_kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#define SG_ARCH_X86_64 1
#else
#define SG_ARCH_X86_64 0
#endif

enum sg_slot_id {
#define SG_SLOT(slot) SG_SLOT_##slot,
#include "softmax/softmax_slots.inc"
#undef SG_SLOT
    SG_SLOT_COUNT
};

typedef struct sg_kernels {
#define SG_SLOT(slot) sg_##slot##_fn *slot;
#include "softmax/softmax_slots.inc"
#undef SG_SLOT
    const char *impl_name[SG_SLOT_COUNT];
    sg_isa impl_isa[SG_SLOT_COUNT];
    /* Longest row the softmax_short kernel in the table accepts. */
    size_t softmax_short_max_n;
    sg_isa isa; /* the level dispatch was restricted to */
} sg_kernels;

/* The table, filled on first use (thread-safe). Never NULL, no NULL slot. */
const sg_kernels *sg_kernels_get(void);

/* Every kernel compiled into this build, for tests that check each one
 * against the reference whatever dispatch chose. */
typedef struct sg_kernel_entry {
    enum sg_slot_id slot;
    sg_isa isa;
    const char *name;
    void (*fn)(void); /* cast to the slot's type before calling */
} sg_kernel_entry;
const sg_kernel_entry *sg_kernel_entries(size_t *count);

/*
 * The kernel families with tables of their own (sparse normalizers, the
 * alternatives, losses, MoE): f(i, &slot, &impl) returns the family's slot
 * count and, for i below it, slot i's name and the kernel chosen. Listed
 * after the core's slots by sg_kernel_count / _slot_name / _impl_name.
 */
typedef size_t sg_kernel_list_fn(size_t i, const char **slot, const char **impl);
sg_kernel_list_fn sg_sparse_kernel_list, sg_alt_kernel_list, sg_loss_kernel_list,
    sg_moe_kernel_list, sg_route_kernel_list;

#endif
