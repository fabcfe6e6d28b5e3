/* cpu.h - CPU features seen at run time (see cpu.c). Internal. */
#ifndef SG_CORE_CPU_H
#define SG_CORE_CPU_H

typedef struct sg_cpu_info {
    int has_avx2, has_fma;
    int has_avx512f, has_avx512bw, has_avx512dq, has_avx512vl;
    int has_neon, has_sve;
    char features[160];
} sg_cpu_info;

void sg_cpu_detect(sg_cpu_info *info);

#endif
