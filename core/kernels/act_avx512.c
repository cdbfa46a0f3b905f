/*
 * act_avx512 — act's kernels for AVX-512 (16 lanes); the code is in act_simd.h.
 */
#include "kernels/act_simd.h"
