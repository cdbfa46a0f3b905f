/*
 * gguf_fuzz — libFuzzer target for the GGUF reader: gguf_open_memory() on the input and, when
 * it is accepted, every lookup, getter and formatter over every key and tensor, reading each
 * tensor's first and last byte, so that all of them are fuzzed against files the reader let
 * through. Seeds: tests/fuzz/corpus/gguf/: valid-* and bad-* are written by
 * tests/golden/gguf_python.py --corpus; found-* are inputs the fuzzer found that reach code
 * the written ones do not (none crashed).
 *
 *   make fuzz-build && build/fuzz/gguf_fuzz -max_total_time=120 tests/fuzz/corpus/gguf
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/err.h"
#include "runtime/gguf.h"
#include "runtime/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink; /* keeps the reads */

static void fuzz_kv(const struct gguf_file *f, const struct gguf_kv *kv)
{
    static const enum gguf_type elems[] = { GGUF_TYPE_STRING, GGUF_TYPE_INT64, GGUF_TYPE_FLOAT32,
                                            GGUF_TYPE_UINT8, GGUF_TYPE_BOOL };
    const struct gguf_kv *arr;
    struct err e;
    char buf[512], small[4];
    uint32_t u;
    int64_t s;
    float x;
    int b;
    sink += gguf_find(f, kv->key) == kv;
    sink += (uint64_t)gguf_get_u32(f, kv->key, &u, &e) + strlen(e.msg);
    sink += (uint64_t)gguf_get_i64(f, kv->key, &s, &e);
    sink += (uint64_t)gguf_get_f32(f, kv->key, &x, &e);
    sink += (uint64_t)gguf_get_bool(f, kv->key, &b, &e);
    sink += (uint64_t)gguf_get_str(f, kv->key, buf, sizeof buf, &e);
    sink += (uint64_t)gguf_get_str(f, kv->key, small, sizeof small, &e);
    for (size_t i = 0; i < sizeof elems / sizeof elems[0]; i++)
        sink += (uint64_t)gguf_get_array(f, kv->key, elems[i], &arr, &e);
    sink += strlen(gguf_format_value(kv, buf, sizeof buf, 8, 40));
    sink += strlen(gguf_format_value(kv, small, sizeof small, 2, 2));
    uint64_t n = kv->count < 256 ? kv->count : 256;
    for (uint64_t i = 0; i <= n; i++) { /* one past the end too */
        struct gguf_str str = gguf_array_str(kv, i);
        if (str.len)
            sink += (unsigned char)str.ptr[0] + (unsigned char)str.ptr[str.len - 1];
        sink += (uint64_t)gguf_array_i64(kv, i, &s) + (uint64_t)gguf_array_f32(kv, i, &x);
    }
    if (kv->count > 256) { /* the last element of long arrays */
        struct gguf_str str = gguf_array_str(kv, kv->count - 1);
        sink += str.len ? (unsigned char)str.ptr[str.len - 1] : 0;
        sink += (uint64_t)gguf_array_i64(kv, kv->count - 1, &s);
    }
}

static void fuzz_tensor(const struct gguf_file *f, const struct tensor *t)
{
    const struct tensor *got;
    struct err e;
    char shape[128];
    int64_t want[TENSOR_MAX_DIMS];
    for (int i = 0; i < t->n_dims; i++)
        want[i] = t->ne[t->n_dims - 1 - i];
    uint64_t n = tensor_nbytes(t);
    const uint8_t *d = t->data;
    sink += d[0] + d[n - 1];
    sink += gguf_tensor(f, t->name) == t;
    sink += gguf_tensor_offset(f, t);
    sink += strlen(tensor_shape_str(t, shape, sizeof shape));
    sink += (uint64_t)gguf_get_tensor(f, t->name, GGUF_TYPES_ANY, t->n_dims, want, &got, &e);
    sink += (uint64_t)gguf_get_tensor(f, t->name, GGUF_TYPES(DTYPE_F32), 1, want, &got, &e);
    sink += strlen(e.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy: libFuzzer's buffer is exact too, but keep the contract explicit */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    struct gguf_file f;
    struct err e;
    if (gguf_open_memory(&f, copy, size, "fuzz.gguf", &e) == 0) {
        for (uint64_t i = 0; i < f.n_kv; i++)
            fuzz_kv(&f, &f.kv[i]);
        for (uint64_t i = 0; i < f.n_tensors; i++)
            fuzz_tensor(&f, &f.tensors[i]);
        sink += gguf_find(&f, "general.alignment") != NULL;
        sink += gguf_tensor(&f, "") != NULL;
    } else {
        sink += strlen(e.msg);
    }
    gguf_close(&f);
    free(copy);
    return 0;
}
