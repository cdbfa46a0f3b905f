/*
 * parleyd — the daemon: configuration, logging, signals, systemd notification, the three
 * model files, the engine and the service state every front-end shares (service.h), the
 * HTTP side (proto/http: health, metrics, REST spoken QA) and the WebSocket side (chat.h on
 * proto/ws).
 *
 *   parleyd [--config FILE] [--section-key=value ...] [--check-config] [--print-config]
 *
 * Exit status: 0 after a clean stop (SIGTERM/SIGINT drain) or a successful --check-config /
 * --print-config; 1 when a model cannot be loaded or the HTTP port cannot be bound (before
 * anything listens); 2 for bad usage or a bad configuration; 128+N when a second SIGTERM /
 * SIGINT (signal N) cuts a drain short.
 *
 * DESIGN: signal handlers only set flags; the main thread polls them every POLL_MS and does
 * the work (reload, drain). libmicrohttpd serves requests on its own thread; what it reads of
 * ours (ready, draining, metrics) is atomic, and its policy is swapped under its own lock.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "config.h"
#include "engine/engine.h"
#include "chat.h"
#include "http/http.h"
#include "lm/lm.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "service.h"
#include "spoken_qa.h"
#include "runtime/gguf.h"
#include "speech/stok.h"
#include "voice/flow.h"
#include "voice/hift.h"
#include "runtime/clock.h"

#ifndef PARLEYD_VERSION
#define PARLEYD_VERSION "0.1.0"
#endif

#define POLL_MS        50
#define STATUS_EVERY_S 10
#define EXIT_USAGE     2

extern char **environ;

/* ---- signals: flags only --------------------------------------------------------------- */

static volatile sig_atomic_t sig_stop; /* SIGTERM / SIGINT seen */
static volatile sig_atomic_t sig_reload;

static void parleyd_on_signal(int sig)
{
    if (sig == SIGHUP) {
        sig_reload = 1;
        return;
    }
    /* The second stop signal must work even while the main thread is busy for minutes
     * (loading a 9B model), when nothing polls the flag: _exit is async-signal-safe. */
    if (sig_stop)
        _exit(128 + sig);
    sig_stop = 1;
}

static void parleyd_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = parleyd_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* ---- state ----------------------------------------------------------------------------- */

enum { MODEL_LM, MODEL_TOKENIZER, MODEL_DECODER, MODEL_N };
static const char *const model_names[MODEL_N] = { "lm", "tokenizer", "decoder" };

struct parleyd {
    struct config cfg;
    const char *config_path; /* --config or PARLEY_CONFIG, NULL for none */
    int argc;
    char **argv; /* flags are re-applied on reload */

    struct backend *be;
    struct lm_model lm;
    struct bpe bpe; /* the LM file's text tokenizer */
    struct stok_model stok;
    struct gguf_file dec_file; /* flow and HiFT weights point into it */
    struct flow_model flow;
    struct hift_model hift;
    int loaded[MODEL_N];
    double load_s[MODEL_N];
    long long file_bytes[MODEL_N];
    char *models_json; /* GET /v1/models, built once after loading */
    struct engine_models models;
    struct engine *eng; /* shared by every session of every protocol */

    _Atomic int ready;
    struct service svc; /* sessions, draining, live settings: what the front-ends share */
    struct http_server *http;
    struct chat_server *ws; /* the WebSocket protocol (daemon/chat) */

    struct metric *m_ready, *m_draining, *m_sessions_max, *m_reloads_ok, *m_reloads_failed,
        *m_http[5];
};

/* http.web_root, or where the client's files are when it is empty: BINDIR/../share/parley/web
 * (make install), else BINDIR/../web or BINDIR/../../web (build/parleyd, build/NAME/parleyd
 * in the source tree); "" when none. */
static void parleyd_web_root(const struct config *c, char *out, size_t len)
{
    out[0] = '\0';
    if (!strcmp(c->http_web_root, "off"))
        return;
    if (c->http_web_root[0]) {
        snprintf(out, len, "%s", c->http_web_root);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return;
    *slash = '\0';
    static const char *const tries[] = { "../share/parley/web", "../web", "../../web" };
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        char dir[PATH_MAX + 32], index[PATH_MAX + 64];
        snprintf(dir, sizeof dir, "%s/%s", exe, tries[i]);
        snprintf(index, sizeof index, "%s/index.html", dir);
        size_t n_dir = strlen(dir);
        if (access(index, R_OK) == 0 && n_dir < len) {
            memcpy(out, dir, n_dir + 1);
            return;
        }
    }
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: parleyd [--config FILE] [--SECTION-KEY=VALUE ...] [--check-config]\n"
            "               [--print-config] [--version] [--help]\n\n"
            "  --config FILE    INI file (also PARLEY_CONFIG); values there are overridden by\n"
            "                   PARLEY_SECTION_KEY environment variables, then by flags\n"
            "  --check-config   validate the configuration and the model paths, then exit\n"
            "  --print-config   print every effective value and where it came from, then exit\n\n"
            "settings:\n");
    config_print_help(out);
}

/* Defaults, then the file, the environment and the command line (mode flags are skipped).
 * -1 with e set on the first problem. */
static int parleyd_build_config(struct parleyd *d, struct config *c, struct err *e)
{
    config_defaults(c);
    if (d->config_path && config_load_file(c, d->config_path, e))
        return -1;
    if (config_load_env(c, environ, e))
        return -1;
    for (int i = 1; i < d->argc;) {
        const char *a = d->argv[i];
        if (!strcmp(a, "--config")) {
            i += 2;
            continue;
        }
        if (!strncmp(a, "--config=", 9) || !strcmp(a, "--check-config") ||
            !strcmp(a, "--print-config")) {
            i++;
            continue;
        }
        int used = config_parse_flag(c, d->argc, d->argv, i, e);
        if (used < 0)
            return -1;
        if (used == 0)
            return err_set(e, "unknown argument '%s' (parleyd --help lists them)", a);
        i += used;
    }
    return 0;
}

/* The HTTP policy: limits, CORS, keys from api_keys and api_key_file. */
static int parleyd_policy(const struct config *c, struct http_policy *p, struct err *e)
{
    memset(p, 0, sizeof *p);
    p->max_body = c->http_max_body;
    snprintf(p->cors, sizeof p->cors, "%s", c->http_cors_origins);
    snprintf(p->keys, sizeof p->keys, "%s", c->auth_api_keys);
    if (!c->auth_api_key_file[0])
        return 0;
    FILE *f = fopen(c->auth_api_key_file, "r");
    if (!f)
        return err_set(e, "auth.api_key_file: %s: %s", c->auth_api_key_file, strerror(errno));
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        if (!n || line[0] == '#')
            continue;
        if (strchr(line, ',') || strchr(line, ' ')) {
            fclose(f);
            return err_set(e, "%s:%d: a key may not hold ',' or spaces", c->auth_api_key_file,
                           lineno);
        }
        size_t used = strlen(p->keys);
        if (used + n + 2 > sizeof p->keys) {
            fclose(f);
            return err_set(e, "%s: keys longer than %zu bytes in all", c->auth_api_key_file,
                           sizeof p->keys - 1);
        }
        snprintf(p->keys + used, sizeof p->keys - used, "%s%s", used ? "," : "", line);
    }
    fclose(f);
    return 0;
}

/* ---- models ---------------------------------------------------------------------------- */

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Loads one component; -1 with e "models.X: message". */
static int parleyd_load_one(struct parleyd *d, int which, struct err *e)
{
    const char *paths[MODEL_N] = { d->cfg.lm, d->cfg.tokenizer, d->cfg.decoder };
    double t0 = clock_seconds();
    int rc = 0;
    switch (which) {
    case MODEL_LM:
        rc = lm_load(&d->lm, paths[which], d->be, NULL, e);
        if (!rc && (rc = bpe_load(&d->bpe, &d->lm.file, e)) != 0)
            lm_free(&d->lm);
        break;
    case MODEL_TOKENIZER: rc = stok_load(&d->stok, paths[which], e); break;
    case MODEL_DECODER:
        rc = gguf_open(&d->dec_file, paths[which], e);
        if (!rc && (rc = flow_load(&d->flow, &d->dec_file, e)) == 0 &&
            (rc = hift_load(&d->hift, &d->dec_file, e)) != 0)
            flow_free(&d->flow);
        if (rc)
            gguf_close(&d->dec_file);
        break;
    }
    if (rc)
        return err_prefix(e, "models.%s", model_names[which]);
    d->loaded[which] = 1;
    d->load_s[which] = clock_seconds() - t0;
    d->file_bytes[which] = file_size(paths[which]);
    log_info("loaded %s model %s (%.1f MiB) in %.2f s", model_names[which], paths[which],
             (double)d->file_bytes[which] / (1 << 20), d->load_s[which]);
    return 0;
}

static void parleyd_free_models(struct parleyd *d)
{
    if (d->loaded[MODEL_DECODER]) {
        hift_free(&d->hift);
        flow_free(&d->flow);
        gguf_close(&d->dec_file);
    }
    if (d->loaded[MODEL_TOKENIZER])
        stok_free(&d->stok);
    if (d->loaded[MODEL_LM]) {
        bpe_free(&d->bpe);
        lm_free(&d->lm);
    }
    memset(d->loaded, 0, sizeof d->loaded);
    if (d->be)
        backend_free(d->be);
    d->be = NULL;
    free(d->models_json);
    d->models_json = NULL;
}

static char *parleyd_models_json(const struct parleyd *d)
{
    const char *paths[MODEL_N] = { d->cfg.lm, d->cfg.tokenizer, d->cfg.decoder };
    json_t *data = json_array();
    for (int i = 0; i < MODEL_N; i++) {
        /* the file name only: clients need not learn the server's directory layout */
        const char *slash = strrchr(paths[i], '/');
        json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:I,s:f}", "id", model_names[i], "object", "model",
                              "owned_by", "parley", "file", slash ? slash + 1 : paths[i], "bytes",
                              (json_int_t)d->file_bytes[i], "load_seconds", d->load_s[i]);
        if (m && i == MODEL_LM)
            json_object_set_new(m, "hparams",
                                json_pack("{s:i,s:i,s:I,s:I,s:i}", "n_layer", d->lm.hp.n_layer,
                                          "n_embd", d->lm.hp.n_embd, "n_vocab",
                                          (json_int_t)d->lm.hp.n_vocab, "n_ctx",
                                          (json_int_t)d->lm.hp.n_ctx, "n_audio", d->lm.hp.n_audio));
        json_array_append_new(data, m);
    }
    json_t *root = json_pack("{s:s,s:o}", "object", "list", "data", data);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return text;
}

/* ---- HTTP hooks (libmicrohttpd's thread) ------------------------------------------------ */

static int hook_ready(void *user, char *why, size_t len)
{
    struct parleyd *d = user;
    if (atomic_load(&d->svc.draining)) {
        snprintf(why, len, "draining: shutting down");
        return 0;
    }
    if (!atomic_load(&d->ready)) {
        snprintf(why, len, "models not loaded yet");
        return 0;
    }
    struct config c;
    service_settings(&d->svc, &c);
    int max = c.limits_max_sessions;
    if (atomic_load(&d->svc.sessions) >= max) {
        snprintf(why, len, "no capacity: all %d sessions in use", max);
        return 0;
    }
    return 1;
}

static char *hook_metrics(void *user, size_t *len)
{
    (void)user;
    metrics_update_process();
    return metrics_render(len);
}

static char *hook_models(void *user)
{
    struct parleyd *d = user;
    if (!atomic_load(&d->ready) || !d->models_json)
        return NULL;
    return strdup(d->models_json);
}

static void hook_done(void *user, const char *method, const char *path, int status)
{
    struct parleyd *d = user;
    int cls = status / 100 - 1;
    if (cls >= 0 && cls < 5)
        metrics_add(d->m_http[cls], 1);
    log_debug("%s %s %d", method, path, status);
}

static void parleyd_metrics(struct parleyd *d)
{
    static const char *const classes[5] = { "code=\"1xx\"", "code=\"2xx\"", "code=\"3xx\"",
                                            "code=\"4xx\"", "code=\"5xx\"" };
    metrics_set(metrics_register("parley_build_info", "Version of parleyd.", METRICS_GAUGE,
                                 "version=\"" PARLEYD_VERSION "\""),
                1);
    d->m_ready = metrics_register("parley_ready", "1 when models are loaded and not draining.",
                                  METRICS_GAUGE, NULL);
    d->m_draining =
        metrics_register("parley_draining", "1 while shutting down.", METRICS_GAUGE, NULL);
    d->m_sessions_max =
        metrics_register("parley_sessions_max", "limits.max_sessions.", METRICS_GAUGE, NULL);
    for (int i = 0; i < 5; i++)
        d->m_http[i] =
            metrics_register("parley_http_requests_total", "HTTP responses by status class.",
                             METRICS_COUNTER, classes[i]);
    d->m_reloads_ok =
        metrics_register("parley_config_reloads_total", "SIGHUP configuration reloads.",
                         METRICS_COUNTER, "result=\"ok\"");
    d->m_reloads_failed =
        metrics_register("parley_config_reloads_total", "SIGHUP configuration reloads.",
                         METRICS_COUNTER, "result=\"error\"");
    metrics_set(d->m_sessions_max, d->cfg.limits_max_sessions);
    metrics_update_process();
}

static void parleyd_model_metrics(struct parleyd *d)
{
    static const char *const labels[MODEL_N] = { "component=\"lm\"", "component=\"tokenizer\"",
                                                 "component=\"decoder\"" };
    for (int i = 0; i < MODEL_N; i++) {
        metrics_set(metrics_register("parley_model_loaded", "1 when the model file is loaded.",
                                     METRICS_GAUGE, labels[i]),
                    d->loaded[i]);
        metrics_set(metrics_register("parley_model_file_bytes", "Size of the model file.",
                                     METRICS_GAUGE, labels[i]),
                    (double)d->file_bytes[i]);
        metrics_set(metrics_register("parley_model_load_seconds", "Time taken to load the model.",
                                     METRICS_GAUGE, labels[i]),
                    d->load_s[i]);
    }
    metrics_set(metrics_register("parley_lm_context_tokens", "Context limit of the LM.",
                                 METRICS_GAUGE, NULL),
                (double)d->lm.hp.n_ctx);
}

/* ---- engine ---------------------------------------------------------------------------- */

static int parleyd_engine_start(struct parleyd *d, struct err *e)
{
    d->models = (struct engine_models){ &d->lm, &d->bpe, &d->stok, &d->flow, &d->hift };
    struct engine_config ec;
    engine_config_default(&ec);
    ec.n_workers = d->cfg.engine_workers;
    ec.voice_threads = d->cfg.engine_voice_threads;
    ec.max_sessions = d->cfg.limits_max_sessions;
    ec.max_kv_bytes = d->cfg.limits_max_kv_bytes;
    ec.prefill_rows = d->cfg.engine_prefill_rows;
    ec.max_batch =
        d->cfg.engine_max_batch < ec.max_sessions ? d->cfg.engine_max_batch : ec.max_sessions;
    if (engine_create(&d->eng, &d->models, &ec, e))
        return -1;
    if (service_init(&d->svc, d->eng, &d->models, &d->cfg, PARLEYD_VERSION))
        return err_set(e, "cannot initialise the service state");
    return 0;
}

/* One short spoken turn through every model, so that the first real user does not pay for
 * page faults and cold caches: 1 s of quiet noise, answered with a few tokens. */
static int parleyd_warmup(struct parleyd *d, struct err *e)
{
    struct engine_session_options o;
    service_session_options(&d->svc, &o);
    o.in_rate = 16000;
    o.sampling.max_new = 2 * o.voice.schedule[0] + 4;
    o.sampling.greedy = 1;
    struct engine_session *s;
    if (engine_open(d->eng, &o, &s, e) != ENGINE_OK)
        return -1;
    enum { N = 16000 };
    static float pcm[N];
    uint32_t r = 12345;
    for (int i = 0; i < N; i++) {
        r = r * 1664525u + 1013904223u;
        pcm[i] = ((float)(r >> 8) / (float)(1u << 24) - 0.5f) * 0.01f;
    }
    double t0 = clock_seconds();
    int rc =
        engine_push_audio(s, pcm, N, e) == ENGINE_OK && engine_commit(s, e) == ENGINE_OK ? 0 : -1;
    struct engine_event ev;
    int done = 0;
    while (rc == 0 && !done && !sig_stop && engine_next_event(s, &ev, 1.0) >= 0) {
        if (ev.type == ENGINE_EV_TURN_DONE) {
            done = 1;
            log_info("warm-up: %lld text + %lld audio tokens, first audio %s%.0f ms, %.2f s",
                     (long long)ev.t.n_text, (long long)ev.t.n_audio,
                     ev.t.first_pcm < 0 ? "none " : "", ev.t.first_pcm * 1e3, clock_seconds() - t0);
        } else if (ev.type == ENGINE_EV_ERROR) {
            rc = err_set(e, "warm-up: %s", ev.text ? ev.text : "engine error");
        }
        engine_event_clear(&ev);
    }
    engine_close(s);
    return rc;
}

/* ---- reload and drain ------------------------------------------------------------------ */

static void parleyd_reload(struct parleyd *d)
{
    notify_reloading();
    struct config *fresh = malloc(sizeof *fresh);
    struct http_policy *pol = malloc(sizeof *pol);
    struct err e;
    if (!fresh || !pol) {
        log_error("reload: out of memory; configuration unchanged");
        metrics_add(d->m_reloads_failed, 1);
    } else if (parleyd_build_config(d, fresh, &e) || config_validate(fresh, 0, &e) ||
               parleyd_policy(fresh, pol, &e)) {
        log_error("reload: %s; configuration unchanged", e.msg);
        metrics_add(d->m_reloads_failed, 1);
    } else {
        char changed[1024], restart[1024];
        int n = config_reload(&d->cfg, fresh, changed, sizeof changed, restart, sizeof restart);
        log_set_level(d->cfg.log_level);
        service_reload(&d->svc, &d->cfg);
        if (d->http)
            http_set_policy(d->http, pol);
        if (d->ws)
            chat_server_reload(d->ws, pol->keys);
        metrics_set(d->m_sessions_max, d->cfg.limits_max_sessions);
        metrics_add(d->m_reloads_ok, 1);
        log_info("reload: %s%s", changed[0] ? "applied " : "nothing changed",
                 changed[0] ? changed : "");
        if (n)
            log_warn("reload: changed but needing a restart: %s", restart);
    }
    free(fresh);
    free(pol);
    notify_ready("ready");
}

/* WATCHDOG=1 at half the interval systemd asked for, as long as the engine shows life: an LM
 * pass that has run longer than the whole interval means a stuck scheduler, and systemd
 * should restart us rather than leave clients hanging. */
static void parleyd_watchdog(struct parleyd *d, double *next)
{
    uint64_t usec = notify_watchdog_usec();
    double t = clock_seconds();
    if (!usec || t < *next)
        return;
    struct engine_stats st;
    engine_get_stats(d->eng, &st);
    if (st.lm_pass_seconds * 1e6 < (double)usec)
        notify_watchdog();
    else
        log_error("watchdog: an LM pass has run for %.0f s; not telling systemd we are alive",
                  st.lm_pass_seconds);
    *next = t + (double)usec * 1e-6 / 2;
}

/* Stops accepting (the HTTP listener closes, so a balancer's next request and health check
 * go elsewhere at once; the WebSocket side refuses new sessions with 1013 and tells the open
 * ones), lets sessions finish until drain_timeout, then closes everything. */
static void parleyd_drain(struct parleyd *d, double *next_wd)
{
    atomic_store(&d->svc.draining, 1);
    metrics_set(d->m_draining, 1);
    metrics_set(d->m_ready, 0);
    notify_stopping("draining");
    log_info("stopping: draining %d session(s), up to %d s", atomic_load(&d->svc.sessions),
             d->cfg.drain_timeout);
    http_quiesce(d->http);
    chat_server_drain(d->ws, d->cfg.drain_timeout);
    double deadline = clock_seconds() + d->cfg.drain_timeout;
    while (atomic_load(&d->svc.sessions) > 0 && clock_seconds() < deadline) {
        clock_sleep_ms(POLL_MS);
        parleyd_watchdog(d, next_wd);
    }
    if (atomic_load(&d->svc.sessions) > 0)
        log_warn("stopping: drain deadline reached, closing %d session(s)",
                 atomic_load(&d->svc.sessions));
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static struct parleyd d; /* large (config strings, models): not on the stack */
    int check = 0, print = 0;
    d.argc = argc;
    d.argv = argv;
    d.config_path = getenv("PARLEY_CONFIG");
    if (d.config_path && !d.config_path[0])
        d.config_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("parleyd %s\n", PARLEYD_VERSION);
            return 0;
        }
        if (!strcmp(argv[i], "--check-config"))
            check = 1;
        else if (!strcmp(argv[i], "--print-config"))
            print = 1;
        else if (!strncmp(argv[i], "--config=", 9))
            d.config_path = argv[i] + 9;
        else if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "parleyd: --config needs a file\n");
                return EXIT_USAGE;
            }
            d.config_path = argv[++i];
        }
    }

    struct err e;
    if (parleyd_build_config(&d, &d.cfg, &e)) {
        fprintf(stderr, "parleyd: %s\n", e.msg);
        return EXIT_USAGE;
    }
    if (print) {
        config_print(&d.cfg, stdout);
        if (config_validate(&d.cfg, 0, &e)) {
            fprintf(stderr, "parleyd: %s\n", e.msg);
            return EXIT_USAGE;
        }
        return 0;
    }
    struct http_policy policy;
    if (config_validate(&d.cfg, check, &e) || parleyd_policy(&d.cfg, &policy, &e)) {
        fprintf(stderr, "parleyd: %s\n", e.msg);
        return EXIT_USAGE;
    }
    if (check) {
        printf("parleyd: configuration OK%s%s\n", d.config_path ? ": " : "",
               d.config_path ? d.config_path : "");
        return 0;
    }

    log_init("parleyd", d.cfg.log_level);
    parleyd_signals();
    parleyd_metrics(&d);
    log_info("parleyd %s starting (pid %d)%s%s", PARLEYD_VERSION, (int)getpid(),
             d.config_path ? ", config " : "", d.config_path ? d.config_path : "");

    /* Models first: a bad file is one line and exit 1 before anything listens. */
    notify_status("loading models");
    long threads = d.cfg.threads ? d.cfg.threads : sysconf(_SC_NPROCESSORS_ONLN);
    d.be = backend_cpu_create(threads > 0 ? (int)threads : 1, &e);
    int rc = d.be ? 0 : -1;
    for (int i = 0; i < MODEL_N && rc == 0 && !sig_stop; i++)
        rc = parleyd_load_one(&d, i, &e);
    if (rc) {
        log_error("%s", e.msg);
        parleyd_free_models(&d);
        return 1;
    }
    if (sig_stop) {
        log_info("stopped before serving");
        parleyd_free_models(&d);
        return 0;
    }
    d.models_json = parleyd_models_json(&d);
    parleyd_model_metrics(&d);
    if (parleyd_engine_start(&d, &e) ||
        (d.cfg.engine_warmup && (notify_status("warming up"), parleyd_warmup(&d, &e)))) {
        log_error("%s", e.msg);
        engine_destroy(d.eng);
        parleyd_free_models(&d);
        return 1;
    }

    /* socket activation (parleyd.socket): connections wait in the backlog through restarts */
    int http_fd = notify_listen_fd("http");
    if (http_fd >= 0)
        log_info("http: serving the socket systemd passed (fd %d)", http_fd);
    char web_root[PATH_MAX];
    parleyd_web_root(&d.cfg, web_root, sizeof web_root);
    if (web_root[0])
        log_info("http: browser client from %s", web_root);
    struct http_settings hs = {
        .address = d.cfg.http_address,
        .port = d.cfg.http_port,
        .listen_fd = http_fd,
        .version = PARLEYD_VERSION,
        .ws_address = d.cfg.ws_address,
        .ws_path = d.cfg.ws_path,
        .ws_public_url = d.cfg.ws_public_url,
        .ws_port = d.cfg.ws_port,
        .web_root = web_root,
    };
    struct http_hooks hooks = { &d,        hook_ready,      hook_metrics, hook_models,
                                hook_done, spoken_qa_serve, &d.svc };
    d.http = http_start(&hs, &policy, &hooks, &e);
    if (!d.http) {
        log_error("%s", e.msg);
        engine_destroy(d.eng);
        parleyd_free_models(&d);
        return 1;
    }
    d.ws = chat_server_start(&d.svc, policy.keys, &e);
    if (!d.ws) {
        log_error("%s", e.msg);
        http_stop(d.http);
        engine_destroy(d.eng);
        parleyd_free_models(&d);
        return 1;
    }
    int ws6 = strchr(d.cfg.ws_address, ':') != NULL;
    log_info("websocket: ws://%s%s%s:%d%s (protocol parley.v1)", ws6 ? "[" : "", d.cfg.ws_address,
             ws6 ? "]" : "", chat_server_port(d.ws), d.cfg.ws_path);
    atomic_store(&d.ready, 1);
    metrics_set(d.m_ready, 1);
    int v6 = strchr(d.cfg.http_address, ':') != NULL;
    log_info("ready: http://%s%s%s:%d (health, metrics, REST)", v6 ? "[" : "", d.cfg.http_address,
             v6 ? "]" : "", http_port(d.http));
    notify_ready("ready: 0 sessions");

    double next_wd = 0, next_status = clock_seconds() + STATUS_EVERY_S;
    while (!sig_stop) {
        clock_sleep_ms(POLL_MS);
        double t = clock_seconds();
        parleyd_watchdog(&d, &next_wd);
        if (sig_reload) {
            sig_reload = 0;
            parleyd_reload(&d);
        }
        if (t >= next_status) {
            int n = atomic_load(&d.svc.sessions);
            notify_status("ready: %d session%s of %d", n, n == 1 ? "" : "s",
                          d.cfg.limits_max_sessions);
            next_status = t + STATUS_EVERY_S;
        }
    }
    parleyd_drain(&d, &next_wd);
    chat_server_stop(d.ws); /* its sessions close their engine sessions */
    http_stop(d.http);
    engine_destroy(d.eng);
    service_free(&d.svc);
    parleyd_free_models(&d);
    log_info("stopped");
    return 0;
}
