/*
 * act_avx2 — act's kernels for AVX2 + FMA (8 lanes); the code is in act_simd.h.
 */
#include "kernels/act_simd.h"
