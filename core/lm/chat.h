/*
 * chat — the prompt template and the conversation state of the official demo (spec §5.1–5.3).
 *
 * A turn's prompt string is
 *   strip(prev_input + prev_completion)                       (empty on the first turn)
 *   + "<|system|>\n" + system prompt                          (only if not already there)
 *   + "<|user|>\n" + user input + "<|assistant|>streaming_transcription\n"
 * with the user input either the raw text or "<|begin_of_audio|>" + "<|audio_k|>"… +
 * "<|end_of_audio|>". The system prompt is chosen by the input mode of the turn that adds it
 * (so the first turn's mode decides). It is then encoded with the [gMASK]<sop> prefix.
 * prev_completion is the decoded completion without its terminating <|user|>.
 *
 * History is kept as the model saw it: the demo re-tokenizes the whole string each turn
 * (this module reproduces those strings exactly); a KV-cache-reusing server instead appends
 * only the new suffix, which the engine decides (DESIGN: a documented option).
 */
#ifndef PARLEY_CHAT_H
#define PARLEY_CHAT_H

#include <stdint.h>

#include "runtime/err.h"
#include "text/bpe.h"

enum chat_mode {
    CHAT_MODE_AUDIO = 0,
    CHAT_MODE_TEXT = 1,
};

/* The exact system prompts (the audio one ends with a space). */
extern const char chat_system_audio[];
extern const char chat_system_text[];

struct chat {
    struct bpe_text prev_input;      /* last turn's prompt string */
    struct bpe_text prev_completion; /* last turn's decoded completion */
    /* the system prompt: CHAT_SYSTEM_AUTO (the demo: the first turn's kind), or one mode */
    int system;
};
#define CHAT_SYSTEM_AUTO (-1)

/* The system prompt a request names: "auto" CHAT_SYSTEM_AUTO, "audio" CHAT_MODE_AUDIO, "text"
 * CHAT_MODE_TEXT; -2 for anything else (NULL too). */
int chat_system_named(const char *name);

void chat_init(struct chat *c);
void chat_free(struct chat *c);

/* Writes this turn's prompt string into out (replacing its content). Audio: codes[n] each
 * in [0, n_audio). -1 with e set for a code out of range or out of memory. */
int chat_prompt(const struct chat *c, struct bpe_text *out, enum chat_mode mode, const char *text,
                const int32_t *codes, int64_t n, int32_t n_audio, struct err *e);

/* Ends a turn: remembers its prompt and its decoded completion. */
int chat_commit(struct chat *c, const char *prompt, const char *completion, struct err *e);

#endif
