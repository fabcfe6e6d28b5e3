/*
 * alternatives_simd.h - the bodies of the softmax alternatives' vector
 * kernels, written once over a small vector layer that each ISA file
 * (alternatives_avx2.c, alternatives_avx512.c) defines before including
 * this file: VF (a vector of VW floats), VM (a lane mask), and
 *   vset1 vload vstore vadd vsub vmul vdiv vfma(a,b,c)=a*b+c
 *   vmax(a,b) vmin(a,b) (b returned when either is NaN, as maxps does)
 *   vabs vround (to nearest) vldexp(p,k) (p * 2^k, k integral, any range)
 *   vgt vge vlt (ordered compares) vsel(m,a,b) = m ? a : b  vfirst(rem)
 *   KNAME(name) (the kernel's name with the ISA suffix).
 * Only this file includes it. Contracts: alternatives_kernels.h; the
 * reference kernels (alternatives_ref.c) are the spec.
 *
 * Tails (n % VW) use masked loads and stores: full-width arithmetic on
 * zero-padded lanes, with the padded lanes' contributions to sums masked
 * out, and only the valid lanes written.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "normalizers/alternatives_kernels.h"
#include "softmax/softmax_kernels.h"

/* The softmax core's exponential (softmax_avx2.c / softmax_avx512.c):
 * Cody-Waite reduction with FMA and the same degree-5 minimax polynomial
 * on |r| <= ln2/2 (relative error 9.2e-8 before rounding). Here it must
 * also take positive arguments (sigmoid's e^-|z| does not, but expm1 of
 * z up to 64 does), so d is clamped to [-150, 128] and 2^k applied by
 * vldexp, which overflows to +inf and underflows to denormals or 0. */
#define ALT_C5 0x1.0F9F9Cp-7f
#define ALT_C4 0x1.573A1Ap-5f
#define ALT_C3 0x1.555A80p-3f
#define ALT_C2 0x1.FFFDC6p-2f
#define ALT_C1 0x1.FFFFF6p-1f
#define ALT_LOG2E 0x1.715476p+0f
#define ALT_MINUS_LN2_HI -0x1.62E430p-1f
#define ALT_PLUS_LN2_LO 0x1.05C610p-29f

/* e^(d + lo) for |lo| <= ulp(d) / 2: lo is the rounding error of a
 * difference d = a - b, added after the reduction (where r is small, so
 * it is not lost). */
static inline VF v_exp_lo(VF d, VF lo) {
    d = vmax(vset1(-150.0f), d); /* NaN passes (second operand) */
    d = vmin(vset1(128.0f), d);
    VF k = vround(vmul(d, vset1(ALT_LOG2E)));
    VF r = vfma(k, vset1(ALT_MINUS_LN2_HI), d);
    r = vfma(k, vset1(ALT_PLUS_LN2_LO), r);
    r = vadd(r, lo);
    VF p = vfma(vset1(ALT_C5), r, vset1(ALT_C4));
    p = vfma(p, r, vset1(ALT_C3));
    p = vfma(p, r, vset1(ALT_C2));
    p = vfma(p, r, vset1(ALT_C1));
    p = vfma(p, r, vset1(1.0f));
    return vldexp(p, k);
}

static inline VF v_exp(VF d) { return v_exp_lo(d, vset1(0.0f)); }

/* e^z - 1 without cancellation near 0, with one reduction: z = k ln2 + r
 * (|r| <= ln2/2), q = e^r - 1 = r (1 + r/2 + ... + r^6/5040) (Taylor,
 * truncation 1.5e-8 relative), e^z - 1 = 2^k q + (2^k - 1). For k = 0
 * (|z| < 0.35) that is q itself, accurate relative to z; otherwise
 * |e^z - 1| >= 0.29 and the sum loses at most a bit. z <= 88 (the
 * softpick caller guarantees z <= 64); z = -inf gives -1, NaN gives NaN. */
static inline VF v_expm1(VF z) {
    VF d = vmax(vset1(-150.0f), z); /* NaN passes (second operand) */
    VF k = vround(vmul(d, vset1(ALT_LOG2E)));
    VF r = vfma(k, vset1(ALT_MINUS_LN2_HI), d);
    r = vfma(k, vset1(ALT_PLUS_LN2_LO), r);
    VF p = vfma(vset1(1.0f / 5040.0f), r, vset1(1.0f / 720.0f));
    p = vfma(p, r, vset1(1.0f / 120.0f));
    p = vfma(p, r, vset1(1.0f / 24.0f));
    p = vfma(p, r, vset1(1.0f / 6.0f));
    p = vfma(p, r, vset1(0.5f));
    VF q = vfma(vmul(p, r), r, r);
    VF t = vldexp(vset1(1.0f), k); /* 2^k */
    return vfma(t, q, vsub(t, vset1(1.0f)));
}

/*
 * log(x): x = m 2^e with m in [sqrt(1/2), sqrt(2)) (vlog_parts, denormals
 * included), log m = 2 atanh(f) with f = (m - 1) / (m + 1), |f| <= 0.1716,
 * by its series to f^9 (truncation 4e-10 relative), so log(1 - 2^-24) and
 * other arguments near 1 keep full relative accuracy. 0 -> -inf, +inf ->
 * +inf, negative or NaN -> NaN.
 */
static inline VF v_log(VF x) {
    VF e, m = vlog_parts(x, &e);
    VF f = vdiv(vsub(m, vset1(1.0f)), vadd(m, vset1(1.0f))), f2 = vmul(f, f);
    VF p = vfma(vset1(1.0f / 9.0f), f2, vset1(1.0f / 7.0f));
    p = vfma(p, f2, vset1(1.0f / 5.0f));
    p = vfma(p, f2, vset1(1.0f / 3.0f));
    p = vmul(vmul(p, f2), f);
    VF lm = vmul(vset1(2.0f), vadd(f, p));
    VF r = vfma(e, vset1(0x1.62E430p-1f), vfma(e, vset1(-0x1.05C610p-29f), lm));
    r = vsel(vgt(x, vset1(0.0f)), r, vset1(NAN));
    r = vsel(vge(vset1(0.0f), x), vsel(vge(x, vset1(0.0f)), vset1(-INFINITY), r), r);
    return vsel(vge(x, vset1(INFINITY)), vset1(INFINITY), r);
}

static inline VF v_sigmoid(VF z) {
    VF e = v_exp(vsub(vset1(0.0f), vabs(z)));
    VF r = vdiv(vset1(1.0f), vadd(vset1(1.0f), e));
    return vsel(vge(z, vset1(0.0f)), r, vmul(e, r)); /* NaN: e * r = NaN */
}

static inline VF v_stable_s(VF z) {
    VF pos = vadd(z, vset1(1.0f));
    VF neg = vdiv(vset1(1.0f), vsub(vset1(1.0f), z));
    return vsel(vge(z, vset1(0.0f)), pos, neg);
}

/* Softpick's scaled e^z - 1 (two forms, see sg_softpick_store_fn). */
static inline VF v_softpick_e(VF z, float m, float em) {
    if (m <= SG_SOFTPICK_EXPM1_MAX) return vmul(vset1(em), v_expm1(z));
    /* z - m rounded to float loses up to 2^-18 absolute (z ~ 10, m ~ 80):
     * 4e-6 relative after exp. TwoSum keeps the lost part; z is clamped
     * to -FLT_MAX first so that -inf does not make it NaN. */
    const VF vm = vset1(-m);
    z = vmax(vset1(-FLT_MAX), z);
    VF hi = vadd(z, vm), bb = vsub(hi, z);
    VF lo = vadd(vsub(z, vsub(hi, bb)), vsub(vm, bb));
    return vsub(v_exp_lo(hi, lo), vset1(em));
}

/* The lanes of v summed in double (vhsum_d of the ISA file: a tree of
 * double vectors, not a serial chain). Tails load and store through the
 * ISA's masked moves (vload_n, vstore_n: lanes >= rem read as 0, not
 * written). */
static inline double hsum_d(VF v) { return vhsum_d(v); }
static inline VF load_tail(const float *p, size_t rem) { return vload_n(p, rem); }
static inline void store_tail(float *p, VF v, size_t rem) { vstore_n(p, v, rem); }

/* Loops of the sum kernels: BODY(i, v, valid) handles the vector at i
 * (v = z of that vector, valid = mask of real lanes), adding to acc
 * (float lanes) which is folded into `sum` (double) every SG_SUM_BLOCK. */
#define ALT_SUM_LOOP(n, x, c, ...)                                                   \
    do {                                                                              \
        const VF vc_ = vset1(c);                                                      \
        size_t i_ = 0;                                                                \
        while (i_ < (n)) {                                                            \
            size_t end_ = (n) - i_ > SG_SUM_BLOCK ? i_ + SG_SUM_BLOCK : (n);          \
            VF acc = vset1(0.0f), acc2 = vset1(0.0f);                                 \
            for (; i_ + VW <= end_; i_ += VW) {                                       \
                const size_t i = i_, rem = VW;                                        \
                const VF v = vmul(vload((x) + i_), vc_);                              \
                const VM valid = vfirst(VW);                                          \
                (void)rem, (void)valid;                                               \
                __VA_ARGS__;                                                          \
            }                                                                         \
            if (i_ < end_) {                                                          \
                const size_t i = i_, rem = end_ - i_;                                 \
                const VF v = vmul(load_tail((x) + i_, rem), vc_);                     \
                const VM valid = vfirst(rem);                                         \
                (void)rem, (void)valid;                                               \
                __VA_ARGS__;                                                          \
                i_ = end_;                                                            \
            }                                                                         \
            sum += hsum_d(acc);                                                       \
            sum2 += hsum_d(acc2);                                                     \
        }                                                                             \
    } while (0)

/* Stores the lanes of `val` at y + i: the whole vector, or the tail. */
#define ALT_PUT(y, i, rem, val)                                                       \
    do {                                                                              \
        if ((rem) == VW) vstore((y) + (i), (val));                                    \
        else store_tail((y) + (i), (val), (rem));                                     \
    } while (0)

#define ALT_GET(p, i, rem) ((rem) == VW ? vload((p) + (i)) : load_tail((p) + (i), (rem)))

#define ZERO vset1(0.0f)

double KNAME(sg_sigmoid_store_f32)(size_t n, const float *x, float *y, float c) {
    double sum = 0.0, sum2 = 0.0;
    ALT_SUM_LOOP(n, x, c, {
        VF s = v_sigmoid(v);
        ALT_PUT(y, i, rem, s);
        acc = vadd(acc, vsel(valid, s, ZERO));
    });
    return sum + sum2;
}

double KNAME(sg_stablemax_store_f32)(size_t n, const float *x, float *y, float c) {
    double sum = 0.0, sum2 = 0.0;
    ALT_SUM_LOOP(n, x, c, {
        VF s = v_stable_s(v);
        ALT_PUT(y, i, rem, s);
        acc = vadd(acc, vsel(valid, s, ZERO));
    });
    return sum + sum2;
}

double KNAME(sg_softpick_store_f32)(size_t n, const float *x, float *y, float c, float m,
                                    float em) {
    double sum = 0.0, sum2 = 0.0;
    ALT_SUM_LOOP(n, x, c, {
        VF e = v_softpick_e(v, m, em);
        ALT_PUT(y, i, rem, vmax(ZERO, e));
        acc = vadd(acc, vsel(valid, vabs(e), ZERO));
    });
    return sum + sum2;
}

double KNAME(sg_softpick_sums_f32)(size_t n, const float *x, const float *dy, float c, float m,
                                   float em, double *dot) {
    double sum = 0.0, sum2 = 0.0;
    ALT_SUM_LOOP(n, x, c, {
        VF e = v_softpick_e(v, m, em);
        VF g = ALT_GET(dy, i, rem);
        acc = vadd(acc, vsel(valid, vabs(e), ZERO));
        acc2 = vadd(acc2, vsel(vgt(e, ZERO), vmul(g, e), ZERO)); /* pad lanes: e = 0 */
    });
    *dot = sum2;
    return sum;
}

/* Elementwise loops: BODY computes `out` from the lanes at i. */
#define ALT_MAP_LOOP(n, dst, ...)                                                    \
    do {                                                                              \
        size_t i_ = 0;                                                                \
        for (; i_ + VW <= (n); i_ += VW) {                                            \
            const size_t i = i_, rem = VW;                                            \
            VF out;                                                                   \
            __VA_ARGS__;                                                              \
            vstore((dst) + i, out);                                                   \
        }                                                                             \
        if (i_ < (n)) {                                                               \
            const size_t i = i_, rem = (n) - i_;                                      \
            VF out;                                                                   \
            __VA_ARGS__;                                                              \
            store_tail((dst) + i, out, rem);                                          \
        }                                                                             \
    } while (0)

void KNAME(sg_softpick_bwd_f32)(size_t n, const float *x, const float *dy, float *dx, float c,
                                float m, float em, float inv_d, float dot) {
    const VF vc = vset1(c), vdot = vset1(dot), vem = vset1(em), vinv = vset1(inv_d);
    ALT_MAP_LOOP(n, dx, {
        VF z = vmul(ALT_GET(x, i, rem), vc);
        VF g = ALT_GET(dy, i, rem);
        VF q = vmul(vadd(v_softpick_e(z, m, em), vem), vinv);
        VF w = vsel(vgt(z, ZERO), vsub(g, vdot), vsel(vlt(z, ZERO), vdot, ZERO));
        out = vmul(vmul(q, w), vc);
    });
}

void KNAME(sg_sigmoid_bwd_f32)(size_t n, const float *y, const float *dy, float *dx, float c) {
    const VF vc = vset1(c), one = vset1(1.0f);
    ALT_MAP_LOOP(n, dx, {
        VF s = ALT_GET(y, i, rem);
        VF g = ALT_GET(dy, i, rem);
        out = vmul(vmul(g, vmul(s, vsub(one, s))), vc);
    });
}

void KNAME(sg_nsigmoid_bwd_f32)(size_t n, const float *x, const float *y, const float *dy,
                                float *dx, float c, float dot) {
    const VF vc = vset1(c), vdot = vset1(dot);
    ALT_MAP_LOOP(n, dx, {
        VF z = vmul(ALT_GET(x, i, rem), vc);
        VF s = ALT_GET(y, i, rem);
        VF g = ALT_GET(dy, i, rem);
        VF one_minus = v_sigmoid(vsub(ZERO, z));
        out = vmul(vmul(vmul(s, one_minus), vsub(g, vdot)), vc);
    });
}

void KNAME(sg_stablemax_bwd_f32)(size_t n, const float *x, const float *y, const float *dy,
                                 float *dx, float c, float dot) {
    const VF vc = vset1(c), vdot = vset1(dot), one = vset1(1.0f);
    ALT_MAP_LOOP(n, dx, {
        VF z = vmul(ALT_GET(x, i, rem), vc);
        VF s = ALT_GET(y, i, rem);
        VF g = ALT_GET(dy, i, rem);
        out = vmul(vmul(vdiv(s, vadd(one, vabs(z))), vsub(g, vdot)), vc);
    });
}

void KNAME(sg_log_shift_store_f32)(size_t n, const float *x, float *y, float off) {
    const VF voff = vset1(off);
    ALT_MAP_LOOP(n, y, {
        VF v = ALT_GET(x, i, rem);
        out = vsub(v_log(v), voff);
    });
}

void KNAME(sg_gumbel_store_f32)(size_t n, const float *x, const float *u, float *t) {
    ALT_MAP_LOOP(n, t, {
        VF v = ALT_GET(x, i, rem);
        VF w = v_log(ALT_GET(u, i, rem));
        out = vsub(v, v_log(vsub(vset1(0.0f), w)));
    });
}

/* Philox uniforms for VW consecutive blocks of 4 columns (philox_uniforms,
 * from the ISA file), then the noise as gumbel_store does it. */
void KNAME(sg_gumbel_noise_f32)(size_t n, const float *x, float *t, const uint32_t key[2],
                                uint32_t row, uint64_t offset, size_t col0) {
    float u[4 * VW];
    for (size_t i = 0; i < n; i += 4 * VW) {
        size_t len = n - i < 4 * VW ? n - i : 4 * VW;
        philox_uniforms((uint32_t)((col0 + i) / 4), row, offset, key, u);
        KNAME(sg_gumbel_store_f32)(len, x + i, u, t + i);
    }
}
