/*
 * sampler — choosing the next token from the LM's logits (spec §5.4, erratum E7).
 *
 * Order, as transformers 4.44 applies it in the reference: penalties (off by default) →
 * temperature → top-k (every token tied with the k-th value is kept) → top-p (the reference's
 * rule: sort ascending, drop the tokens whose cumulative probability is <= 1 − top_p, keep at
 * least one) → softmax → one draw. Greedy takes the first largest logit.
 *
 * parley samples from f32 logits where the reference uses bf16 ones (E7), and the draw
 * (inverse CDF over the kept tokens in descending order, one uniform number) is not
 * torch.multinomial's: sampled runs are comparable in distribution, not id for id. For
 * tests, an injected uniform source replaces the generator.
 *
 * Padding rows of the vocabulary (ids >= mask_from) are never chosen (E8).
 * A sampler belongs to one session; its scratch is allocated once at init.
 */
#ifndef PARLEY_SAMPLER_H
#define PARLEY_SAMPLER_H

#include <stdint.h>

#include "runtime/err.h"

struct sampler_params {
    float temperature;        /* the demo's 0.2; <= 0 means greedy */
    int top_k;                /* transformers' default 50; 0: off */
    float top_p;              /* the demo's 0.8; >= 1: off */
    float repetition_penalty; /* transformers' rule; 1: off (the reference's setting) */
    float presence_penalty;   /* vLLM's rule (the dev branch uses 1.0); 0: off */
    int greedy;               /* 1: argmax, ignoring the rest */
    uint64_t seed;
    int64_t mask_from; /* ids >= mask_from are never sampled; 0: no mask */
    int max_new;       /* the demo's 2000 (for the caller's loop) */
};

/* The official demo's settings: temperature 0.2, top_p 0.8, top_k 50, no penalties,
 * 2000 new tokens, seed 0, no mask. */
void sampler_defaults(struct sampler_params *p);

struct sampler {
    struct sampler_params p;
    int64_t n_vocab;
    uint64_t rng[4];           /* xoshiro256** */
    double (*uniform)(void *); /* injected uniform [0, 1) source for tests; NULL: rng */
    void *uniform_ctx;
    /* scratch [n_vocab] */
    float *val;
    int32_t *idx;
    float *work;   /* top-k's heap */
    uint8_t *seen; /* ids accepted so far (penalties) */
};

/* 0 when p's settings can be sampled with (a NaN temperature, a negative top_k, a top_p or
 * repetition penalty not above 0, a negative mask_from cannot), else -1 with e set. */
int sampler_check(const struct sampler_params *p, struct err *e);
int sampler_init(struct sampler *s, const struct sampler_params *p, int64_t n_vocab, struct err *e);
void sampler_free(struct sampler *s);
/* Forgets the penalty history and reseeds. */
void sampler_reset(struct sampler *s, uint64_t seed);
/* Records an id for the penalties (the prompt's ids too, for the repetition penalty). */
void sampler_accept(struct sampler *s, int32_t id);
/* The next id from logits [n_vocab] (not modified). */
int32_t sampler_sample(struct sampler *s, const float *logits);
/* A uniform number in [0, 1) from the session's generator. */
double sampler_uniform(struct sampler *s);

#endif
