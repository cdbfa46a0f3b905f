/*
 * wav_fuzz — libFuzzer target for the WAV reader: wav_decode() on the input with a limit, and
 * when it is accepted, every sample is read (and must be finite unless the file holds float
 * data). Seeds: tests/fuzz/corpus/wav/ (valid files of every sample format, extensible,
 * odd-sized chunks, and the refusals of tests/unit/test_wav.c).
 *
 *   make fuzz-build && build/fuzz/wav_fuzz -max_total_time=120 tests/fuzz/corpus/wav
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "audio/wav.h"
#include "runtime/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile float sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wav_audio a;
    struct err e;
    if (wav_decode(&a, data, size, (size_t)1 << 20, &e) == 0) {
        if (a.channels < 1 || a.frames < 1 || a.rate < WAV_MIN_RATE || a.rate > WAV_MAX_RATE)
            abort();
        float s = 0;
        for (int64_t i = 0; i < a.frames * a.channels; i++)
            s += a.samples[i];
        sink = s;
        wav_audio_free(&a);
    } else if (e.msg[0] == 0) {
        abort(); /* a refusal always says why */
    }
    return 0;
}
