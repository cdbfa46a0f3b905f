/*
 * gguf_writer — GGUF v3 output (layout in gguf.h; byte order of fields in gguf_writer.h).
 *
 * Keys are serialized into one growing buffer as they are added; tensors are remembered
 * (name, type, ne[] innermost first, data pointer) and laid out when the file is written.
 */
#include "runtime/gguf_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/gguf.h"
#include "runtime/tensor.h"

struct wtensor {
    char *name;
    struct tensor t; /* shape and byte size; t.name is name */
};

struct gguf_writer {
    uint8_t *kv; /* the serialized key/value section */
    size_t kv_len, kv_cap;
    char **keys;
    size_t n_keys, keys_cap;
    struct wtensor *tensors;
    size_t n_tensors, tensors_cap;
    uint32_t alignment;
    int failed;
    char msg[ERR_MAX]; /* the first failure */
};

static int wfail(struct gguf_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int wfail(struct gguf_writer *w, const char *fmt, ...)
{
    if (!w->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->msg, sizeof w->msg, fmt, ap);
        va_end(ap);
        w->failed = 1;
    }
    return -1;
}

/* Returns p (an array of *cap elements of size bytes) grown to hold need > 0 elements,
 * updating *cap; NULL when out of memory, p then still valid. */
static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / size)
            return NULL;
        n *= 2;
    }
    void *q = realloc(p, n * size);
    if (q)
        *cap = n;
    return q;
}

static int put(struct gguf_writer *w, const void *b, size_t n)
{
    uint8_t *kv;
    if (n == 0)
        return 0;
    if (n > SIZE_MAX - w->kv_len || !(kv = grow(w->kv, &w->kv_cap, w->kv_len + n, 1)))
        return wfail(w, "out of memory for metadata");
    w->kv = kv;
    memcpy(w->kv + w->kv_len, b, n);
    w->kv_len += n;
    return 0;
}

static int put_u32(struct gguf_writer *w, uint32_t v)
{
    return put(w, &v, 4);
}

static int put_u64(struct gguf_writer *w, uint64_t v)
{
    return put(w, &v, 8);
}

static int put_str(struct gguf_writer *w, const char *s)
{
    size_t n = strlen(s);
    return put_u64(w, n) || put(w, s, n) ? -1 : 0;
}

/* Checks the key and writes it with its type; a linear scan is fine for the ~100 keys of a
 * model file (the big vocabularies are single keys). */
static int begin_key(struct gguf_writer *w, const char *key, enum gguf_type type)
{
    if (!key || !*key)
        return wfail(w, "empty metadata key");
    for (size_t i = 0; i < w->n_keys; i++)
        if (strcmp(w->keys[i], key) == 0)
            return wfail(w, "duplicate metadata key '%s'", key);
    char *copy = strdup(key), **keys = NULL;
    if (!copy || !(keys = grow(w->keys, &w->keys_cap, w->n_keys + 1, sizeof *w->keys))) {
        free(copy);
        return wfail(w, "out of memory for key '%s'", key);
    }
    w->keys = keys;
    w->keys[w->n_keys++] = copy;
    return put_str(w, key) || put_u32(w, type) ? -1 : 0;
}

static int add_scalar(struct gguf_writer *w, const char *key, enum gguf_type type, const void *v,
                      size_t size)
{
    return begin_key(w, key, type) || put(w, v, size) ? -1 : 0;
}

static int add_array(struct gguf_writer *w, const char *key, enum gguf_type elem, const void *v,
                     uint64_t n, size_t size)
{
    if (n && !v)
        return wfail(w, "key '%s': NULL array", key);
    if (n > SIZE_MAX / size)
        return wfail(w, "key '%s': array too large", key);
    return begin_key(w, key, GGUF_TYPE_ARRAY) || put_u32(w, elem) || put_u64(w, n) ||
                   put(w, v, (size_t)n * size)
               ? -1
               : 0;
}

struct gguf_writer *gguf_writer_new(void)
{
    struct gguf_writer *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(struct gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_keys; i++)
        free(w->keys[i]);
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->keys);
    free(w->tensors);
    free(w->kv);
    free(w);
}

int gguf_writer_set_alignment(struct gguf_writer *w, uint32_t alignment)
{
    if (alignment == 0 || (alignment & (alignment - 1)))
        return wfail(w, "alignment %u is not a power of two", alignment);
    w->alignment = alignment;
    if (alignment == GGUF_DEFAULT_ALIGNMENT)
        return 0;
    return gguf_writer_add_u32(w, "general.alignment", alignment);
}

int gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
    return add_scalar(w, key, GGUF_TYPE_UINT32, &v, 4);
}

int gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t v)
{
    return add_scalar(w, key, GGUF_TYPE_INT32, &v, 4);
}

int gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t v)
{
    return add_scalar(w, key, GGUF_TYPE_UINT64, &v, 8);
}

int gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t v)
{
    return add_scalar(w, key, GGUF_TYPE_INT64, &v, 8);
}

int gguf_writer_add_f32(struct gguf_writer *w, const char *key, float v)
{
    return add_scalar(w, key, GGUF_TYPE_FLOAT32, &v, 4);
}

int gguf_writer_add_bool(struct gguf_writer *w, const char *key, int v)
{
    uint8_t b = v != 0;
    return add_scalar(w, key, GGUF_TYPE_BOOL, &b, 1);
}

int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *v)
{
    if (!v)
        return wfail(w, "key '%s': NULL string", key ? key : "");
    return begin_key(w, key, GGUF_TYPE_STRING) || put_str(w, v) ? -1 : 0;
}

int gguf_writer_add_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n)
{
    return add_array(w, key, GGUF_TYPE_INT32, v, n, 4);
}

int gguf_writer_add_arr_u32(struct gguf_writer *w, const char *key, const uint32_t *v, uint64_t n)
{
    return add_array(w, key, GGUF_TYPE_UINT32, v, n, 4);
}

int gguf_writer_add_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n)
{
    return add_array(w, key, GGUF_TYPE_FLOAT32, v, n, 4);
}

int gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *v,
                            uint64_t n)
{
    if (n && !v)
        return wfail(w, "key '%s': NULL array", key ? key : "");
    for (uint64_t i = 0; i < n; i++)
        if (!v[i])
            return wfail(w, "key '%s': string %llu is NULL", key ? key : "", (unsigned long long)i);
    if (begin_key(w, key, GGUF_TYPE_ARRAY) || put_u32(w, GGUF_TYPE_STRING) || put_u64(w, n))
        return -1;
    for (uint64_t i = 0; i < n; i++)
        if (put_str(w, v[i]))
            return -1;
    return 0;
}

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum dtype type, int n_dims,
                           const int64_t *shape, const void *data)
{
    int64_t ne[TENSOR_MAX_DIMS];
    if (!name || !*name)
        return wfail(w, "empty tensor name");
    size_t len = strlen(name);
    if (len > GGUF_MAX_NAME)
        return wfail(w, "tensor '%s': name of %zu bytes is longer than %d", name, len,
                     GGUF_MAX_NAME);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return wfail(w, "duplicate tensor name '%s'", name);
    const struct dtype_info *info = dtype_info(type);
    if (!info)
        return wfail(w, "tensor '%s': unknown type %d", name, (int)type);
    if (n_dims < 1 || n_dims > TENSOR_MAX_DIMS)
        return wfail(w, "tensor '%s': %d dimensions (1 to %d allowed)", name, n_dims,
                     TENSOR_MAX_DIMS);
    for (int i = 0; i < n_dims; i++)
        ne[i] = shape[n_dims - 1 - i];
    struct wtensor wt = { 0 };
    if (tensor_init(&wt.t, NULL, type, n_dims, ne, data)) {
        char s[96];
        size_t o = 0;
        for (int i = 0; i < n_dims && o < sizeof s; i++)
            o +=
                (size_t)snprintf(s + o, sizeof s - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
        return wfail(w,
                     "tensor '%s': shape [%s] is not valid for %s (dimensions >= 1, the "
                     "last a multiple of %d, size without overflow)",
                     name, s, info->name, info->block);
    }
    if (!data)
        return wfail(w, "tensor '%s': NULL data", name);
    struct wtensor *ts = NULL;
    if (!(wt.name = strdup(name)) ||
        !(ts = grow(w->tensors, &w->tensors_cap, w->n_tensors + 1, sizeof *w->tensors))) {
        free(wt.name);
        return wfail(w, "out of memory for tensor '%s'", name);
    }
    w->tensors = ts;
    wt.t.name = wt.name;
    w->tensors[w->n_tensors++] = wt;
    return 0;
}

static uint64_t padded(uint64_t n, uint32_t a)
{
    return (n + a - 1) / a * a;
}

static int write_all(FILE *fp, const void *p, size_t n)
{
    return n == 0 || fwrite(p, 1, n, fp) == n ? 0 : -1;
}

static int write_zeros(FILE *fp, uint64_t n)
{
    static const uint8_t zeros[256];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (write_all(fp, zeros, k))
            return -1;
        n -= k;
    }
    return 0;
}

static int write_file(const struct gguf_writer *w, FILE *fp)
{
    uint32_t version = 3;
    uint64_t n_tensors = w->n_tensors, n_kv = w->n_keys, off = 0, pos = 24 + w->kv_len;
    if (write_all(fp, "GGUF", 4) || write_all(fp, &version, 4) || write_all(fp, &n_tensors, 8) ||
        write_all(fp, &n_kv, 8) || write_all(fp, w->kv, w->kv_len))
        return -1;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const struct tensor *t = &w->tensors[i].t;
        uint64_t len = strlen(t->name), dims[TENSOR_MAX_DIMS];
        uint32_t n_dims = (uint32_t)t->n_dims, type = (uint32_t)t->type;
        for (int d = 0; d < t->n_dims; d++)
            dims[d] = (uint64_t)t->ne[d];
        if (write_all(fp, &len, 8) || write_all(fp, t->name, len) || write_all(fp, &n_dims, 4) ||
            write_all(fp, dims, 8 * n_dims) || write_all(fp, &type, 4) || write_all(fp, &off, 8))
            return -1;
        pos += 8 + len + 4 + 8 * n_dims + 4 + 8;
        off += padded(tensor_nbytes(t), w->alignment);
    }
    if (write_zeros(fp, padded(pos, w->alignment) - pos))
        return -1;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const struct tensor *t = &w->tensors[i].t;
        uint64_t n = tensor_nbytes(t);
        if (write_all(fp, t->data, (size_t)n) || write_zeros(fp, padded(n, w->alignment) - n))
            return -1;
    }
    return 0;
}

int gguf_writer_write(struct gguf_writer *w, const char *path, struct err *e)
{
    if (w->failed)
        return err_set(e, "%s: %s", path, w->msg);
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return err_set(e, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(e, "%s: %s", tmp, strerror(errno));
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        int saved = errno;
        close(fd);
        unlink(tmp);
        return err_set(e, "%s: %s", tmp, strerror(saved));
    }
    int rc = write_file(w, fp);
    if (rc == 0)
        rc = fflush(fp) == 0 && fsync(fd) == 0 ? 0 : -1;
    int saved = errno;
    if (fclose(fp) != 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -1;
        saved = errno;
    }
    if (rc) {
        unlink(tmp);
        return err_set(e, "%s: %s", path, strerror(saved));
    }
    return 0;
}
