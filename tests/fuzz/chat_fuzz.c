/*
 * chat_fuzz — libFuzzer target for the WebSocket protocol's message handling before a session
 * has an engine (daemon/chat.c): JSON parsing, types, session.start / session.update
 * validation, audio before the start. The input is split at newlines into messages; a line
 * that starts with 'B' is a binary message (the rest of the line). Every message the session
 * sends must be a JSON object with a "type".
 * Seeds: tests/fuzz/corpus/chat/.
 *
 *   make fuzz-build && build/fuzz/chat_fuzz -max_total_time=120 tests/fuzz/corpus/chat
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "config.h"
#include "log.h"
#include "service.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fz_send(void *ctx, int binary, const void *msg, size_t len)
{
    (void)ctx;
    if (binary)
        abort(); /* no audio without an engine */
    json_t *j = json_loadb(msg, len, 0, NULL);
    if (!json_is_object(j) || !json_is_string(json_object_get(j, "type")))
        abort();
    json_decref(j);
    return 0;
}

static size_t fz_queued(void *ctx)
{
    (void)ctx;
    return 0;
}

static void fz_close(void *ctx, int code, const char *reason)
{
    (void)ctx;
    (void)reason;
    if (code < 1000 || code > 4999)
        abort();
}

static void fz_pause(void *ctx, int paused)
{
    (void)ctx;
    (void)paused;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct service svc;
    static int ready;
    if (!ready) {
        log_init("chat_fuzz", LOG_LEVEL_ERROR);
        memset(&svc, 0, sizeof svc);
        config_defaults(&svc.cfg);
        pthread_mutex_init(&svc.mu, NULL);
        svc.version = "fuzz";
        ready = 1;
    }
    if (size > 1 << 16)
        return 0;
    struct chat_io io = { NULL, fz_send, fz_queued, fz_close, fz_pause };
    int code;
    char why[128];
    struct chat_session *s = chat_session_open(&svc, &io, &code, why, sizeof why);
    if (!s)
        abort();
    size_t at = 0;
    while (at < size) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t end = nl ? (size_t)(nl - data) : size;
        if (end > at && data[at] == 'B')
            chat_session_message(s, 1, data + at + 1, end - at - 1);
        else
            chat_session_message(s, 0, data + at, end - at);
        at = end + 1;
    }
    chat_session_free(s);
    return 0;
}
