/* service — see service.h. */
#include "service.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Error codes of the protocols (docs/protocol.md, REST); anything else counts as "other". */
static const char *const service_error_codes[] = {
    "invalid_json",
    "unknown_type",
    "invalid_value",
    "not_started",
    "already_started",
    "bad_audio",
    "busy",
    "empty_turn",
    "turn_too_long",
    "too_fast",
    "context",
    "message_too_big",
    "idle_timeout",
    "session_too_long",
    "slow_reader",
    "server_full",
    "internal",
    "unauthorized",
    "unsupported_media",
    "body_too_large",
    "not_found",
    "method_not_allowed",
    "other",
};
#define SERVICE_N_ERRORS ((int)(sizeof service_error_codes / sizeof service_error_codes[0]))
_Static_assert(sizeof service_error_codes / sizeof service_error_codes[0] <=
                   sizeof(((struct service *)0)->m_errors) / sizeof(struct metric *),
               "m_errors is too small");

static void service_register(struct service *s)
{
    static const char *const reasons[5] = { "reason=\"end\"", "reason=\"length\"",
                                            "reason=\"context\"", "reason=\"cancelled\"",
                                            "reason=\"error\"" };
    static const char *const kinds[3] = { "kind=\"prompt\"", "kind=\"text\"", "kind=\"audio\"" };
    static const char *const refusals[SERVICE_REFUSED_N] = { "reason=\"full\"",
                                                             "reason=\"draining\"" };
    static const char *const stages[3] = { "stage=\"tokenizer\"", "stage=\"lm\"",
                                           "stage=\"decoder\"" };
    static char error_labels[SERVICE_N_ERRORS][48];
    static const double latency[] = { 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10 };
    static const double rtf[] = { 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 4 };

    s->m_sessions =
        metrics_register("parley_sessions_active", "Sessions open now.", METRICS_GAUGE, NULL);
    for (int i = 0; i < 5; i++)
        s->m_turns[i] = metrics_register("parley_turns_total", "Finished turns by how they ended.",
                                         METRICS_COUNTER, reasons[i]);
    for (int i = 0; i < 3; i++)
        s->m_tokens[i] = metrics_register(
            "parley_tokens_total", "Prompt tokens prefilled and text/audio tokens generated.",
            METRICS_COUNTER, kinds[i]);
    for (int i = 0; i < SERVICE_REFUSED_N; i++)
        s->m_refused[i] =
            metrics_register("parley_sessions_refused_total",
                             "Sessions refused (503 / close 1013).", METRICS_COUNTER, refusals[i]);
    for (int i = 0; i < 3; i++)
        s->m_stage[i] =
            metrics_register("parley_stage_compute_seconds_total",
                             "Compute time spent per model stage.", METRICS_COUNTER, stages[i]);
    s->m_audio[0] = metrics_register("parley_audio_seconds_total", "Audio heard and spoken.",
                                     METRICS_COUNTER, "direction=\"in\"");
    s->m_audio[1] = metrics_register("parley_audio_seconds_total", "Audio heard and spoken.",
                                     METRICS_COUNTER, "direction=\"out\"");
    for (int i = 0; i < SERVICE_N_ERRORS; i++) {
        snprintf(error_labels[i], sizeof error_labels[i], "type=\"%s\"", service_error_codes[i]);
        s->m_errors[i] =
            metrics_register("parley_client_errors_total", "Errors sent to clients, by type.",
                             METRICS_COUNTER, error_labels[i]);
    }
    s->h_first_audio = metrics_register_histogram(
        "parley_first_audio_seconds", "Commit of the user's turn to the first answer audio.", NULL,
        latency, (int)(sizeof latency / sizeof latency[0]));
    s->h_queue_wait = metrics_register_histogram(
        "parley_queue_wait_seconds", "User tokens ready to the start of the prefill.", NULL,
        latency, (int)(sizeof latency / sizeof latency[0]));
    s->h_turn_rtf = metrics_register_histogram(
        "parley_turn_real_time_factor", "Model compute time of a turn over its answer audio.", NULL,
        rtf, (int)(sizeof rtf / sizeof rtf[0]));
}

int service_init(struct service *s, struct engine *eng, const struct engine_models *m,
                 const struct config *cfg, const char *version)
{
    memset(s, 0, sizeof *s);
    s->eng = eng;
    s->lm_ctx = m->lm->hp.n_ctx;
    s->voice_rate = m->hift ? m->hift->hp.sample_rate : 0;
    s->have_stok = m->stok != NULL;
    s->version = version;
    s->cfg = *cfg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->id_salt = ((unsigned long long)ts.tv_nsec << 20) ^ (unsigned long long)ts.tv_sec ^
                 ((unsigned long long)getpid() << 40);
    if (pthread_mutex_init(&s->mu, NULL))
        return -1;
    service_register(s);
    return 0;
}

void service_free(struct service *s)
{
    pthread_mutex_destroy(&s->mu);
}

void service_reload(struct service *s, const struct config *cfg)
{
    pthread_mutex_lock(&s->mu);
    s->cfg = *cfg;
    pthread_mutex_unlock(&s->mu);
}

void service_settings(struct service *s, struct config *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->cfg;
    pthread_mutex_unlock(&s->mu);
}

void service_session_options(struct service *s, struct engine_session_options *o)
{
    pthread_mutex_lock(&s->mu);
    const struct config *c = &s->cfg;
    engine_session_options_default(o);
    o->kv_type = !strcmp(c->engine_kv_cache, "f32")    ? DTYPE_F32
                 : !strcmp(c->engine_kv_cache, "bf16") ? DTYPE_BF16
                                                       : DTYPE_F16;
    o->n_ctx = c->engine_context && c->engine_context < s->lm_ctx ? c->engine_context : 0;
    o->max_user_seconds = c->limits_max_turn_seconds;
    o->voice.schedule[0] = c->engine_first_block;
    pthread_mutex_unlock(&s->mu);
}

/* splitmix64: ids that do not reveal how many sessions the server has seen */
static unsigned long long service_mix(unsigned long long x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

int service_admit(struct service *s, char id[SERVICE_ID_LEN], char *why, size_t len)
{
    if (atomic_load(&s->draining)) {
        snprintf(why, len, "server shutting down");
        metrics_add(s->m_refused[SERVICE_REFUSED_DRAINING], 1);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    int max = s->cfg.limits_max_sessions;
    pthread_mutex_unlock(&s->mu);
    int n = atomic_load(&s->sessions);
    do {
        if (n >= max) {
            snprintf(why, len, "server full: %d sessions", max);
            metrics_add(s->m_refused[SERVICE_REFUSED_FULL], 1);
            return -1;
        }
    } while (!atomic_compare_exchange_weak(&s->sessions, &n, n + 1));
    metrics_set(s->m_sessions, n + 1);
    snprintf(id, SERVICE_ID_LEN, "%016llx",
             service_mix(s->id_salt + atomic_fetch_add(&s->next_id, 1)));
    return 0;
}

void service_leave(struct service *s)
{
    metrics_set(s->m_sessions, atomic_fetch_sub(&s->sessions, 1) - 1);
}

void service_refused(struct service *s, enum service_refusal r)
{
    metrics_add(s->m_refused[r], 1);
}

static double ms(double seconds)
{
    return seconds < 0 ? -1 : seconds * 1e3;
}

void service_turn_done(struct service *s, const char *proto, const char *id,
                       const struct engine_event *done, double audio_in_s)
{
    const struct engine_timings *t = &done->t;
    double out_s = s->voice_rate ? (double)t->n_samples / s->voice_rate : 0;
    double compute = t->stok_seconds + t->lm_seconds + t->voice_seconds;
    log_info("turn %s session=%s turn=%d reason=%s in=%.2fs prompt_tokens=%lld text=%lld "
             "audio=%lld out=%.2fs tokenize_ms=%.0f prefill_ms=%.0f first_token_ms=%.0f "
             "first_audio_ms=%.0f total_ms=%.0f compute_s=%.3f",
             proto, id, done->turn, engine_done_name(done->reason), audio_in_s,
             (long long)t->n_prompt, (long long)t->n_text, (long long)t->n_audio, out_s,
             ms(t->tokenize), ms(t->prefill_end), ms(t->first_token), ms(t->first_pcm), ms(t->done),
             compute);
    if ((int)done->reason >= 0 && (int)done->reason < 5)
        metrics_add(s->m_turns[done->reason], 1);
    metrics_add(s->m_tokens[0], (double)t->n_prompt);
    metrics_add(s->m_tokens[1], (double)t->n_text);
    metrics_add(s->m_tokens[2], (double)t->n_audio);
    metrics_add(s->m_stage[0], t->stok_seconds);
    metrics_add(s->m_stage[1], t->lm_seconds);
    metrics_add(s->m_stage[2], t->voice_seconds);
    metrics_add(s->m_audio[0], audio_in_s);
    metrics_add(s->m_audio[1], out_s);
    if (t->first_pcm >= 0)
        metrics_observe(s->h_first_audio, t->first_pcm);
    if (t->prefill_start >= 0)
        metrics_observe(s->h_queue_wait, t->prefill_start - (t->tokenize > 0 ? t->tokenize : 0));
    if (out_s > 0)
        metrics_observe(s->h_turn_rtf, compute / out_s);
}

void service_count_error(struct service *s, const char *code)
{
    int i = 0;
    while (i < SERVICE_N_ERRORS - 1 && strcmp(service_error_codes[i], code) != 0)
        i++;
    metrics_add(s->m_errors[i], 1);
}
