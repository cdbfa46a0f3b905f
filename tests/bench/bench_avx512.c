/* bench_avx512 — AVX-512 read-bandwidth, FMA-peak and q8_0-step kernels of the benchmark. */
#include <immintrin.h>

#include "bench/bench.h"

double bench_avx512_read(const float *p, int64_t n)
{
    __m512 s[8];
    for (int i = 0; i < 8; i++)
        s[i] = _mm512_setzero_ps();
    /* a software prefetch 4 KiB ahead, as the decode kernels do: the hardware prefetchers stop
     * at 4 KiB pages, and without it one core's stream reads well below what memory gives */
    for (int64_t i = 0; i < n; i += 128)
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            _mm_prefetch((const char *)(p + i + 16 * j) + 4096, _MM_HINT_NTA);
            s[j] = _mm512_add_ps(s[j], _mm512_loadu_ps(p + i + 16 * j));
        }
    for (int i = 1; i < 8; i++)
        s[0] = _mm512_add_ps(s[0], s[i]);
    return _mm512_reduce_add_ps(s[0]);
}

double bench_avx512_fma(int64_t iters)
{
    __m512 a[12], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = _mm512_fmadd_ps(a[i], m, c);
    for (int i = 1; i < 12; i++)
        a[0] = _mm512_add_ps(a[0], a[i]);
    return _mm512_reduce_add_ps(a[0]);
}

/* Makefile's AVX-512 flags have no VNNI (kernels/gemm_q8_avx512.c's note). */
__attribute__((target("avx512vnni"))) double bench_avx512_q8_step(int64_t iters)
{
    __m512i w[4], x = _mm512_set1_epi8(3), c = _mm512_set1_epi32(-384);
    __m512 f[4], dw[4], dx[3];
    for (int i = 0; i < 4; i++) {
        w[i] = _mm512_set1_epi8((char)(i + 1));
        dw[i] = _mm512_set1_ps(1e-3f * (float)(i + 1));
        f[i] = _mm512_setzero_ps();
    }
    for (int r = 0; r < 3; r++)
        dx[r] = _mm512_set1_ps(1e-3f * (float)(r + 1));
    for (int64_t it = 0; it < iters; it++) {
        /* the barriers keep every value live and unknown, so nothing is folded or hoisted */
        __asm__("" : "+v"(c), "+v"(dw[0]), "+v"(dw[1]), "+v"(dw[2]), "+v"(dw[3]));
        __asm__("" : "+v"(dx[0]), "+v"(dx[1]), "+v"(dx[2]));
        __m512i acc[4][3];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
#pragma GCC unroll 3
            for (int r = 0; r < 3; r++)
                acc[i][r] = _mm512_add_epi32(c, _mm512_set1_epi32(3 * i + r));
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            __asm__("" : "+v"(x));
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
#pragma GCC unroll 3
                for (int r = 0; r < 3; r++)
                    acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], w[i], x);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
#pragma GCC unroll 3
            for (int r = 0; r < 3; r++)
                f[i] = _mm512_fmadd_ps(_mm512_mul_ps(dw[i], dx[r]), _mm512_cvtepi32_ps(acc[i][r]),
                                       f[i]);
    }
    for (int i = 1; i < 4; i++)
        f[0] = _mm512_add_ps(f[0], f[i]);
    return _mm512_reduce_add_ps(f[0]);
}
