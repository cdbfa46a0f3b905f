/*
 * gemm_panel — packing, thread split and the portable kernel.
 *
 * Shape letters as in gemm_panel.h: W [M][K], x [N][K] f32, y [N][M] f32.
 */
#include "kernels/gemm_panel.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "runtime/cpu.h"

#define PW GEMM_PANEL_COLS

int gemm_panel_supports(enum dtype t)
{
    return t == DTYPE_F32 || t == DTYPE_F16;
}

static size_t elem_bytes(enum dtype t)
{
    return t == DTYPE_F32 ? 4 : 2;
}

static size_t panel_bytes(enum dtype t, int64_t k)
{
    return (size_t)k * PW * elem_bytes(t);
}

size_t gemm_panel_bytes(enum dtype t, int64_t m, int64_t k)
{
    return (size_t)((m + PW - 1) / PW) * panel_bytes(t, k);
}

struct pack_job {
    uint8_t *dst;
    const uint8_t *w;
    size_t w_stride, es;
    int64_t m, k;
};

/* Panels [p0, p1): 32 rows read side by side, transposed 32 x 32 elements at a time (T: the
 * element's bits, 16 or 32). */
#define PACK_PANELS(T)                                                                        \
    for (int64_t p = p0; p < p1; p++) {                                                       \
        T *out = (T *)j->dst + (size_t)p * (size_t)j->k * PW;                                 \
        int64_t live = j->m - p * PW < PW ? j->m - p * PW : PW;                               \
        const T *row[PW];                                                                     \
        for (int64_t c = 0; c < PW; c++)                                                      \
            row[c] = (const T *)(j->w + (size_t)(p * PW + (c < live ? c : 0)) * j->w_stride); \
        for (int64_t k0 = 0; k0 < j->k; k0 += PW) { /* a 32 x 32 block, in cache */           \
            int64_t k1 = j->k - k0 < PW ? j->k : k0 + PW;                                     \
            for (int64_t c = 0; c < PW; c++)                                                  \
                for (int64_t kk = k0; kk < k1; kk++)                                          \
                    out[kk * PW + c] = c < live ? row[c][kk] : 0;                             \
        }                                                                                     \
    }

static void run_pack(void *arg, int64_t p0, int64_t p1)
{
    const struct pack_job *j = arg;
    if (j->es == 4)
        PACK_PANELS(uint32_t)
    else
        PACK_PANELS(uint16_t)
}

void gemm_panel_pack(struct pool *pool, void *dst, enum dtype t, const void *w, size_t w_stride,
                     int64_t m, int64_t k)
{
    assert(gemm_panel_supports(t) && (uintptr_t)dst % 64 == 0);
    struct pack_job j = { dst, w, w_stride, elem_bytes(t), m, k };
    pool_for(pool, (m + PW - 1) / PW, 1, run_pack, &j);
}

/* The definition in gemm_panel.h, one output at a time. */
static void generic_panels(const struct gemm_panel_args *a, int64_t p0, int64_t p1)
{
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t *panel = a->w + (size_t)p * a->panel_bytes;
        for (int64_t c = 0; c < PW && p * PW + c < a->m; c++) {
            int64_t m = p * PW + c;
            for (int64_t r = 0; r < a->n; r++) {
                const float *x = a->x + r * a->k;
                float acc = 0.0f;
                for (int64_t kk = 0; kk < a->k; kk++) {
                    float w;
                    if (a->type == DTYPE_F32)
                        memcpy(&w, panel + ((size_t)kk * PW + c) * 4, 4);
                    else {
                        uint16_t h;
                        memcpy(&h, panel + ((size_t)kk * PW + c) * 2, 2);
                        w = dtype_f16_to_f32(h);
                    }
                    acc = fmaf(x[kk], w, acc);
                }
                a->y[r * a->m + m] = acc + (a->bias ? a->bias[m] : 0.0f);
            }
        }
    }
}

struct job {
    struct gemm_panel_args args;
    int avx512;
};

static void run_panels(void *arg, int64_t p0, int64_t p1)
{
    const struct job *j = arg;
    if (j->avx512)
        gemm_panel_avx512_panels(&j->args, p0, p1);
    else
        generic_panels(&j->args, p0, p1);
}

void gemm_panel_forward(struct pool *pool, float *y, const float *x, const void *wp, enum dtype t,
                        const float *bias, int64_t n, int64_t m, int64_t k)
{
    assert(gemm_panel_supports(t) && n >= 0 && m >= 0 && k >= 1 && (uintptr_t)wp % 64 == 0);
    if (n == 0 || m == 0)
        return;
    struct job j = { .args = { .y = y,
                               .x = x,
                               .w = wp,
                               .panel_bytes = panel_bytes(t, k),
                               .bias = bias,
                               .n = n,
                               .m = m,
                               .k = k,
                               .type = t },
                     .avx512 = cpu_level() == CPU_LEVEL_AVX512 };
    pool_for(pool, (m + PW - 1) / PW, 1, run_panels, &j);
}
