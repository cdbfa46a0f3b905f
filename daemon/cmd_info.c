/* parley info: a model file's header, metadata, tensors and totals. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "runtime/dtype.h"
#include "runtime/gguf.h"
#include "runtime/tensor.h"

/* "12.3 MiB" */
static const char *human_bytes(char *buf, size_t len, uint64_t n)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRIu64 " B", n);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

/* ---- info ------------------------------------------------------------------------------ */

#define INFO_MAX_ELEMS  8  /* array elements shown before "... (N total)" */
#define INFO_MAX_STR    80 /* string bytes shown */
#define INFO_NAME_WIDTH 72

struct type_total {
    uint64_t tensors, params, bytes;
};

static void info_metadata(const struct gguf_file *f)
{
    char name[INFO_MAX_STR * 4 + 8], type[16], value[2048];
    int width = 8;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        size_t n = strlen(f->kv[i].key);
        if (n > (size_t)width)
            width = n < INFO_NAME_WIDTH ? (int)n : INFO_NAME_WIDTH;
    }
    printf("\nmetadata: %" PRIu64 " keys\n", f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const struct gguf_kv *kv = &f->kv[i];
        if (kv->type == GGUF_TYPE_ARRAY)
            snprintf(type, sizeof type, "arr[%s]", gguf_type_name(kv->elem));
        else
            snprintf(type, sizeof type, "%s", gguf_type_name(kv->type));
        printf("  %-*s %-9s %s\n", width,
               gguf_escape(name, sizeof name, kv->key, strlen(kv->key), INFO_MAX_STR), type,
               gguf_format_value(kv, value, sizeof value, INFO_MAX_ELEMS, INFO_MAX_STR));
    }
}

static void info_tensors(const struct gguf_file *f, struct type_total *totals)
{
    char name[GGUF_MAX_NAME * 4 + 8], shape[96];
    int width = 4;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        size_t n = strlen(f->tensors[i].name);
        if (n > (size_t)width)
            width = n < INFO_NAME_WIDTH ? (int)n : INFO_NAME_WIDTH;
    }
    printf("\ntensors: %" PRIu64 "\n", f->n_tensors);
    if (f->n_tensors)
        printf("  %-*s %-5s %-24s %14s %14s\n", width, "name", "type", "shape", "bytes", "offset");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct tensor *t = &f->tensors[i];
        uint64_t bytes = tensor_nbytes(t);
        printf("  %-*s %-5s %-24s %14" PRIu64 " %14" PRIu64 "\n", width,
               gguf_escape(name, sizeof name, t->name, strlen(t->name), GGUF_MAX_NAME),
               dtype_info(t->type)->name, tensor_shape_str(t, shape, sizeof shape), bytes,
               gguf_tensor_offset(f, t));
        if (t->type < DTYPE_ID_LIMIT) {
            totals[t->type].tensors++;
            totals[t->type].params += (uint64_t)tensor_nelements(t);
            totals[t->type].bytes += bytes;
        }
    }
}

int cmd_info(int argc, char **argv)
{
    static struct type_total totals[DTYPE_ID_LIMIT];
    struct gguf_file f;
    struct err e;
    char h[32];
    if (argc == 2 && cmd_is_help(argv[1])) {
        printf("usage: parley info FILE.gguf\n\nPrints the file's header, every metadata key "
               "with its type and value\n(long arrays and strings shortened), every tensor "
               "with its type, shape\n(PyTorch order), byte size and data offset, and totals "
               "by type.\n");
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "parley: usage: parley info FILE.gguf\n");
        return CMD_EXIT_USAGE;
    }
    if (gguf_open(&f, argv[1], &e)) {
        fprintf(stderr, "parley: %s\n", e.msg);
        return CMD_EXIT_USAGE;
    }
    printf("file       %s\n", f.path);
    printf("version    %" PRIu32 "\n", f.version);
    printf("alignment  %" PRIu32 "\n", f.alignment);
    printf("size       %zu bytes (%s)\n", f.size, human_bytes(h, sizeof h, f.size));
    printf("data       at offset %" PRIu64 "\n", f.data_offset);
    info_metadata(&f);
    info_tensors(&f, totals);

    uint64_t params = 0, bytes = 0;
    for (int t = 0; t < DTYPE_ID_LIMIT; t++) {
        params += totals[t].params;
        bytes += totals[t].bytes;
    }
    printf("\ntotals: %" PRIu64 " tensors, %" PRIu64 " params, %" PRIu64 " bytes (%s)\n",
           f.n_tensors, params, bytes, human_bytes(h, sizeof h, bytes));
    for (int t = 0; t < DTYPE_ID_LIMIT; t++)
        if (totals[t].tensors)
            printf("  %-5s %8" PRIu64 " tensors %14" PRIu64 " params %14" PRIu64 " bytes (%s)\n",
                   dtype_info((uint32_t)t)->name, totals[t].tensors, totals[t].params,
                   totals[t].bytes, human_bytes(h, sizeof h, totals[t].bytes));
    gguf_close(&f);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "parley: error writing the output\n");
        return 1;
    }
    return 0;
}
