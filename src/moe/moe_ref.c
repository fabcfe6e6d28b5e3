/*
 * moe_ref.c - reference kernels of the MoE family (portable C) and the
 * per-process choice among them. Contracts in moe_kernels.h.
 */
#include <math.h>
#include <stdatomic.h>

#include "moe/moe_kernels.h"

/* Four partial sums per dot product (i mod 4), added pairwise at the end:
 * a fixed order, and four times the speed of a single running sum. */
void sg_moe_rowdot_f32__ref(size_t n, size_t m, size_t len, const float *x, size_t ldx,
                            const float *w, size_t ldw, float *out, size_t ldo,
                            const float *next, size_t next_m) {
    (void)next, (void)next_m; /* no prefetch here */
    for (size_t j = 0; j < m; j++) {
        const float *wj = w + j * ldw;
        for (size_t r = 0; r < n; r++) {
            const float *xr = x + r * ldx;
            float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            size_t i = 0;
            for (; i + 4 <= len; i += 4)
                for (int q = 0; q < 4; q++) s[q] += xr[i + q] * wj[i + q];
            for (; i < len; i++) s[i % 4] += xr[i] * wj[i];
            out[r * ldo + j] = (s[0] + s[1]) + (s[2] + s[3]);
        }
    }
}

/* silu(a) b = a b / (1 + exp(-a)); gelu-tanh as a sigmoid(2u) = a / (1 +
 * exp(-2u)), which equals a/2 (1 + tanh u) without its cancellation for
 * a << 0; gelu-erf by its definition; in double. */
void sg_moe_act_f32__ref(sg_moe_activation act, size_t cnt, float *a, const float *b) {
    for (size_t i = 0; i < cnt; i++) {
        double v = a[i];
        switch (act) {
        case SG_MOE_SWIGLU: a[i] = (float)(v / (1.0 + exp(-v)) * (double)b[i]); break;
        case SG_MOE_GELU_TANH:
            a[i] = (float)(v / (1.0 + exp(-1.5957691216057308 * (v + 0.044715 * v * v * v))));
            break;
        case SG_MOE_GELU_ERF: a[i] = (float)(0.5 * v * (1.0 + erf(v * 0.7071067811865476))); break;
        }
    }
}

static const sg_moe_kernels ref_kernels = {sg_moe_rowdot_f32__ref, sg_moe_act_f32__ref, "ref"};
#if defined(__x86_64__)
static const sg_moe_kernels avx2_kernels = {sg_moe_rowdot_f32__avx2, sg_moe_act_f32__avx2, "avx2"};
static const sg_moe_kernels avx512_kernels = {sg_moe_rowdot_f32__avx512, sg_moe_act_f32__avx512,
                                              "avx512"};
#endif

/* sg_active_isa() is fixed for the process (SOFTGATE_ISA is read once), so
 * the choice is too; racing first calls store the same pointer. */
static _Atomic(const sg_moe_kernels *) chosen;

const sg_moe_kernels *sg_moe_kernels_get(void) {
    const sg_moe_kernels *k = atomic_load_explicit(&chosen, memory_order_acquire);
    if (k) return k;
    k = &ref_kernels;
#if defined(__x86_64__)
    sg_isa isa = sg_active_isa();
    if (isa >= SG_ISA_AVX2) k = &avx2_kernels;
    if (isa >= SG_ISA_AVX512) k = &avx512_kernels;
#endif
    atomic_store_explicit(&chosen, k, memory_order_release);
    return k;
}

/* For `softgate info`: this family's two slots and the kernels chosen. */
size_t sg_moe_kernel_list(size_t i, const char **slot, const char **impl) {
    static const char *const slots[2] = {"moe.rowdot", "moe.act"};
    static const char *const names[][2] = {
        {"sg_moe_rowdot_f32__ref", "sg_moe_act_f32__ref"},
        {"sg_moe_rowdot_f32__avx2", "sg_moe_act_f32__avx2"},
        {"sg_moe_rowdot_f32__avx512", "sg_moe_act_f32__avx512"},
    };
    if (i < 2) {
        const sg_moe_kernels *k = sg_moe_kernels_get();
        size_t level = k->rowdot == sg_moe_rowdot_f32__ref ? 0 : 2;
#if defined(__x86_64__)
        if (k->rowdot == sg_moe_rowdot_f32__avx2) level = 1;
#endif
        *slot = slots[i];
        *impl = names[level][i];
    }
    return 2;
}
