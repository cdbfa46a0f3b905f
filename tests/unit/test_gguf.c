/*
 * Tests of the GGUF reader, writer and `parley info`: C round trips, files written by
 * deploy/gguf.py (through /usr/bin/python3 and tests/golden/gguf_python.py), byte-identical
 * output of both writers, a table of broken files each refused with its own message,
 * truncation at every byte, random corruption, the fuzz corpus, and a model-sized vocabulary.
 * Shapes in this file are PyTorch order (outermost first) unless named ne/dims (innermost).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/dtype.h"
#include "runtime/err.h"
#include "runtime/gguf.h"
#include "runtime/gguf_writer.h"
#include "runtime/tensor.h"
#include "test.h"
#include "runtime/clock.h"

#define PYTHON     "/usr/bin/python3"
#define LONG_NAME  "transformer.encoder.layers.39.self_attention.query_key_value.weight"
#define CORPUS_DIR "tests/fuzz/corpus/gguf"

/* ---- helpers --------------------------------------------------------------------------- */

static uint8_t *read_whole(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && fread(p, 1, (size_t)n, fp) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(fp);
    *size = (size_t)n;
    return p;
}

static int write_whole(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    int ok = fwrite(p, 1, n, fp) == n;
    return fclose(fp) == 0 && ok ? 0 : -1;
}

/* Runs a shell command; returns its exit status (-1 when it did not exit normally). */
static int run_cmd(const char *cmd)
{
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

/* Touches everything a successful open exposes, as model code would (the fuzzer does the
 * same); returns a checksum so the reads are not optimized away. */
static uint64_t walk(const struct gguf_file *f)
{
    uint64_t sum = 0;
    struct err e;
    char buf[256];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const struct gguf_kv *kv = &f->kv[i];
        const struct gguf_kv *arr;
        uint32_t u;
        int64_t s;
        float x;
        int b;
        sum += gguf_find(f, kv->key) == kv;
        sum += (uint64_t)gguf_get_u32(f, kv->key, &u, &e);
        sum += (uint64_t)gguf_get_i64(f, kv->key, &s, &e);
        sum += (uint64_t)gguf_get_f32(f, kv->key, &x, &e);
        sum += (uint64_t)gguf_get_bool(f, kv->key, &b, &e);
        sum += (uint64_t)gguf_get_str(f, kv->key, buf, sizeof buf, &e);
        sum += (uint64_t)gguf_get_array(f, kv->key, GGUF_TYPE_STRING, &arr, &e);
        sum += strlen(gguf_format_value(kv, buf, sizeof buf, 4, 16));
        for (uint64_t j = 0; j < kv->count && j < 64; j++) {
            struct gguf_str str = gguf_array_str(kv, j);
            sum += str.len + (str.len ? (unsigned char)str.ptr[str.len - 1] : 0);
            sum += (uint64_t)gguf_array_i64(kv, j, &s) + (uint64_t)gguf_array_f32(kv, j, &x);
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct tensor *t = &f->tensors[i], *got;
        uint64_t n = tensor_nbytes(t);
        const uint8_t *d = t->data;
        sum += gguf_tensor(f, t->name) == t;
        sum += d[0] + d[n - 1] + gguf_tensor_offset(f, t);
        sum += (uint64_t)gguf_get_tensor(f, t->name, GGUF_TYPES_ANY, 1, &t->ne[0], &got, &e);
    }
    return sum;
}

/* Builds GGUF bytes by hand, for files no writer would produce. */
struct bb {
    uint8_t *p;
    size_t n, cap;
};

static void bb_put(struct bb *b, const void *x, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}

static void bb_u32(struct bb *b, uint32_t v)
{
    bb_put(b, &v, 4);
}

static void bb_u64(struct bb *b, uint64_t v)
{
    bb_put(b, &v, 8);
}

static void bb_zeros(struct bb *b, size_t n)
{
    static const uint8_t z[256];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        bb_put(b, z, k);
        n -= k;
    }
}

static void bb_pad(struct bb *b, size_t align)
{
    bb_zeros(b, (align - b->n % align) % align);
}

static void bb_str(struct bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}

static void bb_header(struct bb *b, uint64_t n_tensors, uint64_t n_kv)
{
    bb_put(b, "GGUF", 4);
    bb_u32(b, 3);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(struct bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_TYPE_UINT32);
    bb_u32(b, v);
}

/* A tensor info; dims innermost first. */
static void bb_info(struct bb *b, const char *name, uint32_t n_dims, const uint64_t *dims,
                    uint32_t type, uint64_t off)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        bb_u64(b, dims[i]);
    bb_u32(b, type);
    bb_u64(b, off);
}

/* The usual small file: one key, tensor 'w' f32 [4] at 0, padded, 16 bytes of data. */
static void bb_good(struct bb *b)
{
    bb_header(b, 1, 1);
    bb_kv_u32(b, "a", 1);
    bb_info(b, "w", 1, (uint64_t[]){ 4 }, DTYPE_F32, 0);
    bb_pad(b, 32);
    bb_zeros(b, 16);
}

/* One tensor 'w' with the given dims/type/offset and `data` bytes of data. */
static void bb_one_tensor(struct bb *b, uint32_t n_dims, const uint64_t *dims, uint32_t type,
                          uint64_t off, size_t data)
{
    bb_header(b, 1, 0);
    bb_info(b, "w", n_dims, dims, type, off);
    bb_pad(b, 32);
    bb_zeros(b, data);
}

static int open_bytes(struct gguf_file *f, const struct bb *b, struct err *e)
{
    return gguf_open_memory(f, b->p, b->n, "model.gguf", e);
}

/* ---- the C writer and reader ----------------------------------------------------------- */

struct rt_data {
    float f32[3 * 5];
    uint16_t f16[2 * 4], bf16[7];
    struct dtype_q8_0 q8[2 * 2];
};

static void rt_fill(struct rt_data *d)
{
    float x[2 * 64];
    test_fill_uniform(d->f32, 15, -2, 2);
    test_fill_uniform(x, 8, -2, 2);
    dtype_from_f32(DTYPE_F16, x, d->f16, 8);
    test_fill_uniform(x, 7, -2, 2);
    dtype_from_f32(DTYPE_BF16, x, d->bf16, 7);
    test_fill_uniform(x, 128, -2, 2);
    dtype_from_f32(DTYPE_Q8_0, x, d->q8, 128);
}

TEST(gguf_round_trip_c_writer)
{
    static const int32_t ai32[] = { 1, -2, INT32_MIN, INT32_MAX };
    static const uint32_t au32[] = { 0, 7, UINT32_MAX };
    static const float af32[] = { 0.5f, -1e30f, 3.25f };
    static const char *const astr[] = { "alpha", "", "\xe4\xb8\x96", "tab\there" };
    struct rt_data d;
    rt_fill(&d);
    char path[512];
    snprintf(path, sizeof path, "%s/rt.gguf", test_tmpdir());

    struct gguf_writer *w = gguf_writer_new();
    REQUIRE(w != NULL);
    CHECK(gguf_writer_add_str(w, "general.architecture", "parley-test") == 0);
    CHECK(gguf_writer_add_u32(w, "k.u32", 4000000000u) == 0);
    CHECK(gguf_writer_add_i32(w, "k.i32", -123456) == 0);
    CHECK(gguf_writer_add_u64(w, "k.u64", UINT64_MAX) == 0);
    CHECK(gguf_writer_add_i64(w, "k.i64", INT64_MIN) == 0);
    CHECK(gguf_writer_add_f32(w, "k.f32", -0.375f) == 0);
    CHECK(gguf_writer_add_bool(w, "k.true", 5) == 0);
    CHECK(gguf_writer_add_bool(w, "k.false", 0) == 0);
    CHECK(gguf_writer_add_arr_i32(w, "k.ai32", ai32, 4) == 0);
    CHECK(gguf_writer_add_arr_u32(w, "k.au32", au32, 3) == 0);
    CHECK(gguf_writer_add_arr_f32(w, "k.af32", af32, 3) == 0);
    CHECK(gguf_writer_add_arr_str(w, "k.astr", astr, 4) == 0);
    CHECK(gguf_writer_add_arr_i32(w, "k.empty", NULL, 0) == 0);
    CHECK(gguf_writer_add_tensor(w, "t.f32", DTYPE_F32, 2, (int64_t[]){ 3, 5 }, d.f32) == 0);
    CHECK(gguf_writer_add_tensor(w, "t.f16", DTYPE_F16, 3, (int64_t[]){ 2, 1, 4 }, d.f16) == 0);
    CHECK(gguf_writer_add_tensor(w, "t.bf16", DTYPE_BF16, 1, (int64_t[]){ 7 }, d.bf16) == 0);
    CHECK(gguf_writer_add_tensor(w, LONG_NAME, DTYPE_Q8_0, 4, (int64_t[]){ 1, 2, 1, 64 }, d.q8) ==
          0);
    struct err e = { "" };
    CHECK(gguf_writer_write(w, path, &e) == 0);
    gguf_writer_free(w);

    struct gguf_file f;
    REQUIRE(gguf_open(&f, path, &e) == 0);
    CHECK(f.version == 3 && f.alignment == 32 && f.n_kv == 13 && f.n_tensors == 4);
    CHECK(f.data_offset % 32 == 0);
    CHECK(strcmp(f.path, path) == 0);

    char s[64];
    uint32_t u;
    int64_t i;
    float x;
    int b;
    CHECK(gguf_get_str(&f, "general.architecture", s, sizeof s, &e) == 0 &&
          strcmp(s, "parley-test") == 0);
    CHECK(gguf_get_u32(&f, "k.u32", &u, &e) == 0 && u == 4000000000u);
    CHECK(gguf_get_i64(&f, "k.i32", &i, &e) == 0 && i == -123456);
    CHECK(gguf_get_i64(&f, "k.i64", &i, &e) == 0 && i == INT64_MIN);
    CHECK(gguf_get_i64(&f, "k.u64", &i, &e) == -1 && contains(e.msg, "does not fit in i64"));
    CHECK(gguf_find(&f, "k.u64")->type == GGUF_TYPE_UINT64);
    CHECK(gguf_get_f32(&f, "k.f32", &x, &e) == 0 && x == -0.375f);
    CHECK(gguf_get_bool(&f, "k.true", &b, &e) == 0 && b == 1);
    CHECK(gguf_get_bool(&f, "k.false", &b, &e) == 0 && b == 0);

    const struct gguf_kv *kv;
    REQUIRE(gguf_get_array(&f, "k.ai32", GGUF_TYPE_INT32, &kv, &e) == 0);
    CHECK(kv->count == 4);
    for (uint64_t j = 0; j < 4; j++)
        CHECK(gguf_array_i64(kv, j, &i) == 0 && i == ai32[j]);
    CHECK(gguf_array_i64(kv, 4, &i) == -1);
    REQUIRE(gguf_get_array(&f, "k.au32", GGUF_TYPE_INT64, &kv, &e) == 0);
    for (uint64_t j = 0; j < 3; j++)
        CHECK(gguf_array_i64(kv, j, &i) == 0 && i == au32[j]);
    REQUIRE(gguf_get_array(&f, "k.af32", GGUF_TYPE_FLOAT32, &kv, &e) == 0);
    for (uint64_t j = 0; j < 3; j++)
        CHECK(gguf_array_f32(kv, j, &x) == 0 && x == af32[j]);
    REQUIRE(gguf_get_array(&f, "k.astr", GGUF_TYPE_STRING, &kv, &e) == 0);
    CHECK(kv->count == 4);
    for (uint64_t j = 0; j < 4; j++) {
        struct gguf_str str = gguf_array_str(kv, j);
        CHECK(str.len == strlen(astr[j]) && memcmp(str.ptr, astr[j], str.len) == 0);
    }
    CHECK(gguf_array_str(kv, 4).ptr == NULL);
    REQUIRE(gguf_get_array(&f, "k.empty", GGUF_TYPE_INT32, &kv, &e) == 0);
    CHECK(kv->count == 0 && gguf_array_i64(kv, 0, &i) == -1);

    static const struct {
        const char *name;
        enum dtype type;
        int n_dims;
        int64_t shape[4];
        size_t bytes;
    } want[] = {
        { "t.f32", DTYPE_F32, 2, { 3, 5 }, sizeof d.f32 },
        { "t.f16", DTYPE_F16, 3, { 2, 1, 4 }, sizeof d.f16 },
        { "t.bf16", DTYPE_BF16, 1, { 7 }, sizeof d.bf16 },
        { LONG_NAME, DTYPE_Q8_0, 4, { 1, 2, 1, 64 }, sizeof d.q8 },
    };
    const void *src[] = { d.f32, d.f16, d.bf16, d.q8 };
    uint64_t expect_off = 0;
    for (int k = 0; k < 4; k++) {
        const struct tensor *t;
        if (!CHECK(gguf_get_tensor(&f, want[k].name, GGUF_TYPES(want[k].type), want[k].n_dims,
                                   want[k].shape, &t, &e) == 0)) {
            printf("    %s\n", e.msg);
            continue;
        }
        CHECK(t == &f.tensors[k] && t->n_dims == want[k].n_dims);
        CHECK(tensor_nbytes(t) == want[k].bytes);
        CHECK(memcmp(t->data, src[k], want[k].bytes) == 0);
        uint64_t at = (uint64_t)((const uint8_t *)t->data - f.map);
        CHECK(at % 32 == 0 && at == f.data_offset + gguf_tensor_offset(&f, t));
        CHECK(gguf_tensor_offset(&f, t) == expect_off);
        expect_off += (want[k].bytes + 31) / 32 * 32;
    }
    CHECK(f.size == f.data_offset + expect_off);
    gguf_close(&f);
    gguf_close(&f); /* closing twice is harmless */
}

TEST(gguf_alignment_respected)
{
    static const uint32_t aligns[] = { 1, 8, 32, 128, 4096 };
    float x[5] = { 1, 2, 3, 4, 5 };
    for (size_t k = 0; k < sizeof aligns / sizeof aligns[0]; k++) {
        char path[512];
        struct err e;
        snprintf(path, sizeof path, "%s/a%u.gguf", test_tmpdir(), aligns[k]);
        struct gguf_writer *w = gguf_writer_new();
        CHECK(gguf_writer_set_alignment(w, aligns[k]) == 0);
        CHECK(gguf_writer_add_tensor(w, "a", DTYPE_F32, 1, (int64_t[]){ 3 }, x) == 0);
        CHECK(gguf_writer_add_tensor(w, "b", DTYPE_F32, 1, (int64_t[]){ 5 }, x) == 0);
        CHECK(gguf_writer_write(w, path, &e) == 0);
        gguf_writer_free(w);
        struct gguf_file f;
        if (!CHECK(gguf_open(&f, path, &e) == 0)) {
            printf("    %s\n", e.msg);
            continue;
        }
        CHECK(f.alignment == aligns[k]);
        CHECK(f.n_kv == (aligns[k] != 32));
        CHECK(f.data_offset % aligns[k] == 0);
        const struct tensor *b = gguf_tensor(&f, "b");
        REQUIRE(b != NULL);
        CHECK(gguf_tensor_offset(&f, b) == (12 + aligns[k] - 1) / aligns[k] * aligns[k]);
        CHECK(((const uint8_t *)b->data - f.map) % aligns[k] == 0);
        CHECK(memcmp(b->data, x, 20) == 0);
        gguf_close(&f);
    }
    struct gguf_writer *w = gguf_writer_new();
    CHECK(gguf_writer_set_alignment(w, 48) == -1);
    gguf_writer_free(w);
}

TEST(gguf_writer_refuses_bad_input)
{
    float x[64] = { 0 };
    char path[512], tmp[600];
    struct err e;
    snprintf(path, sizeof path, "%s/bad.gguf", test_tmpdir());
    char long_name[GGUF_MAX_NAME + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    static const struct {
        const char *msg;
    } cases[] = {
        { "duplicate metadata key 'k'" },
        { "empty metadata key" },
        { "duplicate tensor name 't'" },
        { "shape [3, 33] is not valid for q8_0" },
        { "shape [0, 4] is not valid for f32" },
        { "5 dimensions" },
        { "is longer than 256" },
        { "empty tensor name" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct gguf_writer *w = gguf_writer_new();
        CHECK(gguf_writer_add_u32(w, "k", 1) == 0);
        CHECK(gguf_writer_add_tensor(w, "t", DTYPE_F32, 1, (int64_t[]){ 4 }, x) == 0);
        int rc = 0;
        switch (k) {
        case 0: rc = gguf_writer_add_str(w, "k", "again"); break;
        case 1: rc = gguf_writer_add_f32(w, "", 1); break;
        case 2: rc = gguf_writer_add_tensor(w, "t", DTYPE_F32, 1, (int64_t[]){ 4 }, x); break;
        case 3: rc = gguf_writer_add_tensor(w, "q", DTYPE_Q8_0, 2, (int64_t[]){ 3, 33 }, x); break;
        case 4: rc = gguf_writer_add_tensor(w, "z", DTYPE_F32, 2, (int64_t[]){ 0, 4 }, x); break;
        case 5:
            rc = gguf_writer_add_tensor(w, "d", DTYPE_F32, 5, (int64_t[]){ 1, 1, 1, 1, 1 }, x);
            break;
        case 6: rc = gguf_writer_add_tensor(w, long_name, DTYPE_F32, 1, (int64_t[]){ 1 }, x); break;
        case 7: rc = gguf_writer_add_tensor(w, "", DTYPE_F32, 1, (int64_t[]){ 1 }, x); break;
        }
        CHECK(rc == -1);
        CHECK(gguf_writer_add_u32(w, "later", 1) == 0); /* still accepted; first error kept */
        CHECK(gguf_writer_write(w, path, &e) == -1);
        if (!CHECK(contains(e.msg, cases[k].msg) && contains(e.msg, path)))
            printf("    case %zu: '%s' lacks '%s'\n", k, e.msg, cases[k].msg);
        gguf_writer_free(w);
    }
    CHECK(access(path, F_OK) != 0); /* nothing written */

    /* an unwritable path: the message names it and no temporary file stays behind */
    struct gguf_writer *w = gguf_writer_new();
    snprintf(path, sizeof path, "%s/no/such/dir/x.gguf", test_tmpdir());
    CHECK(gguf_writer_write(w, path, &e) == -1 && contains(e.msg, "no/such/dir"));
    gguf_writer_free(w);
    snprintf(tmp, sizeof tmp, "%s/no", test_tmpdir());
    CHECK(access(tmp, F_OK) != 0);
}

/* Exactly the file twin_writer() in tests/golden/gguf_python.py writes. */
static int twin(const char *path, struct err *e)
{
    static const int32_t ai32[] = { 1, -1, 5 };
    static const uint32_t au32[] = { 1, 2, 4000000000u };
    static const float af32[] = { 0.5f, -2.0f };
    static const char *const astr[] = { "x", "yz", "" };
    float f32[6], zeros[6] = { 0 };
    uint16_t f16[4], bf16[4];
    uint8_t q8[34];
    for (int i = 0; i < 6; i++)
        f32[i] = (float)i * 0.5f;
    dtype_from_f32(DTYPE_F16, (const float[]){ 1, -2, 0.5f, 3 }, f16, 4);
    dtype_from_f32(DTYPE_BF16, (const float[]){ 1, 2, -3, 0.125f }, bf16, 4);
    for (int i = 0; i < 34; i++)
        q8[i] = (uint8_t)i;
    struct gguf_writer *w = gguf_writer_new();
    if (!w)
        return err_set(e, "out of memory");
    gguf_writer_set_alignment(w, 64);
    gguf_writer_add_u32(w, "a.u32", 7);
    gguf_writer_add_i32(w, "a.i32", -7);
    gguf_writer_add_u64(w, "a.u64", 1ull << 40);
    gguf_writer_add_i64(w, "a.i64", -(1ll << 40));
    gguf_writer_add_f32(w, "a.f32", 0.25f);
    gguf_writer_add_bool(w, "a.bool", 1);
    gguf_writer_add_str(w, "a.str", "text \xc3\xa9");
    gguf_writer_add_arr_i32(w, "a.ai32", ai32, 3);
    gguf_writer_add_arr_u32(w, "a.au32", au32, 3);
    gguf_writer_add_arr_f32(w, "a.af32", af32, 2);
    gguf_writer_add_arr_str(w, "a.astr", astr, 3);
    gguf_writer_add_tensor(w, "t.f32", DTYPE_F32, 2, (int64_t[]){ 2, 3 }, f32);
    gguf_writer_add_tensor(w, "t.f16", DTYPE_F16, 1, (int64_t[]){ 4 }, f16);
    gguf_writer_add_tensor(w, "t.bf16", DTYPE_BF16, 2, (int64_t[]){ 2, 2 }, bf16);
    gguf_writer_add_tensor(w, "t.q8_0", DTYPE_Q8_0, 2, (int64_t[]){ 1, 32 }, q8);
    gguf_writer_add_tensor(w, LONG_NAME, DTYPE_F32, 4, (int64_t[]){ 1, 1, 2, 3 }, zeros);
    int rc = gguf_writer_write(w, path, e);
    gguf_writer_free(w);
    return rc;
}

/* Runs tests/golden/gguf_python.py with args; a missing python3 or numpy is a failure. */
static int run_python(const char *args)
{
    char cmd[2048], log[600];
    snprintf(log, sizeof log, "%s/python.log", test_tmpdir());
    if (access(PYTHON, X_OK) != 0) {
        test_fail(__FILE__, __LINE__,
                  "%s is missing: these tests need python3 with numpy "
                  "(apt-get install python3-numpy)",
                  PYTHON);
        return -1;
    }
    snprintf(cmd, sizeof cmd, PYTHON " tests/golden/gguf_python.py %s >'%s' 2>&1", args, log);
    int rc = run_cmd(cmd);
    if (rc != 0) {
        size_t n = 0;
        char *out = (char *)read_whole(log, &n);
        test_fail(__FILE__, __LINE__, "'%s' failed (exit %d); python3 with numpy is needed:\n%.*s",
                  cmd, rc, out ? (int)n : 0, out ? out : "");
        free(out);
        return -1;
    }
    return 0;
}

TEST(gguf_writer_matches_python_bytes)
{
    char dir[512], c_path[600], py_path[600], args[700];
    struct err e;
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(c_path, sizeof c_path, "%s/c_twin.gguf", dir);
    snprintf(py_path, sizeof py_path, "%s/gguf_python_twin.gguf", dir);
    REQUIRE(twin(c_path, &e) == 0);
    snprintf(args, sizeof args, "'%s'", dir);
    REQUIRE(run_python(args) == 0);
    size_t n_c = 0, n_py = 0;
    uint8_t *c = read_whole(c_path, &n_c), *py = read_whole(py_path, &n_py);
    REQUIRE(c && py);
    CHECK(n_c == n_py);
    size_t first = 0;
    while (first < n_c && first < n_py && c[first] == py[first])
        first++;
    if (!CHECK(first == n_c && n_c == n_py))
        printf("    C and Python files differ first at byte %zu (%zu and %zu bytes)\n", first, n_c,
               n_py);
    free(c);
    free(py);
    /* and the independent Python reader accepts the C file in every detail */
    snprintf(args, sizeof args, "--check '%s'", c_path);
    CHECK(run_python(args) == 0);
}

static void check_near_ref(const struct gguf_file *f, const char *name, const float *ref,
                           double rel, double abs_tol)
{
    const struct tensor *t;
    struct err e;
    float got[3 * 64];
    if (!CHECK(gguf_get_tensor(f, name, GGUF_TYPES_ANY, 2, (int64_t[]){ 3, 64 }, &t, &e) == 0)) {
        printf("    %s\n", e.msg);
        return;
    }
    dtype_to_f32(t->type, t->data, got, 3 * 64);
    for (int i = 0; i < 3 * 64; i++) {
        double tol = abs_tol + rel * (ref[i] < 0 ? -ref[i] : ref[i]);
        if (!CHECK(got[i] - ref[i] <= tol && ref[i] - got[i] <= tol)) {
            printf("    %s[%d] = %.9g, reference %.9g\n", name, i, got[i], ref[i]);
            break;
        }
    }
    /* the C encoder makes exactly the bytes deploy/gguf.py made */
    uint8_t mine[3 * 64 * 4];
    dtype_from_f32(t->type, ref, mine, 3 * 64);
    if (!CHECK(memcmp(mine, t->data, tensor_nbytes(t)) == 0))
        printf("    %s: C and Python encodings differ\n", name);
}

TEST(gguf_reads_python_file)
{
    char dir[512], path[600], args[700], s[64];
    struct err e;
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(path, sizeof path, "%s/gguf_python.gguf", dir);
    snprintf(args, sizeof args, "'%s'", dir);
    REQUIRE(run_python(args) == 0);
    struct gguf_file f;
    if (gguf_open(&f, path, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    uint32_t u;
    int64_t i;
    float x;
    int b;
    CHECK(gguf_get_str(&f, "general.architecture", s, sizeof s, &e) == 0 &&
          strcmp(s, "parley-test") == 0);
    CHECK(gguf_get_u32(&f, "test.u8", &u, &e) == 0 && u == 200);
    CHECK(gguf_get_i64(&f, "test.i8", &i, &e) == 0 && i == -100);
    CHECK(gguf_get_u32(&f, "test.u16", &u, &e) == 0 && u == 60000);
    CHECK(gguf_get_i64(&f, "test.i16", &i, &e) == 0 && i == -30000);
    CHECK(gguf_get_u32(&f, "test.u32", &u, &e) == 0 && u == 4000000000u);
    CHECK(gguf_get_i64(&f, "test.i32", &i, &e) == 0 && i == -2000000000);
    CHECK(gguf_get_u32(&f, "test.i32", &u, &e) == -1 && contains(e.msg, "does not fit in u32"));
    CHECK(gguf_get_f32(&f, "test.f32", &x, &e) == 0 && x == 1.5f);
    CHECK(gguf_get_bool(&f, "test.bool", &b, &e) == 0 && b == 1);
    CHECK(gguf_get_i64(&f, "test.u64", &i, &e) == 0 && i == (1ll << 40) + 3);
    CHECK(gguf_get_u32(&f, "test.u64", &u, &e) == -1);
    CHECK(gguf_get_i64(&f, "test.u64_big", &i, &e) == -1 &&
          contains(e.msg, "9223372036854775809 does not fit in i64"));
    CHECK(gguf_get_i64(&f, "test.i64", &i, &e) == 0 && i == -(1ll << 40) - 5);
    CHECK(gguf_get_f32(&f, "test.f64", &x, &e) == 0 && x == 0.1f);
    CHECK(gguf_get_str(&f, "test.str", s, sizeof s, &e) == 0 &&
          strcmp(s, "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c") == 0);
    CHECK(gguf_get_str(&f, "test.empty_str", s, sizeof s, &e) == 0 && s[0] == 0);

    const struct gguf_kv *kv;
    REQUIRE(gguf_get_array(&f, "test.arr_u64", GGUF_TYPE_INT64, &kv, &e) == 0);
    CHECK(gguf_array_i64(kv, 0, &i) == 0 && i == 5);
    CHECK(gguf_array_i64(kv, 1, &i) == -1); /* 2^63 does not fit */
    REQUIRE(gguf_get_array(&f, "test.arr_f64", GGUF_TYPE_FLOAT32, &kv, &e) == 0);
    CHECK(gguf_array_f32(kv, 0, &x) == 0 && x == 0.25f);
    REQUIRE(gguf_get_array(&f, "test.arr_u8", GGUF_TYPE_INT64, &kv, &e) == 0);
    CHECK(gguf_array_i64(kv, 2, &i) == 0 && i == 255);
    REQUIRE(gguf_get_array(&f, "test.arr_str", GGUF_TYPE_STRING, &kv, &e) == 0);
    CHECK(kv->count == 4 && gguf_array_str(kv, 1).len == 0);
    CHECK(gguf_array_str(kv, 2).len == 5 &&
          memcmp(gguf_array_str(kv, 2).ptr, "\xc4\xa0the", 5) == 0);
    REQUIRE(gguf_get_array(&f, "test.vocab", GGUF_TYPE_STRING, &kv, &e) == 0);
    REQUIRE(kv->count == 1000);
    for (uint64_t j = 0; j < 1000; j++) {
        char tok[16];
        int n = snprintf(tok, sizeof tok, "tok%" PRIu64, j);
        struct gguf_str str = gguf_array_str(kv, j);
        if (!CHECK(str.len == (uint64_t)n && memcmp(str.ptr, tok, (size_t)n) == 0))
            break;
    }
    CHECK(gguf_get_array(&f, "test.arr_empty", GGUF_TYPE_INT32, &kv, &e) == 0 && kv->count == 0);

    const struct tensor *ref;
    REQUIRE(gguf_get_tensor(&f, "ref", GGUF_TYPES(DTYPE_F32), 2, (int64_t[]){ 3, 64 }, &ref, &e) ==
            0);
    float r[3 * 64];
    memcpy(r, ref->data, sizeof r);
    check_near_ref(&f, "w.f16", r, 1.0 / 2048, 1e-7);
    check_near_ref(&f, "w.bf16", r, 1.0 / 256, 0);
    /* q8_0: within half a step of the block's scale (3/127), plus the scale's f16 rounding */
    check_near_ref(&f, "w.q8_0", r, 1.0 / 1024, 3.0 / 127 / 2 + 1e-6);

    const struct tensor *t;
    CHECK(gguf_get_tensor(&f, LONG_NAME, GGUF_TYPES(DTYPE_F32), 2, (int64_t[]){ 2, 32 }, &t, &e) ==
              0 &&
          ((const float *)t->data)[63] == 63.0f);
    CHECK(gguf_get_tensor(&f, "vec", GGUF_TYPES(DTYPE_F32), 1, (int64_t[]){ 5 }, &t, &e) == 0 &&
          ((const float *)t->data)[4] == 5.0f);
    CHECK(gguf_get_tensor(&f, "four", GGUF_TYPES(DTYPE_F16), 4, (int64_t[]){ 2, 3, 1, 32 }, &t,
                          &e) == 0 &&
          dtype_f16_to_f32(((const uint16_t *)t->data)[191]) == 191);
    CHECK(gguf_get_tensor(&f, "scalar", GGUF_TYPES(DTYPE_F32), 1, (int64_t[]){ 1 }, &t, &e) == 0 &&
          ((const float *)t->data)[0] == 7.0f);
    CHECK(walk(&f) > 0);
    gguf_close(&f);
}

/* ---- getters and messages -------------------------------------------------------------- */

TEST(gguf_getter_messages)
{
    struct rt_data d;
    rt_fill(&d);
    char path[512], s[8];
    struct err e;
    snprintf(path, sizeof path, "%s/g.gguf", test_tmpdir());
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_add_str(w, "name", "a longer string");
    gguf_writer_add_i32(w, "neg", -1);
    gguf_writer_add_arr_i32(w, "arr", (const int32_t[]){ 1, 2 }, 2);
    gguf_writer_add_tensor(w, "blk.0.w", DTYPE_F16, 2, (int64_t[]){ 2, 4 }, d.f16);
    gguf_writer_add_tensor(w, "vec", DTYPE_F32, 1, (int64_t[]){ 15 }, d.f32);
    REQUIRE(gguf_writer_write(w, path, &e) == 0);
    gguf_writer_free(w);
    struct gguf_file f;
    REQUIRE(gguf_open(&f, path, &e) == 0);

    uint32_t u;
    int64_t i;
    float x;
    int b;
    const struct gguf_kv *kv;
    const struct tensor *t;
    static const char *const none = "no such key";
    CHECK(gguf_get_u32(&f, none, &u, &e) == -1 && contains(e.msg, "g.gguf: missing key 'no such"));
    CHECK(gguf_get_u32(&f, "name", &u, &e) == -1 &&
          contains(e.msg, "key 'name' has type str, expected an integer"));
    CHECK(gguf_get_u32(&f, "neg", &u, &e) == -1 && contains(e.msg, "'neg' = -1 does not fit"));
    CHECK(gguf_get_i64(&f, "arr", &i, &e) == -1 &&
          contains(e.msg, "key 'arr' is an array of i32, expected an integer"));
    CHECK(gguf_get_f32(&f, "neg", &x, &e) == -1 && contains(e.msg, "has type i32, expected f32"));
    CHECK(gguf_get_bool(&f, "neg", &b, &e) == -1 && contains(e.msg, "expected bool"));
    CHECK(gguf_get_str(&f, "neg", s, sizeof s, &e) == -1 && contains(e.msg, "expected str"));
    CHECK(gguf_get_str(&f, "name", s, sizeof s, &e) == -1 &&
          contains(e.msg, "string of 15 bytes does not fit in 8"));
    CHECK(gguf_get_array(&f, "arr", GGUF_TYPE_STRING, &kv, &e) == -1 &&
          contains(e.msg, "is an array of i32, expected an array of str"));
    CHECK(gguf_get_array(&f, "name", GGUF_TYPE_INT64, &kv, &e) == -1 &&
          contains(e.msg, "has type str, expected an array of integers"));
    CHECK(gguf_array_str(gguf_find(&f, "name"), 0).len == 15);
    CHECK(gguf_array_str(gguf_find(&f, "name"), 1).ptr == NULL);
    CHECK(gguf_array_str(gguf_find(&f, "arr"), 0).ptr == NULL);
    CHECK(gguf_array_i64(gguf_find(&f, "neg"), 0, &i) == 0 && i == -1);
    CHECK(gguf_array_f32(gguf_find(&f, "neg"), 0, &x) == -1);

    CHECK(gguf_get_tensor(&f, "blk.1.w", GGUF_TYPES_ANY, 1, (int64_t[]){ 4 }, &t, &e) == -1 &&
          contains(e.msg, "g.gguf: missing tensor 'blk.1.w'"));
    CHECK(gguf_get_tensor(&f, "blk.0.w", GGUF_TYPES(DTYPE_F32) | GGUF_TYPES(DTYPE_BF16), 2,
                          (int64_t[]){ 2, 4 }, &t, &e) == -1 &&
          contains(e.msg, "tensor 'blk.0.w' has type f16, expected f32, bf16"));
    CHECK(gguf_get_tensor(&f, "blk.0.w", GGUF_TYPES_FLOAT, 2, (int64_t[]){ 4, 2 }, &t, &e) == -1 &&
          contains(e.msg, "tensor 'blk.0.w' has shape [2, 4], expected [4, 2]"));
    CHECK(gguf_get_tensor(&f, "blk.0.w", GGUF_TYPES_FLOAT, 1, (int64_t[]){ 8 }, &t, &e) == -1 &&
          contains(e.msg, "expected [8]"));
    CHECK(gguf_get_tensor(&f, "blk.0.w", GGUF_TYPES_FLOAT, 3, (int64_t[]){ 1, 2, 4 }, &t, &e) == 0);
    CHECK(gguf_get_tensor(&f, "vec", GGUF_TYPES_FLOAT, 2, (int64_t[]){ 1, 15 }, &t, &e) == 0);
    CHECK(gguf_get_tensor(&f, "vec", GGUF_TYPES_FLOAT, 2, (int64_t[]){ 15, 1 }, &t, &e) == -1);
    CHECK(gguf_get_tensor(&f, "vec", GGUF_TYPES_FLOAT, 0, NULL, &t, &e) == -1);
    CHECK(gguf_find(&f, "nam") == NULL && gguf_tensor(&f, "ve") == NULL);
    gguf_close(&f);

    struct gguf_file zero;
    memset(&zero, 0, sizeof zero);
    CHECK(gguf_find(&zero, "x") == NULL && gguf_tensor(&zero, "x") == NULL);
    gguf_close(&zero);
    gguf_close(NULL);
}

TEST(gguf_format_value_shortens)
{
    struct bb b = { 0 };
    char buf[256], big[300];
    struct err e;
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    bb_header(&b, 0, 3);
    bb_str(&b, "s");
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_str(&b, "a\"b\\c\n\x01\xff\xe4\xb8\x96\xc2\x85");
    bb_str(&b, "long");
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_str(&b, big);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_INT32);
    bb_u64(&b, 20);
    for (int32_t i = 0; i < 20; i++)
        bb_u32(&b, (uint32_t)(i - 5));
    struct gguf_file f;
    REQUIRE(open_bytes(&f, &b, &e) == 0);
    gguf_format_value(gguf_find(&f, "s"), buf, sizeof buf, 4, 40);
    CHECK(strcmp(buf, "\"a\\\"b\\\\c\\n\\x01\\xff\xe4\xb8\x96\\xc2\\x85\"") == 0);
    gguf_format_value(gguf_find(&f, "long"), buf, sizeof buf, 4, 10);
    CHECK(strcmp(buf, "\"xxxxxxxxxx...\" (299 bytes)") == 0);
    gguf_format_value(gguf_find(&f, "arr"), buf, sizeof buf, 3, 10);
    CHECK(strcmp(buf, "[-5, -4, -3, ... (20 total)]") == 0);
    gguf_format_value(gguf_find(&f, "arr"), buf, 8, 3, 10); /* small buffers stay terminated */
    CHECK(strlen(buf) == 7);
    gguf_close(&f);
    free(b.p);
}

/* ---- broken files ---------------------------------------------------------------------- */

static void bad_magic(struct bb *b)
{
    bb_good(b);
    memcpy(b->p, "GGML", 4);
}

static void bad_version1(struct bb *b)
{
    bb_good(b);
    b->p[4] = 1;
}

static void bad_version4(struct bb *b)
{
    bb_good(b);
    b->p[4] = 4;
}

static void bad_big_endian(struct bb *b)
{
    bb_good(b);
    b->p[4] = 0;
    b->p[7] = 3;
}

static void bad_empty(struct bb *b)
{
    (void)b;
}

static void bad_tensor_count_overflow(struct bb *b)
{
    bb_header(b, UINT64_MAX, 0);
    bb_zeros(b, 100);
}

static void bad_tensor_count_exceeds(struct bb *b)
{
    bb_header(b, 1000, 0);
    bb_zeros(b, 200);
}

static void bad_tensor_count_short(struct bb *b)
{
    /* 3 infos could fit in the bytes left, but only one is there before the zero data */
    bb_header(b, 3, 0);
    bb_info(b, "w", 1, (uint64_t[]){ 4 }, DTYPE_F32, 0);
    for (int i = 0; i < 80; i++)
        bb_put(b, "\xff", 1);
}

static void bad_kv_count_huge(struct bb *b)
{
    bb_header(b, 0, 1ull << 63);
    bb_kv_u32(b, "a", 1);
}

static void bad_kv_count_short(struct bb *b)
{
    bb_header(b, 0, 2);
    bb_kv_u32(b, "a", 1);
    for (int i = 0; i < 16; i++)
        bb_put(b, "\xff", 1);
}

static void bad_string_past_end(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_str(b, "a");
    bb_u32(b, GGUF_TYPE_STRING);
    bb_u64(b, 1000);
    bb_put(b, "short", 5);
}

static void bad_string_huge(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_u64(b, 1ull << 63);
    bb_zeros(b, 32);
}

static void bad_array_string_past_end(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_str(b, "toks");
    bb_u32(b, GGUF_TYPE_ARRAY);
    bb_u32(b, GGUF_TYPE_STRING);
    bb_u64(b, 2);
    bb_str(b, "ok");
    bb_u64(b, 99);
    bb_put(b, "no", 2);
}

static void bad_array_count(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_str(b, "a");
    bb_u32(b, GGUF_TYPE_ARRAY);
    bb_u32(b, GGUF_TYPE_UINT32);
    bb_u64(b, 1ull << 62);
    bb_zeros(b, 16);
}

static void bad_duplicate_key(struct bb *b)
{
    bb_header(b, 0, 3);
    bb_kv_u32(b, "a", 1);
    bb_kv_u32(b, "b", 2);
    bb_kv_u32(b, "a", 3);
}

static void bad_duplicate_tensor(struct bb *b)
{
    bb_header(b, 2, 0);
    bb_info(b, "w", 1, (uint64_t[]){ 4 }, DTYPE_F32, 0);
    bb_info(b, "w", 1, (uint64_t[]){ 4 }, DTYPE_F32, 32);
    bb_pad(b, 32);
    bb_zeros(b, 64);
}

static void bad_misaligned(struct bb *b)
{
    bb_one_tensor(b, 1, (uint64_t[]){ 4 }, DTYPE_F32, 4, 64);
}

static void bad_alignment(struct bb *b, uint32_t a)
{
    bb_header(b, 1, 1);
    bb_kv_u32(b, "general.alignment", a);
    bb_info(b, "w", 1, (uint64_t[]){ 4 }, DTYPE_F32, 0);
    bb_pad(b, 32);
    bb_zeros(b, 64);
}

static void bad_alignment_0(struct bb *b)
{
    bad_alignment(b, 0);
}

static void bad_alignment_3(struct bb *b)
{
    bad_alignment(b, 3);
}

static void bad_alignment_type(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_str(b, "general.alignment");
    bb_u32(b, GGUF_TYPE_UINT64);
    bb_u64(b, 32);
}

static void bad_tensor_type(struct bb *b)
{
    bb_one_tensor(b, 1, (uint64_t[]){ 4 }, 99, 0, 64);
}

static void bad_tensor_type_foreign(struct bb *b)
{
    bb_one_tensor(b, 1, (uint64_t[]){ 32 }, 2, 0, 64);
}

static void bad_value_type(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_str(b, "a");
    bb_u32(b, 13);
    bb_u64(b, 0);
}

static void bad_array_elem_type(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_str(b, "a");
    bb_u32(b, GGUF_TYPE_ARRAY);
    bb_u32(b, 200);
    bb_u64(b, 0);
}

static void bad_nested_array(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_str(b, "nest");
    bb_u32(b, GGUF_TYPE_ARRAY);
    bb_u32(b, GGUF_TYPE_ARRAY);
    bb_u64(b, 1);
    bb_u32(b, GGUF_TYPE_UINT8);
    bb_u64(b, 0);
}

static void bad_zero_dim(struct bb *b)
{
    bb_one_tensor(b, 2, (uint64_t[]){ 4, 0 }, DTYPE_F32, 0, 64);
}

static void bad_too_many_dims(struct bb *b)
{
    bb_one_tensor(b, 5, (uint64_t[]){ 1, 1, 1, 1, 1 }, DTYPE_F32, 0, 64);
}

static void bad_no_dims(struct bb *b)
{
    bb_one_tensor(b, 0, NULL, DTYPE_F32, 0, 64);
}

static void bad_q8_block(struct bb *b)
{
    bb_one_tensor(b, 2, (uint64_t[]){ 33, 2 }, DTYPE_Q8_0, 0, 128);
}

static void bad_element_overflow(struct bb *b)
{
    bb_one_tensor(b, 2, (uint64_t[]){ 1ull << 32, 1ull << 32 }, DTYPE_F32, 0, 64);
}

static void bad_dim_too_large(struct bb *b)
{
    bb_one_tensor(b, 1, (uint64_t[]){ 1ull << 63 }, DTYPE_F32, 0, 64);
}

static void bad_byte_overflow(struct bb *b)
{
    bb_one_tensor(b, 1, (uint64_t[]){ 1ull << 62 }, DTYPE_F32, 0, 64);
}

static void bad_past_end(struct bb *b)
{
    bb_one_tensor(b, 1, (uint64_t[]){ 4 }, DTYPE_F32, 1024, 64);
}

static void bad_offset_huge(struct bb *b)
{
    bb_one_tensor(b, 1, (uint64_t[]){ 4 }, DTYPE_F32, UINT64_MAX - 31, 64);
}

static void bad_truncated_data(struct bb *b)
{
    bb_good(b);
    b->n -= 8;
}

static void bad_no_data_section(struct bb *b)
{
    bb_header(b, 1, 0);
    bb_info(b, "w", 1, (uint64_t[]){ 4 }, DTYPE_F32, 0);
}

static void bad_empty_key(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_kv_u32(b, "", 1);
}

static void bad_key_nul(struct bb *b)
{
    bb_header(b, 0, 1);
    bb_u64(b, 3);
    bb_put(b, "a\0b", 3);
    bb_u32(b, GGUF_TYPE_UINT8);
    bb_put(b, "\1", 1);
}

static void bad_empty_tensor_name(struct bb *b)
{
    bb_header(b, 1, 0);
    bb_info(b, "", 1, (uint64_t[]){ 4 }, DTYPE_F32, 0);
    bb_pad(b, 32);
    bb_zeros(b, 16);
}

static void bad_long_tensor_name(struct bb *b)
{
    char name[GGUF_MAX_NAME + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    bb_header(b, 1, 0);
    bb_info(b, name, 1, (uint64_t[]){ 4 }, DTYPE_F32, 0);
    bb_pad(b, 32);
    bb_zeros(b, 16);
}

static void bad_tensor_name_nul(struct bb *b)
{
    bb_header(b, 1, 0);
    bb_u64(b, 3);
    bb_put(b, "w\0x", 3);
    bb_u32(b, 1);
    bb_u64(b, 4);
    bb_u32(b, DTYPE_F32);
    bb_u64(b, 0);
    bb_pad(b, 32);
    bb_zeros(b, 16);
}

static void bad_overlap(struct bb *b)
{
    bb_header(b, 3, 0);
    bb_info(b, "a", 1, (uint64_t[]){ 8 }, DTYPE_F32, 64);
    bb_info(b, "b", 1, (uint64_t[]){ 8 }, DTYPE_F32, 0);
    bb_info(b, "c", 1, (uint64_t[]){ 16 }, DTYPE_F32, 32);
    bb_pad(b, 32);
    bb_zeros(b, 128);
}

TEST(gguf_refuses_broken_files)
{
    static const struct {
        const char *what;
        void (*build)(struct bb *b);
        const char *msg; /* a distinctive part of the message */
    } cases[] = {
        { "bad magic", bad_magic, "not a GGUF file (starts with 'GGML'" },
        { "version 1", bad_version1, "unsupported GGUF version 1 " },
        { "version 4", bad_version4, "unsupported GGUF version 4 " },
        { "big-endian", bad_big_endian, "version 50331648, a big-endian file?" },
        { "empty file", bad_empty, "empty file" },
        { "tensor count 2^64-1", bad_tensor_count_overflow,
          "tensor count 18446744073709551615 is more than the 100 bytes left" },
        { "tensor count > file", bad_tensor_count_exceeds, "tensor count 1000 is more than" },
        { "tensor count > infos", bad_tensor_count_short,
          "truncated file: tensor 1 name needs 18446744073709551615 bytes" },
        { "key count 2^63", bad_kv_count_huge, "key count 9223372036854775808 is more than" },
        { "key count > keys", bad_kv_count_short,
          "truncated file: key 1 name needs 18446744073709551615 bytes at offset 49" },
        { "string past end", bad_string_past_end,
          "truncated file: key 'a' string value needs 1000 bytes at offset 45, but the file "
          "ends at 50" },
        { "string length 2^63", bad_string_huge, "key 0 name needs 9223372036854775808 bytes" },
        { "array string past end", bad_array_string_past_end,
          "key 'toks' string 1 of 2 needs 99 bytes" },
        { "array count", bad_array_count, "key 'a' array of 4611686018427387904 u32 elements" },
        { "duplicate key", bad_duplicate_key, "duplicate key 'a' (keys 0 and 2)" },
        { "duplicate tensor", bad_duplicate_tensor, "duplicate tensor name 'w' (tensors 0 and 1)" },
        { "misaligned offset", bad_misaligned,
          "tensor 'w': offset 4 is not a multiple of the alignment 32" },
        { "alignment 0", bad_alignment_0, "general.alignment 0 is not a nonzero power of two" },
        { "alignment 3", bad_alignment_3, "general.alignment 3 is not a nonzero power of two" },
        { "alignment u64", bad_alignment_type, "general.alignment has type u64, expected u32" },
        { "unknown tensor type", bad_tensor_type, "tensor 'w': unknown type 99" },
        { "foreign tensor type", bad_tensor_type_foreign,
          "tensor 'w': type 2 (q4_0) is not supported" },
        { "unknown value type", bad_value_type, "key 'a': unknown value type 13" },
        { "unknown array type", bad_array_elem_type, "key 'a': unknown array element type 200" },
        { "array of arrays", bad_nested_array, "key 'nest': arrays of arrays are not supported" },
        { "zero dim", bad_zero_dim, "tensor 'w': shape [0, 4] has a zero dimension" },
        { "5 dims", bad_too_many_dims, "tensor 'w': 5 dimensions (parley supports 1 to 4)" },
        { "0 dims", bad_no_dims, "tensor 'w': 0 dimensions" },
        { "q8_0 partial block", bad_q8_block,
          "tensor 'w': q8_0 rows of 33 elements are not whole blocks of 32" },
        { "element overflow", bad_element_overflow,
          "element count of shape [4294967296, 4294967296] overflows" },
        { "dim 2^63", bad_dim_too_large, "shape [9223372036854775808] has a dimension too large" },
        { "byte overflow", bad_byte_overflow,
          "byte size of shape [4611686018427387904] overflows" },
        { "tensor past end", bad_past_end,
          "tensor 'w': data [offset 1024, 16 bytes) at file offset 64 ends past end of file "
          "(128 bytes)" },
        { "offset near 2^64", bad_offset_huge, "data [offset 18446744073709551584, 16 bytes)" },
        { "truncated data", bad_truncated_data,
          "tensor 'w': data [offset 0, 16 bytes) at file offset 96 ends past end of file "
          "(104 bytes)" },
        { "no data section", bad_no_data_section, "the data section starts at offset 64" },
        { "empty key", bad_empty_key, "key 0 has an empty name" },
        { "NUL in key", bad_key_nul, "key 0 'a\\x00b' contains a NUL byte" },
        { "empty tensor name", bad_empty_tensor_name, "tensor 0 has an empty name" },
        { "257-byte tensor name", bad_long_tensor_name, "name of 257 bytes is longer than 256" },
        { "NUL in tensor name", bad_tensor_name_nul, "name contains a NUL byte" },
        { "overlap", bad_overlap,
          "tensors 'c' [offset 32, 64 bytes) and 'a' [offset 64, 32 bytes) overlap" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct bb b = { 0 };
        struct gguf_file f;
        struct err e = { "" };
        cases[k].build(&b);
        int rc = open_bytes(&f, &b, &e);
        if (!CHECK(rc == -1) || !CHECK(strncmp(e.msg, "model.gguf: ", 12) == 0) ||
            !CHECK(contains(e.msg, cases[k].msg)))
            printf("    %s: got \"%s\"\n      wanted \"%s\"\n", cases[k].what,
                   rc ? e.msg : "success", cases[k].msg);
        CHECK(f.map == NULL && f.kv == NULL && f.tensors == NULL); /* failed opens are zeroed */
        gguf_close(&f);
        free(b.p);
    }

    /* the message for a file on disk names the file */
    char path[512];
    struct bb b = { 0 };
    struct gguf_file f;
    struct err e;
    bad_tensor_type(&b);
    snprintf(path, sizeof path, "%s/bad.gguf", test_tmpdir());
    REQUIRE(write_whole(path, b.p, b.n) == 0);
    CHECK(gguf_open(&f, path, &e) == -1 && strncmp(e.msg, path, strlen(path)) == 0 &&
          contains(e.msg, "unknown type 99"));
    free(b.p);
}

TEST(gguf_accepts_edge_files)
{
    struct bb b = { 0 };
    struct gguf_file f;
    struct err e = { "" };
    char name[GGUF_MAX_NAME + 1];

    /* version 2, a 256-byte name, alignment 1, a q8_0 tensor and trailing bytes */
    memset(name, 'n', GGUF_MAX_NAME);
    name[GGUF_MAX_NAME] = 0;
    bb_header(&b, 2, 1);
    b.p[4] = 2;
    bb_kv_u32(&b, "general.alignment", 1);
    bb_info(&b, name, 1, (uint64_t[]){ 4 }, DTYPE_F32, 0);
    bb_info(&b, "q", 2, (uint64_t[]){ 32, 1 }, DTYPE_Q8_0, 16);
    bb_zeros(&b, 16 + 34 + 5);
    if (!CHECK(open_bytes(&f, &b, &e) == 0))
        printf("    %s\n", e.msg);
    CHECK(f.version == 2 && f.alignment == 1 && gguf_tensor(&f, name) != NULL);
    CHECK(walk(&f) > 0);
    gguf_close(&f);
    free(b.p);

    /* the smallest file: a header and nothing else */
    b = (struct bb){ 0 };
    bb_header(&b, 0, 0);
    CHECK(open_bytes(&f, &b, &e) == 0 && f.n_kv == 0 && f.n_tensors == 0);
    CHECK(gguf_find(&f, "x") == NULL && gguf_tensor(&f, "x") == NULL);
    gguf_close(&f);
    free(b.p);
}

TEST(gguf_refuses_every_truncation)
{
    struct rt_data d;
    rt_fill(&d);
    char path[512];
    struct err e;
    snprintf(path, sizeof path, "%s/t.gguf", test_tmpdir());
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_add_str(w, "general.architecture", "x");
    gguf_writer_add_arr_str(w, "toks", (const char *const[]){ "a", "bb" }, 2);
    gguf_writer_add_arr_f32(w, "scores", (const float[]){ 1, 2 }, 2);
    gguf_writer_add_tensor(w, "a", DTYPE_F32, 1, (int64_t[]){ 15 }, d.f32);
    gguf_writer_add_tensor(w, "b", DTYPE_Q8_0, 2, (int64_t[]){ 2, 64 }, d.q8);
    REQUIRE(gguf_writer_write(w, path, &e) == 0);
    gguf_writer_free(w);
    size_t n;
    uint8_t *full = read_whole(path, &n);
    REQUIRE(full != NULL);
    size_t data_end = n - (32 - 4 * 34 % 32) % 32; /* the file ends with b's padding */
    int failures = 0;
    for (size_t cut = 0; cut < n; cut++) {
        /* a copy of exactly cut bytes, so ASan sees any read past the end */
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, full, cut);
        struct gguf_file f;
        int rc = gguf_open_memory(&f, p, cut, "t.gguf", &e);
        if (cut < data_end) {
            int ok = rc == -1 &&
                     (contains(e.msg, "truncated file") ||
                      contains(e.msg, "bytes left in the file can hold") ||
                      contains(e.msg, "ends past end of file") || contains(e.msg, "empty file"));
            if (!ok && failures++ < 5)
                test_fail(__FILE__, __LINE__, "cut at %zu of %zu: %s", cut, n,
                          rc ? e.msg : "accepted");
        } else {
            CHECK(rc == 0); /* only padding is missing */
        }
        gguf_close(&f);
        free(p);
    }
    CHECK(failures == 0);
    free(full);
}

TEST(gguf_survives_random_corruption)
{
    struct rt_data d;
    rt_fill(&d);
    char path[512];
    struct err e;
    snprintf(path, sizeof path, "%s/c.gguf", test_tmpdir());
    REQUIRE(twin(path, &e) == 0);
    size_t n;
    uint8_t *full = read_whole(path, &n);
    REQUIRE(full != NULL);
    int rounds = getenv("PARLEY_TEST_QUICK") ? 2000 : 20000, opened = 0;
    uint8_t *p = malloc(n);
    for (int r = 0; r < rounds; r++) {
        memcpy(p, full, n);
        int flips = 1 + (int)(test_rand_u64() % 4);
        for (int k = 0; k < flips; k++) {
            /* mostly in the header, where the structure is */
            size_t at = (size_t)(test_rand_u64() % (k & 1 ? n : 400));
            uint64_t v = test_rand_u64();
            p[at] = (v & 3) == 0 ? 0xff : (v & 3) == 1 ? 0 : (uint8_t)(v >> 8);
        }
        size_t len = test_rand_u64() % 8 == 0 ? (size_t)(test_rand_u64() % n) : n;
        struct gguf_file f;
        if (gguf_open_memory(&f, p, len, "c.gguf", &e) == 0) {
            opened++;
            walk(&f);
        } else {
            CHECK(strncmp(e.msg, "c.gguf: ", 8) == 0);
        }
        gguf_close(&f);
    }
    CHECK(opened > 0 && opened < rounds);
    free(p);
    free(full);
}

TEST(gguf_open_file_errors)
{
    struct gguf_file f;
    struct err e;
    char path[512];
    CHECK(gguf_open(&f, "/nonexistent/model.gguf", &e) == -1 &&
          strcmp(e.msg, "/nonexistent/model.gguf: No such file or directory") == 0);
    CHECK(gguf_open(&f, test_tmpdir(), &e) == -1 && contains(e.msg, "not a regular file"));
    snprintf(path, sizeof path, "%s/empty.gguf", test_tmpdir());
    REQUIRE(write_whole(path, "", 0) == 0);
    CHECK(gguf_open(&f, path, &e) == -1 && contains(e.msg, "empty.gguf: empty file"));
    REQUIRE(write_whole(path, "GG", 2) == 0);
    CHECK(gguf_open(&f, path, &e) == -1 && contains(e.msg, "truncated file"));
    REQUIRE(write_whole(path, "<htm", 4) == 0);
    CHECK(gguf_open(&f, path, &e) == -1 && contains(e.msg, "not a GGUF file (starts with '<htm'"));
    gguf_close(&f);
}

/* ---- model-sized files ----------------------------------------------------------------- */

TEST(gguf_large_vocabulary_and_many_tensors)
{
    enum { N_VOCAB = 170000, N_TENSORS = 1000 };
    char path[512], (*names)[64] = malloc(N_TENSORS * sizeof *names), **toks;
    float x[32] = { 0 };
    struct err e;
    snprintf(path, sizeof path, "%s/big.gguf", test_tmpdir());
    toks = malloc(N_VOCAB * sizeof *toks);
    for (int i = 0; i < N_VOCAB; i++) {
        char t[32];
        snprintf(t, sizeof t, "tok_%d", i);
        toks[i] = strdup(t);
    }
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, N_VOCAB);
    for (int i = 0; i < N_TENSORS; i++) {
        snprintf(names[i], sizeof names[i], "transformer.encoder.layers.%d.mlp.weight", i);
        gguf_writer_add_tensor(w, names[i], DTYPE_F32, 1, (int64_t[]){ 32 }, x);
    }
    REQUIRE(gguf_writer_write(w, path, &e) == 0);
    gguf_writer_free(w);

    struct gguf_file f;
    double t0 = clock_ms();
    int rc = gguf_open(&f, path, &e);
    double ms = clock_ms() - t0;
    REQUIRE(rc == 0);
    printf("    open: %d vocabulary strings, %d tensors, %zu bytes in %.1f ms\n", N_VOCAB,
           N_TENSORS, f.size, ms);
    CHECK(ms < 2000); /* O(n^2) duplicate checks would take far longer */
    const struct gguf_kv *kv = gguf_find(&f, "tokenizer.ggml.tokens");
    REQUIRE(kv && kv->count == N_VOCAB);
    for (int i = 0; i < N_VOCAB; i += 997) {
        struct gguf_str s = gguf_array_str(kv, (uint64_t)i);
        CHECK(s.len == strlen(toks[i]) && memcmp(s.ptr, toks[i], s.len) == 0);
    }
    for (int i = 0; i < N_TENSORS; i++)
        if (!CHECK(gguf_tensor(&f, names[i]) == &f.tensors[i]))
            break;
    gguf_close(&f);
    for (int i = 0; i < N_VOCAB; i++)
        free(toks[i]);
    free(toks);
    free(names);
}

/* ---- the CLI --------------------------------------------------------------------------- */

/* build/<dir>/parley beside this test binary. */
static int cli_path(char *buf, size_t len)
{
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = 0;
    snprintf(buf, len, "%s/parley", dirname(exe));
    if (access(buf, X_OK) != 0) {
        test_fail(__FILE__, __LINE__, "%s not found: build it beside the tests (make ... %s)", buf,
                  buf);
        return -1;
    }
    return 0;
}

/* Runs `parley args`, capturing stdout and stderr into malloc'd strings. */
static int run_cli(const char *cli, const char *args, char **out, char **err_out)
{
    char cmd[4096], o[600], eo[600];
    size_t n;
    snprintf(o, sizeof o, "%s/cli.out", test_tmpdir());
    snprintf(eo, sizeof eo, "%s/cli.err", test_tmpdir());
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s'", cli, args, o, eo);
    int rc = run_cmd(cmd);
    *out = (char *)read_whole(o, &n);
    if (*out)
        *out = realloc(*out, n + 1), (*out)[n] = 0;
    *err_out = (char *)read_whole(eo, &n);
    if (*err_out)
        *err_out = realloc(*err_out, n + 1), (*err_out)[n] = 0;
    return rc;
}

static int one_line(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && s[n - 1] == '\n' && memchr(s, '\n', n - 1) == NULL;
}

TEST(gguf_cli_info)
{
    char cli[1100], good[512], bad[512], args[700];
    char *out = NULL, *err_out = NULL;
    struct err e;
    REQUIRE(cli_path(cli, sizeof cli) == 0);
    snprintf(good, sizeof good, "%s/good.gguf", test_tmpdir());
    snprintf(bad, sizeof bad, "%s/bad.gguf", test_tmpdir());
    REQUIRE(twin(good, &e) == 0);

    snprintf(args, sizeof args, "info '%s'", good);
    CHECK(run_cli(cli, args, &out, &err_out) == 0);
    REQUIRE(out && err_out);
    CHECK(err_out[0] == 0);
    static const char *const want[] = {
        "version    3",
        "alignment  64",
        "size       1024 bytes",
        "metadata: 12 keys",
        "a.u64",
        "1099511627776",
        "arr[str]",
        "\"text \xc3\xa9\"",
        "[1, -1, 5]",
        "tensors: 5",
        "t.f32",
        "[2, 3]",
        LONG_NAME,
        "[1, 1, 2, 3]",
        "q8_0",
        "t.bf16",
        "totals: 5 tensors, 52 params",
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        if (!CHECK(contains(out, want[k])))
            printf("    output lacks '%s'\n", want[k]);
    free(out);
    free(err_out);

    struct bb b = { 0 };
    bad_duplicate_tensor(&b);
    REQUIRE(write_whole(bad, b.p, b.n) == 0);
    free(b.p);
    snprintf(args, sizeof args, "info '%s'", bad);
    CHECK(run_cli(cli, args, &out, &err_out) == 2);
    CHECK(one_line(err_out) && strncmp(err_out, "parley: ", 8) == 0 &&
          contains(err_out, "duplicate tensor name 'w'") && contains(err_out, bad));
    CHECK(out[0] == 0);
    free(out);
    free(err_out);

    static const struct {
        const char *args;
        int rc;
        const char *err; /* NULL: usage, several lines */
    } usage[] = {
        { "info /nonexistent.gguf", 2, "parley: /nonexistent.gguf: No such file or directory\n" },
        { "info", 2, "parley: usage: parley info FILE.gguf\n" },
        { "info a b", 2, "parley: usage: parley info FILE.gguf\n" },
        { "frobnicate", 2, "parley: unknown command 'frobnicate' (try 'parley --help')\n" },
        { "", 2, NULL },
        { "--help", 0, "" },
        { "info --help", 0, "" },
    };
    for (size_t k = 0; k < sizeof usage / sizeof usage[0]; k++) {
        int rc = run_cli(cli, usage[k].args, &out, &err_out);
        CHECK(rc == usage[k].rc);
        if (usage[k].err)
            CHECK(strcmp(err_out, usage[k].err) == 0);
        else
            CHECK(contains(err_out, "usage: parley <command>") && contains(err_out, "info"));
        if (usage[k].rc == 0)
            CHECK(contains(out, "usage: parley"));
        free(out);
        free(err_out);
    }
}

/* ---- the fuzz corpus ------------------------------------------------------------------- */

TEST(gguf_fuzz_corpus_replay)
{
    DIR *dir = opendir(CORPUS_DIR);
    if (!dir) {
        test_fail(__FILE__, __LINE__, "%s: %s (run the tests from the repository root)", CORPUS_DIR,
                  strerror(errno));
        return;
    }
    int files = 0, valid = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        char path[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, de->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        size_t n;
        uint8_t *data = read_whole(path, &n);
        if (!CHECK(data != NULL))
            continue;
        /* an exact-size copy so that ASan sees a read past the end */
        uint8_t *p = malloc(n ? n : 1);
        memcpy(p, data, n);
        struct gguf_file f;
        struct err e;
        if (gguf_open_memory(&f, p, n, de->d_name, &e) == 0) {
            valid++;
            walk(&f);
        } else {
            CHECK(strncmp(e.msg, de->d_name, strlen(de->d_name)) == 0);
        }
        gguf_close(&f);
        free(p);
        free(data);
        files++;
    }
    closedir(dir);
    CHECK(files > 0);
    CHECK(valid > 0 && valid < files); /* the corpus holds good and broken files */
}

/* Dropping a tensor's pages: its values read the same afterwards (the pages come back from the
 * file), and so does the tensor beside it; a memory buffer is left alone. */
TEST(gguf_drop_pages_keeps_values)
{
    const int64_t n = 5000; /* several pages of f32 */
    float *a = malloc((size_t)n * sizeof *a), *b = malloc(64 * sizeof *b);
    REQUIRE(a && b);
    for (int64_t i = 0; i < n; i++)
        a[i] = (float)i * 0.5f - 7.0f;
    for (int i = 0; i < 64; i++)
        b[i] = (float)-i;
    char path[512];
    snprintf(path, sizeof path, "%s/drop.gguf", test_tmpdir());
    struct gguf_writer *w = gguf_writer_new();
    REQUIRE(w != NULL);
    CHECK(gguf_writer_add_tensor(w, "a", DTYPE_F32, 1, (int64_t[]){ n }, a) == 0);
    CHECK(gguf_writer_add_tensor(w, "b", DTYPE_F32, 1, (int64_t[]){ 64 }, b) == 0);
    struct err e = { "" };
    REQUIRE(gguf_writer_write(w, path, &e) == 0);
    gguf_writer_free(w);
    struct gguf_file f;
    REQUIRE(gguf_open(&f, path, &e) == 0);
    const struct tensor *ta, *tb;
    REQUIRE(gguf_get_tensor(&f, "a", GGUF_TYPES_ANY, 1, (int64_t[]){ n }, &ta, &e) == 0);
    REQUIRE(gguf_get_tensor(&f, "b", GGUF_TYPES_ANY, 1, (int64_t[]){ 64 }, &tb, &e) == 0);
    CHECK(memcmp(ta->data, a, (size_t)n * sizeof *a) == 0);
    gguf_drop_pages(&f, ta);
    CHECK(memcmp(ta->data, a, (size_t)n * sizeof *a) == 0);
    CHECK(memcmp(tb->data, b, 64 * sizeof *b) == 0);
    gguf_close(&f);

    /* a buffer the caller owns: nothing dropped, nothing zeroed */
    FILE *fp = fopen(path, "rb");
    REQUIRE(fp != NULL);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    rewind(fp);
    uint8_t *mem = aligned_alloc(4096, ((size_t)size + 4095) & ~(size_t)4095);
    REQUIRE(mem && fread(mem, 1, (size_t)size, fp) == (size_t)size);
    fclose(fp);
    REQUIRE(gguf_open_memory(&f, mem, (size_t)size, "drop.gguf", &e) == 0);
    REQUIRE(gguf_get_tensor(&f, "a", GGUF_TYPES_ANY, 1, (int64_t[]){ n }, &ta, &e) == 0);
    gguf_drop_pages(&f, ta);
    CHECK(memcmp(ta->data, a, (size_t)n * sizeof *a) == 0);
    gguf_close(&f);
    free(mem), free(a), free(b);
}
