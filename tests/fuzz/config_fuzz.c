/*
 * config_fuzz — libFuzzer target for parleyd's config reader (daemon/config.c): the
 * input as INI text, then --print-config of whatever was accepted.
 * Seeds: tests/fuzz/corpus/config/.
 *
 *   make fuzz-build && build/fuzz/config_fuzz -max_total_time=120 tests/fuzz/corpus/config
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config c;
    static FILE *null;
    if (size > CONFIG_FILE_MAX)
        return 0;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    struct err e;
    config_defaults(&c);
    if (config_load_string(&c, text, "fuzz", &e) == 0) {
        if (!null)
            null = fopen("/dev/null", "w");
        if (null)
            config_print(&c, null);
        config_validate(&c, 0, &e);
    } else if (strncmp(e.msg, "fuzz:", 5) != 0) {
        abort(); /* every refusal names the input and the line */
    }
    free(text);
    return 0;
}
