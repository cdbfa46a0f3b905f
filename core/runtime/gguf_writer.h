/*
 * gguf_writer — writes GGUF v3 files, byte for byte as deploy/gguf.py does: the keys in the
 * order they were added, the tensor infos in the order they were added, the header padded
 * with zeros to the alignment, then each tensor's bytes padded to the alignment (offsets are
 * the running sum of the padded sizes, as the ecosystem's readers expect).
 *
 * Errors are sticky, like stdio's: an add that fails (duplicate key or tensor name, empty or
 * overlong name, bad shape, out of memory) returns -1, the first message is kept, and
 * gguf_writer_write() then fails with it without writing anything.
 *
 *     struct gguf_writer *w = gguf_writer_new();
 *     gguf_writer_add_str(w, "general.architecture", "glm4voice");
 *     gguf_writer_add_tensor(w, "w", DTYPE_F32, 2, (int64_t[]){4, 8}, data);
 *     if (gguf_writer_write(w, "out.gguf", &e)) ...
 *     gguf_writer_free(w);
 */
#ifndef PARLEY_GGUF_WRITER_H
#define PARLEY_GGUF_WRITER_H

#include <stdint.h>

#include "runtime/dtype.h"
#include "runtime/err.h"

struct gguf_writer;

/* A writer with alignment 32 (GGUF_DEFAULT_ALIGNMENT); NULL when out of memory. */
struct gguf_writer *gguf_writer_new(void);
void gguf_writer_free(struct gguf_writer *w);

/* Sets the alignment (a power of two) and, when it is not the default, adds the key
 * general.alignment as deploy/gguf.py does; call it first for byte-identical output. */
int gguf_writer_set_alignment(struct gguf_writer *w, uint32_t alignment);

/* Metadata; keys and strings are copied. */
int gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t v);
int gguf_writer_add_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_add_bool(struct gguf_writer *w, const char *key, int v);
int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *v);
int gguf_writer_add_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
int gguf_writer_add_arr_u32(struct gguf_writer *w, const char *key, const uint32_t *v, uint64_t n);
int gguf_writer_add_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n);
int gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *v,
                            uint64_t n);

/* A tensor of n_dims dimensions, shape in PyTorch order (outermost first); its last
 * dimension must be whole blocks of the type. data (the encoded bytes, tensor_nbytes of
 * them) is not copied: it must stay valid until gguf_writer_write() returns. */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum dtype type, int n_dims,
                           const int64_t *shape, const void *data);

/* Writes the file to path + ".tmp.<pid>", then renames it over path, so that readers never
 * see a half-written file. Returns 0, or -1 with e->msg naming the path (or the add that
 * failed). The writer can be written again or freed afterwards. */
int gguf_writer_write(struct gguf_writer *w, const char *path, struct err *e);

#endif
