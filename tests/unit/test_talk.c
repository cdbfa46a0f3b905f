/*
 * parleyd's WebSocket protocol end to end: a real parleyd (next to this test binary) on
 * loopback ports with the tiny golden models, and `parley talk` (also next to it) as the
 * client, run as child processes. espeak-ng speech streamed as Opus at real-time pace with
 * server VAD and with manual commit; transcript deltas and audio received, the decoded audio
 * as long as turn.done says (talk checks it and fails otherwise); barge-in, then a next turn;
 * PCM16 both ways; 32 concurrent sessions; a client that hangs up mid-answer frees its
 * session; SIGTERM mid-answer: session.ending, the answer finishes or is closed, exit 0.
 *
 * Needs build/golden/{lm_tiny_f32,stok_a,voice_decoder}.gguf and espeak-ng. Without parleyd and
 * parley next to the test binary the tests say so and pass without running.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "testd.h"
#include "runtime/clock.h"

#define WAIT_MS 30000 /* start-up under ASan on a busy machine */
#define DRAIN_S 5
#define N_MANY  32

/* A parleyd under test and what talks to it. */
struct tk {
    struct td_daemon d;
    char url[128], dir[PATH_MAX], talk[PATH_MAX];
};

/* Runs argv with stdout and stderr into files (stderr also into a pipe when err_pipe). */
static pid_t tk_spawn(char **argv, const char *out_path, const char *err_path, int *err_pipe)
{
    int p[2] = { -1, -1 };
    if (err_pipe && pipe(p) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = err_pipe ? p[1] : open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o >= 0)
            dup2(o, 1);
        if (e >= 0)
            dup2(e, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    if (err_pipe) {
        close(p[1]);
        *err_pipe = p[0];
    }
    return pid;
}

/* Starts parleyd with the golden models; 1 when it serves WebSocket sessions, 0 when the test
 * is to be skipped (the programs are not built; reason printed), -1 on a failure (recorded). */
static int tk_start(struct tk *k, const char *name, const char *extra_conf)
{
    char exe[PATH_MAX];
    memset(k, 0, sizeof *k);
    k->d.pid = -1;
    if (!td_need("parleyd", exe, sizeof exe) || !td_need("parley", k->talk, sizeof k->talk))
        return 0;
    if (!td_have_models())
        return test_fail(__FILE__, __LINE__, "golden models missing (tests/golden/*.py)") - 1;
    snprintf(k->dir, sizeof k->dir, "%s", test_tmpdir());
    char conf[512];
    snprintf(conf, sizeof conf, "[process]\ndrain_timeout = %d\n%s", DRAIN_S,
             extra_conf ? extra_conf : "");
    static char log[1 << 16];
    if (td_daemon_start(&k->d, k->dir, name, conf, WAIT_MS))
        return test_fail(__FILE__, __LINE__, "parleyd not ready; log:\n%s",
                         td_daemon_log(&k->d, log, sizeof log)) -
               1;
    int fd = td_connect(k->d.ws, 5);
    if (fd < 0) {
        kill(k->d.pid, SIGKILL);
        td_wait_exit(k->d.pid, 5000);
        return test_fail(__FILE__, __LINE__, "nothing listens on the WebSocket port; log:\n%s",
                         td_daemon_log(&k->d, log, sizeof log)) -
               1;
    }
    close(fd);
    snprintf(k->url, sizeof k->url, "ws://127.0.0.1:%d/v1/chat", k->d.ws);
    return 1;
}

/* SIGTERM, exit 0; prints the log when not. */
static void tk_stop(struct tk *k)
{
    if (k->d.pid <= 0)
        return;
    int rc = td_daemon_stop(&k->d, WAIT_MS);
    CHECK(rc == 0);
    if (rc != 0) {
        static char log[1 << 16];
        fprintf(stderr, "parleyd log:\n%s\n", td_daemon_log(&k->d, log, sizeof log));
    }
}

/* espeak-ng speech into dir/name.wav (the question); 0 on success. */
static int tk_speech(const char *dir, const char *name, const char *text, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s.wav", dir, name);
    char cmd[PATH_MAX + 512];
    snprintf(cmd, sizeof cmd, "espeak-ng -v en -s 170 -w '%s' '%s' 2>/dev/null", path, text);
    return system(cmd) == 0 && access(path, R_OK) == 0 ? 0 : -1;
}

static const char *tk_question(void)
{
    return td_quick() ? "Tell me a joke." : "What is the weather like in Paris today?";
}

/* Runs `parley talk --url URL args...`; out/err get the file names (in the test dir, tagged).
 * Returns the exit status (-1 after a timeout). */
static int tk_talk(struct tk *k, const char *tag, char **args, char *out, char *err, size_t cap)
{
    char *argv[48];
    int n = 0;
    argv[n++] = k->talk;
    argv[n++] = "talk";
    argv[n++] = "--url";
    argv[n++] = k->url;
    for (int i = 0; args[i] && n < 46; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    snprintf(out, cap, "%s/%s.out", k->dir, tag);
    snprintf(err, cap, "%s/%s.err", k->dir, tag);
    pid_t pid = tk_spawn(argv, out, err, NULL);
    return td_wait_exit(pid, 120000);
}

/* The value of "key": in a JSON line (a number), or -1e30 when absent. */
static double tk_num(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = line ? strstr(line, pat) : NULL;
    return p ? strtod(p + strlen(pat), NULL) : -1e30;
}

/* The n-th line of text that starts with {"type":"turn" (NULL when there is none). */
static const char *tk_turn_line(const char *text, int n)
{
    const char *p = text;
    for (int i = 0;; i++) {
        p = strstr(p, "{\"type\":\"turn\"");
        if (!p || i == n)
            return p;
        p++;
    }
}

/* Checks a talk run: exit 0, turn lines with audio, as long as the server says. */
static void tk_expect_turns(const char *out, const char *err, int rc, int n_turns)
{
    static char text[1 << 16], errtext[1 << 16];
    td_read_file(out, text, sizeof text);
    td_read_file(err, errtext, sizeof errtext);
    CHECK(rc == 0);
    for (int i = 0; i < n_turns; i++) {
        const char *line = tk_turn_line(text, i);
        CHECK(line != NULL);
        if (!line)
            break;
        CHECK(tk_num(line, "turn") == i);
        CHECK(tk_num(line, "samples") > 0);
        CHECK(tk_num(line, "samples") == tk_num(line, "audio_samples"));
        CHECK(tk_num(line, "deltas") > 0);
        CHECK(tk_num(line, "latency_ms") > 0);
    }
    if (rc != 0 || !tk_turn_line(text, n_turns - 1))
        fprintf(stderr, "talk stdout:\n%s\ntalk stderr:\n%s\n", text, errtext);
}

/* ---- the tests ------------------------------------------------------------------------ */

/* Opus at real-time pace, turns ended by the server's VAD; then by input.commit. */
TEST(talk_opus_vad_and_commit)
{
    struct tk k;
    if (tk_start(&k, "opus", NULL) <= 0)
        return;
    char q[PATH_MAX + 32], out[PATH_MAX + 32], err[PATH_MAX + 32], wav[PATH_MAX + 32];
    REQUIRE(tk_speech(k.dir, "q", tk_question(), q, sizeof q) == 0);
    snprintf(wav, sizeof wav, "%s/answer.wav", k.dir);
    char *vad[] = { "--audio",      q,       "--vad",    "--realtime",
                    "--silence-ms", "1000",  "--greedy", "--json",
                    "--verbose",    "--out", wav,        NULL };
    int rc = tk_talk(&k, "vad", vad, out, err, sizeof out);
    tk_expect_turns(out, err, rc, 1);
    static char text[1 << 16];
    td_read_file(err, text, sizeof text);
    CHECK(strstr(text, "\"speech.started\"") != NULL);
    CHECK(strstr(text, "\"speech.stopped\"") != NULL);
    CHECK(strstr(text, "\"user.tokenized\"") != NULL);
    CHECK(strstr(text, "\"transcript.delta\"") != NULL);
    CHECK(access(wav, R_OK) == 0);

    char *commit[] = { "--audio",  q,        "--commit",  "--realtime",
                       "--greedy", "--json", "--verbose", NULL };
    rc = tk_talk(&k, "commit", commit, out, err, sizeof out);
    tk_expect_turns(out, err, rc, 1);
    td_read_file(err, text, sizeof text);
    CHECK(strstr(text, "\"input.committed\"") != NULL);
    CHECK(strstr(text, "\"speech.started\"") == NULL);
    tk_stop(&k);
}

/* PCM16 both ways, at rates other than the model's. */
TEST(talk_pcm16)
{
    struct tk k;
    if (tk_start(&k, "pcm16", NULL) <= 0)
        return;
    char q[PATH_MAX + 32], out[PATH_MAX + 32], err[PATH_MAX + 32];
    REQUIRE(tk_speech(k.dir, "q", tk_question(), q, sizeof q) == 0);
    char turns[PATH_MAX + 64];
    snprintf(turns, sizeof turns, "%s,text:and then?", q);
    char *args[] = { "--turns",     turns,   "--commit",   "--codec", "pcm16",    "--rate", "16000",
                     "--out-codec", "pcm16", "--out-rate", "24000",   "--greedy", "--json", NULL };
    int rc = tk_talk(&k, "pcm16", args, out, err, sizeof out);
    tk_expect_turns(out, err, rc, 2);
    tk_stop(&k);
}

/* Barge-in: the first answer cancelled 100 ms after its first audio with what was heard; the
 * next turn is answered in full. With the tiny models the answer may be generated before the
 * listener reaches that point: then the cancel trims it (turn.truncated) instead of stopping
 * it; either way the conversation keeps what was heard. */
TEST(talk_barge_in)
{
    struct tk k;
    if (tk_start(&k, "barge", NULL) <= 0)
        return;
    char out[PATH_MAX + 32], err[PATH_MAX + 32];
    char *args[] = {
        "--turns", "text:hello there,text:go on", "--barge-in-ms", "100", "--greedy", "--json", NULL
    };
    int rc = tk_talk(&k, "barge", args, out, err, sizeof out);
    static char text[1 << 16], errtext[1 << 16];
    td_read_file(out, text, sizeof text);
    td_read_file(err, errtext, sizeof errtext);
    CHECK(rc == 0);
    const char *t0 = tk_turn_line(text, 0), *t1 = tk_turn_line(text, 1);
    CHECK(t0 && strstr(t0, "\"cancel_sent\":true"));
    int stopped = t0 && strstr(t0, "\"reason\":\"cancelled\"") != NULL;
    int trimmed = t0 && strstr(t0, "\"truncated\":true") != NULL;
    CHECK(stopped || trimmed);
    CHECK(t0 && tk_num(t0, "samples") == tk_num(t0, "audio_samples"));
    CHECK(t0 && tk_num(t0, "heard_audio_tokens") >= 1);
    /* the simulated listener heard about 100 ms at 48 kHz (the timer may fire late on a busy
     * machine; less when audio came late) */
    CHECK(t0 && tk_num(t0, "played_samples") > 0 && tk_num(t0, "played_samples") <= 2 * 4800);
    CHECK(t1 && !strstr(t1, "\"reason\":\"cancelled\"") && !strstr(t1, "\"reason\":\"error\""));
    CHECK(t1 && tk_num(t1, "samples") > 0);
    if (rc != 0 || !t0 || !t1 || !(stopped || trimmed))
        fprintf(stderr, "talk stdout:\n%s\ntalk stderr:\n%s\n", text, errtext);
    tk_stop(&k);
}

/* 32 sessions at once (limits.max_sessions, the default), each a text turn. */
TEST(talk_32_sessions)
{
    struct tk k;
    if (tk_start(&k, "many", NULL) <= 0)
        return;
    pid_t pids[N_MANY];
    char *max_new = td_quick() ? "40" : "200";
    char out[N_MANY][PATH_MAX + 32], err[PATH_MAX + 32];
    for (int i = 0; i < N_MANY; i++) {
        char seed[16];
        snprintf(seed, sizeof seed, "%d", i);
        snprintf(out[i], sizeof out[i], "%s/many%d.out", k.dir, i);
        snprintf(err, sizeof err, "%s/many%d.err", k.dir, i);
        char *argv[] = { k.talk,   "talk", "--url",  k.url,       "--text", "hello, how are you?",
                         "--seed", seed,   "--json", "--max-new", max_new,  NULL };
        pids[i] = tk_spawn(argv, out[i], err, NULL);
    }
    int ok = 0;
    static char text[1 << 16];
    for (int i = 0; i < N_MANY; i++) {
        int rc = pids[i] > 0 ? td_wait_exit(pids[i], 120000) : -2;
        td_read_file(out[i], text, sizeof text);
        const char *line = tk_turn_line(text, 0);
        int good = rc == 0 && line && tk_num(line, "samples") == tk_num(line, "audio_samples");
        ok += good;
        if (!good) {
            snprintf(err, sizeof err, "%s/many%d.err", k.dir, i);
            static char errtext[1 << 16];
            td_read_file(err, errtext, sizeof errtext);
            fprintf(stderr, "session %d (pid %d): exit %d\n%s%s\n", i, (int)pids[i], rc, text,
                    errtext);
        }
    }
    CHECK(ok == N_MANY);
    tk_stop(&k);
}

/* A client that goes away mid-answer frees its session. */
TEST(talk_hangup_frees_session)
{
    struct tk k;
    if (tk_start(&k, "hangup", NULL) <= 0)
        return;
    char out[PATH_MAX + 32], err[PATH_MAX + 32];
    char *args[] = { "--text", "hello there", "--hangup-ms", "0", "--greedy", NULL };
    int rc = tk_talk(&k, "hangup", args, out, err, sizeof out);
    CHECK(rc == 0);
    static char text[1 << 16];
    td_read_file(err, text, sizeof text);
    CHECK(strstr(text, "hung up during turn 0") != NULL); /* before its turn.done */
    int active = -1;
    for (double end = clock_ms() + 10000; clock_ms() < end; clock_sleep_ms(50))
        if ((active = (int)td_metric(k.d.http, NULL, "parley_sessions_active")) == 0)
            break;
    CHECK(active == 0);
    tk_stop(&k);
}

/* Reads lines from fd until one contains want (1), or ms pass (0). all gets what was read. */
static int tk_wait_line(int fd, const char *want, int ms, char *all, size_t cap)
{
    size_t n = strlen(all);
    for (double end = clock_ms() + ms; clock_ms() < end;) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 20) != 1)
            continue;
        ssize_t r = read(fd, all + n, cap - 1 - n);
        if (r <= 0)
            return 0;
        n += (size_t)r;
        all[n] = 0;
        if (strstr(all, want))
            return 1;
    }
    return 0;
}

/* SIGTERM while an answer streams: the client hears session.ending, the answer finishes (or
 * the session is closed at the deadline), parleyd exits 0 within drain_timeout. */
TEST(talk_sigterm_drains)
{
    struct tk k;
    if (tk_start(&k, "drain", NULL) <= 0)
        return;
    char out[PATH_MAX + 32];
    snprintf(out, sizeof out, "%s/drain.out", k.dir);
    char *argv[] = { k.talk,        "talk",     "--url",     k.url,    "--text",
                     "hello there", "--greedy", "--verbose", "--json", NULL };
    int errfd = -1;
    pid_t talk = tk_spawn(argv, out, NULL, &errfd);
    REQUIRE(talk > 0);
    static char errtext[1 << 16];
    errtext[0] = 0;
    int committed = tk_wait_line(errfd, "\"input.committed\"", 30000, errtext, sizeof errtext);
    CHECK(committed);
    double t0 = clock_ms();
    kill(k.d.pid, SIGTERM);
    int daemon_rc = td_wait_exit(k.d.pid, (DRAIN_S + 10) * 1000);
    double took = clock_ms() - t0;
    int talk_rc = td_wait_exit(talk, 10000);
    tk_wait_line(errfd, "\n\n\n", 200, errtext, sizeof errtext); /* the rest */
    close(errfd);
    k.d.pid = -1;
    CHECK(daemon_rc == 0);
    CHECK(took < (DRAIN_S + 3) * 1000.0);
    CHECK(strstr(errtext, "\"session.ending\"") != NULL);
    CHECK(talk_rc == 0 || talk_rc == 1); /* finished, or closed at the deadline */
    if (daemon_rc != 0 || !strstr(errtext, "\"session.ending\"")) {
        static char log[1 << 16];
        td_read_file(k.d.log, log, sizeof log);
        fprintf(stderr, "talk stderr:\n%s\nparleyd log:\n%s\n", errtext, log);
    }
}

/* Over limits.max_sessions: the session is refused with a server_full error and a close,
 * which talk reports (exit 1, JSON lines) and the load generator counts as a refusal. */
TEST(talk_refused_when_full)
{
    struct tk k;
    if (tk_start(&k, "full", "[limits]\nmax_sessions = 1\n") <= 0)
        return;
    char q[PATH_MAX + 32], out[PATH_MAX + 32];
    REQUIRE(tk_speech(k.dir, "q", tk_question(), q, sizeof q) == 0);
    snprintf(out, sizeof out, "%s/holder.out", k.dir);
    char *argv[] = {
        k.talk, "talk", "--url", k.url, "--audio", q, "--realtime", "--verbose", NULL
    };
    int errfd = -1;
    pid_t holder = tk_spawn(argv, out, NULL, &errfd); /* holds the one session while it speaks */
    REQUIRE(holder > 0);
    static char errtext[1 << 16];
    errtext[0] = 0;
    CHECK(tk_wait_line(errfd, "\"session.started\"", 30000, errtext, sizeof errtext));
    char out2[PATH_MAX + 32], err2[PATH_MAX + 32];
    char *args[] = { "--text", "hello", "--json", NULL };
    int rc = tk_talk(&k, "refused", args, out2, err2, sizeof out2);
    static char text[1 << 16];
    td_read_file(out2, text, sizeof text);
    CHECK(rc == 1);
    CHECK(strstr(text, "\"code\":\"server_full\"") != NULL);
    /* parleyd closes with 1013 (a browser or Node's ws sees it), but libwebsockets 4.1's client
     * parser rewrites 1012..1015 to 1002 before talk sees the close: the refusal is known by
     * the server_full error the protocol sends first. */
    CHECK(strstr(text, "{\"type\":\"closed\",\"code\":1013,") != NULL ||
          strstr(text, "{\"type\":\"closed\",\"code\":1002,") != NULL);
    CHECK(strstr(text, "\"reason\":\"server full: 1 sessions\"") != NULL);
    kill(holder, SIGKILL); /* its turn is not what this test is about */
    td_wait_exit(holder, 10000);
    close(errfd);
    if (rc != 1 || !strstr(text, "server_full"))
        fprintf(stderr, "talk stdout:\n%s\n", text);
    tk_stop(&k);
}
