/*
 * t2w — see t2w.h. decode_block() is one `token2wav` call of the official flow_inference.py
 * (spec §7.4 steps 1-6); the dispatch functions are the client loop of web_demo.py (§6.3) or
 * its clean counterpart.
 */
#include "voice/t2w.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration ---------------------------------------------------------------------- */

void t2w_config_default(struct t2w_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->mode = T2W_MODE_CLEAN;
    cfg->schedule[0] = 10;
    cfg->schedule[1] = 20;
    cfg->n_schedule = 2;
    cfg->prompt_cap = 100;
    cfg->max_tokens = 2000;
}

int t2w_schedule_parse(struct t2w_config *cfg, const char *s, struct err *e)
{
    static const struct {
        const char *name;
        int n, v[5];
    } named[] = {
        { "paper", 2, { 10, 20 } },
        { "main", 5, { 25, 50, 100, 150, 200 } },
        { "aligned", 3, { 10, 20, 40 } },
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (strcmp(s, named[i].name) == 0) {
            cfg->n_schedule = named[i].n;
            memcpy(cfg->schedule, named[i].v, sizeof(int) * (size_t)named[i].n);
            return 0;
        }
    int n = 0;
    const char *p = s;
    if (!*p)
        return err_set(e, "empty block schedule");
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 5 || v > 1000)
            return err_set(e,
                           "block schedule '%s': each block is a number of tokens in 5..1000 "
                           "(or use paper, main, aligned)",
                           s);
        if (n == T2W_MAX_SCHEDULE)
            return err_set(e, "block schedule '%s': more than %d blocks", s, T2W_MAX_SCHEDULE);
        cfg->schedule[n++] = (int)v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return err_set(e, "block schedule '%s': expected a comma after %ld", s, v);
        if (*p == '\0' && end[0] == ',')
            return err_set(e, "block schedule '%s' ends with a comma", s);
    }
    cfg->n_schedule = n;
    return 0;
}

/* ---- state ---------------------------------------------------------------------------- */

void t2w_reset(struct t2w *t)
{
    t->n_tokens = 0;
    t->n_hist = 0;
    t->n_pending = 0;
    t->block_index = 0;
    t->block_size = t->cfg.schedule[0];
    t->finalize = 0;
    t->done = 0;
    t->have_overlap = 0;
    t->have_cache = 0;
    t->out = NULL;
    t->n_out = 0;
    t->n_calls = 0;
}

int t2w_init(struct t2w *t, const struct flow_model *flow, const struct hift_model *hift,
             const struct t2w_config *cfg, struct pool *pool, struct err *e)
{
    memset(t, 0, sizeof *t);
    if (cfg->n_schedule < 1 || cfg->max_tokens < 1)
        return err_set(e, "t2w: empty schedule or max_tokens < 1");
    if (cfg->mode == T2W_MODE_CLEAN && cfg->prompt_cap != 0 && cfg->prompt_cap < 20)
        return err_set(e, "t2w: prompt cap %d tokens is below 20 (0 keeps the whole answer)",
                       cfg->prompt_cap);
    if (flow->hp.n_mel > 256 || flow->hp.hop != hift->hp.hop_total ||
        flow->hp.n_mel != hift->hp.in_channels)
        return err_set(e, "t2w: flow (%d mel, hop %d) and HiFT (%d mel, hop %d) do not match",
                       flow->hp.n_mel, flow->hp.hop, hift->hp.in_channels, hift->hp.hop_total);
    t->cfg = *cfg;
    t->flow = flow;
    t->hift = hift;
    t->pool = pool;
    t->n_mel = flow->hp.n_mel;
    t->hop = flow->hp.hop;
    int max_block = 0;
    for (int i = 0; i < cfg->n_schedule; i++) {
        if (cfg->schedule[i] < 5)
            return err_set(e, "t2w: block of %d tokens (at least 5)", cfg->schedule[i]);
        max_block = cfg->schedule[i] > max_block ? cfg->schedule[i] : max_block;
    }
    int64_t mt = cfg->max_tokens;
    t->max_call_tokens = mt;
    if (cfg->mode == T2W_MODE_CLEAN && cfg->prompt_cap) {
        int64_t c = (int64_t)cfg->prompt_cap + max_block;
        t->max_call_tokens = c < mt ? c : mt;
    }
    t->max_call_frames = flow_mel_len(&flow->hp, t->max_call_tokens);
    t->max_hist = flow_mel_len(&flow->hp, mt) + mt + 2;
    int64_t M = t->n_mel, F = t->max_call_frames + 1;
    t->tokens = malloc(sizeof(int32_t) * (size_t)mt);
    t->pending = malloc(sizeof(int32_t) * (size_t)max_block);
    t->mel_hist = malloc(sizeof(float) * (size_t)(t->max_hist * M));
    t->feat = malloc(sizeof(float) * (size_t)(t->max_hist * M));
    t->cache_mel = malloc(sizeof(float) * (size_t)M);
    t->cache_src = malloc(sizeof(float) * (size_t)t->hop);
    t->mel = malloc(sizeof(float) * (size_t)(F * M));
    t->mel2 = malloc(sizeof(float) * (size_t)(F * M));
    t->noise = malloc(sizeof(float) * (size_t)(F * M));
    t->wave = malloc(sizeof(float) * (size_t)(F * t->hop));
    t->src = malloc(sizeof(float) * (size_t)(F * t->hop));
    if (!t->tokens || !t->pending || !t->mel_hist || !t->feat || !t->cache_mel || !t->cache_src ||
        !t->mel || !t->mel2 || !t->noise || !t->wave || !t->src) {
        t2w_free(t);
        return err_set(e, "t2w: out of memory for %lld tokens", (long long)mt);
    }
    if (flow_state_init(&t->fs, flow, t->max_call_tokens, pool, e) ||
        hift_state_init(&t->hs, hift, F, e)) {
        t2w_free(t);
        return -1;
    }
    /* symmetric Hamming window of 2·34 in double (np.hamming) */
    for (int k = 0; k < T2W_FADE; k++)
        t->fade[k] = 0.54 - 0.46 * cos(2.0 * M_PI * k / (T2W_FADE - 1));
    t2w_reset(t);
    return 0;
}

void t2w_free(struct t2w *t)
{
    flow_state_free(&t->fs);
    hift_state_free(&t->hs);
    free(t->tokens);
    free(t->pending);
    free(t->mel_hist);
    free(t->feat);
    free(t->cache_mel);
    free(t->cache_src);
    free(t->mel);
    free(t->mel2);
    free(t->noise);
    free(t->wave);
    free(t->src);
    memset(t, 0, sizeof *t);
}

/* ---- one token2wav call ------------------------------------------------------------------ */

/* N(0,1) keyed by (absolute frame, channel): the same frame gets the same noise in every
 * call (splitmix64 → Box-Muller). */
static float t2w_keyed_gauss(int64_t frame, int64_t ch)
{
    uint64_t z = (uint64_t)frame * 0x9E3779B97F4A7C15ull + (uint64_t)ch * 0xBF58476D1CE4E5B9ull +
                 0x94D049BB133111EBull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    double u1 = ((double)(z >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(z & 0x7ff) / 2048.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

/* The HiFT call on mel2 [M][F] (F frames), with the cached source when there is one. */
static int t2w_vocode(struct t2w *t, int64_t frames, struct err *e)
{
    const float *noise = t->cfg.source_noise ? t->cfg.source_noise(t->cfg.noise_ctx, frames) : NULL;
    return hift_forward(t->hift, &t->hs, t->pool, t->wave, t->src, NULL, t->mel2, frames,
                        t->have_cache ? t->cache_src : NULL, noise, e);
}

/* Appends mel [M][stride] columns [c0, c0 + n) to the history (time-major). */
static int t2w_hist_append(struct t2w *t, const float *mel, int64_t stride, int64_t c0, int64_t n,
                           struct err *e)
{
    int64_t M = t->n_mel;
    if (t->n_hist + n > t->max_hist)
        return err_set(e, "t2w: mel history full (%lld frames)", (long long)t->max_hist);
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < M; c++)
            t->mel_hist[(t->n_hist + j) * M + c] = mel[c * stride + c0 + j];
    t->n_hist += n;
    return 0;
}

static int t2w_decode(struct t2w *t, const int32_t *block, int64_t n, int finalize, struct err *e)
{
    const struct flow_hparams *hp = &t->flow->hp;
    int64_t M = t->n_mel, P = t->n_tokens, a = 0, p_feat = t->n_hist;
    const int clean = t->cfg.mode == T2W_MODE_CLEAN;
    if (P + n > t->cfg.max_tokens)
        return err_set(e, "t2w: the answer is longer than %lld speech tokens",
                       (long long)t->cfg.max_tokens);
    /* 1. prompt: all tokens so far, or (clean, capped) the last ones, trimmed in whole
     *    attention blocks; the prompt mel is then the frames that keep the call's new frames
     *    exactly where the uncapped call would put them */
    if (clean && t->cfg.prompt_cap && P > t->cfg.prompt_cap) {
        int64_t blk = hp->block;
        a = (P - t->cfg.prompt_cap + blk - 1) / blk * blk;
        int64_t want_new = flow_mel_len(hp, P + n) - t->n_hist;
        p_feat = flow_mel_len(hp, P - a + n) - want_new;
        if (p_feat < 0)
            p_feat = 0;
    }
    const int32_t *prompt = t->tokens + a;
    int64_t K = P - a, T = flow_mel_len(hp, K + n);
    if (p_feat >= T)
        return err_set(e, "t2w: prompt mel of %lld frames does not fit a call of %lld",
                       (long long)p_feat, (long long)T);
    int64_t h0 = t->n_hist - p_feat; /* first history frame used as prompt */
    for (int64_t c = 0; c < M; c++)
        for (int64_t j = 0; j < p_feat; j++)
            t->feat[c * p_feat + j] = t->mel_hist[(h0 + j) * M + c];
    const float *noise = NULL;
    if (t->cfg.flow_noise) {
        noise = t->cfg.flow_noise(t->cfg.noise_ctx, T);
    } else if (clean) {
        for (int64_t c = 0; c < M; c++)
            for (int64_t j = 0; j < T; j++)
                t->noise[c * T + j] = t2w_keyed_gauss(h0 + j, c);
        noise = t->noise;
    }
    /* 2. the flow call: Tn new frames into mel [M][Tn] */
    int64_t Tn;
    if (flow_inference(t->flow, &t->fs, t->pool, t->mel, &Tn, block, n, prompt, K, t->feat, p_feat,
                       noise, NULL, NULL, e))
        return -1;
    t->n_calls++;
    /* 3. crossfade the held-back frames into the first 34 (double, stored as float) */
    if (t->have_overlap) {
        int64_t k_end = Tn < T2W_OVERLAP ? Tn : T2W_OVERLAP;
        for (int64_t c = 0; c < M; c++)
            for (int64_t k = 0; k < k_end; k++) {
                double v = (double)t->mel[c * Tn + k] * t->fade[k] +
                           (double)t->overlap[c * T2W_OVERLAP + k] * t->fade[T2W_OVERLAP + k];
                t->mel[c * Tn + k] = (float)v;
            }
    }
    /* 4. prepend the cached frame */
    int64_t pre = t->have_cache ? 1 : 0, F = Tn + pre;
    for (int64_t c = 0; c < M; c++) {
        if (pre)
            t->mel2[c * F] = t->cache_mel[c];
        memcpy(t->mel2 + c * F + pre, t->mel + c * Tn, sizeof(float) * (size_t)Tn);
    }
    /* 5. hold back 34 frames and one frame of audio, or vocode everything */
    int64_t keep = F;
    if (!finalize) {
        if (F <= T2W_OVERLAP + 1)
            return err_set(e,
                           "t2w: a block of %lld tokens gives %lld frames, too few to hold "
                           "back %d",
                           (long long)n, (long long)F, T2W_OVERLAP);
        keep = F - T2W_OVERLAP;
        for (int64_t c = 0; c < M; c++)
            memcpy(t->overlap + c * T2W_OVERLAP, t->mel2 + c * F + keep,
                   sizeof(float) * T2W_OVERLAP);
        t->have_overlap = 1;
        /* compact mel2 to [M][keep] */
        for (int64_t c = 1; c < M; c++)
            memmove(t->mel2 + c * keep, t->mel2 + c * F, sizeof(float) * (size_t)keep);
    } else {
        t->have_overlap = 0;
    }
    if (t2w_vocode(t, keep, e))
        return -1;
    int64_t L = keep * t->hop;
    /* 6. the mel handed back as the next prompt: with the cache frame (reference, Q4) or
     *    without it (clean) */
    if (t2w_hist_append(t, t->mel2, keep, clean ? pre : 0, clean ? keep - pre : keep, e))
        return -1;
    if (!finalize) {
        for (int64_t c = 0; c < M; c++)
            t->cache_mel[c] = t->mel2[c * keep + keep - 1];
        memcpy(t->cache_src, t->src + L - t->hop, sizeof(float) * (size_t)t->hop);
        t->have_cache = 1;
        t->out = t->wave;
        t->n_out = L - t->hop;
    } else {
        t->have_cache = 0;
        t->out = t->wave;
        t->n_out = L;
        t->done = 1;
    }
    memcpy(t->tokens + P, block, sizeof(int32_t) * (size_t)n);
    t->n_tokens = P + n;
    return 0;
}

/* Clean end with no tokens pending: vocode the cached frame and the held-back frames. */
static int t2w_flush(struct t2w *t, struct err *e)
{
    int64_t M = t->n_mel, pre = t->have_cache ? 1 : 0, ov = t->have_overlap ? T2W_OVERLAP : 0;
    int64_t F = pre + ov;
    t->done = 1;
    if (F == 0)
        return 0;
    for (int64_t c = 0; c < M; c++) {
        if (pre)
            t->mel2[c * F] = t->cache_mel[c];
        if (ov)
            memcpy(t->mel2 + c * F + pre, t->overlap + c * T2W_OVERLAP,
                   sizeof(float) * T2W_OVERLAP);
    }
    if (t2w_vocode(t, F, e))
        return -1;
    if (t2w_hist_append(t, t->mel2, F, pre, ov, e))
        return -1;
    t->have_cache = t->have_overlap = 0;
    t->out = t->wave;
    t->n_out = F * t->hop;
    return 0;
}

static int t2w_dispatch(struct t2w *t, int finalize, struct err *e)
{
    if (t2w_decode(t, t->pending, t->n_pending, finalize, e))
        return -1;
    t->n_pending = 0;
    t->block_index++;
    int i = t->block_index < t->cfg.n_schedule ? t->block_index : t->cfg.n_schedule - 1;
    t->block_size = t->cfg.schedule[i];
    return 0;
}

/* Reference client (web_demo.py): the check runs when an id arrives, before it is kept. */
static int t2w_reference_check(struct t2w *t, struct err *e)
{
    if (t->n_pending >= t->block_size || (t->finalize && t->n_pending > 0))
        return t2w_dispatch(t, t->finalize, e);
    return 0;
}

int t2w_push_audio(struct t2w *t, int32_t token, struct err *e)
{
    t->out = NULL;
    t->n_out = 0;
    if (t->done)
        return err_set(e, "t2w: the answer has ended");
    if (token < 0 || token >= t->flow->hp.vocab)
        return err_set(e, "t2w: speech token %d is outside 0..%d", token, t->flow->hp.vocab - 1);
    if (t->n_tokens + t->n_pending >= t->cfg.max_tokens)
        return err_set(e, "t2w: the answer is longer than %lld speech tokens",
                       (long long)t->cfg.max_tokens);
    if (t->cfg.mode == T2W_MODE_REFERENCE) {
        if (t2w_reference_check(t, e))
            return -1;
        t->pending[t->n_pending++] = token;
        return 0;
    }
    t->pending[t->n_pending++] = token;
    if (t->n_pending >= t->block_size)
        return t2w_dispatch(t, 0, e);
    return 0;
}

int t2w_push_text(struct t2w *t, struct err *e)
{
    t->out = NULL;
    t->n_out = 0;
    if (t->done)
        return err_set(e, "t2w: the answer has ended");
    if (t->cfg.mode == T2W_MODE_REFERENCE)
        return t2w_reference_check(t, e);
    return 0;
}

int t2w_end(struct t2w *t, int by_user, struct err *e)
{
    t->out = NULL;
    t->n_out = 0;
    if (t->done)
        return 0;
    if (t->cfg.mode == T2W_MODE_REFERENCE) {
        int rc = 0;
        if (by_user) { /* Q2: nothing pending → no finalize call, the tail is lost */
            t->finalize = 1;
            rc = t2w_reference_check(t, e);
        }
        t->done = 1; /* Q1: without <|user|> the pending tokens and the tail are lost */
        return rc;
    }
    if (t->n_pending > 0)
        return t2w_dispatch(t, 1, e);
    return t2w_flush(t, e);
}
