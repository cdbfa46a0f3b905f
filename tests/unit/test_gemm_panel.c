/* Tests of gemm_panel: f32 and f16 weights packed into panels against the double reference at
 * shapes that are not multiples of the panel or the row tile (odd K, M below and above one
 * panel); every row's bits the same for 1 or 2 threads, any row count, a row alone, and at
 * every CPU level (all kernels do the same fused multiply-adds in the same order). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm_panel.h"
#include "ref/ref_linear.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "runtime/tensor.h"
#include "test.h"

struct shape {
    int64_t m, k;
};

static const struct shape shapes[] = { { 1, 1 }, { 7, 33 }, { 33, 100 }, { 97, 1027 } };
static const int64_t row_counts[] = { 1, 2, 7, 8, 9, 16, 17, 64, 65, 130 };
#define NMAX 130

TEST(gemm_panel_against_reference)
{
    static const enum dtype types[] = { DTYPE_F32, DTYPE_F16 };
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    enum cpu_level best = cpu_detect();
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            enum dtype t = types[ti];
            int64_t m = shapes[si].m, k = shapes[si].k, ld = k + 5;
            size_t rb = dtype_row_bytes(t, (uint64_t)ld);
            float *wf = malloc((size_t)(m * ld) * sizeof *wf);
            uint8_t *w = malloc(rb * (size_t)m);
            void *wp = aligned_alloc(64, gemm_panel_bytes(t, m, k) + 64);
            float *x = malloc((size_t)(NMAX * k) * sizeof *x), *bias = malloc((size_t)m * 4);
            float *y0 = malloc((size_t)(NMAX * m) * 4), *y = malloc((size_t)(NMAX * m) * 4);
            double *ref = malloc((size_t)(NMAX * m) * 8), *mag = malloc((size_t)(NMAX * m) * 8);
            REQUIRE(wf && w && wp && x && bias && y0 && y && ref && mag);
            test_fill_uniform(wf, m * ld, -1.0f, 1.0f);
            dtype_from_f32(t, wf, w, m * ld);
            test_fill_uniform(x, NMAX * k, -1.0f, 1.0f);
            test_fill_uniform(bias, m, -1.0f, 1.0f);
            struct tensor wt;
            REQUIRE(tensor_init(&wt, "w", t, 2, (int64_t[]){ k, m }, w) == 0);
            wt.nb[1] = rb;
            ref_linear(ref, mag, x, &wt, bias, NMAX);
            gemm_panel_pack(two, wp, t, w, rb, m, k);
            gemm_panel_forward(NULL, y0, x, wp, t, bias, NMAX, m, k);
            for (int64_t i = 0; i < NMAX * m; i++) {
                double tol = 2.0 * sqrt((double)k) * 0x1p-24 * (mag[i] + fabs(bias[i % m])) + 1e-30;
                if (!(fabs(y0[i] - ref[i]) <= tol)) {
                    test_fail(__FILE__, __LINE__, "%s M=%lld K=%lld: y[%lld] = %.9g, ref %.9g",
                              dtype_info(t)->name, (long long)m, (long long)k, (long long)i,
                              (double)y0[i], ref[i]);
                    break;
                }
            }
            for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
                REQUIRE(cpu_set_level((enum cpu_level)level) == 0);
                for (size_t ni = 0; ni < sizeof row_counts / sizeof row_counts[0]; ni++) {
                    int64_t n = row_counts[ni];
                    memset(y, 0xff, (size_t)(n * m) * 4);
                    gemm_panel_forward(two, y, x, wp, t, bias, n, m, k);
                    if (memcmp(y, y0, (size_t)(n * m) * 4) != 0)
                        test_fail(__FILE__, __LINE__, "%s %s M=%lld K=%lld n=%lld: bits differ",
                                  dtype_info(t)->name, cpu_level_name((enum cpu_level)level),
                                  (long long)m, (long long)k, (long long)n);
                }
                gemm_panel_forward(two, y, x + (NMAX - 1) * k, wp, t, NULL, 1, m, k);
                for (int64_t j = 0; j < m; j++) /* alone, without the bias */
                    if (y[j] + bias[j] != y0[(NMAX - 1) * m + j]) {
                        test_fail(__FILE__, __LINE__, "%s: the last row alone differs",
                                  dtype_info(t)->name);
                        break;
                    }
            }
            cpu_set_level(best);
            free(wf), free(w), free(wp), free(x), free(bias), free(y0), free(y), free(ref),
                free(mag);
        }
    }
    pool_free(two);
}
