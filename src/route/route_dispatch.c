/*
 * route_dispatch.c - the routers' kernel table: the reference kernel,
 * then each kernel whose ISA is at most sg_active_isa() (the CPU's best
 * level, restricted by SOFTGATE_ISA); and the reference top-k selection.
 */
#include <pthread.h>
#include <string.h>

#include "route/route_internal.h"
#include "route/route_kernels.h"

void sg_route_topk__ref(const float *key, size_t n, size_t k, int32_t *ids, float *top) {
    if (k == 0) return;
    sg_route_select_fresh(key, n, k, ids, top);
}

/* Reference of ec_insert: per row and expert, the key, then the strict
 * insertion (a row rarely beats an expert's c-th key). */
void sg_route_ec_insert__ref(size_t r0, size_t r1, size_t e, const float *x, size_t ldx,
                             const double *lse, double inv, size_t c, const double *thr, double *bk,
                             int32_t *bt, size_t ldb) {
    double *worst = bk + (c - 1) * ldb;
    if (r0 == 0)
        for (size_t q = 0; q < c * ldb; q++) bk[q] = -INFINITY, bt[q] = 0;
    for (size_t r = r0; r < r1; r++) {
        const float *xr = x + r * ldx;
        const double l = lse[r];
        for (size_t i = 0; i < e; i++) {
            double v = (double)xr[i] * inv - l;
            if (!(v > worst[i]) || (thr && v < thr[i])) continue;
            int32_t tv = (int32_t)r;
            int moving = 0; /* inserted: the pairs below shift down one slot */
            for (size_t j = 0; j < c; j++) {
                double *b = bk + j * ldb + i;
                int32_t *t = bt + j * ldb + i;
                moving |= v > *b;
                if (moving) {
                    const double kb = *b;
                    const int32_t tb = *t;
                    *b = v, *t = tv;
                    v = kb, tv = tb;
                }
            }
        }
    }
}

void sg_route_ec_blockmax__ref(size_t r0, size_t r1, size_t e, const float *x, size_t ldx,
                               const double *lse, double inv, double *out) {
    for (size_t i = 0; i < e; i++) out[i] = -INFINITY;
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < e; i++) {
            const double v = (double)x[r * ldx + i] * inv - lse[r];
            out[i] = v > out[i] ? v : out[i];
        }
}

void sg_route_ec_collect__ref(size_t r0, size_t r1, size_t e, const float *x, size_t ldx,
                              const double *lse, double inv, const double *thr, size_t cap,
                              double *ck, int32_t *ct, uint32_t *cnt) {
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < e; i++) {
            const double v = (double)x[r * ldx + i] * inv - lse[r];
            if (!(v >= thr[i])) continue;
            const size_t n = cnt[i]++;
            if (n < cap) ck[i * cap + n] = v, ct[i * cap + n] = (int32_t)r;
        }
}

/* Bottom-up merge sort, descending key, stable (token order kept). */
void sg_route_ec_rank__ref(size_t m, double *k, int32_t *tk, size_t c, int32_t *tok, float *kf,
                           double *mk, int32_t *mt) {
    for (size_t w = 1; w < m; w *= 2) {
        for (size_t lo = 0; lo < m; lo += 2 * w) {
            size_t mid = lo + w < m ? lo + w : m, hi = lo + 2 * w < m ? lo + 2 * w : m;
            size_t a = lo, b = mid, o = lo;
            while (a < mid && b < hi) {
                const int right = k[b] > k[a];
                mk[o] = right ? k[b] : k[a], mt[o] = right ? tk[b] : tk[a];
                a += !right, b += right, o++;
            }
            while (a < mid) mk[o] = k[a], mt[o++] = tk[a++];
            while (b < hi) mk[o] = k[b], mt[o++] = tk[b++];
        }
        memcpy(k, mk, m * sizeof *k);
        memcpy(tk, mt, m * sizeof *tk);
    }
    for (size_t q = 0; q < c; q++) tok[q] = tk[q], kf[q] = (float)k[q];
}

void sg_route_ec_kth__ref(size_t nb, size_t n, size_t ldb, const double *bm, size_t c, double *thr) {
    for (size_t i = 0; i < n; i++) {
        double top[32]; /* the c largest so far, descending */
        size_t f = 0;
        for (size_t b = 0; b < nb; b++) {
            const double v = bm[b * ldb + i];
            if (f == c && !(v > top[c - 1])) continue;
            size_t q = f < c ? f++ : c - 1;
            while (q > 0 && top[q - 1] < v) top[q] = top[q - 1], q--;
            top[q] = v;
        }
        thr[i] = top[c - 1];
    }
}

int sg_route_ec_finish__ref(size_t c, size_t n, size_t ldb, const double *bk, const int32_t *bt,
                            int32_t *tok, size_t ldt, float *kf) {
    int hole = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t s = 0; s < c; s++) {
            tok[i * ldt + s] = bt[s * ldb + i];
            kf[i * c + s] = (float)bk[s * ldb + i];
        }
        hole |= bk[(c - 1) * ldb + i] == -INFINITY;
    }
    return hole;
}

/* Reference of topk_rows: per row, the NaN scan, topk, then the weights
 * from expf. */
uint32_t sg_route_topk_rows__ref(size_t n, size_t e, size_t k, const float *x, size_t ldx, float c, float a,
                                 int32_t *ids, size_t ldi, float *w, size_t ldw) {
    uint32_t left = 0;
    int32_t id[16];
    float top[16];
    double ex[16];
    for (size_t r = 0; r < n; r++) {
        const float *xr = x + r * ldx;
        if (sg_route_has_nan(xr, e)) {
            left |= 1u << r;
            continue;
        }
        sg_route_topk__ref(xr, e, k, id, top);
        if (top[0] == INFINITY || top[k - 1] == -INFINITY) {
            left |= 1u << r;
            continue;
        }
        double s = 0.0;
        for (size_t l = 0; l < k; l++)
            s += ex[l] = (double)expf((float)(((double)top[l] - (double)top[0]) * (double)c));
        for (size_t l = 0; l < k; l++) {
            ids[r * ldi + l] = id[l];
            w[r * ldw + l] = (float)((double)a * ex[l] / s);
        }
    }
    return left;
}

/* Reference of top1: per row the softmax core's rmax and expsum (the
 * NaN test from the sum: with a finite maximum, a NaN logit makes it NaN),
 * then topk on the NaN-free row. */
size_t sg_route_top1__ref(size_t n, size_t e, const float *x, size_t ldx, float c, float a, int32_t *ids,
                          size_t ldi, float *w, size_t ldw) {
    const sg_kernels *kern = sg_kernels_get();
    for (size_t r = 0; r < n; r++) {
        const float *z = x + r * ldx;
        const float mx = kern->rmax(e, z);
        if (!(fabsf(mx) < INFINITY)) return r;
        const double sum = kern->expsum(e, z, mx, c);
        if (sum != sum) return r;
        float top;
        sg_route_topk__ref(z, e, 1, ids + r * ldi, &top);
        w[r * ldw] = (float)((double)a * (1.0 / sum));
    }
    return n;
}

static const sg_route_kernel_entry all_kernels[] = {
    {SG_ROUTE_SLOT_topk, SG_ISA_REF, "sg_route_topk__ref", (void (*)(void))sg_route_topk__ref},
    {SG_ROUTE_SLOT_ec_insert, SG_ISA_REF, "sg_route_ec_insert__ref",
     (void (*)(void))sg_route_ec_insert__ref},
    {SG_ROUTE_SLOT_ec_finish, SG_ISA_REF, "sg_route_ec_finish__ref",
     (void (*)(void))sg_route_ec_finish__ref},
    {SG_ROUTE_SLOT_ec_blockmax, SG_ISA_REF, "sg_route_ec_blockmax__ref",
     (void (*)(void))sg_route_ec_blockmax__ref},
    {SG_ROUTE_SLOT_ec_collect, SG_ISA_REF, "sg_route_ec_collect__ref",
     (void (*)(void))sg_route_ec_collect__ref},
    {SG_ROUTE_SLOT_ec_rank, SG_ISA_REF, "sg_route_ec_rank__ref", (void (*)(void))sg_route_ec_rank__ref},
    {SG_ROUTE_SLOT_ec_kth, SG_ISA_REF, "sg_route_ec_kth__ref", (void (*)(void))sg_route_ec_kth__ref},
    {SG_ROUTE_SLOT_topk_rows, SG_ISA_REF, "sg_route_topk_rows__ref",
     (void (*)(void))sg_route_topk_rows__ref},
    {SG_ROUTE_SLOT_sgate, SG_ISA_REF, "sg_route_sgate__ref", (void (*)(void))sg_route_sgate__ref},
    {SG_ROUTE_SLOT_top1, SG_ISA_REF, "sg_route_top1__ref", (void (*)(void))sg_route_top1__ref},
#if defined(__x86_64__) || defined(_M_X64)
    {SG_ROUTE_SLOT_topk, SG_ISA_AVX2, "sg_route_topk__avx2", (void (*)(void))sg_route_topk__avx2},
    {SG_ROUTE_SLOT_topk, SG_ISA_AVX512, "sg_route_topk__avx512",
     (void (*)(void))sg_route_topk__avx512},
    {SG_ROUTE_SLOT_ec_insert, SG_ISA_AVX512, "sg_route_ec_insert__avx512",
     (void (*)(void))sg_route_ec_insert__avx512},
    {SG_ROUTE_SLOT_ec_finish, SG_ISA_AVX512, "sg_route_ec_finish__avx512",
     (void (*)(void))sg_route_ec_finish__avx512},
    {SG_ROUTE_SLOT_ec_blockmax, SG_ISA_AVX512, "sg_route_ec_blockmax__avx512",
     (void (*)(void))sg_route_ec_blockmax__avx512},
    {SG_ROUTE_SLOT_ec_collect, SG_ISA_AVX512, "sg_route_ec_collect__avx512",
     (void (*)(void))sg_route_ec_collect__avx512},
    {SG_ROUTE_SLOT_ec_rank, SG_ISA_AVX512, "sg_route_ec_rank__avx512",
     (void (*)(void))sg_route_ec_rank__avx512},
    {SG_ROUTE_SLOT_ec_kth, SG_ISA_AVX512, "sg_route_ec_kth__avx512", (void (*)(void))sg_route_ec_kth__avx512},
    {SG_ROUTE_SLOT_topk_rows, SG_ISA_AVX512, "sg_route_topk_rows__avx512",
     (void (*)(void))sg_route_topk_rows__avx512},
    {SG_ROUTE_SLOT_sgate, SG_ISA_AVX512, "sg_route_sgate__avx512", (void (*)(void))sg_route_sgate__avx512},
    {SG_ROUTE_SLOT_top1, SG_ISA_AVX512, "sg_route_top1__avx512", (void (*)(void))sg_route_top1__avx512},
#endif
};

static sg_route_kernels table;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void fill_table(void) {
    const sg_isa level = sg_active_isa();
    for (size_t i = 0; i < sizeof all_kernels / sizeof all_kernels[0]; i++) {
        const sg_route_kernel_entry *k = &all_kernels[i];
        if (k->isa > level) continue;
        if (k->slot == SG_ROUTE_SLOT_topk) table.topk = (sg_route_topk_fn *)k->fn;
        if (k->slot == SG_ROUTE_SLOT_ec_insert) table.ec_insert = (sg_route_ec_insert_fn *)k->fn;
        if (k->slot == SG_ROUTE_SLOT_ec_finish) table.ec_finish = (sg_route_ec_finish_fn *)k->fn;
        if (k->slot == SG_ROUTE_SLOT_ec_blockmax)
            table.ec_blockmax = (sg_route_ec_blockmax_fn *)k->fn;
        if (k->slot == SG_ROUTE_SLOT_ec_collect) table.ec_collect = (sg_route_ec_collect_fn *)k->fn;
        if (k->slot == SG_ROUTE_SLOT_ec_rank) table.ec_rank = (sg_route_ec_rank_fn *)k->fn;
        if (k->slot == SG_ROUTE_SLOT_ec_kth) table.ec_kth = (sg_route_ec_kth_fn *)k->fn;
        if (k->slot == SG_ROUTE_SLOT_topk_rows) table.topk_rows = (sg_route_topk_rows_fn *)k->fn;
        if (k->slot == SG_ROUTE_SLOT_sgate) table.sgate = (sg_route_sgate_fn *)k->fn;
        if (k->slot == SG_ROUTE_SLOT_top1) table.top1 = (sg_route_top1_fn *)k->fn;
        table.impl_name[k->slot] = k->name;
    }
}

const sg_route_kernels *sg_route_kernels_get(void) {
    pthread_once(&once, fill_table);
    return &table;
}

const sg_route_kernel_entry *sg_route_kernel_entries(size_t *count) {
    *count = sizeof all_kernels / sizeof all_kernels[0];
    return all_kernels;
}

/* For `softgate info`: slot i of this family and the kernel chosen for it. */
size_t sg_route_kernel_list(size_t i, const char **slot, const char **impl) {
    static const char *const names[SG_ROUTE_SLOT_COUNT] = {
        "route.topk", "route.ec_insert", "route.ec_finish", "route.ec_blockmax",
        "route.ec_collect", "route.ec_rank", "route.ec_kth", "route.topk_rows",
        "route.sgate", "route.top1"};
    if (i < SG_ROUTE_SLOT_COUNT) {
        *slot = names[i];
        *impl = sg_route_kernels_get()->impl_name[i];
    }
    return SG_ROUTE_SLOT_COUNT;
}
