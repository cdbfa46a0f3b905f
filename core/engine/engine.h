/*
 * engine — conversations for many sessions at once on one model set (DESIGN "Engine",
 * spec §5, §6, Appendix B).
 *
 * A session is one conversation: its KV cache (kept across turns: a new turn prefills only
 * its own ids), its history, its sampler, its speech-tokenizer stream and its token-to-wave
 * state. The API is asynchronous and thread-safe: any thread may push audio or text, commit
 * the user's turn, cancel the answer (with the number of answer samples the listener heard,
 * which truncates the history to what was heard) and drain the session's events. The work
 * runs on the engine's threads (see engine.c's DESIGN comment): one LM thread (prefill, and
 * decode steps batched across every generating session) and `n_workers` voice workers
 * (speech tokenizer blocks, decoder blocks ordered by how soon each listener runs dry).
 *
 * Events of a turn, in order: USER_TOKENIZED (audio turns), then TRANSCRIPT and AUDIO
 * interleaved as the answer is generated, then exactly one TURN_DONE (with its reason,
 * timings and the turn's generated ids). ERROR events carry a typed status and a message.
 *
 * Ownership: the models (struct engine_models) are loaded by the caller and must outlive the
 * engine. An event's payload (text, pcm, ids) belongs to the caller after engine_next_event
 * and is released by engine_event_clear.
 */
#ifndef PARLEY_ENGINE_H
#define PARLEY_ENGINE_H

#include <stdint.h>

#include "backend/backend.h"
#include "lm/lm.h"
#include "lm/sampler.h"
#include "runtime/err.h"
#include "runtime/gguf.h"
#include "speech/stok.h"
#include "text/bpe.h"
#include "voice/flow.h"
#include "voice/hift.h"
#include "voice/t2w.h"

/* Typed results of the API (0 = ok; negative = refused). */
enum engine_status {
    ENGINE_OK = 0,
    ENGINE_ERR_SESSIONS = -1,   /* the session limit is reached */
    ENGINE_ERR_MEMORY = -2,     /* the KV-cache budget is spent, or out of memory */
    ENGINE_ERR_STATE = -3,      /* not allowed now (push while answering, commit twice, ...) */
    ENGINE_ERR_INVALID = -4,    /* bad argument (rate, empty turn, missing model) */
    ENGINE_ERR_INPUT_FULL = -5, /* the user turn is longer than the session allows */
    ENGINE_ERR_MODEL = -6,      /* a model computation failed */
    ENGINE_ERR_CONTEXT = -7,    /* the context is full (policy ENGINE_CTX_END) */
    ENGINE_ERR_CLOSED = -8,     /* the engine is shutting down */
};
const char *engine_status_name(enum engine_status s);

enum engine_history {
    ENGINE_HISTORY_KV = 0,         /* keep the KV cache; a turn prefills only its suffix */
    ENGINE_HISTORY_RETOKENIZE = 1, /* the demo: re-tokenize the whole history string */
};

enum engine_ctx_policy {
    ENGINE_CTX_END = 0,         /* a turn that does not fit is refused: ERROR + TURN_DONE */
    ENGINE_CTX_DROP_OLDEST = 1, /* drop the oldest turns (keep the system prompt), re-prefill */
};

enum engine_done_reason {
    ENGINE_DONE_EOT = 0,     /* a stop id: <|user|> (or <|endoftext|>, <|observation|>) */
    ENGINE_DONE_LENGTH = 1,  /* max_new tokens */
    ENGINE_DONE_CONTEXT = 2, /* the context filled during the answer, or the turn did not fit */
    ENGINE_DONE_CANCELLED = 3,
    ENGINE_DONE_ERROR = 4,
};
const char *engine_done_name(enum engine_done_reason r);

enum engine_event_type {
    ENGINE_EV_USER_TOKENIZED = 0, /* n_tokens speech tokens, seconds of audio */
    ENGINE_EV_TRANSCRIPT = 1,     /* text: complete UTF-8 of the answer, in order */
    ENGINE_EV_AUDIO = 2,          /* pcm[n_pcm] at sample_rate, starting at offset in the answer */
    ENGINE_EV_TURN_DONE = 3,      /* reason, timings, ids */
    ENGINE_EV_ERROR = 4,          /* status, msg */
};

/* Seconds from commit (monotonic clock); negative when the stage did not happen. */
struct engine_timings {
    double tokenize; /* speech tokenizer finished (commit -> all user tokens) */
    double prefill_start, prefill_end;
    double first_token; /* first sampled id */
    double first_audio_token;
    double first_block; /* the first full block of audio tokens existed */
    double first_pcm;   /* the first AUDIO event */
    double done;
    int64_t n_prompt;                               /* ids prefilled for this turn */
    int64_t n_text, n_audio;                        /* generated ids of each kind */
    int64_t n_samples;                              /* PCM samples emitted */
    double lm_seconds, voice_seconds, stok_seconds; /* compute spent on this turn */
    /* model compute on the way to the first PCM: the tokenizer after commit, the LM passes
     * until the first block of audio tokens, the decoder calls until the first AUDIO event
     * (first_pcm minus this is time spent outside the models: queues, hand-overs) */
    double compute_first_pcm;
    int64_t n_lm_steps; /* LM passes (the prefill and each batched decode step) of this turn */
    /* LM passes of this turn that ended after engine_cancel was called (the one in flight at
     * that moment, if any): 0 or 1 ("within one decode step"); -1 when not cancelled. */
    int64_t steps_after_cancel;
};

struct engine_event {
    enum engine_event_type type;
    int turn; /* 0, 1, ... */
    enum engine_done_reason reason;
    enum engine_status status;
    int64_t n_tokens; /* USER_TOKENIZED */
    double seconds;
    char *text; /* TRANSCRIPT (NUL-terminated), ERROR message */
    int64_t n_text;
    float *pcm; /* AUDIO */
    int64_t n_pcm, offset;
    int sample_rate;
    int32_t *ids; /* TURN_DONE: the turn's generated ids (with the stop id) */
    int64_t n_ids;
    int64_t heard_audio_tokens; /* TURN_DONE after a cancel: audio tokens kept in history */
    struct engine_timings t;
    struct engine_event *next; /* queue link (engine-internal) */
};
void engine_event_clear(struct engine_event *ev);

/* The model set, loaded once and shared (read-only) by all sessions. stok and flow/hift may
 * be NULL: no audio input, or text-only answers. */
struct engine_models {
    struct lm_model *lm;
    struct bpe *bpe;
    struct stok_model *stok;
    struct flow_model *flow;
    struct hift_model *hift;
};

/* Loads DIR/lm.gguf, DIR/tokenizer.gguf and DIR/decoder.gguf (the last two optional) on the
 * backend be. engine_models_free releases what this loaded. */
struct engine_model_files {
    struct engine_models m;
    struct lm_model lm;
    struct bpe bpe;
    struct stok_model stok;
    struct gguf_file dec_file;
    struct flow_model flow;
    struct hift_model hift;
    int have_stok, have_dec;
};
int engine_models_load(struct engine_model_files *f, const char *lm_path, const char *stok_path,
                       const char *dec_path, struct backend *be, struct err *e);
void engine_models_free(struct engine_model_files *f);

struct engine_config {
    int n_workers;        /* voice worker threads (>= 1) */
    int max_sessions;     /* open sessions at most */
    int64_t max_kv_bytes; /* the sum of all sessions' KV caches; 0: no limit */
    int max_batch;        /* sessions in one decode step (<= max_sessions) */
    int prefill_rows;     /* rows of one prefill block */
    int voice_threads;    /* threads of each voice worker's tokenizer and decoder calls (>= 1) */
};
void engine_config_default(struct engine_config *c);

struct engine_session_options {
    int in_rate;                    /* Hz of pushed audio */
    struct sampler_params sampling; /* max_new bounds each answer */
    int64_t n_ctx;                  /* KV positions of this session (0: the model's) */
    enum dtype kv_type;
    double max_user_seconds; /* longest user audio turn */
    int64_t max_user_text;   /* longest user text turn, bytes */
    enum engine_history history;
    enum engine_ctx_policy ctx_policy;
    struct t2w_config voice; /* schedule, mode, prompt cap */
    /* the system prompt: CHAT_SYSTEM_AUTO (the first turn's kind, as the demo), or
     * CHAT_MODE_AUDIO / CHAT_MODE_TEXT whatever the turns are */
    int system_prompt;
};
void engine_session_options_default(struct engine_session_options *o);

struct engine;
struct engine_session;

/* Creates the engine and starts its threads. The models must outlive it. */
int engine_create(struct engine **out, const struct engine_models *m,
                  const struct engine_config *cfg, struct err *e);
/* Closes every session still open and joins the threads. */
void engine_destroy(struct engine *eng);

/* Opens a session (allocates all its buffers now). Refuses with ENGINE_ERR_SESSIONS or
 * ENGINE_ERR_MEMORY when a limit would be passed. */
enum engine_status engine_open(struct engine *eng, const struct engine_session_options *o,
                               struct engine_session **out, struct err *e);
/* Cancels what runs, waits for the engine's threads to let go of the session, frees it. */
void engine_close(struct engine_session *s);

/* User input of the next turn (allowed while no answer is being generated for this session:
 * between commit and TURN_DONE it is refused with ENGINE_ERR_STATE). */
enum engine_status engine_push_audio(struct engine_session *s, const float *pcm, int64_t n,
                                     struct err *e);
enum engine_status engine_push_text(struct engine_session *s, const char *text, struct err *e);
/* Ends the user's turn: the answer starts. */
enum engine_status engine_commit(struct engine_session *s, struct err *e);
/* Stops the answer within one decode step; played = answer samples the listener heard: the
 * history keeps the audio tokens whose audio began before that point (and the ids before
 * them). Harmless when no answer runs (ENGINE_ERR_STATE). */
enum engine_status engine_cancel(struct engine_session *s, int64_t played, struct err *e);

/* New sampling settings for the next turns (between turns: ENGINE_ERR_STATE during an answer).
 * max_new may not exceed the value the session was opened with (its buffers); a new seed
 * reseeds the session's generator. */
enum engine_status engine_set_sampling(struct engine_session *s, const struct sampler_params *p,
                                       struct err *e);

/* Barge-in after the answer was generated, while the listener still plays it: the last
 * answer was heard up to `played` samples, so the conversation keeps only that much (the rule
 * of engine_cancel; *heard = the answer's audio tokens kept, may be NULL). Allowed from that
 * answer's TURN_DONE until the next commit (audio of the next turn may have been pushed);
 * ENGINE_ERR_STATE otherwise. Trimming twice keeps the shorter. */
enum engine_status engine_heard(struct engine_session *s, int64_t played, int64_t *heard,
                                struct err *e);

/* Takes the oldest event: 1 when one was taken, 0 after timeout_s seconds without one
 * (timeout_s < 0: wait for ever, 0: do not wait). */
int engine_next_event(struct engine_session *s, struct engine_event *ev, double timeout_s);

/* Seconds of pushed audio the speech tokenizer has not taken yet: a front-end stops reading
 * its client while this grows (incoming flow control when the engine is behind). */
double engine_input_backlog(struct engine_session *s);

/* Positions of the session's KV cache in use (history length), for tests and metrics. */
int64_t engine_session_positions(struct engine_session *s);

/* Engine-wide counters (guarded; a snapshot). */
struct engine_stats {
    int n_sessions;
    int64_t kv_bytes;
    int64_t decode_steps, decode_rows; /* batched steps and the rows they carried */
    int max_batch_seen;
    /* how long the LM pass in flight has run (0 when the LM thread waits for work): a
     * watchdog's sign of life that stays meaningful while the models compute */
    double lm_pass_seconds;
};
void engine_get_stats(struct engine *eng, struct engine_stats *st);

#endif
