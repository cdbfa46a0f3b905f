/*
 * bench_engine — the engine's figures a random LM with the real GLM-4-Voice-9B
 * layer shape (2 layers, bf16, vocabulary 8192) and the tokenizer vocabulary, special ids,
 * speech tokenizer and decoder of the tiny golden models in build/golden/ (run the golden
 * generators first). Prints the first-audio latency of one audio turn broken down by stage
 * (from commit: tokenizer, prefill, first id, first audio id, first block, first PCM), the
 * share of the turn's wall time spent outside model computations, and aggregate LM tokens/s
 * with 1, 4 and 16 concurrent sessions (continuous batching).
 */
#ifndef PARLEY_BENCH_ENGINE_H
#define PARLEY_BENCH_ENGINE_H

void bench_engine_run(int quick);

#endif
