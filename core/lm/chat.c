/* chat — see chat.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lm/chat.h"

const char chat_system_audio[] =
    "User will provide you with a speech instruction. Do it step by step. First, think about "
    "the instruction and respond in a interleaved manner, with 13 text token followed by 26 "
    "audio tokens. ";
const char chat_system_text[] =
    "User will provide you with a text instruction. Do it step by step. First, think about "
    "the instruction and respond in a interleaved manner, with 13 text token followed by 26 "
    "audio tokens.";

void chat_init(struct chat *c)
{
    memset(c, 0, sizeof *c);
    c->system = CHAT_SYSTEM_AUTO;
}

int chat_system_named(const char *name)
{
    if (!name)
        return -2;
    if (!strcmp(name, "auto"))
        return CHAT_SYSTEM_AUTO;
    if (!strcmp(name, "audio"))
        return CHAT_MODE_AUDIO;
    return !strcmp(name, "text") ? CHAT_MODE_TEXT : -2;
}

void chat_free(struct chat *c)
{
    bpe_text_free(&c->prev_input);
    bpe_text_free(&c->prev_completion);
}

static int puts_(struct bpe_text *b, const char *s)
{
    return bpe_text_append(b, s, strlen(s));
}

/* Length of the whitespace character (as Python's str.isspace sees it) at p, or 0. */
static int space_at(const unsigned char *p, size_t n)
{
    if ((*p >= 0x09 && *p <= 0x0D) || (*p >= 0x1C && *p <= 0x20))
        return 1;
    if (n >= 2 && p[0] == 0xC2 && (p[1] == 0x85 || p[1] == 0xA0))
        return 2;
    if (n >= 3 && p[0] == 0xE1 && p[1] == 0x9A && p[2] == 0x80) /* U+1680 */
        return 3;
    if (n >= 3 && p[0] == 0xE2 && p[1] == 0x80 &&
        (p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 ||
         p[2] == 0xAF)) /* 2000-200A 2028 2029 202F */
        return 3;
    if (n >= 3 && p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) /* U+205F */
        return 3;
    if (n >= 3 && p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) /* U+3000 */
        return 3;
    return 0;
}

int chat_prompt(const struct chat *c, struct bpe_text *out, enum chat_mode mode, const char *text,
                const int32_t *codes, int64_t n, int32_t n_audio, struct err *e)
{
    out->n = 0;
    /* 1. strip(prev_input + prev_completion) */
    struct bpe_text hist = { 0 };
    if (bpe_text_append(&hist, c->prev_input.v ? c->prev_input.v : "", c->prev_input.n) ||
        bpe_text_append(&hist, c->prev_completion.v ? c->prev_completion.v : "",
                        c->prev_completion.n))
        goto oom;
    const unsigned char *h = (const unsigned char *)hist.v;
    size_t b = 0, end = hist.n;
    for (int k; b < end && (k = space_at(h + b, end - b)) > 0;)
        b += (size_t)k;
    for (;;) { /* trailing: find the last character and test it */
        size_t s = end;
        while (s > b && (h[s - 1] & 0xC0) == 0x80)
            s--;
        if (s > b && space_at(h + s - 1, end - s + 1) == (int)(end - s + 1))
            end = s - 1;
        else
            break;
    }
    if (bpe_text_append(out, hist.v + b, end - b))
        goto oom;
    bpe_text_free(&hist);
    /* 2. the system prompt, once */
    if (!strstr(out->v ? out->v : "", "<|system|>")) {
        if (puts_(out, "<|system|>\n") ||
            puts_(out, (c->system == CHAT_SYSTEM_AUTO ? (int)mode : c->system) == CHAT_MODE_AUDIO
                           ? chat_system_audio
                           : chat_system_text))
            goto oom;
    }
    /* 3, 4. the user turn */
    if (puts_(out, "<|user|>\n"))
        goto oom;
    if (mode == CHAT_MODE_AUDIO) {
        if (puts_(out, "<|begin_of_audio|>"))
            goto oom;
        for (int64_t i = 0; i < n; i++) {
            char tok[32];
            if (codes[i] < 0 || codes[i] >= n_audio)
                return err_set(e, "chat: audio code %d at %lld is outside [0, %d)", codes[i],
                               (long long)i, n_audio);
            snprintf(tok, sizeof tok, "<|audio_%d|>", codes[i]);
            if (puts_(out, tok))
                goto oom;
        }
        if (puts_(out, "<|end_of_audio|>"))
            goto oom;
    } else if (puts_(out, text ? text : "")) {
        goto oom;
    }
    if (puts_(out, "<|assistant|>streaming_transcription\n"))
        goto oom;
    return 0;
oom:
    bpe_text_free(&hist);
    return err_set(e, "chat: out of memory");
}

int chat_commit(struct chat *c, const char *prompt, const char *completion, struct err *e)
{
    c->prev_input.n = 0;
    c->prev_completion.n = 0;
    if (puts_(&c->prev_input, prompt) || puts_(&c->prev_completion, completion))
        return err_set(e, "chat: out of memory");
    return 0;
}
