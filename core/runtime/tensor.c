#include "runtime/tensor.h"

#include <stdio.h>

int tensor_init(struct tensor *t, const char *name, enum dtype type, int n_dims, const int64_t *ne,
                const void *data)
{
    const struct dtype_info *info = dtype_info(type);
    if (!info || n_dims < 1 || n_dims > TENSOR_MAX_DIMS)
        return -1;
    t->name = name;
    t->type = type;
    t->n_dims = n_dims;
    t->data = data;
    t->layout = TENSOR_ROWS;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++)
        t->ne[i] = i < n_dims ? ne[i] : 1;
    for (int i = 0; i < n_dims; i++)
        if (t->ne[i] <= 0)
            return -1;
    uint64_t row = dtype_row_bytes(type, (uint64_t)t->ne[0]);
    if (row == 0)
        return -1;
    t->nb[0] = info->block_bytes;
    t->nb[1] = row;
    for (int i = 2; i < TENSOR_MAX_DIMS; i++) {
        if (t->nb[i - 1] > UINT64_MAX / (uint64_t)t->ne[i - 1])
            return -1;
        t->nb[i] = t->nb[i - 1] * (uint64_t)t->ne[i - 1];
    }
    if (t->nb[3] > UINT64_MAX / (uint64_t)t->ne[3])
        return -1;
    return 0;
}

int64_t tensor_nelements(const struct tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

uint64_t tensor_nbytes(const struct tensor *t)
{
    return t->nb[3] * (uint64_t)t->ne[3];
}

int64_t tensor_nrows(const struct tensor *t)
{
    return t->ne[1] * t->ne[2] * t->ne[3];
}

const void *tensor_row(const struct tensor *t, int64_t row)
{
    return (const char *)t->data + (uint64_t)row * t->nb[1];
}

const char *tensor_shape_str(const struct tensor *t, char *buf, int len)
{
    int n = snprintf(buf, (size_t)len, "[");
    for (int i = t->n_dims - 1; i >= 0 && n < len; i--)
        n += snprintf(buf + n, (size_t)(len - n), "%lld%s", (long long)t->ne[i], i ? ", " : "]");
    return buf;
}
