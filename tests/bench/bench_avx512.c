/* bench_avx512 — AVX-512 read-bandwidth and FMA-peak kernels of the benchmark. */
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
