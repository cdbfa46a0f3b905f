/* The text tokenizer against the Python reference (tests/golden/lm_ref.py, a hand-written
 * scanner of the pre-tokenizer regex and tiktoken's merge rule): ids of >= 1000 varied
 * strings (build/golden/lm_bpe.gguf), their decoding, invalid UTF-8 on decode, streaming
 * decode, the chat prompts of lm_torch.gguf, and bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gguf.h"
#include "test.h"
#include "text/bpe.h"

#define GOLDEN_CMD "/usr/bin/python3 tests/golden/lm_torch.py build/golden"

static int open_file(struct gguf_file *f, const char *path)
{
    struct err e;
    if (gguf_open(f, path, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (generate it with: %s)", e.msg, GOLDEN_CMD);
        return -1;
    }
    return 0;
}

static int open_bpe(struct gguf_file *m, struct bpe *b)
{
    struct err e;
    if (open_file(m, "build/golden/lm_tiny_f32.gguf"))
        return -1;
    if (bpe_load(b, m, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        gguf_close(m);
        return -1;
    }
    return 0;
}

/* The tokenizer and the golden file at path, or nothing open (-1). */
static int open_bpe_with(struct gguf_file *m, struct bpe *b, struct gguf_file *g, const char *path)
{
    if (open_bpe(m, b))
        return -1;
    if (open_file(g, path)) {
        bpe_free(b);
        gguf_close(m);
        return -1;
    }
    return 0;
}

static const struct gguf_kv *arr(const struct gguf_file *f, const char *key, enum gguf_type t)
{
    const struct gguf_kv *kv = NULL;
    struct err e;
    if (gguf_get_array(f, key, t, &kv, &e) != 0)
        test_fail(__FILE__, __LINE__, "%s (regenerate: %s)", e.msg, GOLDEN_CMD);
    return kv;
}

static int64_t at(const struct gguf_kv *kv, uint64_t i)
{
    int64_t v = -1;
    gguf_array_i64(kv, i, &v);
    return v;
}

TEST(bpe_encode_corpus)
{
    struct gguf_file m, g;
    struct bpe b;
    if (open_bpe_with(&m, &b, &g, "build/golden/lm_bpe.gguf"))
        return;
    const struct gguf_kv *strs = arr(&g, "bpe.strings", GGUF_TYPE_STRING);
    const struct gguf_kv *ids = arr(&g, "bpe.ids", GGUF_TYPE_INT64);
    const struct gguf_kv *offs = arr(&g, "bpe.offsets", GGUF_TYPE_INT64);
    REQUIRE(strs && ids && offs && offs->count == strs->count + 1);
    struct bpe_ids out = { 0 };
    struct bpe_text txt = { 0 }, st = { 0 };
    struct err e;
    int64_t bad = 0, bad_dec = 0, bad_stream = 0;
    for (uint64_t i = 0; i < strs->count; i++) {
        struct gguf_str s = gguf_array_str(strs, i);
        out.n = 0;
        if (bpe_encode(&b, &out, s.ptr, s.len, 0, &e) != 0) {
            test_fail(__FILE__, __LINE__, "string %llu: %s", (unsigned long long)i, e.msg);
            bad++;
            continue;
        }
        int64_t o0 = at(offs, i), o1 = at(offs, i + 1);
        int same = out.n == o1 - o0;
        for (int64_t k = 0; same && k < out.n; k++)
            same = out.v[k] == at(ids, (uint64_t)(o0 + k));
        if (!same && bad++ < 5) {
            char esc[200];
            test_fail(__FILE__, __LINE__, "string %llu \"%s\": %lld ids, reference %lld",
                      (unsigned long long)i, gguf_escape(esc, sizeof esc, s.ptr, s.len, 60),
                      (long long)out.n, (long long)(o1 - o0));
        }
        /* decoding gives the text back, and streaming gives the same text */
        txt.n = 0;
        st.n = 0;
        struct bpe_stream stream = { { 0 }, 0 };
        CHECK(bpe_decode(&b, &txt, out.v, out.n, &e) == 0);
        for (int64_t k = 0; k < out.n; k++)
            CHECK(bpe_stream_push(&b, &stream, &st, out.v[k], &e) == 0);
        CHECK(bpe_stream_flush(&stream, &st, &e) == 0);
        if ((txt.n != s.len || memcmp(txt.v, s.ptr, s.len) != 0) && bad_dec++ < 5)
            test_fail(__FILE__, __LINE__, "string %llu does not decode back",
                      (unsigned long long)i);
        if ((st.n != txt.n || memcmp(st.v, txt.v, txt.n) != 0) && bad_stream++ < 5)
            test_fail(__FILE__, __LINE__, "string %llu: streaming decode differs",
                      (unsigned long long)i);
    }
    printf("    %llu strings: %lld encode mismatches, %lld decode mismatches\n",
           (unsigned long long)strs->count, (long long)bad, (long long)bad_dec);
    CHECK(strs->count >= 1000);
    CHECK(bad == 0);
    bpe_ids_free(&out);
    bpe_text_free(&txt);
    bpe_text_free(&st);
    bpe_free(&b);
    gguf_close(&g);
    gguf_close(&m);
}

TEST(bpe_decode_invalid_utf8)
{
    struct gguf_file m, g;
    struct bpe b;
    if (open_bpe_with(&m, &b, &g, "build/golden/lm_bpe.gguf"))
        return;
    const struct gguf_kv *ids = arr(&g, "bpe.decode_ids", GGUF_TYPE_INT64);
    const struct gguf_kv *offs = arr(&g, "bpe.decode_offsets", GGUF_TYPE_INT64);
    const struct gguf_kv *texts = arr(&g, "bpe.decode_texts", GGUF_TYPE_STRING);
    REQUIRE(ids && offs && texts && offs->count == texts->count + 1);
    struct err e;
    for (uint64_t i = 0; i < texts->count; i++) {
        int32_t v[256];
        int64_t n = at(offs, i + 1) - at(offs, i);
        REQUIRE(n <= 256);
        for (int64_t k = 0; k < n; k++)
            v[k] = (int32_t)at(ids, (uint64_t)(at(offs, i) + k));
        struct bpe_text t = { 0 }, st = { 0 };
        struct bpe_stream s = { { 0 }, 0 };
        CHECK(bpe_decode(&b, &t, v, n, &e) == 0);
        for (int64_t k = 0; k < n; k++)
            CHECK(bpe_stream_push(&b, &s, &st, v[k], &e) == 0);
        CHECK(bpe_stream_flush(&s, &st, &e) == 0);
        struct gguf_str want = gguf_array_str(texts, i);
        if (t.n != want.len || memcmp(t.v, want.ptr, want.len) != 0)
            test_fail(__FILE__, __LINE__, "decode case %llu differs from Python's 'replace'",
                      (unsigned long long)i);
        CHECK(st.n == t.n && memcmp(st.v, t.v, t.n) == 0);
        bpe_text_free(&t);
        bpe_text_free(&st);
    }
    /* the stream holds an incomplete character back: 你 = E4 BD A0 in three byte tokens */
    struct bpe_text t = { 0 };
    struct bpe_stream s = { { 0 }, 0 };
    int32_t e4 = -1, bd = -1, a0 = -1;
    for (int64_t i = 0; i < b.n_base; i++) {
        if (b.tokens[i].len == 1 && (uint8_t)b.tokens[i].ptr[0] == 0xE4)
            e4 = (int32_t)i;
        if (b.tokens[i].len == 1 && (uint8_t)b.tokens[i].ptr[0] == 0xBD)
            bd = (int32_t)i;
        if (b.tokens[i].len == 1 && (uint8_t)b.tokens[i].ptr[0] == 0xA0)
            a0 = (int32_t)i;
    }
    REQUIRE(e4 >= 0 && bd >= 0 && a0 >= 0);
    CHECK(bpe_stream_push(&b, &s, &t, e4, &e) == 0 && t.n == 0);
    CHECK(bpe_stream_push(&b, &s, &t, bd, &e) == 0 && t.n == 0);
    CHECK(bpe_stream_push(&b, &s, &t, a0, &e) == 0 && t.n == 3 && strcmp(t.v, "你") == 0);
    bpe_text_free(&t);
    /* ids without a token */
    int32_t none[1] = { (int32_t)b.n_vocab };
    CHECK(bpe_decode(&b, &t, none, 1, &e) == -1 && strstr(e.msg, "has no token"));
    none[0] = -3;
    CHECK(bpe_decode(&b, &t, none, 1, &e) == -1);
    bpe_text_free(&t);
    bpe_free(&b);
    gguf_close(&g);
    gguf_close(&m);
}

TEST(bpe_prompts_and_bad_input)
{
    struct gguf_file m, g;
    struct bpe b;
    if (open_bpe_with(&m, &b, &g, "build/golden/lm_torch.gguf"))
        return;
    static const char *const turns[] = { "text", "audio", "turn2" };
    struct err e;
    for (int t = 0; t < 3; t++) {
        char key[64], prompt[8192];
        snprintf(key, sizeof key, "lm.%s.prompt", turns[t]);
        REQUIRE(gguf_get_str(&g, key, prompt, sizeof prompt, &e) == 0);
        snprintf(key, sizeof key, "lm.%s.ids", turns[t]);
        const struct gguf_kv *want = arr(&g, key, GGUF_TYPE_INT64);
        REQUIRE(want);
        struct bpe_ids out = { 0 };
        CHECK(bpe_encode(&b, &out, prompt, strlen(prompt), 1, &e) == 0);
        int same = out.n == (int64_t)want->count;
        for (int64_t k = 0; same && k < out.n; k++)
            same = out.v[k] == at(want, (uint64_t)k);
        if (!same)
            test_fail(__FILE__, __LINE__, "%s prompt: ids differ from the reference", turns[t]);
        bpe_ids_free(&out);
    }
    CHECK(bpe_added_id(&b, "<|user|>") >= b.n_base);
    CHECK(bpe_added_id(&b, "<|USER|>") == -1);
    struct bpe_ids out = { 0 };
    CHECK(bpe_encode(&b, &out, "ab\xC3(", 4, 0, &e) == -1 && strstr(e.msg, "invalid UTF-8"));
    CHECK(bpe_encode(&b, &out, "\xED\xA0\x80", 3, 0, &e) == -1);
    CHECK(bpe_encode(&b, &out, "", 0, 1, &e) == 0 && out.n == 2);
    bpe_ids_free(&out);
    /* a file without a vocabulary */
    struct bpe none;
    CHECK(bpe_load(&none, &g, &e) == -1 && strstr(e.msg, "glm4.tokenizer.tokens"));
    bpe_free(&b);
    gguf_close(&g);
    gguf_close(&m);
}
