/*
 * gemm_bf16 — dispatch, thread split, x conversion and the portable kernel.
 *
 * Shape letters as in gemm_bf16.h: W [M][K] bf16, x [N][K] f32, y [N][M] f32.
 */
#include "kernels/gemm_bf16.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "runtime/cpu.h"
#include "runtime/dtype.h"
#include "runtime/tensor.h"

/* Outputs per unit of the thread split: whole register tiles. */
#define GRAIN 96 /* a multiple of GEMM_BF16_TILE_COLS and of GEMM_BF16_PANEL_COLS */
#define PAD   32 /* K padding of the converted rows: one vector of bf16 */

static int64_t kpad_of(int64_t k)
{
    return (k + PAD - 1) / PAD * PAD;
}

/* Rows per chunk: converted x of about X_CHUNK_BYTES, so that it stays in L2 next to a block
 * of W while every block meets it; whole tile rows, at most GEMM_BF16_CHUNK_ROWS. */
#define X_CHUNK_BYTES (512 * 1024)

static int64_t chunk_rows(int64_t kpad)
{
    int64_t r = X_CHUNK_BYTES / (kpad * 2) / GEMM_BF16_TILE_ROWS * GEMM_BF16_TILE_ROWS;
    if (r < 4 * GEMM_BF16_TILE_ROWS)
        r = 4 * GEMM_BF16_TILE_ROWS;
    return r < GEMM_BF16_CHUNK_ROWS ? r : GEMM_BF16_CHUNK_ROWS;
}

static size_t panel_bytes(int64_t kpad)
{
    return (size_t)GEMM_BF16_PANEL_COLS * (size_t)kpad * sizeof(uint16_t);
}

size_t gemm_bf16_scratch_bytes(int threads, int64_t k)
{
    int64_t kpad = kpad_of(k);
    return 2 * (size_t)GEMM_BF16_CHUNK_ROWS * (size_t)kpad * sizeof(uint16_t) + 64 +
           (size_t)threads * panel_bytes(kpad) + GEMM_BF16_CHUNK_ROWS;
}

static float bf16_value(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* hi = bf16(x), lo = bf16(x - hi), zeros beyond k: the portable split; 1 when some lo != 0. */
static int generic_round(uint16_t *hi, uint16_t *lo, const float *src, int64_t k, int64_t kpad)
{
    int any = 0;
    for (int64_t i = 0; i < k; i++) {
        hi[i] = dtype_f32_to_bf16(src[i]);
        lo[i] = dtype_f32_to_bf16(src[i] - bf16_value(hi[i]));
        any |= (lo[i] & 0x7fff) != 0;
    }
    for (int64_t i = k; i < kpad; i++)
        hi[i] = lo[i] = 0;
    return any;
}

/* hi + lo of x[i] (exact in f32): from the converted rows, or split here when there are none. */
static float x_value(const struct gemm_bf16_args *a, int64_t r, int64_t i)
{
    if (a->xb)
        return bf16_value(a->xb[r * a->kpad + i]) +
               (a->round ? 0.0f : bf16_value(a->xl[r * a->kpad + i]));
    float x = a->x[r * a->k + i], hi = bf16_value(dtype_f32_to_bf16(x));
    return a->round ? hi : hi + bf16_value(dtype_f32_to_bf16(x - hi));
}

/*
 * Portable kernel: the same products (exact in f32: 8-bit × 8-bit significands) added pair by
 * pair into 16 lanes, as vdpbf16ps does, then the lanes in a tree. Only for tests and CPUs
 * without AVX-512 BF16: matmul does not route here.
 */
static void generic_cols(const struct gemm_bf16_args *a, int64_t m0, int64_t m1)
{
    for (int64_t m = m0; m < m1; m++) {
        const uint16_t *wr = (const uint16_t *)(a->w + (size_t)m * a->w_stride);
        for (int64_t r = 0; r < a->n; r++) {
            float lane[16] = { 0 };
            for (int64_t i = 0; i < a->k; i += 2) {
                float *acc = &lane[(i / 2) % 16];
                if (i + 1 < a->k)
                    *acc += x_value(a, r, i + 1) * bf16_value(wr[i + 1]);
                *acc += x_value(a, r, i) * bf16_value(wr[i]);
            }
            for (int w = 8; w > 0; w /= 2)
                for (int l = 0; l < w; l++)
                    lane[l] += lane[l + w];
            a->y[r * a->ldy + m] = lane[0] + (a->bias ? a->bias[m] : 0.0f);
        }
    }
}

/* The prepacked layout's portable kernel: each output adds the pairs in K order, the odd
 * product first (as vdpbf16ps), with f32 additions. */
static void generic_prepacked(const struct gemm_bf16_args *a, int64_t m0, int64_t m1)
{
    const int PW = GEMM_BF16_PANEL_COLS;
    for (int64_t m = m0; m < m1; m++) {
        const uint32_t *panel = (const uint32_t *)(a->w + (size_t)(m / PW) * a->w_stride);
        for (int64_t r = 0; r < a->n; r++) {
            float acc = 0.0f;
            for (int64_t i = 0; i < a->k; i += 2) {
                uint32_t pair = panel[i / 2 * PW + m % PW];
                if (i + 1 < a->k)
                    acc += x_value(a, r, i + 1) * bf16_value((uint16_t)(pair >> 16));
                acc += x_value(a, r, i) * bf16_value((uint16_t)pair);
            }
            a->y[r * a->ldy + m] = acc + (a->bias ? a->bias[m] : 0.0f);
        }
    }
}

size_t gemm_bf16_packed_bytes(int64_t m, int64_t k)
{
    const int64_t PW = GEMM_BF16_PANEL_COLS;
    return (size_t)((m + PW - 1) / PW) * (size_t)((k + 1) / 2) * (size_t)PW * sizeof(uint32_t);
}

struct pack_job {
    uint32_t *dst;
    const uint16_t *w;
    size_t w_stride;
    int64_t m, k;
};

/* Panels [p0, p1): 32 rows read side by side, a pair of each at a time, each panel written in
 * order. */
static void run_pack(void *arg, int64_t p0, int64_t p1)
{
    const struct pack_job *j = arg;
    const int64_t PW = GEMM_BF16_PANEL_COLS, pairs = (j->k + 1) / 2;
    for (int64_t p = p0; p < p1; p++) {
        uint32_t *out = j->dst + (size_t)p * (size_t)pairs * PW;
        const uint16_t *row[GEMM_BF16_PANEL_COLS];
        int64_t live = j->m - p * PW < PW ? j->m - p * PW : PW;
        for (int64_t c = 0; c < live; c++)
            row[c] = (const uint16_t *)((const uint8_t *)j->w + (size_t)(p * PW + c) * j->w_stride);
        for (int64_t kp = 0; kp < pairs; kp++, out += PW)
            for (int64_t c = 0; c < PW; c++) {
                if (c >= live) {
                    out[c] = 0;
                    continue;
                }
                uint32_t hi = 2 * kp + 1 < j->k ? row[c][2 * kp + 1] : 0;
                out[c] = row[c][2 * kp] | hi << 16;
            }
    }
}

void gemm_bf16_pack(struct pool *pool, void *dst, const uint16_t *w, size_t w_stride, int64_t m,
                    int64_t k)
{
    struct pack_job j = { dst, w, w_stride, m, k };
    pool_for(pool, (m + GEMM_BF16_PANEL_COLS - 1) / GEMM_BF16_PANEL_COLS, 1, run_pack, &j);
}

struct job {
    struct gemm_bf16_args args;
    void (*cols)(const struct gemm_bf16_args *a, int64_t m0, int64_t m1);
    int64_t m;
    uint8_t *panels; /* packed form: one panel per thread; NULL: dot-product form */
    size_t panel_bytes;
    int threads;
};

/* Thread t (pool_for over one index per thread) takes a contiguous range of whole GRAIN
 * groups of outputs; which thread computes an output does not change its bits. */
static void run_cols(void *arg, int64_t t0, int64_t t1)
{
    const struct job *j = arg;
    for (int64_t t = t0; t < t1; t++) {
        int64_t m0, m1;
        pool_range(j->m, GRAIN, j->threads, (int)t, &m0, &m1);
        if (m0 >= m1)
            continue;
        if (j->panels)
            gemm_bf16_avx512_panels(&j->args, m0, m1,
                                    (uint32_t *)(j->panels + (size_t)t * j->panel_bytes));
        else
            j->cols(&j->args, m0, m1);
    }
}

struct round_job {
    uint16_t *xb, *xl;
    uint8_t *lo_rows;
    const float *x;
    int64_t k, kpad;
    int avx512;
    int round; /* hi only: lo rows are not written, flags 0 */
};

static void run_round(void *arg, int64_t begin, int64_t end)
{
    const struct round_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        uint16_t *hi = j->xb + r * j->kpad, *lo = j->xl + r * j->kpad;
        const float *x = j->x + r * j->k;
        if (j->round) {
            if (j->avx512)
                gemm_bf16_avx512_round_hi(hi, x, j->k, j->kpad);
            else
                generic_round(hi, lo, x, j->k, j->kpad);
            j->lo_rows[r] = 0;
            continue;
        }
        j->lo_rows[r] = (uint8_t)(j->avx512 ? gemm_bf16_avx512_round(hi, lo, x, j->k, j->kpad)
                                            : generic_round(hi, lo, x, j->k, j->kpad));
    }
}

/* round: x rounded to bf16 (no lo term); fixed: the dot-product form at any n; prepacked: w is
 * gemm_bf16_pack's panels, w_stride the bytes of one. */
static void forward(struct pool *pool, float *y, const float *x, const void *w, size_t w_stride,
                    const float *bias, int64_t n, int64_t m, int64_t k, void *scratch, int round,
                    int fixed, int prepacked)
{
    if (n == 0 || m == 0)
        return;
    int avx512 = cpu_level() == CPU_LEVEL_AVX512;
    int64_t kpad = kpad_of(k);
    /* all rows, x read as it is; the chunk loop below narrows it to converted rows */
    struct gemm_bf16_args all = { .y = y,
                                  .ldy = m,
                                  .x = x,
                                  .kpad = kpad,
                                  .w = (const uint8_t *)w,
                                  .w_stride = w_stride,
                                  .bias = bias,
                                  .n = n,
                                  .k = k,
                                  .round = round };
    void *owned = NULL;
    if (!scratch)
        owned = scratch = malloc(gemm_bf16_scratch_bytes(pool_threads(pool), k));
    if (!scratch) { /* no memory: the portable kernel rounds x as it goes */
        if (prepacked)
            generic_prepacked(&all, 0, m);
        else
            generic_cols(&all, 0, m);
        return;
    }
    int threads = pool_threads(pool);
    /* scratch: hi rows, lo rows, one panel per thread (all 64-byte aligned), row flags */
    uint16_t *xb = (uint16_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    uint16_t *xl = xb + (size_t)GEMM_BF16_CHUNK_ROWS * (size_t)kpad;
    uint8_t *panels = (uint8_t *)(xl + (size_t)GEMM_BF16_CHUNK_ROWS * (size_t)kpad);
    uint8_t *lo_rows = panels + (size_t)threads * panel_bytes(kpad);
    int packed = avx512 && !fixed && !prepacked && n >= GEMM_BF16_PACK_MIN_ROWS;
    struct job j = {
        .cols = prepacked ? (avx512 ? gemm_bf16_avx512_prepacked : generic_prepacked)
                          : (avx512 ? gemm_bf16_avx512_cols : generic_cols),
        .m = m,
        .panels = packed ? panels : NULL,
        .panel_bytes = panel_bytes(kpad),
        .threads = threads,
    };
    /* the dot-product form keeps a chunk in L2; the packed form repacks W once per chunk */
    int64_t chunk = packed || prepacked ? GEMM_BF16_CHUNK_ROWS : chunk_rows(kpad);
    for (int64_t n0 = 0; n0 < n; n0 += chunk) {
        int64_t rows = n - n0 < chunk ? n - n0 : chunk;
        struct round_job rj = { .xb = xb,
                                .xl = xl,
                                .lo_rows = lo_rows,
                                .x = x + n0 * k,
                                .k = k,
                                .kpad = kpad,
                                .avx512 = avx512,
                                .round = round };
        pool_for(pool, rows, 16, run_round, &rj);
        j.args = all;
        j.args.y = y + n0 * m;
        j.args.x = NULL;
        j.args.xb = xb;
        j.args.xl = xl;
        j.args.lo_rows = lo_rows;
        j.args.n = rows;
        pool_for(pool, threads, 1, run_cols, &j);
    }
    free(owned);
}

void gemm_bf16_forward(struct pool *pool, float *y, const float *x, const uint16_t *w,
                       size_t w_stride, const float *bias, int64_t n, int64_t m, int64_t k,
                       void *scratch)
{
    /* the panel gather indexes 32 rows with 32-bit byte offsets */
    assert(n >= 0 && m >= 0 && k >= 1 && w_stride >= 2 * (size_t)k && w_stride < (1u << 26));
    forward(pool, y, x, w, w_stride, bias, n, m, k, scratch, 0, 0, 0);
}

void gemm_bf16_packed(struct pool *pool, float *y, const float *x, const void *wp,
                      const float *bias, int64_t n, int64_t m, int64_t k, void *scratch)
{
    assert(n >= 0 && m >= 0 && k >= 1 && (uintptr_t)wp % 64 == 0);
    size_t panel = (size_t)((k + 1) / 2) * GEMM_BF16_PANEL_COLS * sizeof(uint32_t);
    forward(pool, y, x, wp, panel, bias, n, m, k, scratch, 1, 1, 1);
}

/* No AVX-512 BF16: x rounded to bf16 values in f32, a chunk of rows at a time, through gemv
 * (rows independent of the batch) or, for many rows of a prefill, matmul. */
static void rounded_fallback(struct pool *pool, float *y, const float *x, const uint16_t *w,
                             size_t w_stride, const float *bias, int64_t n, int64_t m, int64_t k,
                             int fixed_form, void *scratch)
{
    struct tensor t;
    int64_t ne[2] = { k, m };
    if (tensor_init(&t, "w", DTYPE_BF16, 2, ne, w) != 0)
        return;
    t.nb[1] = w_stride;
    void *owned = NULL;
    if (!scratch)
        owned = scratch = malloc(gemm_bf16_scratch_bytes(pool_threads(pool), k));
    if (!scratch) { /* no memory: the portable kernel rounds x as it goes */
        struct gemm_bf16_args a = { .y = y,
                                    .ldy = m,
                                    .x = x,
                                    .kpad = kpad_of(k),
                                    .w = (const uint8_t *)w,
                                    .w_stride = w_stride,
                                    .bias = bias,
                                    .n = n,
                                    .k = k,
                                    .round = 1 };
        generic_cols(&a, 0, m);
        return;
    }
    /* the scratch holds GEMM_BF16_CHUNK_ROWS rows of kpad f32 (its hi and lo halves) */
    float *xr = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    for (int64_t n0 = 0; n0 < n; n0 += GEMM_BF16_CHUNK_ROWS) {
        int64_t rows = n - n0 < GEMM_BF16_CHUNK_ROWS ? n - n0 : GEMM_BF16_CHUNK_ROWS;
        for (int64_t i = 0; i < rows * k; i++)
            xr[i] = bf16_value(dtype_f32_to_bf16(x[n0 * k + i]));
        if (!fixed_form && rows > GEMV_MAX_ROWS)
            matmul_forward(pool, y + n0 * m, xr, &t, bias, rows, NULL);
        else
            gemv_forward(pool, y + n0 * m, xr, &t, bias, (int)rows);
    }
    free(owned);
}

void gemm_bf16_rounded(struct pool *pool, float *y, const float *x, const uint16_t *w,
                       size_t w_stride, const float *bias, int64_t n, int64_t m, int64_t k,
                       int fixed_form, void *scratch)
{
    assert(n >= 0 && m >= 0 && k >= 1 && w_stride >= 2 * (size_t)k && w_stride < (1u << 26));
    if (n == 0 || m == 0)
        return;
    if (cpu_level() == CPU_LEVEL_AVX512)
        forward(pool, y, x, w, w_stride, bias, n, m, k, scratch, 1, fixed_form, 0);
    else
        rounded_fallback(pool, y, x, w, w_stride, bias, n, m, k, fixed_form, scratch);
}
