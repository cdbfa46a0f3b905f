/* The chat template against the reference's strings (tests/golden/lm_torch.py builds them
 * as §5.2 says): a text turn, an audio turn, and a second turn with history. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lm/chat.h"
#include "runtime/gguf.h"
#include "test.h"

#define GOLDEN_CMD "/usr/bin/python3 tests/golden/lm_torch.py build/golden"

static char *meta_str(const struct gguf_file *f, const char *key)
{
    static char buf[3][8192];
    static int k;
    struct err e;
    char *b = buf[k++ % 3];
    if (gguf_get_str(f, key, b, sizeof buf[0], &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (regenerate: %s)", e.msg, GOLDEN_CMD);
        b[0] = 0;
    }
    return b;
}

TEST(chat_template)
{
    struct gguf_file g;
    struct err e;
    if (gguf_open(&g, "build/golden/lm_torch.gguf", &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (generate it with: %s)", e.msg, GOLDEN_CMD);
        return;
    }
    struct chat c;
    struct bpe_text p = { 0 };
    chat_init(&c);
    const char *text = meta_str(&g, "lm.text_input");
    CHECK(chat_prompt(&c, &p, CHAT_MODE_TEXT, text, NULL, 0, 512, &e) == 0);
    CHECK(strcmp(p.v, meta_str(&g, "lm.text.prompt")) == 0);

    const struct gguf_kv *kv;
    REQUIRE(gguf_get_array(&g, "lm.audio_codes", GGUF_TYPE_INT64, &kv, &e) == 0);
    int32_t codes[256];
    REQUIRE(kv->count <= 256);
    for (uint64_t i = 0; i < kv->count; i++) {
        int64_t v;
        gguf_array_i64(kv, i, &v);
        codes[i] = (int32_t)v;
    }
    CHECK(chat_prompt(&c, &p, CHAT_MODE_AUDIO, NULL, codes, (int64_t)kv->count, 512, &e) == 0);
    CHECK(strcmp(p.v, meta_str(&g, "lm.audio.prompt")) == 0);
    codes[3] = 512;
    CHECK(chat_prompt(&c, &p, CHAT_MODE_AUDIO, NULL, codes, 4, 512, &e) == -1);
    CHECK(strstr(e.msg, "outside") != NULL);

    /* second turn: history stripped, the system prompt not repeated */
    CHECK(chat_commit(&c, meta_str(&g, "lm.text.prompt"), meta_str(&g, "lm.turn2.completion"),
                      &e) == 0);
    CHECK(chat_prompt(&c, &p, CHAT_MODE_AUDIO, "And then?", NULL, 0, 512, &e) == 0);
    /* the mode only picks the system prompt, which is already there; use text input */
    CHECK(chat_prompt(&c, &p, CHAT_MODE_TEXT, "And then?", NULL, 0, 512, &e) == 0);
    CHECK(strcmp(p.v, meta_str(&g, "lm.turn2.prompt")) == 0);
    CHECK(strstr(chat_system_audio, "tokens. ") != NULL);
    CHECK(chat_system_text[strlen(chat_system_text) - 1] == '.');

    /* stripping: Unicode spaces at both ends, nothing inside */
    CHECK(chat_commit(&c, " \t\xE3\x80\x80<|system|>\nA  ", "b \n\xC2\xA0", &e) == 0);
    CHECK(chat_prompt(&c, &p, CHAT_MODE_TEXT, "x", NULL, 0, 512, &e) == 0);
    CHECK(strcmp(p.v, "<|system|>\nA  b<|user|>\nx<|assistant|>streaming_transcription\n") == 0);
    /* a fixed system prompt, whatever the first turn's kind */
    struct chat fixed;
    chat_init(&fixed);
    CHECK(fixed.system == CHAT_SYSTEM_AUTO);
    fixed.system = CHAT_MODE_AUDIO;
    CHECK(chat_prompt(&fixed, &p, CHAT_MODE_TEXT, "hi", NULL, 0, 512, &e) == 0);
    CHECK(strncmp(p.v + strlen("<|system|>\n"), chat_system_audio, strlen(chat_system_audio)) == 0);
    CHECK(strstr(p.v, "<|user|>\nhi<|assistant|>") != NULL);
    chat_free(&fixed);
    bpe_text_free(&p);
    chat_free(&c);
    gguf_close(&g);
}
