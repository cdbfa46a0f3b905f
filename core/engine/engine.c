/*
 * engine — sessions, turns and the scheduler (see engine.h for the API).
 *
 * DESIGN: threads, locks, ownership.
 *
 * Threads
 *   caller threads   any number: engine_open/push/commit/cancel/next_event/close.
 *   LM thread        one: owns the LM runner and the backend; runs prefills and decode steps
 *                    batched over every session that is generating (continuous batching: a
 *                    session joins after its prefill and leaves when its answer ends or is
 *                    cancelled, between two steps). A prefill advances one block of
 *                    prefill_rows ids per step, beside the decode batch, so that a long
 *                    prompt delays the sessions already speaking by one block at a time, not
 *                    by the whole prompt. The blocks are the same whatever else runs, so a
 *                    session's output does not depend on the load.
 *   voice workers    n_workers: speech-tokenizer blocks of pushed audio, the turn's prompt
 *                    (tokenizer finish + chat template + BPE + context policy), decoder blocks
 *                    (t2w: flow + HiFT) and the end of a turn. A worker picks the runnable job
 *                    whose listener runs dry soonest (deadline below).
 *
 * Locks
 *   eng->mu          the one scheduling lock: the session list, every session's `state`,
 *                    busy flags, input buffers, audio-code queue, event queue, cancel request,
 *                    timings and the engine counters. Held only for bookkeeping: model
 *                    computations run with it released. Waits: eng->work_cv (workers and the
 *                    LM thread: new work), s->ev_cv (callers: an event or a state change).
 *
 * Ownership of a session's heavy state (cache, sampler, hist, gen, prompt, stok, t2w, chat)
 * follows its state (written under eng->mu, so the hand-over is ordered by the lock):
 *   S_IDLE      a voice worker with voice_busy set may run the tokenizer stream.
 *   S_TOKENIZE  a voice worker (voice_busy) finishes the tokenizer and builds the prompt:
 *               it owns hist/prompt/chat and may truncate the cache.
 *   S_PREFILL,
 *   S_GEN       the LM thread owns cache, sampler, gen; it appends audio codes to aq (under
 *               the lock); a voice worker (voice_busy) owns t2w and consumes aq.
 *   S_FINISH    the LM is done with the turn; a voice worker drains aq, ends t2w, truncates
 *               history after a cancel, emits TURN_DONE and returns the session to S_IDLE.
 * A session is freed by engine_close only when it is idle and neither busy flag is set.
 *
 * Deadline (voice ordering): before the first PCM of an answer, the commit time (first audio
 * is the critical path, oldest first); afterwards the wall time at which the listener will
 * have played everything sent so far. Tokenizer work of an idle session gets "now".
 */
#include "engine/engine.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lm/chat.h"
#include "runtime/clock.h"

enum sess_state { S_IDLE, S_TOKENIZE, S_PREFILL, S_GEN, S_FINISH };

#define AQ_TEXT (-1)

struct engine_session {
    struct engine *eng;
    struct engine_session_options opt;
    struct engine_session *next; /* eng->sessions (eng->mu) */
    pthread_cond_t ev_cv;        /* with eng->mu: an event arrived or the state changed */

    /* ---- guarded by eng->mu ---- */
    struct engine_event *ev_head, *ev_tail;
    enum sess_state state;
    int voice_busy, lm_busy, closing;
    int cancel_req;
    int64_t cancel_played;
    int64_t n_steps, cancel_step; /* LM passes of this turn; n_steps at the first cancel, -1 */
    float *in_pcm;                /* [cap_in] audio pushed, not yet given to the tokenizer */
    int64_t n_in, cap_in, n_in_turn;
    struct bpe_text in_text; /* text pushed for this turn */
    int turn_audio, turn_text;
    int32_t *aq; /* [max_new] speech codes from the LM for the voice worker (AQ_TEXT: a text id,
                  * in the reference decoder mode) */
    int64_t aq_in, aq_out;
    enum engine_done_reason reason;
    int by_user;
    int turn;
    double t_commit, t_first_pcm;
    int64_t n_pcm_out;
    struct engine_timings tm;

    /* ---- owned by the stage (see DESIGN) ---- */
    struct stok_stream stok; /* allocated at open, reset after each turn */
    int have_stok;
    struct lm_cache cache;
    struct sampler smp;
    struct t2w t2w;
    int have_t2w;
    struct chat chat;     /* retokenize mode: the demo's strings */
    struct chat sentinel; /* KV mode: prev_input "<|system|>" so no system prompt */
    struct bpe_stream bs;
    struct bpe_text dtext; /* decode scratch */
    struct bpe_ids prompt; /* ids the LM prefills this turn */
    int64_t n_prefilled;   /* of them, in the cache (the prefill goes one block per step) */
    struct bpe_text ptext; /* this turn's prompt string */
    struct bpe_ids hist;   /* KV mode: every id of the conversation; cache = prefix */
    int64_t header_len;    /* [gMASK]<sop><|system|>... before the first <|user|> */
    int64_t *turn_start;   /* [cap_turns] hist offset of each turn's <|user|> */
    int n_turns, cap_turns;
    int32_t *gen; /* [max_new] this turn's generated ids */
    int64_t n_gen;
    int32_t next_id; /* the id the next decode step feeds */
    int64_t kv_bytes;
    int max_new_cap; /* answer buffers were sized for this many ids (the opening max_new) */
    /* the last finished answer, for engine_heard: where its ids start in hist (KV mode), how
     * many were kept; valid from its TURN_DONE until the next commit */
    int64_t last_at, last_kept;
    int last_open;
    double lm_s, voice_s, stok_s;
    double lm_s_first_block; /* lm_s when the first block of audio tokens was complete */
};

struct engine {
    struct engine_models m;
    struct engine_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    int stop;
    struct engine_session *sessions; /* eng->mu */
    int n_sessions;                  /* eng->mu */
    int64_t kv_bytes;                /* eng->mu */
    int64_t steps, rows;             /* eng->mu */
    int max_batch_seen;              /* eng->mu */
    double pass_start;               /* eng->mu: when the LM pass in flight began; 0: none */
    pthread_t lm_thread;
    pthread_t *workers;
    int n_started;
    /* voice_threads > 1: each worker's own pool [n_workers] (a session's tokenizer stream and
     * decoder take the pool of the worker that runs them); NULL: one thread each */
    struct pool **voice_pools;
    int worker_seq; /* eng->mu: hands each worker its index */
    /* LM thread only */
    struct lm_runner runner;
    float *logits;                 /* [max_batch][V] */
    struct engine_session **batch; /* [max_batch] */
    struct lm_cache **caches;      /* [max_batch] */
    int32_t *ids;                  /* [max_batch] */
    int64_t *ones;                 /* [max_batch] */
    int32_t *picked;               /* [max_batch] */
    int sample_rate;
    int32_t mask_from;
};

const char *engine_status_name(enum engine_status s)
{
    switch (s) {
    case ENGINE_OK: return "ok";
    case ENGINE_ERR_SESSIONS: return "too many sessions";
    case ENGINE_ERR_MEMORY: return "out of KV-cache memory";
    case ENGINE_ERR_STATE: return "not allowed in this state";
    case ENGINE_ERR_INVALID: return "invalid argument";
    case ENGINE_ERR_INPUT_FULL: return "user turn too long";
    case ENGINE_ERR_MODEL: return "model error";
    case ENGINE_ERR_CONTEXT: return "context full";
    case ENGINE_ERR_CLOSED: return "engine closed";
    }
    return "?";
}

const char *engine_done_name(enum engine_done_reason r)
{
    static const char *names[] = { "eot", "length", "context", "cancelled", "error" };
    return (unsigned)r < 5 ? names[r] : "?";
}

void engine_event_clear(struct engine_event *ev)
{
    free(ev->text);
    free(ev->pcm);
    free(ev->ids);
    memset(ev, 0, sizeof *ev);
}

void engine_config_default(struct engine_config *c)
{
    c->n_workers = 1;
    c->max_sessions = 16;
    c->max_kv_bytes = 0;
    c->max_batch = 16;
    c->prefill_rows = 256;
    c->voice_threads = 1;
}

void engine_session_options_default(struct engine_session_options *o)
{
    memset(o, 0, sizeof *o);
    o->in_rate = 16000;
    sampler_defaults(&o->sampling);
    o->n_ctx = 0;
    o->kv_type = DTYPE_F32;
    o->max_user_seconds = 60;
    o->max_user_text = 1 << 16;
    o->history = ENGINE_HISTORY_KV;
    o->ctx_policy = ENGINE_CTX_END;
    t2w_config_default(&o->voice);
    o->system_prompt = CHAT_SYSTEM_AUTO;
}

/* ---- models --------------------------------------------------------------------------- */

int engine_models_load(struct engine_model_files *f, const char *lm_path, const char *stok_path,
                       const char *dec_path, struct backend *be, struct err *e)
{
    memset(f, 0, sizeof *f);
    if (lm_load(&f->lm, lm_path, be, NULL, e) != 0)
        return -1;
    if (bpe_load(&f->bpe, &f->lm.file, e) != 0) {
        lm_free(&f->lm);
        return -1;
    }
    f->m.lm = &f->lm;
    f->m.bpe = &f->bpe;
    if (stok_path) {
        if (stok_load(&f->stok, stok_path, e) != 0)
            goto fail;
        f->have_stok = 1;
        f->m.stok = &f->stok;
    }
    if (dec_path) {
        if (gguf_open(&f->dec_file, dec_path, e) != 0)
            goto fail;
        if (flow_load(&f->flow, &f->dec_file, e) != 0) {
            gguf_close(&f->dec_file);
            goto fail;
        }
        if (hift_load(&f->hift, &f->dec_file, e) != 0) {
            flow_free(&f->flow);
            gguf_close(&f->dec_file);
            goto fail;
        }
        f->have_dec = 1;
        f->m.flow = &f->flow;
        f->m.hift = &f->hift;
    }
    return 0;
fail:
    engine_models_free(f);
    return -1;
}

void engine_models_free(struct engine_model_files *f)
{
    if (f->have_dec) {
        flow_free(&f->flow);
        hift_free(&f->hift);
        gguf_close(&f->dec_file);
    }
    if (f->have_stok)
        stok_free(&f->stok);
    if (f->m.lm) {
        bpe_free(&f->bpe);
        lm_free(&f->lm);
    }
    memset(f, 0, sizeof *f);
}

/* ---- events (eng->mu held) ------------------------------------------------------------ */

static struct engine_event *ev_new(struct engine_session *s, enum engine_event_type type)
{
    struct engine_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL; /* the event is lost; nothing else to do without memory */
    ev->type = type;
    ev->turn = s->turn;
    return ev;
}

static void ev_push(struct engine_session *s, struct engine_event *ev)
{
    if (!ev)
        return;
    if (s->ev_tail)
        s->ev_tail->next = ev;
    else
        s->ev_head = ev;
    s->ev_tail = ev;
    pthread_cond_broadcast(&s->ev_cv);
}

static void ev_text(struct engine_session *s, const char *text, size_t n)
{
    if (n == 0)
        return;
    struct engine_event *ev = ev_new(s, ENGINE_EV_TRANSCRIPT);
    if (ev && (ev->text = malloc(n + 1))) {
        memcpy(ev->text, text, n);
        ev->text[n] = 0;
        ev->n_text = (int64_t)n;
    }
    ev_push(s, ev);
}

static void ev_error(struct engine_session *s, enum engine_status st, const char *msg)
{
    struct engine_event *ev = ev_new(s, ENGINE_EV_ERROR);
    if (ev) {
        ev->status = st;
        ev->text = strdup(msg);
        ev->n_text = ev->text ? (int64_t)strlen(ev->text) : 0;
    }
    ev_push(s, ev);
}

static double since_commit(const struct engine_session *s)
{
    return clock_seconds() - s->t_commit;
}

/* ---- small growable arrays ------------------------------------------------------------- */

static int ids_reserve(struct bpe_ids *b, int64_t n)
{
    if (n <= b->cap)
        return 0;
    int64_t cap = b->cap ? b->cap : 64;
    while (cap < n)
        cap *= 2;
    int32_t *p = realloc(b->v, (size_t)cap * sizeof *p);
    if (!p)
        return -1;
    b->v = p;
    b->cap = cap;
    return 0;
}

static int ids_append(struct bpe_ids *b, const int32_t *v, int64_t n)
{
    if (n <= 0)
        return 0;
    if (ids_reserve(b, b->n + n) != 0)
        return -1;
    memcpy(b->v + b->n, v, (size_t)n * sizeof *v);
    b->n += n;
    return 0;
}

/* ---- sessions -------------------------------------------------------------------------- */

static int64_t kv_bytes_of(const struct lm_model *lm, int64_t n_ctx, enum dtype t)
{
    const struct lm_hparams *hp = &lm->hp;
    return 2 * (int64_t)hp->n_layer * n_ctx * hp->n_kv_head * hp->head_dim *
           (t == DTYPE_F32 ? 4 : 2);
}

static void session_free_parts(struct engine_session *s)
{
    lm_cache_free(&s->cache);
    sampler_free(&s->smp);
    if (s->have_t2w)
        t2w_free(&s->t2w);
    if (s->have_stok)
        stok_stream_free(&s->stok);
    chat_free(&s->chat);
    chat_free(&s->sentinel);
    bpe_text_free(&s->dtext);
    bpe_text_free(&s->ptext);
    bpe_text_free(&s->in_text);
    bpe_ids_free(&s->prompt);
    bpe_ids_free(&s->hist);
    free(s->turn_start);
    free(s->gen);
    free(s->aq);
    free(s->in_pcm);
    while (s->ev_head) {
        struct engine_event *ev = s->ev_head;
        s->ev_head = ev->next;
        engine_event_clear(ev);
        free(ev);
    }
    pthread_cond_destroy(&s->ev_cv);
    free(s);
}

/* Caller thread. */
/* A pool of the voice workers' size, for sizing a session's per-thread scratch at open; NULL
 * when the workers run one thread. */
static struct pool *voice_pool_any(const struct engine *eng)
{
    return eng->voice_pools ? eng->voice_pools[0] : NULL;
}

enum engine_status engine_open(struct engine *eng, const struct engine_session_options *o,
                               struct engine_session **out, struct err *e)
{
    const struct lm_model *lm = eng->m.lm;
    *out = NULL;
    if (o->in_rate < 1000 || o->in_rate > 192000 || o->sampling.max_new < 1 || o->n_ctx < 0 ||
        o->max_user_seconds <= 0 || o->max_user_text < 1 || o->system_prompt < CHAT_SYSTEM_AUTO ||
        o->system_prompt > CHAT_MODE_TEXT) {
        err_set(e, "engine: bad session options (rate %d, max_new %d)", o->in_rate,
                o->sampling.max_new);
        return ENGINE_ERR_INVALID;
    }
    int64_t n_ctx = o->n_ctx ? o->n_ctx : lm->hp.n_ctx;
    if (n_ctx > lm->hp.n_ctx)
        n_ctx = lm->hp.n_ctx;
    int64_t kvb = kv_bytes_of(lm, n_ctx, o->kv_type);

    /* reserve the slot first, so that concurrent opens cannot both pass the limits */
    pthread_mutex_lock(&eng->mu);
    if (eng->stop) {
        pthread_mutex_unlock(&eng->mu);
        err_set(e, "engine: closed");
        return ENGINE_ERR_CLOSED;
    }
    if (eng->n_sessions >= eng->cfg.max_sessions) {
        pthread_mutex_unlock(&eng->mu);
        err_set(e, "engine: %d sessions open (the limit)", eng->cfg.max_sessions);
        return ENGINE_ERR_SESSIONS;
    }
    if (eng->cfg.max_kv_bytes > 0 && eng->kv_bytes + kvb > eng->cfg.max_kv_bytes) {
        pthread_mutex_unlock(&eng->mu);
        err_set(e, "engine: KV cache of %lld bytes does not fit (%lld of %lld in use)",
                (long long)kvb, (long long)eng->kv_bytes, (long long)eng->cfg.max_kv_bytes);
        return ENGINE_ERR_MEMORY;
    }
    eng->n_sessions++;
    eng->kv_bytes += kvb;
    pthread_mutex_unlock(&eng->mu);

    struct engine_session *s = calloc(1, sizeof *s);
    if (!s)
        goto nomem;
    s->eng = eng;
    s->opt = *o;
    s->opt.n_ctx = n_ctx;
    s->kv_bytes = kvb;
    pthread_cond_init(&s->ev_cv, NULL);
    chat_init(&s->chat);
    chat_init(&s->sentinel);
    s->chat.system = o->system_prompt;
    int max_new = o->sampling.max_new;
    s->max_new_cap = max_new;
    struct sampler_params sp = o->sampling;
    sp.mask_from = eng->mask_from;
    s->gen = malloc((size_t)(max_new + 1) * sizeof *s->gen);
    s->aq = malloc((size_t)(max_new + 1) * sizeof *s->aq);
    s->cap_turns = 16;
    s->turn_start = malloc((size_t)s->cap_turns * sizeof *s->turn_start);
    if (!s->gen || !s->aq || !s->turn_start ||
        chat_commit(&s->sentinel, "<|system|>", "", e) != 0 ||
        lm_cache_init(&s->cache, lm, n_ctx, o->kv_type, e) != 0 ||
        sampler_init(&s->smp, &sp, lm->hp.n_vocab, e) != 0)
        goto fail;
    if (eng->m.stok) {
        if (stok_stream_init(&s->stok, eng->m.stok, voice_pool_any(eng), o->in_rate,
                             o->max_user_seconds + 1, 1, e) != 0)
            goto fail;
        s->have_stok = 1;
    }
    if (eng->m.flow) {
        struct t2w_config vc = o->voice;
        vc.max_tokens = max_new;
        if (t2w_init(&s->t2w, eng->m.flow, eng->m.hift, &vc, voice_pool_any(eng), e) != 0)
            goto fail;
        s->have_t2w = 1;
    }
    pthread_mutex_lock(&eng->mu);
    s->next = eng->sessions;
    eng->sessions = s;
    pthread_mutex_unlock(&eng->mu);
    *out = s;
    return ENGINE_OK;
nomem:
    err_set(e, "engine: out of memory opening a session");
fail:
    if (s)
        session_free_parts(s);
    pthread_mutex_lock(&eng->mu);
    eng->n_sessions--;
    eng->kv_bytes -= kvb;
    pthread_mutex_unlock(&eng->mu);
    return ENGINE_ERR_MEMORY;
}

/* Caller thread. */
void engine_close(struct engine_session *s)
{
    struct engine *eng = s->eng;
    pthread_mutex_lock(&eng->mu);
    s->closing = 1;
    if (s->state != S_IDLE) {
        s->cancel_req = 1;
        s->cancel_played = 0;
    }
    pthread_cond_broadcast(&eng->work_cv);
    while (s->state != S_IDLE || s->voice_busy || s->lm_busy)
        pthread_cond_wait(&s->ev_cv, &eng->mu);
    for (struct engine_session **p = &eng->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    eng->n_sessions--;
    eng->kv_bytes -= s->kv_bytes;
    pthread_mutex_unlock(&eng->mu);
    session_free_parts(s);
}

/* Caller thread. */
enum engine_status engine_push_audio(struct engine_session *s, const float *pcm, int64_t n,
                                     struct err *e)
{
    struct engine *eng = s->eng;
    if (!eng->m.stok) {
        err_set(e, "engine: no speech tokenizer loaded");
        return ENGINE_ERR_INVALID;
    }
    if (n < 0 || (n > 0 && !pcm)) {
        err_set(e, "engine: bad audio buffer");
        return ENGINE_ERR_INVALID;
    }
    enum engine_status st = ENGINE_OK;
    pthread_mutex_lock(&eng->mu);
    int64_t max_in = (int64_t)(s->opt.max_user_seconds * s->opt.in_rate);
    if (s->state != S_IDLE || s->turn_text) {
        st = ENGINE_ERR_STATE;
        err_set(e, "engine: audio pushed while an answer runs or after text in this turn");
    } else if (s->n_in_turn + n > max_in) {
        st = ENGINE_ERR_INPUT_FULL;
        err_set(e, "engine: user audio longer than %.1f s", s->opt.max_user_seconds);
    } else {
        if (s->n_in + n > s->cap_in) {
            int64_t cap = s->cap_in ? s->cap_in : 16384;
            while (cap < s->n_in + n)
                cap *= 2;
            float *p = realloc(s->in_pcm, (size_t)cap * sizeof *p);
            if (!p) {
                pthread_mutex_unlock(&eng->mu);
                err_set(e, "engine: out of memory");
                return ENGINE_ERR_MEMORY;
            }
            s->in_pcm = p;
            s->cap_in = cap;
        }
        memcpy(s->in_pcm + s->n_in, pcm, (size_t)n * sizeof *pcm);
        s->n_in += n;
        s->n_in_turn += n;
        s->turn_audio = 1;
        pthread_cond_broadcast(&eng->work_cv);
    }
    pthread_mutex_unlock(&eng->mu);
    return st;
}

/* Caller thread. */
enum engine_status engine_push_text(struct engine_session *s, const char *text, struct err *e)
{
    struct engine *eng = s->eng;
    size_t n = strlen(text);
    enum engine_status st = ENGINE_OK;
    pthread_mutex_lock(&eng->mu);
    if (s->state != S_IDLE || s->turn_audio) {
        st = ENGINE_ERR_STATE;
        err_set(e, "engine: text pushed while an answer runs or after audio in this turn");
    } else if ((int64_t)(s->in_text.n + n) > s->opt.max_user_text) {
        st = ENGINE_ERR_INPUT_FULL;
        err_set(e, "engine: user text longer than %lld bytes", (long long)s->opt.max_user_text);
    } else {
        struct bpe_text *t = &s->in_text;
        if (t->n + n + 1 > t->cap) {
            size_t cap = t->cap ? t->cap : 256;
            while (cap < t->n + n + 1)
                cap *= 2;
            char *p = realloc(t->v, cap);
            if (!p) {
                pthread_mutex_unlock(&eng->mu);
                err_set(e, "engine: out of memory");
                return ENGINE_ERR_MEMORY;
            }
            t->v = p;
            t->cap = cap;
        }
        memcpy(t->v + t->n, text, n);
        t->n += n;
        t->v[t->n] = 0;
        s->turn_text = 1;
    }
    pthread_mutex_unlock(&eng->mu);
    return st;
}

/* Caller thread. */
enum engine_status engine_commit(struct engine_session *s, struct err *e)
{
    struct engine *eng = s->eng;
    enum engine_status st = ENGINE_OK;
    pthread_mutex_lock(&eng->mu);
    if (s->state != S_IDLE) {
        st = ENGINE_ERR_STATE;
        err_set(e, "engine: commit while an answer runs");
    } else if (!s->turn_audio && !s->turn_text) {
        st = ENGINE_ERR_INVALID;
        err_set(e, "engine: commit of an empty turn");
    } else {
        s->state = S_TOKENIZE;
        s->last_open = 0;
        s->t_commit = clock_seconds();
        s->cancel_req = 0;
        s->n_steps = 0;
        s->cancel_step = -1;
        memset(&s->tm, 0, sizeof s->tm);
        s->tm.tokenize = s->tm.prefill_start = s->tm.prefill_end = s->tm.first_token = -1;
        s->tm.first_audio_token = s->tm.first_block = s->tm.first_pcm = s->tm.done = -1;
        s->n_gen = 0;
        s->aq_in = s->aq_out = 0;
        s->n_pcm_out = 0;
        s->lm_s = s->voice_s = s->stok_s = s->lm_s_first_block = 0;
        s->tm.compute_first_pcm = -1;
        pthread_cond_broadcast(&eng->work_cv);
    }
    pthread_mutex_unlock(&eng->mu);
    return st;
}

/* Caller thread. */
enum engine_status engine_cancel(struct engine_session *s, int64_t played, struct err *e)
{
    struct engine *eng = s->eng;
    enum engine_status st = ENGINE_OK;
    pthread_mutex_lock(&eng->mu);
    if (s->state == S_IDLE) {
        st = ENGINE_ERR_STATE;
        err_set(e, "engine: no answer to cancel");
    } else {
        s->cancel_req = 1;
        s->cancel_played = played < 0 ? 0 : played;
        if (s->cancel_step < 0)
            s->cancel_step = s->n_steps;
        pthread_cond_broadcast(&eng->work_cv);
    }
    pthread_mutex_unlock(&eng->mu);
    return st;
}

static int64_t heard_tokens(const struct engine *eng, int64_t played, int64_t n_audio);

/* Of an answer's n ids, how many the conversation keeps when the listener heard `played`
 * samples: up to and including the last audio token whose audio had begun (text ids in
 * between too); none when no audio was heard. *heard = those audio tokens. */
static int64_t ids_heard(const struct engine *eng, const int32_t *gen, int64_t n, int64_t played,
                         int64_t *heard)
{
    const int32_t audio_offset = eng->m.lm->hp.audio_offset;
    int64_t n_audio = 0;
    for (int64_t i = 0; i < n; i++)
        n_audio += gen[i] >= audio_offset;
    *heard = heard_tokens(eng, played, n_audio);
    int64_t a = 0, i = 0;
    for (; i < n && a < *heard; i++)
        a += gen[i] >= audio_offset;
    return *heard > 0 ? i : 0;
}

enum engine_status engine_set_sampling(struct engine_session *s, const struct sampler_params *p,
                                       struct err *e)
{
    struct engine *eng = s->eng;
    enum engine_status st = ENGINE_OK;
    pthread_mutex_lock(&eng->mu);
    if (s->state != S_IDLE) {
        st = ENGINE_ERR_STATE;
        err_set(e, "engine: sampling changes between turns, not during an answer");
    } else if (p->max_new < 1 || p->max_new > s->max_new_cap || p->temperature < 0) {
        st = ENGINE_ERR_INVALID;
        err_set(e, "engine: bad sampling (max_new %d of at most %d, temperature %g)", p->max_new,
                s->max_new_cap, (double)p->temperature);
    } else if (sampler_check(p, e) != 0) {
        st = ENGINE_ERR_INVALID;
    } else {
        uint64_t seed = s->smp.p.seed;
        int32_t mask_from = (int32_t)s->smp.p.mask_from;
        s->opt.sampling = *p;
        s->smp.p = *p;
        s->smp.p.mask_from = mask_from;
        if (p->seed != seed)
            sampler_reset(&s->smp, p->seed);
    }
    pthread_mutex_unlock(&eng->mu);
    return st;
}

/* eng->mu held, the last answer finished (its ids at last_at in hist, last_kept of them
 * kept): keeps only what a listener who heard `played` samples heard. Returns the answer's
 * audio tokens kept. */
static int64_t trim_answer(struct engine *eng, struct engine_session *s, int64_t played)
{
    int64_t heard = 0;
    int64_t kept = ids_heard(eng, s->gen, s->last_kept, played < 0 ? 0 : played, &heard);
    if (kept >= s->last_kept)
        return heard;
    s->last_kept = kept;
    if (s->opt.history == ENGINE_HISTORY_RETOKENIZE) {
        struct err e;
        s->dtext.n = 0;
        if (bpe_decode(eng->m.bpe, &s->dtext, s->gen, kept, &e) == 0)
            chat_commit(&s->chat, s->ptext.v, s->dtext.v ? s->dtext.v : "", &e);
    } else {
        s->hist.n = s->last_at + kept;
        if (s->cache.n_pos > s->hist.n)
            lm_cache_truncate(&s->cache, s->hist.n);
    }
    return heard;
}

enum engine_status engine_heard(struct engine_session *s, int64_t played, int64_t *heard,
                                struct err *e)
{
    struct engine *eng = s->eng;
    enum engine_status st = ENGINE_OK;
    pthread_mutex_lock(&eng->mu);
    if (s->state != S_IDLE || !s->last_open) {
        st = ENGINE_ERR_STATE;
        err_set(e, "engine: no finished answer to trim (an answer runs, or the next turn began)");
    } else {
        int64_t h = trim_answer(eng, s, played);
        if (heard)
            *heard = h;
    }
    pthread_mutex_unlock(&eng->mu);
    return st;
}

/* Caller thread. */
int engine_next_event(struct engine_session *s, struct engine_event *ev, double timeout_s)
{
    struct engine *eng = s->eng;
    struct timespec until;
    if (timeout_s > 0) {
        clock_gettime(CLOCK_REALTIME, &until);
        double t = (double)until.tv_sec + 1e-9 * (double)until.tv_nsec + timeout_s;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
    }
    pthread_mutex_lock(&eng->mu);
    while (!s->ev_head && timeout_s != 0) {
        if (timeout_s < 0)
            pthread_cond_wait(&s->ev_cv, &eng->mu);
        else if (pthread_cond_timedwait(&s->ev_cv, &eng->mu, &until) != 0)
            break;
    }
    struct engine_event *h = s->ev_head;
    if (h) {
        s->ev_head = h->next;
        if (!s->ev_head)
            s->ev_tail = NULL;
    }
    pthread_mutex_unlock(&eng->mu);
    if (!h)
        return 0;
    *ev = *h;
    ev->next = NULL;
    free(h);
    return 1;
}

double engine_input_backlog(struct engine_session *s)
{
    struct engine *eng = s->eng;
    pthread_mutex_lock(&eng->mu);
    double b = (double)s->n_in / s->opt.in_rate;
    pthread_mutex_unlock(&eng->mu);
    return b;
}

int64_t engine_session_positions(struct engine_session *s)
{
    pthread_mutex_lock(&s->eng->mu);
    int64_t n = s->state == S_IDLE ? s->cache.n_pos : -1;
    pthread_mutex_unlock(&s->eng->mu);
    return n;
}

void engine_get_stats(struct engine *eng, struct engine_stats *st)
{
    pthread_mutex_lock(&eng->mu);
    st->n_sessions = eng->n_sessions;
    st->kv_bytes = eng->kv_bytes;
    st->decode_steps = eng->steps;
    st->decode_rows = eng->rows;
    st->max_batch_seen = eng->max_batch_seen;
    st->lm_pass_seconds = eng->pass_start > 0 ? clock_seconds() - eng->pass_start : 0;
    pthread_mutex_unlock(&eng->mu);
}

/* ---- the LM thread ---------------------------------------------------------------------- */

/* LM thread, eng->mu held: the answer ends; the voice worker takes the session over. */
static void lm_finish(struct engine *eng, struct engine_session *s, enum engine_done_reason r,
                      int by_user)
{
    s->reason = r;
    s->by_user = by_user;
    s->state = S_FINISH;
    s->dtext.n = 0;
    if (bpe_stream_flush(&s->bs, &s->dtext, NULL) == 0)
        ev_text(s, s->dtext.v, s->dtext.n);
    memset(&s->bs, 0, sizeof s->bs);
    pthread_cond_broadcast(&eng->work_cv);
    pthread_cond_broadcast(&s->ev_cv);
}

/* LM thread, eng->mu held: one sampled id (spec §6.2 classification). */
static void lm_take(struct engine *eng, struct engine_session *s, int32_t id)
{
    const struct lm_hparams *hp = &eng->m.lm->hp;
    if (s->tm.first_token < 0)
        s->tm.first_token = since_commit(s);
    s->gen[s->n_gen++] = id;
    if (s->cancel_req) {
        lm_finish(eng, s, ENGINE_DONE_CANCELLED, 0);
        return;
    }
    if (lm_is_stop(hp, id)) {
        lm_finish(eng, s, ENGINE_DONE_EOT, id == hp->tok_user);
        return;
    }
    if (id >= hp->audio_offset) {
        s->tm.n_audio++;
        if (s->tm.first_audio_token < 0)
            s->tm.first_audio_token = since_commit(s);
        if (s->tm.first_block < 0 && s->tm.n_audio >= s->opt.voice.schedule[0]) {
            s->tm.first_block = since_commit(s);
            s->lm_s_first_block = s->lm_s;
        }
        s->aq[s->aq_in++] = id - hp->audio_offset;
        if (s->have_t2w)
            pthread_cond_broadcast(&eng->work_cv);
    } else {
        s->tm.n_text++;
        s->dtext.n = 0;
        if (bpe_stream_push(eng->m.bpe, &s->bs, &s->dtext, id, NULL) == 0)
            ev_text(s, s->dtext.v, s->dtext.n);
        if (s->have_t2w && s->opt.voice.mode == T2W_MODE_REFERENCE) {
            /* the official client also dispatches a block on a text id: a marker for t2w */
            s->aq[s->aq_in++] = AQ_TEXT;
            pthread_cond_broadcast(&eng->work_cv);
        }
    }
    if (s->n_gen >= s->opt.sampling.max_new)
        lm_finish(eng, s, ENGINE_DONE_LENGTH, 0);
    else if (s->cache.n_pos >= s->cache.n_ctx)
        lm_finish(eng, s, ENGINE_DONE_CONTEXT, 0);
    else {
        s->next_id = id;
        s->state = S_GEN;
    }
}

/* LM thread, eng->mu held: a model failure ends the turn with an error. */
static void lm_fail(struct engine *eng, struct engine_session *s, const struct err *e)
{
    ev_error(s, ENGINE_ERR_MODEL, e->msg);
    lm_finish(eng, s, ENGINE_DONE_ERROR, 0);
}

static void *lm_main(void *arg)
{
    struct engine *eng = arg;
    int64_t V = eng->m.lm->hp.n_vocab;
    struct err e;
    pthread_mutex_lock(&eng->mu);
    while (!eng->stop) {
        struct engine_session *pre = NULL;
        int nb = 0;
        for (struct engine_session *s = eng->sessions; s; s = s->next) {
            if ((s->state == S_PREFILL || s->state == S_GEN) && s->cancel_req) {
                lm_finish(eng, s, ENGINE_DONE_CANCELLED, 0);
                continue;
            }
            if (s->state == S_PREFILL && (!pre || s->t_commit < pre->t_commit))
                pre = s;
            else if (s->state == S_GEN && nb < eng->cfg.max_batch)
                eng->batch[nb++] = s;
        }
        if (!pre && nb == 0) {
            pthread_cond_wait(&eng->work_cv, &eng->mu);
            continue;
        }
        if (pre) {
            pre->lm_busy = 1;
            if (pre->n_prefilled == 0)
                pre->tm.prefill_start = since_commit(pre);
        }
        for (int i = 0; i < nb; i++) {
            eng->batch[i]->lm_busy = 1;
            eng->caches[i] = &eng->batch[i]->cache;
            eng->ids[i] = eng->batch[i]->next_id;
        }
        if (nb > eng->max_batch_seen)
            eng->max_batch_seen = nb;
        eng->pass_start = clock_seconds();
        pthread_mutex_unlock(&eng->mu);

        /* one block of the oldest prompt (first, so that when it is the last block its first
         * token joins the next step's batch) */
        int pre_rc = 0, pre_last = 0;
        int32_t pre_id = 0;
        if (pre) {
            double t0 = clock_seconds();
            int64_t k = pre->prompt.n - pre->n_prefilled;
            if (k > eng->runner.max_rows)
                k = eng->runner.max_rows;
            pre_last = pre->n_prefilled + k == pre->prompt.n;
            struct lm_cache *c = &pre->cache;
            pre_rc = lm_forward(&eng->runner, &c, pre->prompt.v + pre->n_prefilled, &k, 1,
                                pre_last ? eng->logits : NULL, &e);
            pre->n_prefilled += k;
            if (pre_rc == 0 && pre_last) {
                pre_id = sampler_sample(&pre->smp, eng->logits);
                sampler_accept(&pre->smp, pre_id);
            }
            pre->lm_s += clock_seconds() - t0;
        }
        int dec_rc = 0;
        double t1 = clock_seconds();
        if (nb > 0) {
            dec_rc =
                lm_forward(&eng->runner, eng->caches, eng->ids, eng->ones, nb, eng->logits, &e);
            for (int i = 0; dec_rc == 0 && i < nb; i++) {
                eng->picked[i] = sampler_sample(&eng->batch[i]->smp, eng->logits + (int64_t)i * V);
                sampler_accept(&eng->batch[i]->smp, eng->picked[i]);
            }
        }
        double dt = nb > 0 ? (clock_seconds() - t1) / nb : 0;

        pthread_mutex_lock(&eng->mu);
        eng->pass_start = 0;
        if (pre) {
            pre->lm_busy = 0;
            pre->n_steps++;
            if (pre_rc != 0) {
                lm_fail(eng, pre, &e);
            } else if (pre_last) {
                pre->tm.prefill_end = since_commit(pre);
                lm_take(eng, pre, pre_id);
            }
            pthread_cond_broadcast(&pre->ev_cv);
        }
        if (nb > 0) {
            eng->steps++;
            eng->rows += nb;
        }
        for (int i = 0; i < nb; i++) {
            struct engine_session *s = eng->batch[i];
            s->lm_busy = 0;
            s->n_steps++;
            s->lm_s += dt;
            if (dec_rc != 0)
                lm_fail(eng, s, &e);
            else
                lm_take(eng, s, eng->picked[i]);
            pthread_cond_broadcast(&s->ev_cv);
        }
    }
    pthread_mutex_unlock(&eng->mu);
    return NULL;
}

/* ---- voice workers ---------------------------------------------------------------------- */

enum job { JOB_NONE, JOB_STOK, JOB_PROMPT, JOB_VOICE, JOB_FINISH };

/* eng->mu held: what a worker could do for s now, and how urgent it is. */
static enum job job_of(const struct engine *eng, const struct engine_session *s, double now,
                       double *deadline)
{
    if (s->voice_busy)
        return JOB_NONE;
    switch (s->state) {
    case S_IDLE: *deadline = now; return s->n_in > 0 ? JOB_STOK : JOB_NONE;
    case S_TOKENIZE: *deadline = s->t_commit; return JOB_PROMPT;
    case S_PREFILL:
    case S_GEN:
    case S_FINISH:
        *deadline = s->n_pcm_out == 0 ? s->t_commit
                                      : s->t_first_pcm + (double)s->n_pcm_out / eng->sample_rate;
        if (s->have_t2w && s->aq_out < s->aq_in && !s->cancel_req)
            return JOB_VOICE;
        if (s->state == S_FINISH)
            return JOB_FINISH;
        return JOB_NONE;
    }
    return JOB_NONE;
}

/* Worker, voice_busy held: tokenizer stream over pcm. */
static int run_stok(struct engine *eng, struct engine_session *s, const float *pcm, int64_t n,
                    struct err *e)
{
    (void)eng;
    return n > 0 ? stok_stream_push(&s->stok, pcm, n, e) : 0;
}

/* Worker, S_TOKENIZE owned: the turn's prompt ids into s->prompt, hist updated, the cache
 * truncated as the history mode and the context policy require. Returns an engine_status. */
static enum engine_status build_prompt(struct engine *eng, struct engine_session *s, int audio,
                                       const char *text, struct err *e)
{
    const struct lm_hparams *hp = &eng->m.lm->hp;
    const struct bpe *b = eng->m.bpe;
    const int32_t *codes = audio ? s->stok.tokens : NULL;
    int64_t n_codes = audio ? s->stok.n_tokens : 0;
    enum chat_mode mode = audio ? CHAT_MODE_AUDIO : CHAT_MODE_TEXT;
    int64_t n_ctx = s->cache.n_ctx;
    int64_t reserve = s->opt.sampling.max_new < n_ctx / 4 ? s->opt.sampling.max_new : n_ctx / 4;
    if (reserve < 1)
        reserve = 1;
    s->prompt.n = 0;
    if (s->opt.history == ENGINE_HISTORY_RETOKENIZE) {
        if (chat_prompt(&s->chat, &s->ptext, mode, text, codes, n_codes, hp->n_audio, e) != 0 ||
            bpe_encode(b, &s->prompt, s->ptext.v, s->ptext.n, 1, e) != 0)
            return ENGINE_ERR_INVALID;
        if (s->prompt.n + reserve > n_ctx) {
            err_set(e, "engine: prompt of %lld ids does not fit the context of %lld",
                    (long long)s->prompt.n, (long long)n_ctx);
            return ENGINE_ERR_CONTEXT;
        }
        lm_cache_truncate(&s->cache, 0);
        return ENGINE_OK;
    }
    /* KV mode: hist holds the conversation; the cache holds a prefix of it */
    int64_t suffix_at = s->hist.n, old_n = s->hist.n;
    if (s->hist.n == 0) {
        struct chat fresh;
        chat_init(&fresh);
        fresh.system = s->opt.system_prompt;
        int rc = chat_prompt(&fresh, &s->ptext, mode, text, codes, n_codes, hp->n_audio, e);
        chat_free(&fresh);
        if (rc != 0 || bpe_encode(b, &s->hist, s->ptext.v, s->ptext.n, 1, e) != 0)
            return ENGINE_ERR_INVALID;
        s->header_len = 0;
        while (s->header_len < s->hist.n && s->hist.v[s->header_len] != hp->tok_user)
            s->header_len++;
        suffix_at = s->header_len;
    } else {
        /* "<|system|>" + the turn: everything after the sentinel is this turn's suffix, which
         * encodes exactly as in the whole string because added tokens split segments (E14) */
        if (chat_prompt(&s->sentinel, &s->ptext, mode, text, codes, n_codes, hp->n_audio, e) != 0 ||
            bpe_encode(b, &s->hist, s->ptext.v + 10, s->ptext.n - 10, 0, e) != 0)
            return ENGINE_ERR_INVALID;
    }
    if (s->n_turns == s->cap_turns) {
        int64_t *p = realloc(s->turn_start, (size_t)(2 * s->cap_turns) * sizeof *p);
        if (!p)
            return err_set(e, "engine: out of memory"), ENGINE_ERR_MEMORY;
        s->turn_start = p;
        s->cap_turns *= 2;
    }
    s->turn_start[s->n_turns++] = suffix_at;
    if (s->hist.n + reserve > n_ctx) {
        int k = 1; /* drop turns [0, k) until it fits (never the new one) */
        while (s->opt.ctx_policy == ENGINE_CTX_DROP_OLDEST && k < s->n_turns &&
               s->header_len + (s->hist.n - s->turn_start[k]) + reserve > n_ctx)
            k++;
        if (s->opt.ctx_policy != ENGINE_CTX_DROP_OLDEST || k >= s->n_turns ||
            s->header_len + (s->hist.n - s->turn_start[k]) + reserve > n_ctx) {
            int64_t need = s->hist.n;
            s->hist.n = old_n; /* the conversation stays as it was */
            s->n_turns--;
            err_set(e, "engine: context full (%lld ids + %lld reserved > %lld)", (long long)need,
                    (long long)reserve, (long long)n_ctx);
            return ENGINE_ERR_CONTEXT;
        }
        int64_t cut = s->turn_start[k] - s->header_len;
        memmove(s->hist.v + s->header_len, s->hist.v + s->turn_start[k],
                (size_t)(s->hist.n - s->turn_start[k]) * sizeof *s->hist.v);
        s->hist.n -= cut;
        for (int i = k; i < s->n_turns; i++)
            s->turn_start[i - k] = s->turn_start[i] - cut;
        s->n_turns -= k;
        if (s->cache.n_pos > s->header_len)
            lm_cache_truncate(&s->cache, s->header_len);
    }
    if (s->cache.n_pos > s->hist.n)
        lm_cache_truncate(&s->cache, s->hist.n);
    if (ids_append(&s->prompt, s->hist.v + s->cache.n_pos, s->hist.n - s->cache.n_pos) != 0)
        return err_set(e, "engine: out of memory"), ENGINE_ERR_MEMORY;
    return ENGINE_OK;
}

/* eng->mu held, at the first AUDIO event of a turn: the model compute on its critical path
 * (the tokenizer after commit, the LM until the first block, the decoder so far). */
static void first_pcm_compute(struct engine_session *s)
{
    double lm = s->tm.first_block >= 0 ? s->lm_s_first_block : s->lm_s;
    s->tm.compute_first_pcm = s->stok_s + lm + s->voice_s;
}

/* Worker: the number of answer audio tokens whose audio starts before sample `played`. */
static int64_t heard_tokens(const struct engine *eng, int64_t played, int64_t n_audio)
{
    if (!eng->m.flow) /* text-only: a played count means nothing; keep nothing heard */
        return 0;
    int hop = eng->m.hift->hp.hop_total;
    int64_t k = 0;
    while (k < n_audio && (int64_t)hop * flow_mel_len(&eng->m.flow->hp, k) < played)
        k++;
    return k;
}

/* Worker, S_FINISH owned (eng->mu held on entry and exit; released for the t2w flush). */
static void finish_turn(struct engine *eng, struct engine_session *s)
{
    const struct lm_hparams *hp = &eng->m.lm->hp;
    struct err e;
    int cancelled = s->cancel_req || s->reason == ENGINE_DONE_CANCELLED;
    if (cancelled)
        s->reason = ENGINE_DONE_CANCELLED;
    int64_t played = s->cancel_played;
    enum engine_done_reason reason = s->reason;
    int by_user = s->by_user;
    s->voice_busy = 1;
    pthread_mutex_unlock(&eng->mu);

    /* the tail: whatever ended the answer, flush the decoder (clean mode) */
    int rc = 0;
    double t0 = clock_seconds();
    if (s->have_t2w && !cancelled && reason != ENGINE_DONE_ERROR && s->n_gen > 0)
        rc = t2w_end(&s->t2w, by_user, &e);
    double tv = clock_seconds() - t0;
    /* the ids kept in history */
    int64_t kept = s->n_gen, heard = -1;
    if (kept > 0 && lm_is_stop(hp, s->gen[kept - 1]))
        kept--;
    if (cancelled)
        kept = ids_heard(eng, s->gen, kept, played, &heard);
    s->last_at = s->hist.n;
    s->last_kept = kept;
    if (s->opt.history == ENGINE_HISTORY_RETOKENIZE) {
        s->dtext.n = 0;
        if (bpe_decode(eng->m.bpe, &s->dtext, s->gen, kept, &e) == 0)
            chat_commit(&s->chat, s->ptext.v, s->dtext.v ? s->dtext.v : "", &e);
    } else {
        ids_append(&s->hist, s->gen, kept);
    }
    /* the cache keeps what it has of the history (the last id may not have been fed) */
    int64_t base = s->cache.n_pos - (s->n_gen > 0 ? s->n_gen - 1 : 0);
    if (base < 0)
        base = 0;
    int64_t keep_pos = base + kept;
    if (s->opt.history == ENGINE_HISTORY_KV && keep_pos > s->hist.n)
        keep_pos = s->hist.n;
    if (keep_pos < s->cache.n_pos)
        lm_cache_truncate(&s->cache, keep_pos);
    /* the tail's PCM leaves t2w before its reset */
    float *tail = NULL;
    int64_t n_tail = rc == 0 && s->have_t2w && !cancelled ? s->t2w.n_out : 0;
    if (n_tail > 0 && (tail = malloc((size_t)n_tail * sizeof *tail)))
        memcpy(tail, s->t2w.out, (size_t)n_tail * sizeof *tail);
    if (s->have_t2w)
        t2w_reset(&s->t2w);
    if (s->have_stok)
        stok_stream_reset(&s->stok); /* the next turn reuses the buffers */

    pthread_mutex_lock(&eng->mu);
    s->voice_busy = 0;
    s->voice_s += tv;
    if (n_tail > 0) {
        struct engine_event *ev = ev_new(s, ENGINE_EV_AUDIO);
        if (ev) {
            ev->pcm = tail;
            ev->n_pcm = tail ? n_tail : 0;
            ev->offset = s->n_pcm_out;
            ev->sample_rate = eng->sample_rate;
        } else {
            free(tail);
        }
        ev_push(s, ev);
        if (s->n_pcm_out == 0) {
            s->t_first_pcm = clock_seconds();
            s->tm.first_pcm = since_commit(s);
            first_pcm_compute(s);
        }
        s->n_pcm_out += n_tail;
    } else if (rc != 0) {
        ev_error(s, ENGINE_ERR_MODEL, e.msg);
    }
    if (!cancelled && s->cancel_req && reason != ENGINE_DONE_ERROR) {
        /* the cancel came while the turn was being finished: the answer is whole, but the
         * listener stopped hearing it, so the conversation keeps what was heard */
        heard = trim_answer(eng, s, s->cancel_played);
        reason = ENGINE_DONE_CANCELLED;
    }
    struct engine_event *ev = ev_new(s, ENGINE_EV_TURN_DONE);
    if (ev) {
        ev->reason = reason;
        ev->heard_audio_tokens = heard;
        s->tm.done = since_commit(s);
        s->tm.n_samples = s->n_pcm_out;
        s->tm.lm_seconds = s->lm_s;
        s->tm.voice_seconds = s->voice_s;
        s->tm.stok_seconds = s->stok_s;
        s->tm.n_lm_steps = s->n_steps;
        s->tm.steps_after_cancel = s->cancel_step >= 0 ? s->n_steps - s->cancel_step : -1;
        ev->t = s->tm;
        if (s->n_gen > 0 && (ev->ids = malloc((size_t)s->n_gen * sizeof *ev->ids))) {
            memcpy(ev->ids, s->gen, (size_t)s->n_gen * sizeof *ev->ids);
            ev->n_ids = s->n_gen;
        }
    }
    ev_push(s, ev);
    s->last_open = reason != ENGINE_DONE_CANCELLED && reason != ENGINE_DONE_ERROR && kept > 0;
    s->turn++;
    s->turn_audio = s->turn_text = 0;
    s->n_in = s->n_in_turn = 0;
    s->in_text.n = 0;
    s->cancel_req = 0;
    s->state = S_IDLE;
    pthread_cond_broadcast(&s->ev_cv);
}

/* Worker, S_TOKENIZE (eng->mu held on entry and exit). */
static void prompt_turn(struct engine *eng, struct engine_session *s)
{
    struct err e;
    int audio = s->turn_audio;
    float *pcm = s->in_pcm;
    int64_t n = s->n_in;
    s->in_pcm = NULL;
    s->n_in = s->cap_in = 0;
    char *text = s->in_text.v ? strdup(s->in_text.v) : strdup("");
    s->voice_busy = 1;
    pthread_mutex_unlock(&eng->mu);

    enum engine_status st = ENGINE_OK;
    double t0 = clock_seconds();
    if (!text) {
        st = ENGINE_ERR_MEMORY;
        err_set(&e, "engine: out of memory");
    } else if (audio &&
               (run_stok(eng, s, pcm, n, &e) != 0 || stok_stream_finish(&s->stok, &e) != 0)) {
        st = ENGINE_ERR_MODEL;
    }
    double t1 = clock_seconds();
    if (st == ENGINE_OK)
        st = build_prompt(eng, s, audio, text, &e);
    free(pcm);
    free(text);

    pthread_mutex_lock(&eng->mu);
    s->voice_busy = 0;
    s->stok_s += t1 - t0;
    s->tm.tokenize = since_commit(s);
    s->tm.n_prompt = s->prompt.n;
    if (audio && st != ENGINE_ERR_MODEL) {
        struct engine_event *ev = ev_new(s, ENGINE_EV_USER_TOKENIZED);
        if (ev) {
            ev->n_tokens = s->stok.n_tokens;
            ev->seconds = (double)s->n_in_turn / s->opt.in_rate;
        }
        ev_push(s, ev);
    }
    if (st != ENGINE_OK) {
        ev_error(s, st, e.msg);
        s->reason = st == ENGINE_ERR_CONTEXT ? ENGINE_DONE_CONTEXT : ENGINE_DONE_ERROR;
        s->state = S_FINISH;
    } else if (s->cancel_req) {
        s->reason = ENGINE_DONE_CANCELLED;
        s->state = S_FINISH;
    } else {
        s->n_prefilled = 0;
        s->state = S_PREFILL;
    }
    pthread_cond_broadcast(&eng->work_cv);
}

/* Worker, eng->mu held on entry and exit: pushes codes to t2w until a chunk of PCM comes
 * out (then yields, so that a session closer to running dry can go next). */
static void voice_step(struct engine *eng, struct engine_session *s)
{
    struct err e;
    int64_t from = s->aq_out, to = s->aq_in;
    s->voice_busy = 1;
    pthread_mutex_unlock(&eng->mu);
    double t0 = clock_seconds();
    int rc = 0;
    int64_t i = from;
    while (i < to && rc == 0) {
        int32_t code = s->aq[i++];
        rc = code == AQ_TEXT ? t2w_push_text(&s->t2w, &e) : t2w_push_audio(&s->t2w, code, &e);
        if (rc == 0 && s->t2w.n_out > 0)
            break;
    }
    double dt = clock_seconds() - t0;
    pthread_mutex_lock(&eng->mu);
    s->voice_busy = 0;
    s->voice_s += dt;
    s->aq_out = i;
    if (rc != 0) {
        ev_error(s, ENGINE_ERR_MODEL, e.msg);
        s->cancel_req = 1; /* stop the answer; history keeps what was heard */
        s->cancel_played = s->n_pcm_out;
    } else if (s->t2w.n_out > 0) {
        struct engine_event *ev = ev_new(s, ENGINE_EV_AUDIO);
        if (ev && (ev->pcm = malloc((size_t)s->t2w.n_out * sizeof *ev->pcm))) {
            memcpy(ev->pcm, s->t2w.out, (size_t)s->t2w.n_out * sizeof *ev->pcm);
            ev->n_pcm = s->t2w.n_out;
            ev->offset = s->n_pcm_out;
            ev->sample_rate = eng->sample_rate;
        }
        ev_push(s, ev);
        if (s->n_pcm_out == 0) {
            s->t_first_pcm = clock_seconds();
            s->tm.first_pcm = since_commit(s);
            first_pcm_compute(s);
        }
        s->n_pcm_out += s->t2w.n_out;
        s->t2w.n_out = 0;
    }
    pthread_cond_broadcast(&eng->work_cv);
    pthread_cond_broadcast(&s->ev_cv);
}

static void *worker_main(void *arg)
{
    struct engine *eng = arg;
    struct err e;
    pthread_mutex_lock(&eng->mu);
    int w = eng->worker_seq++;
    struct pool *pool = eng->voice_pools ? eng->voice_pools[w] : NULL;
    while (!eng->stop) {
        double now = clock_seconds(), best_dl = 0;
        struct engine_session *best = NULL;
        enum job best_job = JOB_NONE;
        for (struct engine_session *s = eng->sessions; s; s = s->next) {
            double dl = 0;
            enum job j = job_of(eng, s, now, &dl);
            if (j != JOB_NONE && (!best || dl < best_dl)) {
                best = s;
                best_dl = dl;
                best_job = j;
            }
        }
        if (!best) {
            pthread_cond_wait(&eng->work_cv, &eng->mu);
            continue;
        }
        struct engine_session *s = best;
        /* the session's streams run on this worker's threads (sized alike at open) */
        if (s->have_stok)
            s->stok.pool = pool;
        if (s->have_t2w)
            s->t2w.pool = pool;
        switch (best_job) {
        case JOB_STOK: {
            float *pcm = s->in_pcm;
            int64_t n = s->n_in;
            s->in_pcm = NULL;
            s->n_in = s->cap_in = 0;
            s->voice_busy = 1;
            pthread_mutex_unlock(&eng->mu);
            double t0 = clock_seconds();
            int rc = run_stok(eng, s, pcm, n, &e);
            double dt = clock_seconds() - t0;
            free(pcm);
            pthread_mutex_lock(&eng->mu);
            s->voice_busy = 0;
            s->stok_s += dt;
            if (rc != 0)
                ev_error(s, ENGINE_ERR_MODEL, e.msg);
            pthread_cond_broadcast(&s->ev_cv);
            break;
        }
        case JOB_PROMPT: prompt_turn(eng, s); break;
        case JOB_VOICE: voice_step(eng, s); break;
        case JOB_FINISH: finish_turn(eng, s); break;
        case JOB_NONE: break;
        }
    }
    pthread_mutex_unlock(&eng->mu);
    return NULL;
}

/* ---- create / destroy -------------------------------------------------------------------- */

static void voice_pools_free(struct engine *eng)
{
    for (int i = 0; eng->voice_pools && i < eng->cfg.n_workers; i++)
        pool_free(eng->voice_pools[i]);
    free(eng->voice_pools);
    eng->voice_pools = NULL;
}

/* Frees what engine_create allocated besides the runner and the sync objects, then eng. */
static void engine_free_memory(struct engine *eng)
{
    voice_pools_free(eng);
    free(eng->logits);
    free(eng->batch);
    free(eng->caches);
    free(eng->ids);
    free(eng->ones);
    free(eng->picked);
    free(eng->workers);
    free(eng);
}

/* -1 when out of memory (the threads did not start). */
static int voice_pools_create(struct engine *eng)
{
    if (eng->cfg.voice_threads <= 1)
        return 0;
    eng->voice_pools = calloc((size_t)eng->cfg.n_workers, sizeof *eng->voice_pools);
    if (!eng->voice_pools)
        return -1;
    for (int i = 0; i < eng->cfg.n_workers; i++)
        if (!(eng->voice_pools[i] = pool_create(eng->cfg.voice_threads)))
            return -1;
    return 0;
}

int engine_create(struct engine **out, const struct engine_models *m,
                  const struct engine_config *cfg, struct err *e)
{
    *out = NULL;
    if (!m->lm || !m->bpe || (!m->flow) != (!m->hift) || cfg->n_workers < 1 ||
        cfg->n_workers > 64 || cfg->max_sessions < 1 || cfg->max_batch < 1 ||
        cfg->prefill_rows < 1 || cfg->voice_threads < 1 || cfg->voice_threads > 256)
        return err_set(e, "engine: bad configuration (models or counts)");
    struct engine *eng = calloc(1, sizeof *eng);
    if (!eng)
        return err_set(e, "engine: out of memory");
    eng->m = *m;
    eng->cfg = *cfg;
    if (eng->cfg.max_batch > cfg->max_sessions)
        eng->cfg.max_batch = cfg->max_sessions;
    int B = eng->cfg.max_batch;
    const struct lm_hparams *hp = &m->lm->hp;
    /* never sample an audio id the decoder cannot decode, nor a padding row (E8) */
    int64_t n_audio = hp->n_audio;
    if (m->flow && m->flow->hp.vocab < n_audio)
        n_audio = m->flow->hp.vocab;
    eng->mask_from = (int32_t)(hp->audio_offset + n_audio);
    eng->sample_rate = m->hift ? m->hift->hp.sample_rate : 22050;
    int64_t rows = cfg->prefill_rows > B ? cfg->prefill_rows : B;
    eng->logits = malloc((size_t)B * (size_t)hp->n_vocab * sizeof *eng->logits);
    eng->batch = calloc((size_t)B, sizeof *eng->batch);
    eng->caches = calloc((size_t)B, sizeof *eng->caches);
    eng->ids = calloc((size_t)B, sizeof *eng->ids);
    eng->ones = calloc((size_t)B, sizeof *eng->ones);
    eng->picked = calloc((size_t)B, sizeof *eng->picked);
    eng->workers = calloc((size_t)cfg->n_workers, sizeof *eng->workers);
    if (!eng->logits || !eng->batch || !eng->caches || !eng->ids || !eng->ones || !eng->picked ||
        !eng->workers || voice_pools_create(eng)) {
        err_set(e, "engine: out of memory");
        goto fail;
    }
    for (int i = 0; i < B; i++)
        eng->ones[i] = 1;
    if (lm_runner_init(&eng->runner, m->lm, rows, B, e) != 0)
        goto fail;
    pthread_mutex_init(&eng->mu, NULL);
    pthread_cond_init(&eng->work_cv, NULL);
    if (pthread_create(&eng->lm_thread, NULL, lm_main, eng) != 0) {
        err_set(e, "engine: cannot start the LM thread");
        lm_runner_free(&eng->runner);
        pthread_mutex_destroy(&eng->mu);
        pthread_cond_destroy(&eng->work_cv);
        goto fail;
    }
    for (; eng->n_started < cfg->n_workers; eng->n_started++)
        if (pthread_create(&eng->workers[eng->n_started], NULL, worker_main, eng) != 0) {
            err_set(e, "engine: cannot start worker %d", eng->n_started);
            engine_destroy(eng);
            return -1;
        }
    *out = eng;
    return 0;
fail:
    engine_free_memory(eng);
    return -1;
}

void engine_destroy(struct engine *eng)
{
    if (!eng)
        return;
    for (;;) {
        pthread_mutex_lock(&eng->mu);
        struct engine_session *s = eng->sessions;
        pthread_mutex_unlock(&eng->mu);
        if (!s)
            break;
        engine_close(s);
    }
    pthread_mutex_lock(&eng->mu);
    eng->stop = 1;
    pthread_cond_broadcast(&eng->work_cv);
    pthread_mutex_unlock(&eng->mu);
    pthread_join(eng->lm_thread, NULL);
    for (int i = 0; i < eng->n_started; i++)
        pthread_join(eng->workers[i], NULL);
    lm_runner_free(&eng->runner);
    pthread_mutex_destroy(&eng->mu);
    pthread_cond_destroy(&eng->work_cv);
    engine_free_memory(eng);
}
