/*
 * bpe — the GLM-4 text tokenizer (spec §4.5 with errata E12–E15): tiktoken-style byte-level
 * BPE over a regex pre-tokenizer, with added (special) tokens matched first.
 *
 * Encoding a text:
 *   1. split on added-token strings, leftmost first, longest at a position (E14); each
 *      added token is its id; the text between two of them is encoded on its own;
 *   2. pre-tokenize a segment with the GLM-4 regex (PCRE2, UTF + UCP; `\s` spelled out as
 *      Unicode White_Space and the contractions' case folding spelled out, E12);
 *   3. a pre-token that is a vocabulary entry is that entry (E13); otherwise start from its
 *      bytes and merge the adjacent pair whose concatenation has the lowest rank (leftmost on
 *      ties) until no pair is a vocabulary entry.
 * Decoding: byte strings concatenated; each run of bytes between added tokens decoded as
 * UTF-8 with U+FFFD for every maximal invalid subpart (as Python's "replace"); added tokens
 * as their literal text, no spaces around them (E15).
 *
 * The vocabulary comes from the LM's GGUF file (glm4.tokenizer.* keys, written by
 * deploy/convert_lm.py); token bytes point into the file's mapping, which must outlive the
 * tokenizer. A loaded tokenizer is read-only: any number of threads may encode and decode
 * at once (each call uses its own match data and buffers).
 */
#ifndef PARLEY_BPE_H
#define PARLEY_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/err.h"
#include "runtime/gguf.h"

struct bpe_token {
    const char *ptr; /* bytes (not NUL-terminated); NULL: the id has no token */
    uint32_t len;
    uint8_t added; /* 1: an added token (decoded literally, matched before BPE) */
};

struct bpe {
    int64_t n_base;           /* ranks [0, n_base) */
    int64_t n_vocab;          /* ids [0, n_vocab): the largest token id + 1 */
    struct bpe_token *tokens; /* [n_vocab] */
    /* hash indexes (slot = id + 1, 0 = empty) over base tokens and added tokens */
    uint32_t *base_slots, *added_slots;
    uint64_t base_mask, added_mask;
    uint32_t max_added;       /* longest added token, bytes */
    uint8_t added_first[256]; /* 1 for a byte that starts some added token */
    int32_t gmask, sop;       /* the prompt prefix ids, -1 when absent */
    void *re;                 /* pcre2_code: the pre-tokenizer */
};

/* A growable array of ids or bytes, owned by the caller (bpe_buf_free). */
struct bpe_ids {
    int32_t *v;
    int64_t n, cap;
};
struct bpe_text {
    char *v; /* NUL-terminated after every call */
    size_t n, cap;
};
void bpe_ids_free(struct bpe_ids *b);
/* Appends one id; -1 when out of memory. */
int bpe_ids_push(struct bpe_ids *b, int32_t id);
void bpe_text_free(struct bpe_text *b);
/* Appends n bytes (keeping the NUL after them); -1 when out of memory. */
int bpe_text_append(struct bpe_text *b, const void *p, size_t n);

/* Loads the vocabulary from an LM file's metadata. -1 with e set when keys are missing or
 * inconsistent (ranks with duplicate bytes, added ids inside the base range or repeated). */
int bpe_load(struct bpe *b, const struct gguf_file *f, struct err *e);
void bpe_free(struct bpe *b);

/* The id of an added token's text (e.g. "<|user|>"), or -1. */
int32_t bpe_added_id(const struct bpe *b, const char *text);

/* Appends the ids of text[0, len) to out; prefix adds [gMASK]<sop> first. -1 with e set for
 * invalid UTF-8 (with its byte offset) or when memory runs out. */
int bpe_encode(const struct bpe *b, struct bpe_ids *out, const char *text, size_t len, int prefix,
               struct err *e);

/* Appends the text of ids to out. -1 with e set for an id that has no token. */
int bpe_decode(const struct bpe *b, struct bpe_text *out, const int32_t *ids, int64_t n,
               struct err *e);

/* Streaming decode: text appears only when its UTF-8 sequence is complete, so that a
 * character cut between tokens is not shown as U+FFFD and then again. The concatenation of
 * everything pushed and the final flush equals bpe_decode of all the ids. */
struct bpe_stream {
    uint8_t pend[4]; /* an incomplete but so far valid UTF-8 sequence */
    int n_pend;
};
int bpe_stream_push(const struct bpe *b, struct bpe_stream *s, struct bpe_text *out, int32_t id,
                    struct err *e);
int bpe_stream_flush(struct bpe_stream *s, struct bpe_text *out, struct err *e);

#endif
