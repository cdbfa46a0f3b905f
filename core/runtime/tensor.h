/*
 * tensor — a typed view of up to four dimensions over memory someone else owns (usually a
 * model file's read-only mapping).
 *
 * Dimensions follow the GGUF convention: ne[0] is the innermost, contiguous one. A PyTorch
 * weight of shape [M, K] (M output rows of K inputs) is ne = {K, M}; nb[i] is the byte stride
 * of dimension i, with nb[0] the size of one element (or block) column step as in GGUF:
 * nb[1] = row bytes, nb[i+1] = nb[i] * ne[i].
 */
#ifndef PARLEY_TENSOR_H
#define PARLEY_TENSOR_H

#include <stdint.h>

#include "runtime/dtype.h"

#define TENSOR_MAX_DIMS 4

/* How data holds the values: rows as in the file (nb as below), or a layout a backend made
 * for one of its kernels (backend_weight), which only that backend's operations read. */
enum tensor_layout {
    TENSOR_ROWS = 0,
    TENSOR_BF16_PANELS = 1, /* kernels/gemm_bf16.h: gemm_bf16_pack's panels */
    TENSOR_PANELS = 2,      /* kernels/gemm_panel.h: gemm_panel_pack's panels (f32, f16) */
};

struct tensor {
    const char *name; /* NUL-terminated; owned by whoever made the tensor */
    enum dtype type;
    int n_dims; /* 1..TENSOR_MAX_DIMS; unused ne[] are 1 */
    int64_t ne[TENSOR_MAX_DIMS];
    uint64_t nb[TENSOR_MAX_DIMS]; /* the rows' strides, whatever the layout */
    const void *data;
    enum tensor_layout layout;
};

/* Fills ne/nb for a contiguous tensor. Returns -1 when the shape is invalid for the type
 * (a non-positive dimension, ne[0] not a whole number of blocks, or a byte size that
 * overflows). */
int tensor_init(struct tensor *t, const char *name, enum dtype type, int n_dims, const int64_t *ne,
                const void *data);

int64_t tensor_nelements(const struct tensor *t);
uint64_t tensor_nbytes(const struct tensor *t);

/* Rows: everything above dimension 0. */
int64_t tensor_nrows(const struct tensor *t);
const void *tensor_row(const struct tensor *t, int64_t row);

/* Formats the shape as "[4096, 4608]" (PyTorch order, outermost first) into buf. */
const char *tensor_shape_str(const struct tensor *t, char *buf, int len);

#endif
