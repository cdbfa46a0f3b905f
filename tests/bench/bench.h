/*
 * bench — the benchmark program's ISA-specific measuring kernels (bench_avx2.c,
 * bench_avx512.c), called only when cpu_level() allows.
 */
#ifndef PARLEY_BENCH_H
#define PARLEY_BENCH_H

#include <stdint.h>

/* Sums n floats (n a multiple of 128) with vector loads and a software prefetch 4 KiB ahead
 * (as the decode kernels stream weights): the STREAM-like read kernel that measures the
 * memory read bandwidth. */
double bench_avx2_read(const float *p, int64_t n);
double bench_avx512_read(const float *p, int64_t n);

/* Runs iters iterations of independent FMAs; returns a value to keep the work alive.
 * Floating-point operations done: iters * BENCH_FMA_FLOPS_AVX2 (or _AVX512). */
#define BENCH_FMA_FLOPS_AVX2   (12 * 8 * 2)
#define BENCH_FMA_FLOPS_AVX512 (12 * 16 * 2)
double bench_avx2_fma(int64_t iters);
double bench_avx512_fma(int64_t iters);

#endif
