/*
 * gguf — model files: a read-only memory map validated up front, and typed lookups.
 *
 * Layout (GGUF v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64 key
 * count; the keys (string key, u32 value type, value); the tensor infos (string name, u32
 * dimension count, u64 dims innermost first, u32 type, u64 offset into the data section);
 * padding to the alignment (key general.alignment, default 32); the data section.
 * A string is a u64 byte length and the bytes (no NUL); an array is a u32 element type, a
 * u64 count and the elements. Version 2 has the same layout and is read too.
 *
 * gguf_open() checks everything before returning: magic, version, counts against the file
 * size (before allocating anything for them), string lengths, value types (arrays of arrays
 * are refused), empty keys, NUL bytes in names, duplicate keys and tensor names, the
 * alignment (a u32 power of two), tensor types and shapes (1..4 dims, each >= 1, rows of
 * whole blocks, element count and byte size without overflow), offset alignment, that every
 * tensor's bytes lie inside the file and that no two tensors overlap, all with
 * overflow-checked arithmetic. Any failure is a message naming the file and the offending
 * key or tensor. After a successful open, lookups cannot fail on the file's structure.
 *
 * Values in the mapping are not aligned: read them through the getters (or memcpy).
 * Only little-endian hosts are supported, like the files themselves. An open gguf_file is
 * never written again, so any number of threads may use it at once.
 */
#ifndef PARLEY_GGUF_H
#define PARLEY_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/err.h"
#include "runtime/tensor.h"

enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
};

#define GGUF_DEFAULT_ALIGNMENT 32
/* Longest tensor name, in bytes. GLM-4-Voice needs more than the 63 that ggml's own C tools
 * accept (gguf-py has no limit): transformer.encoder.layers.39.self_attention.query_key_value
 * .weight is 66. */
#define GGUF_MAX_NAME 256

/* A string inside the mapping: not NUL-terminated. */
struct gguf_str {
    uint64_t len;
    const char *ptr;
};

struct gguf_kv {
    char *key; /* NUL-terminated copy */
    enum gguf_type type;
    enum gguf_type elem; /* arrays: element type */
    uint64_t count;      /* arrays: element count; otherwise 1 */
    const void *value;   /* scalars and arrays of scalars: the bytes in the mapping;
                            strings: points at the u64 length prefix */
    uint64_t *str_off;   /* string arrays: offset from value of each element's length
                            prefix (so gguf_array_str is O(1)); otherwise NULL */
};

struct gguf_file {
    char *path;
    const uint8_t *map;
    size_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv;
    struct gguf_kv *kv;
    uint64_t n_tensors;
    struct tensor *tensors; /* names are NUL-terminated copies; data points into the map */
    uint64_t *tensor_off;   /* each tensor's offset in the data section, as in the file */
    uint64_t data_offset;   /* start of the data section in the file */
    int owns_map;           /* 1 when gguf_open mapped the file */
    /* hash indexes of keys and tensor names: slot = index + 1, 0 = empty; private */
    uint64_t *kv_slots, *tensor_slots;
    uint64_t kv_mask, tensor_mask;
};

/* Maps and validates a file. On failure returns -1 with e->msg starting with the path, and
 * leaves f so that gguf_close(f) is harmless. */
int gguf_open(struct gguf_file *f, const char *path, struct err *e);

/* Tells the kernel that the mapped pages wholly inside tensor t's data will not be read again
 * (a backend holds its own copy): they leave the process's memory; reading them later reads
 * the file again. Does nothing for a buffer from gguf_open_memory or a tensor of another file. */
void gguf_drop_pages(const struct gguf_file *f, const struct tensor *t);

/* Validates a buffer the caller keeps alive (tests, fuzzing); name is used in messages. */
int gguf_open_memory(struct gguf_file *f, const void *data, size_t size, const char *name,
                     struct err *e);

/* Frees everything and unmaps; safe on a zeroed, failed or already closed struct. */
void gguf_close(struct gguf_file *f);

/* O(1) lookups; NULL when absent. */
const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key);
const struct tensor *gguf_tensor(const struct gguf_file *f, const char *name);

/*
 * Typed getters for model code: return 0, or -1 with a message naming the file and key when
 * the key is missing or has another type. Integer getters accept any integer type whose value
 * fits. gguf_get_f32 accepts f32 and f64. gguf_get_str copies into buf (NUL-terminated) and
 * fails when it does not fit.
 */
int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out, struct err *e);
int gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out, struct err *e);
/* An integer key whose value must lie in [lo, hi]; the message names the file, key, value and
 * range otherwise. */
int gguf_get_int(const struct gguf_file *f, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 struct err *e);
/* gguf_get_int into an int, for the many model hyperparameters stored as ints. */
int gguf_get_int32(const struct gguf_file *f, const char *key, int lo, int hi, int *out,
                   struct err *e);
int gguf_get_f32(const struct gguf_file *f, const char *key, float *out, struct err *e);
int gguf_get_bool(const struct gguf_file *f, const char *key, int *out, struct err *e);
int gguf_get_str(const struct gguf_file *f, const char *key, char *buf, size_t len, struct err *e);

/* Looks up an array whose elements have type elem (any integer type when elem is INT64,
 * f32 or f64 when elem is FLOAT32). */
int gguf_get_array(const struct gguf_file *f, const char *key, enum gguf_type elem,
                   const struct gguf_kv **out, struct err *e);

/* String i of a string array, or of a string value when i == 0; {0, NULL} when kv holds no
 * such string. */
struct gguf_str gguf_array_str(const struct gguf_kv *kv, uint64_t i);

/* Element i of an integer (or integer array) value as int64; -1 when i is out of range, the
 * value is not an integer or a u64 does not fit. */
int gguf_array_i64(const struct gguf_kv *kv, uint64_t i, int64_t *out);

/* Element i of an f32/f64 (or such array) value; -1 when out of range or not a float. */
int gguf_array_f32(const struct gguf_kv *kv, uint64_t i, float *out);

/* Looks up a tensor and checks its type set and shape (PyTorch order, outermost first;
 * n_dims entries; trailing size-1 dimensions of the file's ne[] are padding, so a file's
 * [8] matches an expected [1, 8]). `types` is a bit set of (1ull << dtype), see GGUF_TYPES. */
int gguf_get_tensor(const struct gguf_file *f, const char *name, uint64_t types, int n_dims,
                    const int64_t *shape, const struct tensor **out, struct err *e);

#define GGUF_TYPES(t)    (1ull << (t))
#define GGUF_TYPES_FLOAT (GGUF_TYPES(DTYPE_F32) | GGUF_TYPES(DTYPE_F16) | GGUF_TYPES(DTYPE_BF16))
#define GGUF_TYPES_ANY   (GGUF_TYPES_FLOAT | GGUF_TYPES(DTYPE_Q8_0))

/* Offset of tensor t (one of f->tensors) in the data section. */
uint64_t gguf_tensor_offset(const struct gguf_file *f, const struct tensor *t);

/* "u32", "str", "arr", ...; "?" for an unknown type. */
const char *gguf_type_name(enum gguf_type t);

/* Writes n bytes of s (a name or string from a file) into buf for people: printable ASCII
 * and valid UTF-8 as they are, quotes and backslashes escaped, other bytes as \xNN, cut with
 * "..." after max bytes of s. Always NUL-terminates buf (len >= 1); returns buf. */
const char *gguf_escape(char *buf, size_t len, const char *s, uint64_t n, uint64_t max);

/* Formats a value for people: numbers, quoted strings with non-printable bytes escaped and
 * cut after max_str bytes, arrays as [a, b, ... (N total)] after max_elems elements.
 * Always NUL-terminates buf (len >= 1); returns buf. */
const char *gguf_format_value(const struct gguf_kv *kv, char *buf, size_t len, int max_elems,
                              int max_str);

#endif
