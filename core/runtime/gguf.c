/*
 * gguf — reading and validating GGUF model files (layout in gguf.h).
 *
 * Every byte is read through struct reader, which checks that the bytes are there before
 * touching them, with lengths compared against what is left rather than added to positions,
 * so that no length a file can hold overflows. Counts are compared against the bytes left
 * before anything is allocated for them, so every allocation is bounded by the file size.
 * Shapes are GGUF ne[] (innermost first) inside; messages print them in PyTorch order.
 */
#include "runtime/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gguf reads values in place");

#define N_TYPES 13
/* Smallest possible encodings, for bounding counts by the bytes left: a key is a length, at
 * least one byte of name, a type and at least a one-byte value; a tensor info is a length, at
 * least one byte of name, n_dims, at least one dim, a type and an offset. */
#define KV_MIN_BYTES     14
#define TENSOR_MIN_BYTES 33
#define QUOTE_MAX        80 /* bytes of a name shown in a message */

/* Fixed sizes of value types; 0 for strings and arrays. */
static const uint8_t type_size[N_TYPES] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

struct reader {
    const uint8_t *p;
    size_t size, pos;
    const char *name; /* the file, for messages */
    struct err *e;
    char ctx[QUOTE_MAX * 4 + 32]; /* what is being read: "key 'general.name'", "tensor 'w'" */
};

static int fail(struct reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct reader *r, const char *fmt, ...)
{
    char msg[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(r->e, "%s: %s", r->name, msg);
    return -1; /* visibly, so the compiler sees outputs are only used on success */
}

static size_t left(const struct reader *r)
{
    return r->size - r->pos;
}

/* Takes n bytes at the current position, or fails naming what needed them. */
static int take(struct reader *r, uint64_t n, const char *what, const uint8_t **out)
{
    if (n > left(r))
        return fail(r,
                    "truncated file: %s %s needs %" PRIu64 " bytes at offset %zu, but the "
                    "file ends at %zu",
                    r->ctx, what, n, r->pos, r->size);
    *out = r->p + r->pos;
    r->pos += (size_t)n;
    return 0;
}

static int read_u32(struct reader *r, const char *what, uint32_t *v)
{
    const uint8_t *b = NULL;
    if (take(r, 4, what, &b))
        return -1;
    memcpy(v, b, 4);
    return 0;
}

static int read_u64(struct reader *r, const char *what, uint64_t *v)
{
    const uint8_t *b = NULL;
    if (take(r, 8, what, &b))
        return -1;
    memcpy(v, b, 8);
    return 0;
}

static int read_str(struct reader *r, const char *what, struct gguf_str *s)
{
    const uint8_t *b = NULL;
    if (read_u64(r, what, &s->len) || take(r, s->len, what, &b))
        return -1;
    s->ptr = (const char *)b;
    return 0;
}

static char *copy_str(struct gguf_str s)
{
    char *c = malloc((size_t)s.len + 1);
    if (c) {
        memcpy(c, s.ptr, (size_t)s.len);
        c[s.len] = 0;
    }
    return c;
}

/* Decodes one UTF-8 sequence at s (n bytes left); returns its length, or 0 when it is not a
 * valid, printable-as-is sequence (overlong forms, surrogates, C1 controls are refused). */
static int utf8_len(const unsigned char *s, uint64_t n)
{
    uint32_t c;
    int len;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, c = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, c = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, c = s[0] & 0x07;
    else
        return 0;
    if ((uint64_t)len > n)
        return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < 0xa0 || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
        (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
        return 0;
    return len;
}

const char *gguf_escape(char *buf, size_t len, const char *s, uint64_t n, uint64_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    if (len == 0)
        return buf;
    for (uint64_t i = 0; i < n; i++) {
        char tmp[8];
        int k, adv = 1;
        if (i >= max) {
            if (o + 4 > len)
                break;
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (u[i] >= 0x20 && u[i] < 0x7f && u[i] != '\\' && u[i] != '"' && u[i] != '\'') {
            tmp[0] = (char)u[i];
            k = 1;
        } else if (u[i] == '\n') {
            k = snprintf(tmp, sizeof tmp, "\\n");
        } else if (u[i] == '\t') {
            k = snprintf(tmp, sizeof tmp, "\\t");
        } else if (u[i] == '\\' || u[i] == '"' || u[i] == '\'') {
            k = snprintf(tmp, sizeof tmp, "\\%c", u[i]);
        } else if ((adv = utf8_len(u + i, n - i)) > 0) {
            memcpy(tmp, u + i, (size_t)adv);
            k = adv;
        } else {
            adv = 1;
            k = snprintf(tmp, sizeof tmp, "\\x%02x", u[i]);
        }
        if (o + (size_t)k + 1 > len)
            break;
        memcpy(buf + o, tmp, (size_t)k);
        o += (size_t)k;
        i += (uint64_t)adv - 1;
    }
    buf[o] = 0;
    return buf;
}

/* ---- hash indexes of names ------------------------------------------------------------- */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h ^ (h >> 29);
}

static const char *kv_name(const struct gguf_file *f, uint64_t i)
{
    return f->kv[i].key;
}

static const char *tensor_name(const struct gguf_file *f, uint64_t i)
{
    return f->tensors[i].name;
}

/* Capacity for n names: a power of two at least 2n, so probes stay short. */
static int index_alloc(uint64_t n, uint64_t **slots, uint64_t *mask)
{
    uint64_t cap = 4;
    while (cap < 2 * n)
        cap *= 2;
    *slots = calloc((size_t)cap, sizeof **slots);
    *mask = cap - 1;
    return *slots ? 0 : -1;
}

/* The slot holding name, or the empty slot where it would go; NULL when there is no index. */
static uint64_t *index_slot(const struct gguf_file *f, uint64_t *slots, uint64_t mask,
                            const char *(*name_of)(const struct gguf_file *, uint64_t),
                            const char *name)
{
    if (!slots)
        return NULL;
    for (uint64_t i = hash_name(name) & mask;; i = (i + 1) & mask)
        if (slots[i] == 0 || strcmp(name_of(f, slots[i] - 1), name) == 0)
            return &slots[i];
}

/* ---- parsing --------------------------------------------------------------------------- */

static int valid_type(uint32_t t)
{
    return t < N_TYPES;
}

static int parse_value(struct reader *r, struct gguf_kv *kv)
{
    const uint8_t *b = NULL;
    uint32_t t;
    if (read_u32(r, "value type", &t))
        return -1;
    if (!valid_type(t))
        return fail(r, "%s: unknown value type %" PRIu32, r->ctx, t);
    kv->type = (enum gguf_type)t;
    kv->elem = kv->type;
    kv->count = 1;
    kv->value = r->p + r->pos;
    if (t == GGUF_TYPE_STRING) {
        struct gguf_str s;
        return read_str(r, "string value", &s);
    }
    if (t != GGUF_TYPE_ARRAY)
        return take(r, type_size[t], "value", &b);

    uint32_t et;
    uint64_t n;
    if (read_u32(r, "array element type", &et) || read_u64(r, "array count", &n))
        return -1;
    if (et == GGUF_TYPE_ARRAY)
        return fail(r, "%s: arrays of arrays are not supported", r->ctx);
    if (!valid_type(et))
        return fail(r, "%s: unknown array element type %" PRIu32, r->ctx, et);
    kv->elem = (enum gguf_type)et;
    kv->count = n;
    kv->value = r->p + r->pos;
    uint64_t min = et == GGUF_TYPE_STRING ? 8 : type_size[et];
    if (n > left(r) / min)
        return fail(r,
                    "truncated file: %s array of %" PRIu64 " %s elements at offset %zu "
                    "needs more than the %zu bytes left",
                    r->ctx, n, gguf_type_name(kv->elem), r->pos, left(r));
    if (et != GGUF_TYPE_STRING)
        return take(r, n * min, "array", &b);

    /* n <= bytes left / 8, so this allocation is bounded by the file size */
    if (n && !(kv->str_off = malloc((size_t)n * sizeof *kv->str_off)))
        return fail(r, "%s: out of memory for %" PRIu64 " strings", r->ctx, n);
    size_t start = r->pos;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        kv->str_off[i] = r->pos - start;
        if (left(r) < 8)
            return fail(r,
                        "truncated file: %s string %" PRIu64 " of %" PRIu64 " needs 8 "
                        "bytes of length at offset %zu, but the file ends at %zu",
                        r->ctx, i, n, r->pos, r->size);
        memcpy(&len, r->p + r->pos, 8);
        r->pos += 8;
        if (len > left(r))
            return fail(r,
                        "truncated file: %s string %" PRIu64 " of %" PRIu64 " needs %" PRIu64
                        " bytes at offset %zu, but the file ends at %zu",
                        r->ctx, i, n, len, r->pos, r->size);
        r->pos += (size_t)len;
    }
    return 0;
}

static int parse_kvs(struct reader *r, struct gguf_file *f, uint64_t n)
{
    char q[QUOTE_MAX * 4 + 8];
    if (n && !(f->kv = calloc((size_t)n, sizeof *f->kv)))
        return fail(r, "out of memory for %" PRIu64 " keys", n);
    f->n_kv = n;
    if (index_alloc(n, &f->kv_slots, &f->kv_mask))
        return fail(r, "out of memory for %" PRIu64 " keys", n);
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_kv *kv = &f->kv[i];
        struct gguf_str s;
        snprintf(r->ctx, sizeof r->ctx, "key %" PRIu64, i);
        if (read_str(r, "name", &s))
            return -1;
        if (s.len == 0)
            return fail(r, "key %" PRIu64 " has an empty name", i);
        gguf_escape(q, sizeof q, s.ptr, s.len, QUOTE_MAX);
        if (memchr(s.ptr, 0, (size_t)s.len))
            return fail(r, "key %" PRIu64 " '%s' contains a NUL byte", i, q);
        if (!(kv->key = copy_str(s)))
            return fail(r, "out of memory for key '%s'", q);
        snprintf(r->ctx, sizeof r->ctx, "key '%s'", q);
        uint64_t *slot = index_slot(f, f->kv_slots, f->kv_mask, kv_name, kv->key);
        if (*slot)
            return fail(r, "duplicate key '%s' (keys %" PRIu64 " and %" PRIu64 ")", q, *slot - 1,
                        i);
        *slot = i + 1;
        if (parse_value(r, kv))
            return -1;
    }
    return 0;
}

static int parse_alignment(struct reader *r, struct gguf_file *f)
{
    const struct gguf_kv *kv = gguf_find(f, "general.alignment");
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!kv)
        return 0;
    if (kv->type != GGUF_TYPE_UINT32)
        return fail(r, "general.alignment has type %s, expected u32", gguf_type_name(kv->type));
    uint32_t a;
    memcpy(&a, kv->value, 4);
    if (a == 0 || (a & (a - 1)))
        return fail(r, "general.alignment %" PRIu32 " is not a nonzero power of two", a);
    f->alignment = a;
    return 0;
}

/* The ecosystem's names for type ids parley does not compute with, for clearer messages. */
static const char *foreign_type_name(uint32_t t)
{
    static const char *const names[] = {
        [2] = "q4_0",    [3] = "q4_1",     [6] = "q5_0",    [7] = "q5_1",     [9] = "q8_1",
        [10] = "q2_k",   [11] = "q3_k",    [12] = "q4_k",   [13] = "q5_k",    [14] = "q6_k",
        [15] = "q8_k",   [16] = "iq2_xxs", [17] = "iq2_xs", [18] = "iq3_xxs", [19] = "iq1_s",
        [20] = "iq4_nl", [21] = "iq3_s",   [22] = "iq2_s",  [23] = "iq4_xs",  [24] = "i8",
        [25] = "i16",    [26] = "i32",     [27] = "i64",    [28] = "f64",     [29] = "iq1_m",
        [34] = "tq1_0",  [35] = "tq2_0",   [39] = "mxfp4",
    };
    return t < sizeof names / sizeof names[0] ? names[t] : NULL;
}

/* Shape from raw dims (innermost first) in PyTorch order, for messages. */
static const char *dims_str(char *buf, size_t len, const uint64_t *d, uint32_t n)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (uint32_t i = n; i-- > 0 && o < len;)
        o += (size_t)snprintf(buf + o, len - o, "%" PRIu64 "%s", d[i], i ? ", " : "");
    if (o < len)
        snprintf(buf + o, len - o, "]");
    return buf;
}

static int parse_tensor(struct reader *r, struct gguf_file *f, uint64_t i, uint64_t *nbytes)
{
    char q[QUOTE_MAX * 4 + 8], shape[128];
    struct tensor *t = &f->tensors[i];
    struct gguf_str s;
    uint32_t n_dims, type;
    uint64_t dims[TENSOR_MAX_DIMS], off;
    const uint8_t *b = NULL;

    snprintf(r->ctx, sizeof r->ctx, "tensor %" PRIu64, i);
    if (read_str(r, "name", &s))
        return -1;
    if (s.len == 0)
        return fail(r, "tensor %" PRIu64 " has an empty name", i);
    gguf_escape(q, sizeof q, s.ptr, s.len, QUOTE_MAX);
    if (s.len > GGUF_MAX_NAME)
        return fail(r, "tensor %" PRIu64 " '%s': name of %" PRIu64 " bytes is longer than %d", i, q,
                    s.len, GGUF_MAX_NAME);
    if (memchr(s.ptr, 0, (size_t)s.len))
        return fail(r, "tensor %" PRIu64 " '%s': name contains a NUL byte", i, q);
    char *name = copy_str(s);
    if (!name)
        return fail(r, "out of memory for tensor '%s'", q);
    t->name = name;
    snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", q);
    uint64_t *slot = index_slot(f, f->tensor_slots, f->tensor_mask, tensor_name, name);
    if (*slot)
        return fail(r, "duplicate tensor name '%s' (tensors %" PRIu64 " and %" PRIu64 ")", q,
                    *slot - 1, i);
    *slot = i + 1;

    if (read_u32(r, "dimension count", &n_dims))
        return -1;
    if (n_dims < 1 || n_dims > TENSOR_MAX_DIMS)
        return fail(r, "%s: %" PRIu32 " dimensions (parley supports 1 to %d)", r->ctx, n_dims,
                    TENSOR_MAX_DIMS);
    if (take(r, 8ull * n_dims, "dimensions", &b))
        return -1;
    memcpy(dims, b, 8ull * n_dims);
    if (read_u32(r, "type", &type) || read_u64(r, "offset", &off))
        return -1;
    dims_str(shape, sizeof shape, dims, n_dims);

    const struct dtype_info *info = dtype_info(type);
    if (!info) {
        const char *foreign = foreign_type_name(type);
        if (foreign)
            return fail(r, "%s: type %" PRIu32 " (%s) is not supported by parley", r->ctx, type,
                        foreign);
        return fail(r, "%s: unknown type %" PRIu32, r->ctx, type);
    }
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (dims[d] == 0)
            return fail(r, "%s: shape %s has a zero dimension", r->ctx, shape);
        if (dims[d] > INT64_MAX)
            return fail(r, "%s: shape %s has a dimension too large", r->ctx, shape);
        if (elements > (uint64_t)INT64_MAX / dims[d])
            return fail(r, "%s: element count of shape %s overflows", r->ctx, shape);
        elements *= dims[d];
    }
    if (dims[0] % (uint64_t)info->block)
        return fail(r, "%s: %s rows of %" PRIu64 " elements are not whole blocks of %d", r->ctx,
                    info->name, dims[0], info->block);
    uint64_t bytes = elements / (uint64_t)info->block;
    if (bytes > UINT64_MAX / info->block_bytes)
        return fail(r, "%s: byte size of shape %s overflows", r->ctx, shape);
    bytes *= info->block_bytes;
    if (off % f->alignment)
        return fail(r, "%s: offset %" PRIu64 " is not a multiple of the alignment %" PRIu32, r->ctx,
                    off, f->alignment);
    int64_t ne[TENSOR_MAX_DIMS];
    for (uint32_t d = 0; d < n_dims; d++)
        ne[d] = (int64_t)dims[d];
    if (tensor_init(t, name, (enum dtype)type, (int)n_dims, ne, NULL))
        return fail(r, "%s: invalid shape %s for %s", r->ctx, shape, info->name);
    f->tensor_off[i] = off;
    *nbytes = bytes;
    return 0;
}

struct extent {
    uint64_t begin, end, index;
};

static int extent_cmp(const void *a, const void *b)
{
    const struct extent *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Places every tensor's data: inside the file and no two overlapping. */
static int place_tensors(struct reader *r, struct gguf_file *f, struct extent *ext)
{
    char q[QUOTE_MAX * 4 + 8], q2[QUOTE_MAX * 4 + 8];
    uint64_t n = f->n_tensors, a = f->alignment;
    f->data_offset = (r->pos + a - 1) / a * a;
    if (n && f->data_offset > r->size)
        return fail(r,
                    "truncated file: the data section starts at offset %" PRIu64
                    " (after the header, aligned to %" PRIu64 "), but the file ends at %zu",
                    f->data_offset, a, r->size);
    uint64_t room = n ? r->size - f->data_offset : 0;
    for (uint64_t i = 0; i < n; i++) {
        struct tensor *t = &f->tensors[i];
        uint64_t off = f->tensor_off[i], bytes = ext[i].end;
        if (off > room || bytes > room - off) {
            gguf_escape(q, sizeof q, t->name, strlen(t->name), QUOTE_MAX);
            return fail(r,
                        "tensor '%s': data [offset %" PRIu64 ", %" PRIu64 " bytes) at file "
                        "offset %" PRIu64 " ends past end of file (%zu bytes)",
                        q, off, bytes, f->data_offset, r->size);
        }
        t->data = f->map + f->data_offset + off;
        ext[i] = (struct extent){ off, off + bytes, i };
    }
    if (n > 1)
        qsort(ext, (size_t)n, sizeof *ext, extent_cmp);
    for (uint64_t i = 1; i < n; i++) {
        if (ext[i].begin < ext[i - 1].end) {
            const char *x = f->tensors[ext[i - 1].index].name, *y = f->tensors[ext[i].index].name;
            gguf_escape(q, sizeof q, x, strlen(x), QUOTE_MAX);
            gguf_escape(q2, sizeof q2, y, strlen(y), QUOTE_MAX);
            return fail(r,
                        "tensors '%s' [offset %" PRIu64 ", %" PRIu64 " bytes) and '%s' "
                        "[offset %" PRIu64 ", %" PRIu64 " bytes) overlap",
                        q, ext[i - 1].begin, ext[i - 1].end - ext[i - 1].begin, q2, ext[i].begin,
                        ext[i].end - ext[i].begin);
        }
    }
    return 0;
}

static int parse_tensors(struct reader *r, struct gguf_file *f, uint64_t n)
{
    if (n && (!(f->tensors = calloc((size_t)n, sizeof *f->tensors)) ||
              !(f->tensor_off = calloc((size_t)n, sizeof *f->tensor_off))))
        return fail(r, "out of memory for %" PRIu64 " tensors", n);
    f->n_tensors = n;
    if (index_alloc(n, &f->tensor_slots, &f->tensor_mask))
        return fail(r, "out of memory for %" PRIu64 " tensors", n);
    struct extent *ext = n ? calloc((size_t)n, sizeof *ext) : NULL;
    if (n && !ext)
        return fail(r, "out of memory for %" PRIu64 " tensors", n);
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++)
        rc = parse_tensor(r, f, i, &ext[i].end); /* byte size, until place_tensors */
    if (rc == 0)
        rc = place_tensors(r, f, ext);
    free(ext);
    return rc;
}

static int parse(struct gguf_file *f, const char *name, struct err *e)
{
    struct reader r = { .p = f->map, .size = f->size, .name = name, .e = e };
    uint64_t n_tensors, n_kv;
    char q[32];

    snprintf(r.ctx, sizeof r.ctx, "header");
    if (f->size < 4) {
        if (f->size == 0)
            return fail(&r, "empty file, not a GGUF file");
        if (memcmp(f->map, "GGUF", f->size) == 0)
            return fail(&r, "truncated file: header needs 24 bytes, but the file has %zu", f->size);
        return fail(&r, "not a GGUF file (%zu bytes)", f->size);
    }
    if (memcmp(f->map, "GGUF", 4) != 0)
        return fail(&r, "not a GGUF file (starts with '%s', not 'GGUF')",
                    gguf_escape(q, sizeof q, (const char *)f->map, 4, 4));
    r.pos = 4;
    if (read_u32(&r, "version", &f->version))
        return -1;
    if (f->version != 2 && f->version != 3)
        return fail(&r, "unsupported GGUF version %" PRIu32 "%s (parley reads versions 2 and 3)",
                    f->version, f->version >= 0x10000 ? ", a big-endian file?" : "");
    if (read_u64(&r, "tensor count", &n_tensors) || read_u64(&r, "key count", &n_kv))
        return -1;
    size_t rest = left(&r);
    if (n_tensors > rest / TENSOR_MIN_BYTES)
        return fail(&r,
                    "tensor count %" PRIu64 " is more than the %zu bytes left in the file "
                    "can hold",
                    n_tensors, rest);
    if (n_kv > rest / KV_MIN_BYTES)
        return fail(&r,
                    "key count %" PRIu64 " is more than the %zu bytes left in the file "
                    "can hold",
                    n_kv, rest);
    if (n_tensors * TENSOR_MIN_BYTES + n_kv * KV_MIN_BYTES > rest)
        return fail(&r,
                    "tensor count %" PRIu64 " and key count %" PRIu64 " are more than the "
                    "%zu bytes left in the file can hold",
                    n_tensors, n_kv, rest);
    if (parse_kvs(&r, f, n_kv) || parse_alignment(&r, f) || parse_tensors(&r, f, n_tensors))
        return -1;
    if (!(f->path = strdup(name)))
        return fail(&r, "out of memory");
    return 0;
}

int gguf_open_memory(struct gguf_file *f, const void *data, size_t size, const char *name,
                     struct err *e)
{
    memset(f, 0, sizeof *f);
    f->map = data;
    f->size = size;
    if (parse(f, name ? name : "<memory>", e) == 0)
        return 0;
    gguf_close(f);
    return -1;
}

int gguf_open(struct gguf_file *f, const char *path, struct err *e)
{
    struct stat st;
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        int saved = errno;
        close(fd);
        return err_set(e, "%s: %s", path, strerror(saved));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, "%s: not a regular file", path);
    }
    if (st.st_size == 0) { /* mmap refuses 0 bytes */
        close(fd);
        return gguf_open_memory(f, "", 0, path, e);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int saved = errno;
    close(fd);
    if (map == MAP_FAILED)
        return err_set(e, "%s: mmap: %s", path, strerror(saved));
    f->map = map;
    f->size = (size_t)st.st_size;
    f->owns_map = 1;
    if (parse(f, path, e) == 0)
        return 0;
    gguf_close(f);
    return -1;
}

void gguf_drop_pages(const struct gguf_file *f, const struct tensor *t)
{
    const uint8_t *p = t->data;
    if (!f->owns_map || p < f->map || p >= f->map + f->size)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t b = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + tensor_nbytes(t)) & ~(page - 1);
    /* a private read-only file mapping: the pages come back from the file if touched */
    if (end > b)
        madvise((void *)b, end - b, MADV_DONTNEED);
}

void gguf_close(struct gguf_file *f)
{
    if (!f)
        return;
    for (uint64_t i = 0; f->kv && i < f->n_kv; i++) {
        free(f->kv[i].key);
        free(f->kv[i].str_off);
    }
    for (uint64_t i = 0; f->tensors && i < f->n_tensors; i++)
        free((char *)(uintptr_t)f->tensors[i].name); /* our copy; const for users */
    free(f->kv);
    free(f->tensors);
    free(f->tensor_off);
    free(f->kv_slots);
    free(f->tensor_slots);
    free(f->path);
    if (f->owns_map && f->map)
        munmap((void *)(uintptr_t)f->map, f->size);
    memset(f, 0, sizeof *f);
}

/* ---- lookups --------------------------------------------------------------------------- */

const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key)
{
    const uint64_t *slot = index_slot(f, f->kv_slots, f->kv_mask, kv_name, key);
    return slot && *slot ? &f->kv[*slot - 1] : NULL;
}

const struct tensor *gguf_tensor(const struct gguf_file *f, const char *name)
{
    const uint64_t *slot = index_slot(f, f->tensor_slots, f->tensor_mask, tensor_name, name);
    return slot && *slot ? &f->tensors[*slot - 1] : NULL;
}

uint64_t gguf_tensor_offset(const struct gguf_file *f, const struct tensor *t)
{
    return f->tensor_off[t - f->tensors];
}

const char *gguf_type_name(enum gguf_type t)
{
    static const char *const names[N_TYPES] = { "u8",   "i8",  "u16", "i16", "u32", "i32", "f32",
                                                "bool", "str", "arr", "u64", "i64", "f64" };
    return (unsigned)t < N_TYPES ? names[t] : "?";
}

/* Element i of a scalar or array value: its bytes, or NULL when i is out of range. */
static const uint8_t *elem_ptr(const struct gguf_kv *kv, uint64_t i)
{
    if (i >= kv->count || kv->elem == GGUF_TYPE_STRING || !valid_type(kv->elem))
        return NULL;
    return (const uint8_t *)kv->value + i * type_size[kv->elem];
}

static int is_int_type(enum gguf_type t)
{
    return t <= GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}

/* Reads an integer element: 1 = signed value in *s, 0 = unsigned in *u, -1 = not integer. */
static int int_elem(enum gguf_type t, const uint8_t *p, int64_t *s, uint64_t *u)
{
    uint64_t v = 0;
    if (!is_int_type(t))
        return -1;
    memcpy(&v, p, type_size[t]); /* little-endian: the low bytes */
    switch (t) {
    case GGUF_TYPE_INT8: *s = (int8_t)v; return 1;
    case GGUF_TYPE_INT16: *s = (int16_t)v; return 1;
    case GGUF_TYPE_INT32: *s = (int32_t)v; return 1;
    case GGUF_TYPE_INT64: *s = (int64_t)v; return 1;
    default: *u = v; return 0;
    }
}

int gguf_array_i64(const struct gguf_kv *kv, uint64_t i, int64_t *out)
{
    const uint8_t *p = elem_ptr(kv, i);
    int64_t s;
    uint64_t u;
    if (!p)
        return -1;
    switch (int_elem(kv->elem, p, &s, &u)) {
    case 1: *out = s; return 0;
    case 0:
        if (u > INT64_MAX)
            return -1;
        *out = (int64_t)u;
        return 0;
    default: return -1;
    }
}

int gguf_array_f32(const struct gguf_kv *kv, uint64_t i, float *out)
{
    const uint8_t *p = elem_ptr(kv, i);
    if (!p)
        return -1;
    if (kv->elem == GGUF_TYPE_FLOAT32) {
        memcpy(out, p, 4);
        return 0;
    }
    if (kv->elem == GGUF_TYPE_FLOAT64) {
        double d;
        memcpy(&d, p, 8);
        *out = (float)d;
        return 0;
    }
    return -1;
}

struct gguf_str gguf_array_str(const struct gguf_kv *kv, uint64_t i)
{
    struct gguf_str s = { 0, NULL };
    const uint8_t *p;
    if (kv->type == GGUF_TYPE_STRING && i == 0)
        p = kv->value;
    else if (kv->type == GGUF_TYPE_ARRAY && kv->elem == GGUF_TYPE_STRING && i < kv->count)
        p = (const uint8_t *)kv->value + kv->str_off[i];
    else
        return s;
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

/* The key for a getter, or -1 with "missing key". */
static int getter_find(const struct gguf_file *f, const char *key, const struct gguf_kv **kv,
                       struct err *e)
{
    *kv = gguf_find(f, key);
    return *kv ? 0 : err_set(e, "%s: missing key '%s'", f->path, key);
}

static int wrong_type(const struct gguf_file *f, const struct gguf_kv *kv, const char *want,
                      struct err *e)
{
    if (kv->type == GGUF_TYPE_ARRAY)
        return err_set(e, "%s: key '%s' is an array of %s, expected %s", f->path, kv->key,
                       gguf_type_name(kv->elem), want);
    return err_set(e, "%s: key '%s' has type %s, expected %s", f->path, kv->key,
                   gguf_type_name(kv->type), want);
}

/* A scalar integer key as (signed, s) or (unsigned, u). */
static int get_int(const struct gguf_file *f, const char *key, const char *want, int64_t *s,
                   uint64_t *u, const struct gguf_kv **kvp, struct err *e)
{
    if (getter_find(f, key, kvp, e))
        return -1;
    const struct gguf_kv *kv = *kvp;
    if (kv->type == GGUF_TYPE_ARRAY || !is_int_type(kv->type))
        return wrong_type(f, kv, want, e);
    return int_elem(kv->type, kv->value, s, u);
}

int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out, struct err *e)
{
    const struct gguf_kv *kv;
    int64_t s = 0;
    uint64_t u = 0;
    int sign = get_int(f, key, "an integer", &s, &u, &kv, e);
    if (sign < 0)
        return -1;
    if (sign ? s < 0 || s > UINT32_MAX : u > UINT32_MAX) {
        if (sign)
            return err_set(e, "%s: key '%s' = %" PRId64 " does not fit in u32", f->path, key, s);
        return err_set(e, "%s: key '%s' = %" PRIu64 " does not fit in u32", f->path, key, u);
    }
    *out = (uint32_t)(sign ? (uint64_t)s : u);
    return 0;
}

int gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out, struct err *e)
{
    const struct gguf_kv *kv;
    int64_t s = 0;
    uint64_t u = 0;
    int sign = get_int(f, key, "an integer", &s, &u, &kv, e);
    if (sign < 0)
        return -1;
    if (!sign && u > INT64_MAX)
        return err_set(e, "%s: key '%s' = %" PRIu64 " does not fit in i64", f->path, key, u);
    *out = sign ? s : (int64_t)u;
    return 0;
}

int gguf_get_int(const struct gguf_file *f, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 struct err *e)
{
    int64_t v;
    if (gguf_get_i64(f, key, &v, e) != 0)
        return -1;
    if (v < lo || v > hi)
        return err_set(e, "%s: %s = %lld is outside [%lld, %lld]", f->path, key, (long long)v,
                       (long long)lo, (long long)hi);
    *out = v;
    return 0;
}

int gguf_get_int32(const struct gguf_file *f, const char *key, int lo, int hi, int *out,
                   struct err *e)
{
    int64_t v = 0; /* gcc 12 -O2 cannot see that an error return leaves it unread */
    if (gguf_get_int(f, key, lo, hi, &v, e) != 0)
        return -1;
    *out = (int)v;
    return 0;
}

int gguf_get_f32(const struct gguf_file *f, const char *key, float *out, struct err *e)
{
    const struct gguf_kv *kv;
    if (getter_find(f, key, &kv, e))
        return -1;
    if (kv->type == GGUF_TYPE_ARRAY || gguf_array_f32(kv, 0, out))
        return wrong_type(f, kv, "f32", e);
    return 0;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, int *out, struct err *e)
{
    const struct gguf_kv *kv;
    if (getter_find(f, key, &kv, e))
        return -1;
    if (kv->type != GGUF_TYPE_BOOL)
        return wrong_type(f, kv, "bool", e);
    *out = *(const uint8_t *)kv->value != 0;
    return 0;
}

int gguf_get_str(const struct gguf_file *f, const char *key, char *buf, size_t len, struct err *e)
{
    const struct gguf_kv *kv;
    if (getter_find(f, key, &kv, e))
        return -1;
    if (kv->type != GGUF_TYPE_STRING)
        return wrong_type(f, kv, "str", e);
    struct gguf_str s = gguf_array_str(kv, 0);
    if (s.len >= len)
        return err_set(e, "%s: key '%s': string of %" PRIu64 " bytes does not fit in %zu", f->path,
                       key, s.len, len);
    memcpy(buf, s.ptr, (size_t)s.len);
    buf[s.len] = 0;
    return 0;
}

int gguf_get_array(const struct gguf_file *f, const char *key, enum gguf_type elem,
                   const struct gguf_kv **out, struct err *e)
{
    const struct gguf_kv *kv;
    char want[32];
    if (getter_find(f, key, &kv, e))
        return -1;
    int ok = kv->type == GGUF_TYPE_ARRAY;
    if (elem == GGUF_TYPE_INT64) {
        ok = ok && is_int_type(kv->elem);
        snprintf(want, sizeof want, "an array of integers");
    } else if (elem == GGUF_TYPE_FLOAT32) {
        ok = ok && (kv->elem == GGUF_TYPE_FLOAT32 || kv->elem == GGUF_TYPE_FLOAT64);
        snprintf(want, sizeof want, "an array of floats");
    } else {
        ok = ok && kv->elem == elem;
        snprintf(want, sizeof want, "an array of %s", gguf_type_name(elem));
    }
    if (!ok)
        return wrong_type(f, kv, want, e);
    *out = kv;
    return 0;
}

static const char *types_str(char *buf, size_t len, uint64_t types)
{
    size_t o = 0;
    buf[0] = 0;
    for (uint32_t t = 0; t < 64 && o < len; t++) {
        const struct dtype_info *info = (types >> t) & 1 ? dtype_info(t) : NULL;
        if (info)
            o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? ", " : "", info->name);
    }
    return buf;
}

int gguf_get_tensor(const struct gguf_file *f, const char *name, uint64_t types, int n_dims,
                    const int64_t *shape, const struct tensor **out, struct err *e)
{
    char have[96], want[96] = "[", tl[64];
    const struct tensor *t = gguf_tensor(f, name);
    if (!t)
        return err_set(e, "%s: missing tensor '%s'", f->path, name);
    if (t->type >= 64 || !((types >> t->type) & 1))
        return err_set(e, "%s: tensor '%s' has type %s, expected %s", f->path, name,
                       dtype_info(t->type)->name, types_str(tl, sizeof tl, types));
    int same = n_dims >= 1 && n_dims <= TENSOR_MAX_DIMS;
    for (int i = 0; i < TENSOR_MAX_DIMS && same; i++)
        same = t->ne[i] == (i < n_dims ? shape[n_dims - 1 - i] : 1);
    if (!same) {
        size_t o = 1;
        for (int i = 0; i < n_dims && o < sizeof want; i++)
            o += (size_t)snprintf(want + o, sizeof want - o, "%lld%s", (long long)shape[i],
                                  i + 1 < n_dims ? ", " : "");
        if (o < sizeof want)
            snprintf(want + o, sizeof want - o, "]");
        return err_set(e, "%s: tensor '%s' has shape %s, expected %s", f->path, name,
                       tensor_shape_str(t, have, sizeof have), want);
    }
    *out = t;
    return 0;
}

/* ---- formatting ------------------------------------------------------------------------ */

struct out {
    char *buf;
    size_t len, n;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    if (o->n + 1 >= o->len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(o->buf + o->n, o->len - o->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        o->n = o->n + (size_t)k < o->len ? o->n + (size_t)k : o->len - 1;
}

static void put_str(struct out *o, struct gguf_str s, int max_str)
{
    char tmp[1024];
    uint64_t max = max_str > 0 ? (uint64_t)max_str : 1;
    if (max > sizeof tmp / 4 - 4)
        max = sizeof tmp / 4 - 4;
    put(o, "\"%s\"", gguf_escape(tmp, sizeof tmp, s.ptr, s.len, max));
    if (s.len > max)
        put(o, " (%" PRIu64 " bytes)", s.len);
}

static void put_elem(struct out *o, const struct gguf_kv *kv, uint64_t i, int max_str)
{
    const uint8_t *p = elem_ptr(kv, i);
    int64_t s;
    uint64_t u;
    if (kv->elem == GGUF_TYPE_STRING) {
        put_str(o, gguf_array_str(kv, i), max_str);
        return;
    }
    switch (kv->elem) {
    case GGUF_TYPE_FLOAT32: {
        float v;
        memcpy(&v, p, 4);
        put(o, "%.9g", (double)v);
        return;
    }
    case GGUF_TYPE_FLOAT64: {
        double v;
        memcpy(&v, p, 8);
        put(o, "%.17g", v);
        return;
    }
    case GGUF_TYPE_BOOL: put(o, "%s", p[0] ? "true" : "false"); return;
    default:
        if (int_elem(kv->elem, p, &s, &u) == 1)
            put(o, "%" PRId64, s);
        else
            put(o, "%" PRIu64, u);
    }
}

const char *gguf_format_value(const struct gguf_kv *kv, char *buf, size_t len, int max_elems,
                              int max_str)
{
    struct out o = { buf, len, 0 };
    if (len == 0)
        return buf;
    buf[0] = 0;
    if (kv->type != GGUF_TYPE_ARRAY) {
        put_elem(&o, kv, 0, max_str);
        return buf;
    }
    uint64_t shown = kv->count < (uint64_t)(max_elems > 0 ? max_elems : 0)
                         ? kv->count
                         : (uint64_t)(max_elems > 0 ? max_elems : 0);
    put(&o, "[");
    for (uint64_t i = 0; i < shown; i++) {
        put_elem(&o, kv, i, max_str);
        if (i + 1 < kv->count)
            put(&o, ", ");
    }
    if (shown < kv->count)
        put(&o, "... (%" PRIu64 " total)", kv->count);
    put(&o, "]");
    return buf;
}
