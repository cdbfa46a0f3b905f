/*
 * The LM's two commands, `parley text-tokens` and `parley generate`, run as processes (the
 * `parley` binary next to this test binary) on the tiny golden model of
 * tests/golden/lm_torch.py:
 *   - text-tokens: each stdin line's ids equal bpe_encode's (ASCII, Chinese, added tokens
 *     such as <|user|> and <|audio_5|>, an empty line); --decode gives the lines back;
 *   - generate --ids ... --greedy --print-ids: exactly the ids of the library's greedy loop
 *     (lm.h + sampler, stopping where the command stops), on one stdout line; those equal
 *     PyTorch's greedy ids for the same prompt up to its first padding-row id (E8: never
 *     sampled here); --text builds the golden text turn's prompt (same ids as --ids of it),
 *     streams text on stdout and timing on stderr; seeded sampling repeats;
 *   - bad usage and bad files: exit status 2, one "parley: ..." line on stderr, no stdout.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "lm/lm.h"
#include "lm/sampler.h"
#include "runtime/gguf.h"
#include "test.h"
#include "testd.h"
#include "localhost.h"
#include "text/bpe.h"

#define GOLDEN_DIR  "build/golden"
#define GOLDEN_CMD  "/usr/bin/python3 tests/golden/lm_torch.py build/golden"
#define MODEL_PATH  GOLDEN_DIR "/lm_tiny_f32.gguf"
#define GOLDEN_PATH GOLDEN_DIR "/lm_torch.gguf"
#define MAX_NEW     16

/* A whole file as a NUL-terminated string ("" when it cannot be read). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    size_t n = 0, cap = 4096;
    char *s = malloc(cap);
    if (!s)
        abort();
    for (size_t got; f && (got = fread(s + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap && !(s = realloc(s, cap *= 2)))
            abort();
    }
    s[n] = 0;
    if (f)
        fclose(f);
    return s;
}

struct run {
    int rc;    /* exit status; -1 when killed or not run */
    char *out; /* stdout, malloc'd */
    char *err; /* stderr, malloc'd */
};

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

/* Runs parley with argv (argv[0] is replaced by the binary), `in` on stdin (may be NULL:
 * empty), no shell in between. */
static struct run run_parley(const char *exe, const char *const *argv, const char *in)
{
    struct run r = { -1, NULL, NULL };
    char pin[PATH_MAX], pout[PATH_MAX], perr[PATH_MAX];
    const char *dir = test_tmpdir();
    snprintf(pin, sizeof pin, "%s/in.txt", dir);
    snprintf(pout, sizeof pout, "%s/out.txt", dir);
    snprintf(perr, sizeof perr, "%s/err.txt", dir);
    FILE *f = fopen(pin, "wb");
    if (!f || (in && fputs(in, f) < 0) || fclose(f) != 0) {
        test_fail(__FILE__, __LINE__, "cannot write %s", pin);
        return r;
    }
    /* execv wants char *const[]: copies, made before the fork */
    char *args[64];
    int n = 0;
    args[n++] = strdup(exe);
    for (int i = 1; argv[i] && n < 63; i++)
        args[n++] = strdup(argv[i]);
    args[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fi = open(pin, O_RDONLY), fo = open(pout, O_WRONLY | O_CREAT | O_TRUNC, 0644),
            fe = open(perr, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fi < 0 || fo < 0 || fe < 0 || dup2(fi, 0) < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(127);
        execv(args[0], args);
        _exit(127);
    }
    int st = 0;
    pid_t got = pid < 0 ? -1 : waitpid(pid, &st, 0);
    for (int i = 0; i < n; i++)
        free(args[i]);
    if (got != pid) {
        test_fail(__FILE__, __LINE__, "cannot run %s", exe);
        return r;
    }
    r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(pout);
    r.err = slurp(perr);
    return r;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* "id,id,...\n" appended to a text */
static void append_ids(struct bpe_text *t, const int32_t *v, int64_t n)
{
    char num[16];
    for (int64_t i = 0; i < n; i++) {
        int k = snprintf(num, sizeof num, i ? ",%d" : "%d", v[i]);
        bpe_text_append(t, num, (size_t)k);
    }
    bpe_text_append(t, "\n", 1);
}

/* Ints from the golden file's metadata (NULL, failing the test, when absent). */
static int32_t *golden_ids(const struct gguf_file *g, const char *key, int64_t *n)
{
    const struct gguf_kv *kv;
    struct err e;
    if (gguf_get_array(g, key, GGUF_TYPE_INT64, &kv, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (regenerate: %s)", e.msg, GOLDEN_CMD);
        return NULL;
    }
    int32_t *out = malloc((kv->count + 1) * sizeof *out);
    for (uint64_t i = 0; out && i < kv->count; i++) {
        int64_t v = 0;
        gguf_array_i64(kv, i, &v);
        out[i] = (int32_t)v;
    }
    *n = (int64_t)kv->count;
    return out;
}

/* Skips (returning 0) when parley is not built next to the tests. */
static int need_cli(char *exe, size_t len)
{
    if (localhost_sibling("parley", exe, len) == 0)
        return 1;
    printf("  (parley is not built next to the test binary: CLI test skipped)\n");
    return 0;
}

TEST(lm_cli_text_tokens)
{
    char exe[PATH_MAX];
    if (!need_cli(exe, sizeof exe))
        return;
    static const char *const lines[] = {
        "Hello, world! What's 2+2?",
        "你好，世界。今天天气怎么样？",
        "<|user|>",
        "<|audio_5|>",
        "<|system|>\tmixed <|user|>文字 and <|audio_5|><|audio_0|> text<|assistant|>",
        "",
        "   spaces  around   ",
    };
    const int n_lines = (int)(sizeof lines / sizeof lines[0]);
    struct gguf_file f;
    struct bpe b;
    struct err e;
    if (gguf_open(&f, MODEL_PATH, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (generate it with: %s)", e.msg, GOLDEN_CMD);
        return;
    }
    REQUIRE(bpe_load(&b, &f, &e) == 0);
    struct bpe_text in = { 0 }, want = { 0 };
    struct bpe_ids ids = { 0 };
    for (int i = 0; i < n_lines; i++) {
        ids.n = 0;
        REQUIRE(bpe_encode(&b, &ids, lines[i], strlen(lines[i]), 0, &e) == 0);
        append_ids(&want, ids.v, ids.n);
        bpe_text_append(&in, lines[i], strlen(lines[i]));
        bpe_text_append(&in, "\n", 1);
        if (i == 2) /* an added token is its one id */
            CHECK(ids.n == 1 && ids.v[0] == bpe_added_id(&b, "<|user|>"));
        if (i == 3)
            CHECK(ids.n == 1 && ids.v[0] == bpe_added_id(&b, "<|audio_5|>") && ids.v[0] >= 0);
    }
    const char *enc[] = { "parley", "text-tokens", "--model", MODEL_PATH, NULL };
    struct run r = run_parley(exe, enc, in.v);
    CHECK(r.rc == 0);
    if (r.out && strcmp(r.out, want.v) != 0)
        test_fail(__FILE__, __LINE__, "text-tokens printed\n%s\nthe library gives\n%s", r.out,
                  want.v);
    CHECK(r.err && r.err[0] == 0);
    run_free(&r);

    /* --decode gives the lines back */
    const char *dec[] = { "parley", "text-tokens", "--decode", "--model", MODEL_PATH, NULL };
    r = run_parley(exe, dec, want.v);
    CHECK(r.rc == 0);
    if (r.out && strcmp(r.out, in.v) != 0)
        test_fail(__FILE__, __LINE__, "text-tokens --decode printed\n%s\nwanted\n%s", r.out, in.v);
    run_free(&r);

    /* a last line without its newline is still a line; a bad id line stops with exit 1 */
    r = run_parley(exe, enc, "<|user|>");
    CHECK(r.rc == 0);
    char one[32];
    snprintf(one, sizeof one, "%d\n", bpe_added_id(&b, "<|user|>"));
    CHECK(r.out && strcmp(r.out, one) == 0);
    run_free(&r);
    r = run_parley(exe, dec, "1,2\n1,x\n3\n");
    CHECK(r.rc == 1);
    CHECK(r.err && count_lines(r.err) == 1 && strncmp(r.err, "parley: line 2", 14) == 0);
    CHECK(r.out && count_lines(r.out) == 1); /* line 1 was printed */
    run_free(&r);
    r = run_parley(exe, enc, "ok\nnot \xff UTF-8\n");
    CHECK(r.rc == 1);
    CHECK(r.err && count_lines(r.err) == 1 && strncmp(r.err, "parley: line 2", 14) == 0);
    run_free(&r);
    char bad[64];
    snprintf(bad, sizeof bad, "1,%lld\n", (long long)b.n_vocab + 5);
    r = run_parley(exe, dec, bad);
    CHECK(r.rc == 1);
    CHECK(r.err && count_lines(r.err) == 1 && strncmp(r.err, "parley: line 1", 14) == 0);
    run_free(&r);

    bpe_ids_free(&ids);
    bpe_text_free(&in);
    bpe_text_free(&want);
    bpe_free(&b);
    gguf_close(&f);
}

/* The library's greedy ids for a prompt, with the command's loop: the sampler in greedy
 * mode with the padding rows masked, stopping after a stop id. */
static int64_t library_greedy(int32_t *out, int64_t *mask_from, const int32_t *prompt,
                              int64_t n_prompt, int max_new)
{
    struct err e;
    struct backend *be = backend_cpu_create(2, &e);
    struct lm_model m;
    struct lm_runner r;
    struct lm_cache c;
    struct sampler s;
    struct sampler_params sp;
    int64_t n = -1;
    if (!be || lm_load(&m, MODEL_PATH, be, NULL, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (generate it with: %s)", e.msg, GOLDEN_CMD);
        backend_free(be);
        return -1;
    }
    sampler_defaults(&sp);
    sp.greedy = 1;
    sp.mask_from = (int64_t)m.hp.audio_offset + m.hp.n_audio;
    *mask_from = sp.mask_from;
    float *logits = malloc((size_t)m.hp.n_vocab * sizeof *logits);
    if (!logits || lm_runner_init(&r, &m, 256, 1, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        goto out_model;
    }
    if (lm_cache_init(&c, &m, n_prompt + max_new, DTYPE_F32, &e) != 0 ||
        sampler_init(&s, &sp, m.hp.n_vocab, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        goto out_runner;
    }
    if (lm_prefill(&r, &c, prompt, n_prompt, logits, &e) != 0)
        goto out_all;
    for (n = 0; n < max_new;) {
        int32_t id = sampler_sample(&s, logits);
        out[n++] = id;
        if (lm_is_stop(&m.hp, id))
            break;
        int64_t one = 1;
        struct lm_cache *cp = &c;
        if (lm_forward(&r, &cp, &id, &one, 1, logits, &e) != 0) {
            n = -1;
            break;
        }
    }
out_all:
    if (n < 0)
        test_fail(__FILE__, __LINE__, "%s", e.msg);
    sampler_free(&s);
    lm_cache_free(&c);
out_runner:
    lm_runner_free(&r);
out_model:
    free(logits);
    lm_free(&m);
    backend_free(be);
    return n;
}

TEST(lm_cli_generate_ids)
{
    char exe[PATH_MAX];
    if (!need_cli(exe, sizeof exe))
        return;
    struct gguf_file g;
    struct err e;
    if (gguf_open(&g, GOLDEN_PATH, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (generate it with: %s)", e.msg, GOLDEN_CMD);
        return;
    }
    int64_t n_prompt = 0, n_torch = 0;
    int32_t *prompt = golden_ids(&g, "lm.text.ids", &n_prompt);
    int32_t *torch = golden_ids(&g, "lm.text.f32.greedy", &n_torch);
    gguf_close(&g);
    int32_t lib[MAX_NEW];
    struct bpe_text arg = { 0 }, want = { 0 };
    if (!prompt || !torch)
        goto out;
    int64_t mask_from = 0, n_lib = library_greedy(lib, &mask_from, prompt, n_prompt, MAX_NEW);
    if (n_lib <= 0)
        goto out;
    /* PyTorch's greedy run has no stop and takes the argmax over every row, padding rows
     * included (the command never picks those, E8): the same ids up to its first padding id */
    int64_t same = 0;
    while (same < n_torch && torch[same] < mask_from)
        same++;
    if (same > n_lib)
        same = n_lib;
    printf("    greedy ids equal to PyTorch's up to its first padding id: %lld\n", (long long)same);
    if (memcmp(lib, torch, (size_t)same * sizeof *lib) != 0) {
        struct bpe_text a = { 0 }, t = { 0 };
        append_ids(&a, lib, n_lib);
        append_ids(&t, torch, n_torch);
        test_fail(__FILE__, __LINE__, "library greedy ids\n%storch\n%s", a.v, t.v);
        bpe_text_free(&a);
        bpe_text_free(&t);
    }
    append_ids(&arg, prompt, n_prompt);
    arg.v[--arg.n] = 0; /* no newline in the argument */
    append_ids(&want, lib, n_lib);
    char max_new[16];
    snprintf(max_new, sizeof max_new, "%d", MAX_NEW);
    const char *argv[] = { "parley",   "generate",  "--model", MODEL_PATH,    "--ids", arg.v,
                           "--greedy", "--max-new", max_new,   "--print-ids", NULL };
    struct run r = run_parley(exe, argv, NULL);
    CHECK(r.rc == 0);
    if (r.out && strcmp(r.out, want.v) != 0)
        test_fail(__FILE__, __LINE__, "generate --print-ids printed\n%s\nthe library gives\n%s",
                  r.out, want.v);
    CHECK(r.out && count_lines(r.out) == 1);
    CHECK(r.err && strstr(r.err, "prefill: ") && strstr(r.err, "decode: "));
    printf("    %lld prompt ids, %lld greedy ids compared with the library's\n",
           (long long)n_prompt, (long long)n_lib);
    run_free(&r);

    /* one thread and a bf16 KV cache: runs, ids on one line */
    const char *argv1[] = { "parley", "generate", "--threads", "1",           "--max-new",
                            max_new,  "--model",  MODEL_PATH,  "--print-ids", "--greedy",
                            "--ids",  arg.v,      "--kv",      "bf16",        NULL };
    r = run_parley(exe, argv1, NULL);
    CHECK(r.rc == 0);
    CHECK(r.out && count_lines(r.out) == 1 && r.out[0] >= '0' && r.out[0] <= '9');
    run_free(&r);
out:
    bpe_text_free(&arg);
    bpe_text_free(&want);
    free(prompt);
    free(torch);
}

TEST(lm_cli_generate_text)
{
    char exe[PATH_MAX];
    if (!need_cli(exe, sizeof exe))
        return;
    struct gguf_file g;
    struct err e;
    if (gguf_open(&g, GOLDEN_PATH, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (generate it with: %s)", e.msg, GOLDEN_CMD);
        return;
    }
    char text[1024];
    int64_t n_prompt = 0;
    int32_t *prompt = golden_ids(&g, "lm.text.ids", &n_prompt);
    int have_text = gguf_get_str(&g, "lm.text_input", text, sizeof text, &e) == 0;
    gguf_close(&g);
    if (!have_text || !prompt) {
        test_fail(__FILE__, __LINE__, "golden lm.text_input missing (regenerate: %s)", GOLDEN_CMD);
        free(prompt);
        return;
    }
    /* the streamed answer on stdout, timing on stderr */
    const char *argv[] = { "parley", "generate", "--model",   MODEL_PATH, "--text",
                           text,     "--greedy", "--max-new", "8",        NULL };
    struct run r = run_parley(exe, argv, NULL);
    CHECK(r.rc == 0);
    CHECK(r.out && r.out[0] != 0 && r.out[strlen(r.out) - 1] == '\n');
    CHECK(r.err && strstr(r.err, "prefill: ") && strstr(r.err, "decode: "));
    CHECK(r.err && strstr(r.err, "parley:") == NULL);
    run_free(&r);
    /* the template is the golden text turn's: the same ids as that turn's prompt ids */
    struct bpe_text ids = { 0 };
    append_ids(&ids, prompt, n_prompt);
    ids.v[--ids.n] = 0;
    const char *argv2[] = { "parley",   "generate",  "--model", MODEL_PATH,    "--text", text,
                            "--greedy", "--max-new", "8",       "--print-ids", NULL };
    const char *argv2i[] = { "parley",   "generate",  "--model", MODEL_PATH,    "--ids", ids.v,
                             "--greedy", "--max-new", "8",       "--print-ids", NULL };
    r = run_parley(exe, argv2, NULL);
    struct run ri = run_parley(exe, argv2i, NULL);
    CHECK(r.rc == 0 && ri.rc == 0);
    CHECK(r.out && ri.out && r.out[0] && strcmp(r.out, ri.out) == 0);
    CHECK(r.out && count_lines(r.out) == 1);
    run_free(&r);
    run_free(&ri);
    bpe_text_free(&ids);
    /* sampling (the demo's settings) runs with a seed, the same twice */
    const char *argv3[] = { "parley", "generate", "--model",   MODEL_PATH, "--text",      text,
                            "--seed", "7",        "--max-new", "6",        "--print-ids", NULL };
    r = run_parley(exe, argv3, NULL);
    struct run r2 = run_parley(exe, argv3, NULL);
    CHECK(r.rc == 0 && r2.rc == 0);
    CHECK(r.out && r2.out && r.out[0] && strcmp(r.out, r2.out) == 0);
    run_free(&r);
    run_free(&r2);
    free(prompt);
}

/* Each run: exit 2, exactly one "parley: ..." line on stderr, nothing on stdout. */
static void check_usage_error(const char *exe, const char *const *argv, const char *why)
{
    struct run r = run_parley(exe, argv, NULL);
    if (r.rc != 2 || !r.out || r.out[0] || !r.err || count_lines(r.err) != 1 ||
        strncmp(r.err, "parley: ", 8) != 0)
        test_fail(__FILE__, __LINE__, "%s: exit %d, stdout '%s', stderr '%s'", why, r.rc,
                  r.out ? r.out : "", r.err ? r.err : "");
    run_free(&r);
}

TEST(lm_cli_bad_usage)
{
    char exe[PATH_MAX];
    if (!need_cli(exe, sizeof exe))
        return;
    char junk[PATH_MAX];
    snprintf(junk, sizeof junk, "%s/junk.gguf", test_tmpdir());
    FILE *f = fopen(junk, "wb");
    REQUIRE(f);
    fputs("GGUF but not really a GGUF file", f);
    fclose(f);
    const char *M = MODEL_PATH, *none = GOLDEN_DIR "/no-such-model.gguf",
               *other = GOLDEN_DIR "/lm_bpe.gguf";
    struct {
        const char *why;
        const char *argv[12];
    } cases[] = {
        { "generate, no model", { "parley", "generate", "--ids", "1,2", NULL } },
        { "generate, missing model file",
          { "parley", "generate", "--model", none, "--ids", "1", NULL } },
        { "generate, junk model file",
          { "parley", "generate", "--model", junk, "--ids", "1", NULL } },
        { "generate, another component's file",
          { "parley", "generate", "--model", other, "--ids", "1", NULL } },
        { "generate, the model a directory",
          { "parley", "generate", "--model", GOLDEN_DIR, "--ids", "1", NULL } },
        { "generate --ids 1,x", { "parley", "generate", "--model", M, "--ids", "1,x", NULL } },
        { "generate --ids 1,,2", { "parley", "generate", "--model", M, "--ids", "1,,2", NULL } },
        { "generate --ids 1,", { "parley", "generate", "--model", M, "--ids", "1,", NULL } },
        { "generate --ids -1", { "parley", "generate", "--model", M, "--ids", "-1", NULL } },
        { "generate --ids empty", { "parley", "generate", "--model", M, "--ids", "", NULL } },
        { "generate --ids past the vocabulary",
          { "parley", "generate", "--model", M, "--ids", "1,99999999", NULL } },
        { "generate, unknown flag",
          { "parley", "generate", "--model", M, "--ids", "1", "--bogus", NULL } },
        { "generate, unknown flag with a value",
          { "parley", "generate", "--bogus", "3", "--model", M, "--ids", "1", NULL } },
        { "generate, flag without its value",
          { "parley", "generate", "--ids", "1", "--model", NULL } },
        { "generate --max-new 0",
          { "parley", "generate", "--model", M, "--ids", "1", "--max-new", "0", NULL } },
        { "generate --kv q8_0",
          { "parley", "generate", "--model", M, "--ids", "1", "--kv", "q8_0", NULL } },
        { "generate --top-p 0",
          { "parley", "generate", "--model", M, "--ids", "1", "--top-p", "0", NULL } },
        { "generate, neither --text nor --ids", { "parley", "generate", "--model", M, NULL } },
        { "generate, both --text and --ids",
          { "parley", "generate", "--model", M, "--ids", "1", "--text", "hi", NULL } },
        { "text-tokens, no model", { "parley", "text-tokens", NULL } },
        { "text-tokens, missing model file", { "parley", "text-tokens", "--model", none, NULL } },
        { "text-tokens, junk model file", { "parley", "text-tokens", "--model", junk, NULL } },
        { "text-tokens, another component's file",
          { "parley", "text-tokens", "--model", other, NULL } },
        { "text-tokens, unknown flag", { "parley", "text-tokens", "--model", M, "--bogus", NULL } },
        { "text-tokens, --model without its value", { "parley", "text-tokens", "--model", NULL } },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_usage_error(exe, cases[i].argv, cases[i].why);
    /* a prompt longer than the context (the tiny model's 512 positions) */
    char *many = malloc(2 * 600 + 1);
    REQUIRE(many);
    for (int i = 0; i < 600; i++)
        memcpy(many + 2 * i, "1,", 2);
    many[2 * 600 - 1] = 0;
    const char *longer[] = { "parley", "generate", "--model", M, "--ids", many, NULL };
    check_usage_error(exe, longer, "generate, a prompt past the context");
    free(many);
    /* --help is not an error */
    const char *help[] = { "parley", "generate", "--help", NULL };
    struct run r = run_parley(exe, help, NULL);
    CHECK(r.rc == 0 && r.out && strstr(r.out, "usage: parley generate") == r.out);
    run_free(&r);
    remove(junk);
}
