/*
 * models — random-weight models at the released dimensions for the benchmarks: the speech
 * tokenizer (Whisper-VQ encoder, one layer's weights shared by every layer so that 16 layers
 * fit in little memory; speed does not depend on the values) and the decoder (flow + HiFT,
 * every tensor its own). bench_models_free releases what they made.
 */
#ifndef PARLEY_BENCH_MODELS_H
#define PARLEY_BENCH_MODELS_H

#include "runtime/err.h"
#include "speech/stok.h"
#include "voice/flow.h"
#include "voice/hift.h"

struct bench_models {
    float **bufs;
    int n, cap;
    uint64_t rng;
    struct stok_layer *layers;
    struct tensor stok_w[6]; /* the shared layer's q, k, v, o, fc1, fc2 */
    int have_stok, have_voice;
    struct stok_model stok;
    struct flow_model flow;
    struct hift_model hift;
};

/* Each returns 0, or -1 with e set (what was made so far is freed by bench_models_free). */
int bench_models_stok(struct bench_models *b, int n_layer, int n_codes, struct err *e);
int bench_models_voice(struct bench_models *b, struct err *e);
void bench_models_free(struct bench_models *b);

/* A uniform number in [-1, 1) from b's generator (for inputs built alongside). */
float bench_models_uniform(struct bench_models *b);

#endif
