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

/* Runs iters iterations of the q8_0 kernel's block step on registers alone (AVX-512 VNNI, see
 * kernels/gemm_q8.h): 12 (output, row) pairs of a 4 × 3 tile, each an int32 start, eight
 * vpdpbusd, then the convert, scale product and fused add of the block. Nothing is loaded, so
 * this is the ceiling of that operation mix. Operations counted as the LM figures count
 * them, 2 per multiply-add: iters * BENCH_Q8_STEP_OPS. */
#define BENCH_Q8_STEP_OPS (12 * 8 * 64 * 2)
double bench_avx512_q8_step(int64_t iters);

#endif
