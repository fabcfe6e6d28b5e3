/*
 * cpu.c - run-time CPU feature detection.
 *
 * Holds only the questions "what can this CPU execute" (cpuid + xgetbv on
 * x86-64, HWCAP on arm64). Which kernel runs is decided in dispatch.c.
 */
#include "core/cpu.h"

#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

static unsigned long long read_xcr0(void) {
    unsigned int eax, edx;
    /* xgetbv with ecx = 0: which register states the OS saves. */
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static void detect(sg_cpu_info *info) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    info->has_fma = fma;
    if (!osxsave || !avx) return;
    unsigned long long xcr0 = read_xcr0();
    /* The OS must save YMM (bits 1,2) for AVX, and opmask/ZMM (5,6,7) too
     * for AVX-512; a CPU flag without OS support would fault. */
    int os_ymm = (xcr0 & 0x6) == 0x6;
    int os_zmm = (xcr0 & 0xe6) == 0xe6;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    info->has_avx2 = os_ymm && ((b >> 5) & 1);
    info->has_avx512f = os_zmm && ((b >> 16) & 1);
    info->has_avx512dq = os_zmm && ((b >> 17) & 1);
    info->has_avx512bw = os_zmm && ((b >> 30) & 1);
    info->has_avx512vl = os_zmm && ((b >> 31) & 1);
}
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_SVE
#define HWCAP_SVE (1 << 22)
#endif
static void detect(sg_cpu_info *info) {
    unsigned long hw = getauxval(AT_HWCAP);
    info->has_neon = (hw & HWCAP_ASIMD) != 0;
    info->has_sve = (hw & HWCAP_SVE) != 0;
}
#else
static void detect(sg_cpu_info *info) { (void)info; }
#endif

static void describe(sg_cpu_info *info) {
    struct { int on; const char *name; } flags[] = {
#if defined(__x86_64__) || defined(_M_X64)
        {1, "x86-64"},
#elif defined(__aarch64__)
        {1, "arm64"},
#else
        {1, "generic"},
#endif
        {info->has_avx2, "avx2"},       {info->has_fma, "fma"},
        {info->has_avx512f, "avx512f"}, {info->has_avx512bw, "avx512bw"},
        {info->has_avx512dq, "avx512dq"}, {info->has_avx512vl, "avx512vl"},
        {info->has_neon, "neon"},       {info->has_sve, "sve"},
    };
    size_t used = 0;
    info->features[0] = '\0';
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (!flags[i].on) continue;
        int w = snprintf(info->features + used, sizeof info->features - used,
                         "%s%s", used ? " " : "", flags[i].name);
        if (w < 0 || (size_t)w >= sizeof info->features - used) break;
        used += (size_t)w;
    }
}

void sg_cpu_detect(sg_cpu_info *info) {
    memset(info, 0, sizeof *info);
    detect(info);
    describe(info);
}
