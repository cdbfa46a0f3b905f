/*
 * bench_attn — attention at the shapes that matter, 1 and 2 threads, medians of repeated
 * runs:
 *   decode   GLM-4-Voice layer: 1 query row, 32 query heads, 2 KV heads, D = 128, bf16 KV
 *            cache of n_kv positions ([pos][kv_head][D], K and V in separate arrays), causal
 *            at the last position. "cold" rotates through 256 MiB of caches (as 40 layers
 *            would: nothing left in the 32 MiB L3), "warm" repeats one layer's cache.
 *            GB/s = K and V bytes read per call / time.
 *   prefill  300 new tokens, causal, same heads, f32 K/V (the layer's fresh K/V).
 *   tokenizer 1500 frames, 20 heads × 64, block causal (B = 200), f32 (full run only).
 * GFLOP/s counts 4·D flops per visible (query head, key) pair (q·k and p·v).
 */
#include "bench/figure.h"
#include "bench/bench_attn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/act.h"
#include "kernels/attn.h"
#include "runtime/cpu.h"
#include "runtime/dtype.h"
#include "runtime/pool.h"
#include "runtime/clock.h"

static void fill_bf16(uint16_t *p, size_t n)
{
    uint32_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = dtype_f32_to_bf16(((float)(s >> 8) / 16777216.0f - 0.5f) * 2.0f);
    }
}

static void fill_f32(float *p, size_t n)
{
    uint32_t s = 777;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 2.0f;
    }
}

/* Visible (query, key) pairs per head. */
static double visible_pairs(int64_t n_q, int64_t n_kv, const struct attn_mask *m)
{
    double s = 0;
    for (int64_t i = 0; i < n_q; i++)
        s += (double)attn_mask_end(m, i, n_kv);
    return s;
}

static void decode(struct pool *pools[3], int quick)
{
    const int H = 32, G = 2, D = 128;
    const int64_t sizes[2] = { 512, 8192 };
    const size_t arena_bytes = (size_t)256 << 20;
    uint16_t *arena = malloc(arena_bytes);
    float *q = malloc(H * D * 4), *out = malloc(H * D * 4);
    void *scratch = malloc(attn_scratch_size(pools[2], D));
    if (!arena || !q || !out || !scratch) {
        printf("  decode: out of memory\n");
        goto done;
    }
    fill_bf16(arena, arena_bytes / 2);
    fill_f32(q, (size_t)H * D);
    for (int si = 0; si < 2; si++) {
        const int64_t n_kv = sizes[si];
        const size_t layer_elems = (size_t)(2 * n_kv * G * D); /* K then V */
        const int n_layers = (int)(arena_bytes / (layer_elems * 2));
        struct attn_desc d = { .n_head = H,
                               .n_kv_head = G,
                               .head_dim = D,
                               .kv_type = DTYPE_BF16,
                               .mask = { ATTN_MASK_CAUSAL, n_kv - 1, 1, 0 } };
        const double bytes = (double)layer_elems * 2;
        for (int t = 1; t <= 2; t++) {
            for (int cold = 1; cold >= 0; cold--) {
                int reps = quick ? 5 : 11, calls = cold ? n_layers : (n_kv > 1000 ? 20 : 200);
                double ms[11];
                for (int r = 0; r <= reps; r++) {
                    double t0 = clock_seconds();
                    for (int c = 0; c < calls; c++) {
                        const uint16_t *k = arena + (cold ? (size_t)c * layer_elems : 0);
                        attn_forward(t == 1 ? NULL : pools[t], out, q, k, k + layer_elems / 2, 1,
                                     n_kv, &d, scratch);
                    }
                    if (r > 0) /* the first round warms up */
                        ms[r - 1] = (clock_seconds() - t0) / calls * 1e3;
                }
                double m = figure_median(ms, reps);
                printf("  attn_decode_bf16_n%-5lld %s t%d  %8.3f ms  %6.1f GB/s  %6.1f GFLOP/s\n",
                       (long long)n_kv, cold ? "cold" : "warm", t, m, bytes / (m * 1e-3) / 1e9,
                       4.0 * D * H * (double)n_kv / (m * 1e-3) / 1e9);
            }
        }
    }
done:
    free(arena);
    free(q);
    free(out);
    free(scratch);
}

static void prefill(struct pool *pools[3], const char *name, int64_t n, int H, int G, int D,
                    struct attn_mask mask, int reps)
{
    float *q = malloc((size_t)(n * H * D) * 4), *out = malloc((size_t)(n * H * D) * 4);
    float *k = malloc((size_t)(n * G * D) * 4), *v = malloc((size_t)(n * G * D) * 4);
    void *scratch = malloc(attn_scratch_size(pools[2], D));
    if (!q || !out || !k || !v || !scratch) {
        printf("  %s: out of memory\n", name);
        goto done;
    }
    fill_f32(q, (size_t)(n * H * D));
    fill_f32(k, (size_t)(n * G * D));
    fill_f32(v, (size_t)(n * G * D));
    struct attn_desc d = {
        .n_head = H, .n_kv_head = G, .head_dim = D, .kv_type = DTYPE_F32, .mask = mask
    };
    double flops = 4.0 * D * H * visible_pairs(n, n, &mask);
    for (int t = 1; t <= 2; t++) {
        double ms[11];
        for (int r = 0; r <= reps; r++) {
            double t0 = clock_seconds();
            attn_forward(t == 1 ? NULL : pools[t], out, q, k, v, n, n, &d, scratch);
            if (r > 0)
                ms[r - 1] = (clock_seconds() - t0) * 1e3;
        }
        double m = figure_median(ms, reps);
        printf("  %-30s t%d  %8.3f ms  %6.1f GFLOP/s\n", name, t, m, flops / (m * 1e-3) / 1e9);
    }
done:
    free(q);
    free(out);
    free(k);
    free(v);
    free(scratch);
}

static void activations(struct pool *pools[3], int quick)
{
    const int64_t n = 1500 * 5120; /* one tokenizer layer's fc1 output */
    float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4), alpha[128];
    if (!x || !y)
        goto done;
    fill_f32(x, (size_t)n);
    for (int c = 0; c < 128; c++)
        alpha[c] = 0.5f + (float)c / 64.0f;
    for (int op = 0; op < 2; op++)
        for (int t = 1; t <= 2; t++) {
            int reps = quick ? 3 : 7;
            double ms[7];
            for (int r = 0; r <= reps; r++) {
                double t0 = clock_seconds();
                if (op == 0)
                    act_gelu(t == 1 ? NULL : pools[t], y, x, n);
                else
                    act_snake(t == 1 ? NULL : pools[t], y, x, alpha, 128, n / 128);
                if (r > 0)
                    ms[r - 1] = (clock_seconds() - t0) * 1e3;
            }
            double m = figure_median(ms, reps);
            printf("  act_%-26s t%d  %8.3f ms  %6.2f ns/value\n", op ? "snake" : "gelu", t, m,
                   m * 1e6 / (double)n);
        }
done:
    free(x);
    free(y);
}

void bench_attn_run(int quick)
{
    struct pool *pools[3] = { NULL, NULL, pool_create(2) };
    if (!pools[2]) {
        printf("  attn: cannot start threads\n");
        return;
    }
    printf("attn (cpu level %s)\n", cpu_level_name(cpu_level()));
    decode(pools, quick);
    prefill(pools, "attn_prefill_glm_300", 300, 32, 2, 128,
            (struct attn_mask){ ATTN_MASK_CAUSAL, 0, 1, 0 }, quick ? 3 : 7);
    if (!quick)
        prefill(pools, "attn_tokenizer_1500_block200", 1500, 20, 20, 64,
                (struct attn_mask){ ATTN_MASK_BLOCK_CAUSAL, 0, 200, 0 }, 3);
    activations(pools, quick);
    pool_free(pools[2]);
}
