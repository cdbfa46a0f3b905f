/*
 * bench_stok — the speech tokenizer at the real dimensions (d_model 1280, 20 heads, FFN 5120,
 * 16 layers, codebook 16384 x 1280; random f32 weights made here, one layer's weights shared
 * by all 16, which costs the same compute and memory traffic) on 30 s of audio: real-time
 * factor with 1 and 2 threads, GFLOP/s (≈36 GFLOP per second of audio, spec §10.2) and its
 * percentage of OpenBLAS sgemm measured in the same run; plus the front-end alone
 * (resampling 44.1 -> 16 kHz and log-mel) in x real time.
 */
#ifndef PARLEY_BENCH_STOK_H
#define PARLEY_BENCH_STOK_H

/* Prints the figures; quick: 8 s of audio, 2 layers, one repetition. */
void bench_stok_run(int quick);

#endif
