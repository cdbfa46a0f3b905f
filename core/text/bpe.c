/*
 * bpe — see bpe.h. The pre-tokenizer regex is GLM-4's (tiktoken's cl100k form):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
 *   |\s*[\r\n]+|\s+(?!\S)|\s+
 * compiled for PCRE2 with two rewrites that make PCRE2 agree with tiktoken's regex engine:
 * `\s` becomes the Unicode White_Space set (PCRE2's \s under UCP misses U+0085), and the
 * case-insensitive group becomes explicit classes with simple case folding ('ſ' is an 's').
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "text/bpe.h"

#define WS                                                                             \
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}" \
    "\\x{202F}\\x{205F}\\x{3000}"

static const char bpe_pattern[] = "'[sS\\x{17F}]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]"
                                  "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
                                  "|\\p{N}{1,3}"
                                  "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
                                  "|[" WS "]*[\\r\\n]+"
                                  "|[" WS "]+(?![^" WS "])"
                                  "|[" WS "]+";

/* ---- growable buffers ----------------------------------------------------------------- */

void bpe_ids_free(struct bpe_ids *b)
{
    free(b->v);
    memset(b, 0, sizeof *b);
}

void bpe_text_free(struct bpe_text *b)
{
    free(b->v);
    memset(b, 0, sizeof *b);
}

int bpe_ids_push(struct bpe_ids *b, int32_t id)
{
    if (b->n == b->cap) {
        int64_t cap = b->cap ? 2 * b->cap : 64;
        int32_t *v = realloc(b->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = id;
    return 0;
}

int bpe_text_append(struct bpe_text *b, const void *p, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *v = realloc(b->v, cap);
        if (!v)
            return -1;
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->n, p, n);
    b->n += n;
    b->v[b->n] = 0;
    return 0;
}

/* ---- hash index over byte strings ----------------------------------------------------- */

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* The id whose bytes equal p[0, n) in the index, or -1. */
static int32_t index_find(const struct bpe *b, const uint32_t *slots, uint64_t mask, const void *p,
                          size_t n)
{
    for (uint64_t i = hash_bytes(p, n) & mask;; i = (i + 1) & mask) {
        uint32_t s = slots[i];
        if (!s)
            return -1;
        const struct bpe_token *t = &b->tokens[s - 1];
        if (t->len == n && memcmp(t->ptr, p, n) == 0)
            return (int32_t)(s - 1);
    }
}

/* Inserts id; -1 when its bytes are already present. */
static int index_add(const struct bpe *b, uint32_t *slots, uint64_t mask, int32_t id)
{
    const struct bpe_token *t = &b->tokens[id];
    for (uint64_t i = hash_bytes(t->ptr, t->len) & mask;; i = (i + 1) & mask) {
        uint32_t s = slots[i];
        if (!s) {
            slots[i] = (uint32_t)id + 1;
            return 0;
        }
        const struct bpe_token *u = &b->tokens[s - 1];
        if (u->len == t->len && memcmp(u->ptr, t->ptr, t->len) == 0)
            return -1;
    }
}

static uint32_t *index_alloc(int64_t n, uint64_t *mask)
{
    uint64_t size = 16;
    while (size < (uint64_t)n * 2)
        size *= 2;
    *mask = size - 1;
    return calloc(size, sizeof(uint32_t));
}

/* ---- loading -------------------------------------------------------------------------- */

int bpe_load(struct bpe *b, const struct gguf_file *f, struct err *e)
{
    memset(b, 0, sizeof *b);
    b->gmask = b->sop = -1;
    const struct gguf_kv *toks, *aids, *atoks;
    if (gguf_get_array(f, "glm4.tokenizer.tokens", GGUF_TYPE_STRING, &toks, e) ||
        gguf_get_array(f, "glm4.tokenizer.added_ids", GGUF_TYPE_INT64, &aids, e) ||
        gguf_get_array(f, "glm4.tokenizer.added_tokens", GGUF_TYPE_STRING, &atoks, e))
        return -1;
    if (toks->count < 256 || toks->count > INT32_MAX / 2)
        return err_set(e, "%s: glm4.tokenizer.tokens has %llu entries", f->path,
                       (unsigned long long)toks->count);
    if (aids->count != atoks->count)
        return err_set(e, "%s: %llu added ids but %llu added tokens", f->path,
                       (unsigned long long)aids->count, (unsigned long long)atoks->count);
    b->n_base = (int64_t)toks->count;
    b->n_vocab = b->n_base;
    for (uint64_t i = 0; i < aids->count; i++) {
        int64_t id;
        if (gguf_array_i64(aids, i, &id) != 0 || id < b->n_base || id >= INT32_MAX / 2)
            return err_set(e,
                           "%s: glm4.tokenizer.added_ids[%llu] is not an id after the %lld "
                           "base tokens",
                           f->path, (unsigned long long)i, (long long)b->n_base);
        if (id + 1 > b->n_vocab)
            b->n_vocab = id + 1;
    }
    b->tokens = calloc((size_t)b->n_vocab, sizeof *b->tokens);
    b->base_slots = index_alloc(b->n_base, &b->base_mask);
    b->added_slots = index_alloc((int64_t)aids->count + 1, &b->added_mask);
    if (!b->tokens || !b->base_slots || !b->added_slots) {
        bpe_free(b);
        return err_set(e, "%s: out of memory for the vocabulary", f->path);
    }
    for (int64_t i = 0; i < b->n_base; i++) {
        struct gguf_str s = gguf_array_str(toks, (uint64_t)i);
        if (s.len == 0 || s.len > 4096) {
            bpe_free(b);
            return err_set(e, "%s: token %lld has %llu bytes", f->path, (long long)i,
                           (unsigned long long)s.len);
        }
        b->tokens[i] = (struct bpe_token){ s.ptr, (uint32_t)s.len, 0 };
        if (index_add(b, b->base_slots, b->base_mask, (int32_t)i) != 0) {
            bpe_free(b);
            return err_set(e, "%s: token %lld repeats an earlier token's bytes", f->path,
                           (long long)i);
        }
    }
    for (uint64_t i = 0; i < aids->count; i++) {
        int64_t id;
        gguf_array_i64(aids, i, &id);
        struct gguf_str s = gguf_array_str(atoks, i);
        if (s.len == 0 || s.len > 256 || b->tokens[id].ptr) {
            bpe_free(b);
            return err_set(e, "%s: added token %llu (id %lld) is empty, too long or repeated",
                           f->path, (unsigned long long)i, (long long)id);
        }
        b->tokens[id] = (struct bpe_token){ s.ptr, (uint32_t)s.len, 1 };
        if (index_add(b, b->added_slots, b->added_mask, (int32_t)id) != 0) {
            bpe_free(b);
            return err_set(e, "%s: added token %lld repeats another's text", f->path,
                           (long long)id);
        }
        if (s.len > b->max_added)
            b->max_added = (uint32_t)s.len;
        b->added_first[(uint8_t)s.ptr[0]] = 1;
    }
    b->gmask = bpe_added_id(b, "[gMASK]");
    b->sop = bpe_added_id(b, "<sop>");

    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)bpe_pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        bpe_free(b);
        return err_set(e, "bpe: pre-tokenizer pattern does not compile at %zu: %s", (size_t)off,
                       (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* faster when available; optional */
    b->re = re;
    return 0;
}

void bpe_free(struct bpe *b)
{
    if (!b)
        return;
    pcre2_code_free(b->re);
    free(b->tokens);
    free(b->base_slots);
    free(b->added_slots);
    memset(b, 0, sizeof *b);
}

int32_t bpe_added_id(const struct bpe *b, const char *text)
{
    return index_find(b, b->added_slots, b->added_mask, text, strlen(text));
}

/* ---- encoding ------------------------------------------------------------------------- */

/* Byte length of the valid UTF-8 sequence at p (n bytes available), or 0 when invalid. */
static int utf8_valid_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    int len;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else
        return 0;
    if ((size_t)len > n || p[1] < lo || p[1] > hi)
        return 0;
    for (int i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return len;
}

/* Scratch for the merges of one pre-token. */
struct work {
    uint32_t *start; /* [n + 1] part boundaries */
    int32_t *rank;   /* [n] rank of part i joined with part i + 1; -1: not a token */
    size_t cap;
};

/* Rank of the bytes p[start[i], start[i + 2]), or -1. */
static int32_t pair_rank(const struct bpe *b, const struct work *w, const char *p, size_t i,
                         size_t parts)
{
    if (i + 1 >= parts)
        return -1;
    return index_find(b, b->base_slots, b->base_mask, p + w->start[i],
                      w->start[i + 2] - w->start[i]);
}

/* BPE of one pre-token p[0, n), tiktoken's rule: merge the adjacent pair whose joined bytes
 * have the lowest rank (leftmost on ties) until no joined pair is a token. Pair ranks are
 * kept per position and only the merged pair's neighbours are looked up again. */
static int encode_piece(const struct bpe *b, struct work *w, struct bpe_ids *out, const char *p,
                        size_t n)
{
    int32_t whole = index_find(b, b->base_slots, b->base_mask, p, n);
    if (whole >= 0)
        return bpe_ids_push(out, whole);
    if (n + 1 > w->cap) {
        uint32_t *s = realloc(w->start, (n + 1) * sizeof *s);
        if (s)
            w->start = s;
        int32_t *r = realloc(w->rank, (n + 1) * sizeof *r);
        if (r)
            w->rank = r;
        if (!s || !r)
            return -1;
        w->cap = n + 1;
    }
    size_t parts = n; /* part i = p[start[i], start[i + 1]) */
    for (size_t i = 0; i <= n; i++)
        w->start[i] = (uint32_t)i;
    for (size_t i = 0; i < parts; i++)
        w->rank[i] = pair_rank(b, w, p, i, parts);
    while (parts > 1) {
        int32_t best = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < parts; i++)
            if (w->rank[i] >= 0 && (best < 0 || w->rank[i] < best)) {
                best = w->rank[i];
                at = i;
            }
        if (best < 0)
            break;
        /* parts at and at + 1 become one: drop boundary at + 1 */
        memmove(&w->start[at + 1], &w->start[at + 2], (parts - at - 1) * sizeof *w->start);
        memmove(&w->rank[at + 1], &w->rank[at + 2], (parts - at - 2) * sizeof *w->rank);
        parts--;
        w->rank[at] = pair_rank(b, w, p, at, parts);
        if (at > 0)
            w->rank[at - 1] = pair_rank(b, w, p, at - 1, parts);
    }
    for (size_t i = 0; i < parts; i++) {
        int32_t r = index_find(b, b->base_slots, b->base_mask, p + w->start[i],
                               w->start[i + 1] - w->start[i]);
        if (r < 0 || bpe_ids_push(out, r) != 0)
            return -1; /* r < 0: a byte missing from the vocabulary */
    }
    return 0;
}

/* Pre-tokenizes and encodes a segment without added tokens. */
static int encode_segment(const struct bpe *b, struct work *w, pcre2_match_data *md,
                          struct bpe_ids *out, const char *s, size_t n, struct err *e)
{
    size_t pos = 0;
    while (pos < n) {
        int rc = pcre2_match((const pcre2_code *)b->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK,
                             md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return err_set(e, "bpe: pre-tokenizer match failed (PCRE2 error %d)", rc);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] <= ov[0])
            return err_set(e, "bpe: pre-tokenizer matched nothing at byte %zu", (size_t)ov[0]);
        if (encode_piece(b, w, out, s + ov[0], ov[1] - ov[0]) != 0)
            return err_set(e, "bpe: out of memory or a byte without a token");
        pos = ov[1];
    }
    return 0;
}

int bpe_encode(const struct bpe *b, struct bpe_ids *out, const char *text, size_t len, int prefix,
               struct err *e)
{
    for (size_t i = 0; i < len;) {
        int k = utf8_valid_len((const uint8_t *)text + i, len - i);
        if (!k)
            return err_set(e, "bpe: invalid UTF-8 at byte %zu", i);
        i += (size_t)k;
    }
    if (prefix) {
        if (b->gmask < 0 || b->sop < 0)
            return err_set(e, "bpe: the vocabulary has no [gMASK] or <sop> token");
        if (bpe_ids_push(out, b->gmask) || bpe_ids_push(out, b->sop))
            return err_set(e, "bpe: out of memory");
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern((const pcre2_code *)b->re, NULL);
    if (!md)
        return err_set(e, "bpe: out of memory");
    struct work w = { 0 };
    int rc = 0;
    size_t seg = 0;
    for (size_t i = 0; i < len && rc == 0;) {
        int32_t hit = -1;
        size_t hit_len = 0;
        if (b->added_first[(uint8_t)text[i]]) {
            size_t max = len - i < b->max_added ? len - i : b->max_added;
            for (size_t l = max; l > 0; l--) {
                hit = index_find(b, b->added_slots, b->added_mask, text + i, l);
                if (hit >= 0) {
                    hit_len = l;
                    break;
                }
            }
        }
        if (hit < 0) {
            i++;
            continue;
        }
        rc = encode_segment(b, &w, md, out, text + seg, i - seg, e);
        if (rc == 0 && bpe_ids_push(out, hit) != 0)
            rc = err_set(e, "bpe: out of memory");
        i += hit_len;
        seg = i;
    }
    if (rc == 0)
        rc = encode_segment(b, &w, md, out, text + seg, len - seg, e);
    free(w.start);
    free(w.rank);
    pcre2_match_data_free(md);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------------- */

static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Feeds one byte to the streaming UTF-8 decoder: emits complete sequences, U+FFFD for each
 * maximal invalid subpart (Python's "replace"), and holds a valid incomplete prefix. */
static int utf8_feed(struct bpe_stream *s, struct bpe_text *out, uint8_t c)
{
    if (s->n_pend) {
        uint8_t lead = s->pend[0], lo = 0x80, hi = 0xBF;
        if (s->n_pend == 1) {
            lo = lead == 0xE0 ? 0xA0 : lead == 0xF0 ? 0x90 : 0x80;
            hi = lead == 0xED ? 0x9F : lead == 0xF4 ? 0x8F : 0xBF;
        }
        if (c >= lo && c <= hi) {
            s->pend[s->n_pend++] = c;
            int need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (s->n_pend == need) {
                s->n_pend = 0;
                return bpe_text_append(out, s->pend, (size_t)need);
            }
            return 0;
        }
        s->n_pend = 0;
        if (bpe_text_append(out, replacement, 3) != 0)
            return -1;
    }
    if (c < 0x80)
        return bpe_text_append(out, &c, 1);
    if ((c >= 0xC2 && c <= 0xDF) || (c >= 0xE0 && c <= 0xF4)) {
        s->pend[0] = c;
        s->n_pend = 1;
        return 0;
    }
    return bpe_text_append(out, replacement, 3);
}

int bpe_stream_flush(struct bpe_stream *s, struct bpe_text *out, struct err *e)
{
    if (s->n_pend) {
        s->n_pend = 0;
        if (bpe_text_append(out, replacement, 3) != 0)
            return err_set(e, "bpe: out of memory");
    }
    if (!out->v && bpe_text_append(out, "", 0) != 0) /* always NUL-terminated */
        return err_set(e, "bpe: out of memory");
    return 0;
}

int bpe_stream_push(const struct bpe *b, struct bpe_stream *s, struct bpe_text *out, int32_t id,
                    struct err *e)
{
    if (id < 0 || id >= b->n_vocab || !b->tokens[id].ptr)
        return err_set(e, "bpe: id %d has no token", id);
    const struct bpe_token *t = &b->tokens[id];
    if (t->added) {
        if (bpe_stream_flush(s, out, e) != 0 || bpe_text_append(out, t->ptr, t->len) != 0)
            return err_set(e, "bpe: out of memory");
        return 0;
    }
    for (uint32_t i = 0; i < t->len; i++)
        if (utf8_feed(s, out, (uint8_t)t->ptr[i]) != 0)
            return err_set(e, "bpe: out of memory");
    if (!out->v && bpe_text_append(out, "", 0) != 0) /* always NUL-terminated */
        return err_set(e, "bpe: out of memory");
    return 0;
}

int bpe_decode(const struct bpe *b, struct bpe_text *out, const int32_t *ids, int64_t n,
               struct err *e)
{
    struct bpe_stream s = { { 0 }, 0 };
    for (int64_t i = 0; i < n; i++)
        if (bpe_stream_push(b, &s, out, ids[i], e) != 0)
            return -1;
    return bpe_stream_flush(&s, out, e);
}
