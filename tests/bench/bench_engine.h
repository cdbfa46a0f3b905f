/*
 * bench_engine — the engine's figures with a random LM of the real GLM-4-Voice-9B layer
 * shape (2 layers, bf16; vocabulary, special ids and speech-token range of the tiny golden
 * LM in build/golden/, so run the golden generators first), the speech tokenizer and the
 * decoder (flow + HiFT) at their released dimensions with random weights.
 *   engine_first_audio_vtV_s            commit -> first PCM of a 2 s spoken turn with the
 *                                       voice worker on V threads (1, 2), and its stages:
 *   engine_first_audio_vtV_tokenize_s   commit -> all user speech tokens
 *   engine_first_audio_vtV_prefill_s    the prefill's own duration
 *   engine_first_audio_vtV_decode_s     end of prefill -> the first block (10) of audio tokens
 *   engine_first_audio_vtV_voice_s      first block -> first PCM (flow + HiFT of the block)
 *   engine_first_audio_vtV_outside_pct  share of the first-audio latency outside model compute
 *   engine_lm_sessionsN_tps         aggregate LM tokens/s with N = 1, 4, 16 sessions
 */
#ifndef PARLEY_BENCH_ENGINE_H
#define PARLEY_BENCH_ENGINE_H

void bench_engine_run(int quick);

#endif
