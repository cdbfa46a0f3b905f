/*
 * bench_lm — the language model's figures on random weights with the real
 * GLM-4-Voice-9B layer shape (hidden 4096, 32 heads of 128, 2 KV heads, FFN 13696, RoPE on
 * 64 dims) and vocabulary 8192, 2 layers (8 for a decode figure outside quick mode):
 * decode tokens/s at batch 1 (context 0 and 1024) and batched at 4, 8 and 16 sequences, and
 * prefill of 512 tokens (64 when quick), for f32/f16/bf16/q8_0 weights, 1 and 2 threads.
 * Decode figures also as a fraction of the read bandwidth measured in the same run (weight
 * bytes read per step × steps/s ÷ bandwidth), the 16-sequence step's GFLOP/s as a fraction of
 * what bounds it (the FMA peak for f32/f16, the q8_0 block step on registers for q8_0),
 * prefill as a fraction of the sgemm rate measured in the same run.
 */
#ifndef PARLEY_BENCH_LM_H
#define PARLEY_BENCH_LM_H

#include <stdio.h>

/* filter (or NULL): only the configurations ("lm_L2_q8_0_t1") that contain it or that it
 * contains; the limits are measured in any case. */
void bench_lm_run(int quick, const char *filter);

#endif
