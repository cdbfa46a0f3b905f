/* bench_avx2 — AVX2 read-bandwidth and FMA-peak kernels of the benchmark. */
#include <immintrin.h>

#include "bench/bench.h"

static double hsum(__m256 v)
{
    float f[8];
    _mm256_storeu_ps(f, v);
    double s = 0;
    for (int i = 0; i < 8; i++)
        s += f[i];
    return s;
}

double bench_avx2_read(const float *p, int64_t n)
{
    __m256 s[8];
    for (int i = 0; i < 8; i++)
        s[i] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 128)
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            _mm_prefetch((const char *)(p + i + 16 * j) + 4096, _MM_HINT_NTA);
            s[j] = _mm256_add_ps(s[j], _mm256_loadu_ps(p + i + 16 * j));
            s[j] = _mm256_add_ps(s[j], _mm256_loadu_ps(p + i + 16 * j + 8));
        }
    for (int i = 1; i < 8; i++)
        s[0] = _mm256_add_ps(s[0], s[i]);
    return hsum(s[0]);
}

double bench_avx2_fma(int64_t iters)
{
    __m256 a[12], m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = _mm256_fmadd_ps(a[i], m, c);
    for (int i = 1; i < 12; i++)
        a[0] = _mm256_add_ps(a[0], a[i]);
    return hsum(a[0]);
}
