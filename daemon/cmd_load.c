/*
 * parley load: the load generator. Starts a parleyd (next to this binary) with the default
 * (tiny golden) model set on free loopback ports, or uses --url; then, for each N of
 * --sessions, runs N `parley talk` clients at once, each speaking an espeak-ng question as
 * 20 ms Opus packets at real-time pace (turn ended by input.commit, or the server's VAD with
 * --vad) and playing the answer back in simulated real time; reports first-audio latency
 * p50/p95 (commit or end of speech -> first audio), playback underruns and refusals. Then the
 * daemon's own work per 20 ms frame, measured in this process with the code parleyd uses:
 * Opus decode of an input packet, resampling 20 ms of 22 050 Hz answer audio to 48 kHz, Opus
 * encode of 20 ms, and framing (a JSON event built and serialised + a WebSocket header).
 *
 * With --figures every figure is printed as "FIGURE name value unit" instead (what
 * tests/bench/bench_load.c reads to put them into `make bench`).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audio/codec.h"
#include "audio/wav.h"
#include "cmd.h"
#include "localhost.h"
#include "runtime/clock.h"

#define LOAD_MAX_N    256
#define LOAD_MAX_RUNS 8
#define LOAD_WAIT_MS  30000

static const char load_usage[] =
    "usage: parley load [--url ws://HOST:PORT/PATH] [--sessions 1,8,32] [--mode commit|vad|both]\n"
    "                   [--quick] [--lm F --tokenizer F --decoder F] [--figures]\n\n"
    "Without --url, starts the parleyd next to this binary with the given models (default: the\n"
    "tiny golden set in build/golden/, run from the source tree) on free loopback ports.\n"
    "For each N, N `parley talk` sessions speak an espeak-ng question at real-time pace (Opus,\n"
    "20 ms packets; the turn ended by input.commit, by the server's VAD, or each in turn with\n"
    "--mode both, the default) and play the answers in simulated real time. Prints first-audio\n"
    "latency p50/p95, underruns and refusals; then the daemon's work per 20 ms frame (decode,\n"
    "resample, encode, framing) in microseconds (--quick: fewer repetitions of those).\n";

struct load_opts {
    const char *url, *lm, *tok, *dec;
    int sessions[LOAD_MAX_RUNS], n_runs, quick, figures;
    int modes; /* 1: commit, 2: VAD, 3: both */
    int vad;   /* the mode of the run in progress */
};

struct load_daemon {
    pid_t pid;
    int http, ws;
    char url[128];
};

static void load_figure(const struct load_opts *o, const char *name, double value, const char *unit)
{
    if (o->figures)
        printf("FIGURE %s %.6g %s\n", name, value, unit);
    else
        printf("  %-44s %12.2f %s\n", name, value, unit);
    fflush(stdout);
}

static int load_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of v[0..n) (sorts v); nearest rank. */
static double load_quantile(double *v, int n, double q)
{
    if (n == 0)
        return -1;
    qsort(v, (size_t)n, sizeof *v, load_cmp);
    int i = (int)(q * n + 0.999999) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* ---- the daemon ----------------------------------------------------------------------- */

static int load_daemon_start(struct load_daemon *d, const struct load_opts *o, const char *dir)
{
    char exe[PATH_MAX], conf[PATH_MAX + 32], log[PATH_MAX + 32];
    if (localhost_sibling("parleyd", exe, sizeof exe) != 0) {
        fprintf(stderr, "parley: load: no parleyd next to this binary (build it first)\n");
        return -1;
    }
    d->http = localhost_free_port();
    d->ws = localhost_free_port();
    if (d->ws == d->http)
        d->ws++;
    snprintf(conf, sizeof conf, "%s/parleyd.conf", dir);
    snprintf(log, sizeof log, "%s/parleyd.log", dir);
    FILE *f = fopen(conf, "w");
    if (!f) {
        fprintf(stderr, "parley: load: cannot write %s\n", conf);
        return -1;
    }
    fprintf(f,
            "[models]\nlm = %s\ntokenizer = %s\ndecoder = %s\n[http]\nport = %d\n"
            "[websocket]\nport = %d\n[process]\ndrain_timeout = 5\nlog_level = warn\n",
            o->lm, o->tok, o->dec, d->http, d->ws);
    fclose(f);
    d->pid = fork();
    if (d->pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(exe, exe, "--config", conf, (char *)NULL);
        _exit(127);
    }
    for (double end = clock_ms() + LOAD_WAIT_MS; clock_ms() < end; clock_sleep_ms(20)) {
        if (localhost_get_status(d->http, "/readyz") == 200) {
            snprintf(d->url, sizeof d->url, "ws://127.0.0.1:%d/v1/chat", d->ws);
            return 0;
        }
        if (waitpid(d->pid, NULL, WNOHANG) == d->pid)
            break;
    }
    fprintf(stderr, "parley: load: parleyd did not become ready; its log:\n");
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = -1;
    char cmd[sizeof log + 16];
    snprintf(cmd, sizeof cmd, "cat '%s' >&2", log);
    if (system(cmd) != 0)
        fprintf(stderr, "(none)\n");
    return -1;
}

static void load_daemon_stop(struct load_daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGTERM);
    int st;
    for (double end = clock_ms() + LOAD_WAIT_MS; clock_ms() < end; clock_sleep_ms(20))
        if (waitpid(d->pid, &st, WNOHANG) != 0)
            return; /* gone (or not ours any more) */
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
}

/* ---- sessions ------------------------------------------------------------------------- */

struct load_result {
    double lat[LOAD_MAX_N], server[LOAD_MAX_N];
    int n_lat, underruns, sessions_with_underruns, refused, failed;
    double stall_ms;
};

/* One client's output (JSON lines of parley talk) into r. */
static void load_collect(struct load_result *r, const char *out_path, int rc)
{
    FILE *f = fopen(out_path, "r");
    char line[1 << 14];
    int turns = 0, refused = 0;
    while (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (type && strcmp(type, "turn") == 0) {
            double lat = json_number_value(json_object_get(j, "latency_ms"));
            int u = (int)json_integer_value(json_object_get(j, "underruns"));
            if (lat > 0)
                r->lat[r->n_lat] = lat;
            json_t *srv = json_object_get(json_object_get(j, "timings"), "first_audio_ms");
            r->server[r->n_lat] = json_number_value(srv);
            r->n_lat += lat > 0;
            r->underruns += u;
            r->sessions_with_underruns += u > 0;
            r->stall_ms += json_number_value(json_object_get(j, "stall_ms"));
            turns++;
        } else if (type && strcmp(type, "closed") == 0) {
            refused |= json_integer_value(json_object_get(j, "code")) == 1013;
        } else if (type && strcmp(type, "error") == 0) {
            const char *code = json_string_value(json_object_get(j, "code"));
            refused |= code && strcmp(code, "server_full") == 0;
        }
        json_decref(j);
    }
    if (f)
        fclose(f);
    r->refused += refused;
    r->failed += !refused && (rc != 0 || turns == 0);
}

/* N clients at once (their starts spread over a second, as people arrive); fills r. */
static int load_sessions(const struct load_opts *o, const char *url, const char *question,
                         const char *dir, int n, struct load_result *r)
{
    char talk[PATH_MAX];
    if (localhost_sibling("parley", talk, sizeof talk) != 0)
        return -1;
    memset(r, 0, sizeof *r);
    pid_t pids[LOAD_MAX_N];
    for (int i = 0; i < n; i++) {
        char out[PATH_MAX + 32], seed[16];
        snprintf(out, sizeof out, "%s/s%d.out", dir, i);
        snprintf(seed, sizeof seed, "%d", i);
        pids[i] = fork();
        if (pids[i] == 0) {
            int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            int null = open("/dev/null", O_WRONLY);
            if (fd >= 0)
                dup2(fd, 1);
            if (null >= 0)
                dup2(null, 2);
            execl(talk, talk, "talk", "--url", url, "--audio", question, "--realtime",
                  o->vad ? "--vad" : "--commit", "--seed", seed, "--max-new", "300", "--json",
                  "--timeout", "300", (char *)NULL);
            _exit(127);
        }
        if (n > 1)
            clock_sleep_ms(1000.0 / n); /* arrivals spread over a second */
    }
    for (int i = 0; i < n; i++) {
        int st = 0;
        waitpid(pids[i], &st, 0);
        char out[PATH_MAX + 32];
        snprintf(out, sizeof out, "%s/s%d.out", dir, i);
        load_collect(r, out, WIFEXITED(st) ? WEXITSTATUS(st) : 128);
        unlink(out);
    }
    return 0;
}

/* One figure of a run with n sessions: load_n<N>_<mode>_<what>. */
static void load_run_figure(const struct load_opts *o, int n, const char *what, double value,
                            const char *unit)
{
    char name[96];
    snprintf(name, sizeof name, "load_n%d_%s_%s", n, o->vad ? "vad" : "commit", what);
    load_figure(o, name, value, unit);
}

static void load_report(const struct load_opts *o, int n, struct load_result *r)
{
    double server[LOAD_MAX_N];
    memcpy(server, r->server, sizeof server);
    if (r->n_lat == 0) {
        printf("  (no session received answer audio)\n");
    } else {
        load_run_figure(o, n, "first_audio_p50", load_quantile(r->lat, r->n_lat, 0.50), "ms");
        load_run_figure(o, n, "first_audio_p95", load_quantile(r->lat, r->n_lat, 0.95), "ms");
        load_run_figure(o, n, "server_first_audio_p50", load_quantile(server, r->n_lat, 0.50),
                        "ms");
    }
    load_run_figure(o, n, "sessions_with_audio", r->n_lat, "sessions");
    load_run_figure(o, n, "underruns", r->underruns, "count");
    load_run_figure(o, n, "sessions_with_underruns", r->sessions_with_underruns, "sessions");
    load_run_figure(o, n, "stall", r->stall_ms, "ms");
    load_run_figure(o, n, "refusals", r->refused, "sessions");
    load_run_figure(o, n, "failures", r->failed, "sessions");
}

/* ---- per-frame overhead --------------------------------------------------------------- */

/* med = the median over 9 runs of the microseconds one `body` takes (reps calls in all). */
#define LOAD_TIME(med, reps, body)                               \
    do {                                                         \
        double runs_[9];                                         \
        for (int r_ = 0; r_ < 9; r_++) {                         \
            double t0_ = clock_ms();                             \
            for (int i_ = 0; i_ < (reps) / 9; i_++) {            \
                body;                                            \
            }                                                    \
            runs_[r_] = (clock_ms() - t0_) * 1e3 / ((reps) / 9); \
        }                                                        \
        med = load_quantile(runs_, 9, 0.5);                      \
    } while (0)

/* A WebSocket header for a server frame (not masked), as RFC 6455 lays it out. */
static int load_ws_header(uint8_t *h, size_t len, int binary)
{
    h[0] = (uint8_t)(0x80 | (binary ? 2 : 1));
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

static int load_overhead(const struct load_opts *o, const float *speech48, int64_t n48)
{
    struct err e;
    struct opus_out *enc = opus_out_new(48000, 0, &e);
    struct opus_in *dec = opus_in_new(48000, &e);
    struct resampler *rs = resampler_new(22050, 48000, &e);
    if (!enc || !dec || !rs) {
        fprintf(stderr, "parley: load: %s\n", e.msg);
        opus_out_free(enc);
        opus_in_free(dec);
        resampler_free(rs);
        return -1;
    }
    enum { FRAMES = 50, FRAME = 960 };
    static uint8_t pk[FRAMES][1500];
    static int pk_len[FRAMES];
    /* one second of speech (from the middle of the question): the packets a client sends,
     * and the same second at the model's rate for the answer path */
    static float frames[FRAMES][FRAME], in22[FRAMES][441], pcm[5760], out[4096];
    int64_t at = n48 / 4;
    for (int f = 0; f < FRAMES; f++) {
        for (int i = 0; i < FRAME; i++)
            frames[f][i] = n48 > 0 ? speech48[(at + (int64_t)f * FRAME + i) % n48] : 0.0f;
        for (int i = 0; i < 441; i++)
            in22[f][i] = frames[f][i * 960 / 441];
        pk_len[f] = opus_out_encode(enc, pk[f], sizeof pk[f], frames[f], &e);
    }
    int reps = o->quick ? 900 : 4500, k = 0;
    double dec_us, rs_us, enc_us, frame_us;
    LOAD_TIME(dec_us, reps, {
        opus_in_decode(dec, pcm, 5760, pk[k % FRAMES], (size_t)pk_len[k % FRAMES], &e);
        k++;
    });
    LOAD_TIME(rs_us, reps, {
        resampler_process(rs, out, 4096, in22[k % FRAMES], 441, &e);
        k++;
    });
    uint8_t packet[1500];
    LOAD_TIME(enc_us, reps, {
        opus_out_encode(enc, packet, sizeof packet, frames[k % FRAMES], &e);
        k++;
    });
    static uint8_t wire[16 + 1500];
    size_t sink = 0;
    LOAD_TIME(frame_us, reps, {
        json_t *j = json_pack("{s:s, s:i, s:s, s:I}", "type", "transcript.delta", "turn", 3, "text",
                              "the weather", "audio_samples", (json_int_t)52800 + k);
        char *s = json_dumps(j, JSON_COMPACT);
        size_t len = s ? strlen(s) : 0;
        sink += (size_t)load_ws_header(wire, len, 0);
        sink += (size_t)load_ws_header(wire, (size_t)pk_len[k % FRAMES], 1);
        free(s);
        json_decref(j);
        k++;
    });
    load_figure(o, "frame_opus_decode_20ms_48k", dec_us, "us");
    load_figure(o, "frame_resample_20ms_22k_to_48k", rs_us, "us");
    load_figure(o, "frame_opus_encode_20ms_48k", enc_us, "us");
    load_figure(o, "frame_framing_json_and_ws_header", frame_us, "us");
    double total = dec_us + rs_us + enc_us + frame_us;
    load_figure(o, "frame_total_per_20ms", total, "us");
    load_figure(o, "frame_total_share_of_20ms", total / 20000.0 * 100.0, "%");
    if (sink == 0)
        printf("  (framing wrote nothing)\n");
    opus_out_free(enc);
    opus_in_free(dec);
    resampler_free(rs);
    return 0;
}

/* ---- the command ---------------------------------------------------------------------- */

static int load_args(int argc, char **argv, struct load_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (cmd_is_help(a)) {
            fputs(load_usage, stdout);
            return 1;
        } else if (strcmp(a, "--quick") == 0) {
            o->quick = 1;
        } else if (strcmp(a, "--figures") == 0) {
            o->figures = 1;
        } else if (!next) {
            bad = 1;
        } else if (strcmp(a, "--url") == 0) {
            o->url = argv[++i];
        } else if (strcmp(a, "--mode") == 0) {
            const char *m = argv[++i];
            o->modes = strcmp(m, "commit") == 0 ? 1 : strcmp(m, "vad") == 0 ? 2 : 3;
            bad = o->modes == 3 && strcmp(m, "both") != 0;
        } else if (strcmp(a, "--lm") == 0) {
            o->lm = argv[++i];
        } else if (strcmp(a, "--tokenizer") == 0) {
            o->tok = argv[++i];
        } else if (strcmp(a, "--decoder") == 0) {
            o->dec = argv[++i];
        } else if (strcmp(a, "--sessions") == 0) {
            char *s = argv[++i], *end;
            o->n_runs = 0;
            while (!bad && *s && o->n_runs < LOAD_MAX_RUNS) {
                long v = strtol(s, &end, 10);
                bad = end == s || v < 1 || v > LOAD_MAX_N || (*end && *end != ',');
                o->sessions[o->n_runs++] = (int)v;
                s = *end ? end + 1 : end;
            }
            bad |= *s != 0 || o->n_runs == 0;
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr,
                    "parley: load: bad, unknown or incomplete argument '%s' "
                    "(see parley load --help)\n",
                    a);
            return -1;
        }
    }
    return 0;
}

/* The question: espeak-ng speech in dir; its samples at 48 kHz into *pcm for the overhead. */
static int load_question(const char *dir, char *path, size_t cap, float **pcm, int64_t *n)
{
    snprintf(path, cap, "%s/question.wav", dir);
    char cmd[PATH_MAX + 256];
    snprintf(cmd, sizeof cmd, "espeak-ng -v en -s 170 -w '%s' '%s' 2>/dev/null", path,
             "What is the weather like in Paris today?");
    struct wav_audio a;
    struct err e;
    if (system(cmd) != 0 || wav_read_file(&a, path, 64u << 20, &e) != 0) {
        fprintf(stderr, "parley: load: espeak-ng could not make the question\n");
        return -1;
    }
    struct resampler *r = resampler_new(a.rate, 48000, &e);
    int64_t cap48 = r ? resampler_max_out(r, a.frames) + 48000 : 0;
    *pcm = r ? malloc((size_t)cap48 * sizeof **pcm) : NULL;
    *n = 0;
    if (*pcm) {
        int64_t got = resampler_process(r, *pcm, cap48, a.samples, a.frames, &e);
        int64_t more = got < 0 ? -1 : resampler_flush(r, *pcm + got, cap48 - got, &e);
        *n = more < 0 ? 0 : got + more;
    }
    resampler_free(r);
    wav_audio_free(&a);
    return 0;
}

int cmd_load(int argc, char **argv)
{
    struct load_opts o = { .lm = "build/golden/lm_tiny_f32.gguf",
                           .tok = "build/golden/stok_a.gguf",
                           .dec = "build/golden/voice_decoder.gguf",
                           .sessions = { 1, 8, 32 },
                           .n_runs = 3,
                           .modes = 3 };
    int a = load_args(argc, argv, &o);
    if (a != 0)
        return a > 0 ? 0 : CMD_EXIT_USAGE;
    char dir[] = "/tmp/parley-load-XXXXXX", question[PATH_MAX];
    if (!mkdtemp(dir)) {
        fprintf(stderr, "parley: load: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    float *speech = NULL;
    int64_t n_speech = 0;
    struct load_daemon d = { .pid = -1 };
    int rc = load_question(dir, question, sizeof question, &speech, &n_speech) ? 1 : 0;
    if (rc == 0 && !o.url)
        rc = load_daemon_start(&d, &o, dir) ? 1 : 0;
    const char *url = o.url ? o.url : d.url;
    for (int m = 0; m < 2; m++) {
        o.vad = m;
        for (int i = 0; rc == 0 && (o.modes >> m & 1) && i < o.n_runs; i++) {
            static struct load_result r;
            printf("load: %d session(s) at real-time pace (%s)\n", o.sessions[i],
                   o.vad ? "server VAD: latency from the end of speech" : "input.commit");
            fflush(stdout);
            if (load_sessions(&o, url, question, dir, o.sessions[i], &r) != 0) {
                fprintf(stderr, "parley: load: no parley next to this binary\n");
                rc = 1;
                break;
            }
            load_report(&o, o.sessions[i], &r);
        }
    }
    load_daemon_stop(&d);
    if (rc == 0) {
        printf("load: the daemon's work per 20 ms frame (this process, parleyd's code)\n");
        rc = load_overhead(&o, speech, n_speech) ? 1 : 0;
    }
    free(speech);
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "parley: load: could not remove %s\n", dir);
    return rc;
}
