/*
 * qa_fuzz — libFuzzer target for what POST /v1/spoken-qa reads from a client (daemon/
 * spoken_qa.c through spoken_qa_check): the Content-Type and Accept headers, the JSON body
 * with its options, base64 audio, and the WAV and Ogg Opus decoders. Byte 0 picks the
 * Content-Type, byte 1 the Accept header, the rest is the body. A refusal must carry an HTTP
 * error status and a message. Seeds: tests/fuzz/corpus/qa/.
 *
 *   make fuzz-build && build/fuzz/qa_fuzz -max_total_time=120 tests/fuzz/corpus/qa
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"
#include "spoken_qa.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const types[] = { "application/json",      "audio/wav",  "audio/ogg",
                                         "Audio/X-WAV; codecs=1", "text/plain", NULL };
    static const char *const accepts[] = { NULL, "audio/wav", "text/event-stream",
                                           "image/png, audio/*;q=0.5", "application/json" };
    if (size < 2)
        return 0;
    static struct service svc; /* what the parser reads of it */
    svc.lm_ctx = 8192;
    svc.have_stok = data[0] & 0x80 ? 0 : 1;
    svc.voice_rate = data[1] & 0x80 ? 0 : 22050;
    struct http_call call = { 0 };
    call.method = "POST";
    call.path = "/v1/spoken-qa";
    call.content_type = types[(data[0] & 0x7f) % (sizeof types / sizeof types[0])];
    call.accept = accepts[(data[1] & 0x7f) % (sizeof accepts / sizeof accepts[0])];
    call.body = size > 2 ? data + 2 : NULL;
    call.body_len = size - 2;
    char msg[600];
    int status = spoken_qa_check(&svc, &call, msg, sizeof msg);
    if (status != 0 && (status < 400 || status > 599 || !msg[0]))
        abort();
    return 0;
}
