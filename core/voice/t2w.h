/*
 * t2w — streaming token-to-wave: one answer's state, fed the LM's ids as they arrive,
 * returning PCM (22.05 kHz float) as soon as it is final (spec §7.4, §6.3, §6.4).
 *
 * Two modes:
 *   T2W_MODE_REFERENCE  the official client + token2wav bookkeeping, for comparison: a full
 *       block is dispatched when the *next* id arrives; the answer is finalised only by an
 *       end-of-turn id (<|user|>) arriving while tokens are pending, otherwise the tail is lost
 *       (quirks Q1, Q2); the mel handed back as prompt includes the prepended vocoder-cache
 *       frame (quirk Q4, prompt drift); every call re-encodes the whole answer so far.
 *   T2W_MODE_CLEAN (default)  a block is dispatched as soon as it is full; t2w_end() always
 *       flushes (pending tokens, the 34 held-back frames and the cached frame), so total
 *       samples = hop · flow_mel_len(all tokens); the prompt mel is exactly the emitted frames
 *       (no drift); and the prompt carried into each call is capped at `prompt_cap` tokens
 *       (trimmed in whole 10-token attention blocks), so a call costs O(cap + block) however
 *       long the answer. Noise in clean mode is keyed by absolute frame position, so a frame
 *       gets the same initial noise in every call that covers it.
 *
 * Schedules (block sizes, the last repeating): the paper's {10, 20}, the official main
 * branch's {25, 50, 100, 150, 200}, or multiples of the decoder's 10-token attention block
 * such as {10, 20, 40}; see t2w_schedule_parse.
 *
 * Threads: one state is used by one thread at a time; it owns its flow and HiFT buffers,
 * allocated once in t2w_init.
 */
#ifndef PARLEY_T2W_H
#define PARLEY_T2W_H

#include <stdint.h>

#include "runtime/err.h"
#include "runtime/pool.h"
#include "voice/flow.h"
#include "voice/hift.h"

#define T2W_MAX_SCHEDULE 16
#define T2W_OVERLAP      34 /* int(5 tokens / 12.5 · 22050 / 256) held-back mel frames */
#define T2W_FADE         (2 * T2W_OVERLAP)

enum t2w_mode {
    T2W_MODE_CLEAN = 0,
    T2W_MODE_REFERENCE = 1,
};

struct t2w_config {
    enum t2w_mode mode;
    int schedule[T2W_MAX_SCHEDULE]; /* tokens per decode call; the last value repeats */
    int n_schedule;
    int prompt_cap;     /* clean mode: prompt tokens kept per call (0: all) */
    int64_t max_tokens; /* the longest answer, in speech tokens */
    /* test hooks (NULL in production): noise for a call of T frames, [M][T] and [H][256·T] */
    const float *(*flow_noise)(void *ctx, int64_t n_frames);
    const float *(*source_noise)(void *ctx, int64_t n_frames);
    void *noise_ctx;
};

struct t2w {
    struct t2w_config cfg;
    const struct flow_model *flow;
    const struct hift_model *hift;
    struct flow_state fs;
    struct hift_state hs;
    int n_mel, hop;
    /* answer so far */
    int32_t *tokens; /* [max_tokens] every token decoded so far */
    int64_t n_tokens;
    float *mel_hist; /* [max_hist][M] time-major: the mel handed back by each call */
    int64_t n_hist, max_hist;
    int32_t *pending; /* [max block] tokens waiting for a call */
    int64_t n_pending;
    int block_index, block_size, finalize, done;
    /* token2wav state */
    float overlap[T2W_OVERLAP * 256]; /* [M][34] (M <= 256) */
    int have_overlap;
    float *cache_mel; /* [M] */
    float *cache_src; /* [hop] */
    int have_cache;
    double fade[T2W_FADE];
    /* work */
    float *feat;       /* [M][max_hist] prompt mel, channel-major */
    float *mel;        /* [M][T+1] the call's mel (+ the cache frame in front) */
    float *mel2;       /* [M][T+1] */
    float *noise;      /* [M][T] keyed noise (clean mode) */
    float *wave, *src; /* [hop·(T+1)] */
    int64_t max_call_tokens, max_call_frames;
    /* output of the last push / end: n_out samples at out (valid until the next call) */
    const float *out;
    int64_t n_out;
    int64_t n_calls;
    struct pool *pool;
};

/*
 * Parses "10,20" / "paper" (10,20) / "main" (25,50,100,150,200) / "aligned" (10,20,40) into
 * cfg->schedule. Returns -1 with a message on anything else (empty, non-numbers, values < 1,
 * too many).
 */
int t2w_schedule_parse(struct t2w_config *cfg, const char *s, struct err *e);

/* Sets the defaults: clean mode, paper schedule, prompt_cap 100, max_tokens 2000. */
void t2w_config_default(struct t2w_config *cfg);

int t2w_init(struct t2w *t, const struct flow_model *flow, const struct hift_model *hift,
             const struct t2w_config *cfg, struct pool *pool, struct err *e);
void t2w_free(struct t2w *t);

/* Starts a new answer (keeps the buffers). */
void t2w_reset(struct t2w *t);

/*
 * Feeds one id: a speech token (0..vocab-1) or, for t2w_push_text, a text id. PCM that became
 * final is at t->out / t->n_out (0 when none). Returns -1 for a token out of range, an answer
 * longer than max_tokens, or a failed decode.
 */
int t2w_push_audio(struct t2w *t, int32_t token, struct err *e);
int t2w_push_text(struct t2w *t, struct err *e);

/*
 * The answer ended: by_user = 1 for <|user|> (the normal end), 0 for <|endoftext|>,
 * <|observation|> or max_new_tokens. Reference mode replicates Q1/Q2 (no flush in those
 * cases); clean mode always flushes everything.
 */
int t2w_end(struct t2w *t, int by_user, struct err *e);

#endif
