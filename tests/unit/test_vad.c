/* Tests of daemon/vad: starts and stops to the frame, padding, hangover. */
#include <math.h>
#include <stdlib.h>

#include "test.h"
#include "vad.h"

struct vad_log {
    int64_t start[8], stop[8];
    int n_start, n_stop;
    int64_t audio, first_audio_pos;
};

static void vad_log_emit(void *user, enum vad_kind kind, int64_t pos, const float *pcm, int64_t n)
{
    struct vad_log *l = user;
    (void)pcm;
    if (kind == VAD_START && l->n_start < 8)
        l->start[l->n_start++] = pos;
    else if (kind == VAD_STOP && l->n_stop < 8)
        l->stop[l->n_stop++] = pos;
    else if (kind == VAD_AUDIO) {
        if (l->audio == 0)
            l->first_audio_pos = pos;
        l->audio += n;
    }
}

/* frames (20 ms at 16 kHz = 320 samples) of tone (1) or near-silence (0) */
static float *vad_signal(const char *pattern, int64_t *n)
{
    int64_t frames = 0;
    for (const char *p = pattern; *p; p++)
        frames++;
    float *x = malloc(sizeof(float) * (size_t)(frames * 320));
    for (int64_t f = 0; f < frames; f++)
        for (int i = 0; i < 320; i++) {
            int64_t t = f * 320 + i;
            x[t] = pattern[f] == '1' ? 0.1f * (float)sin(2 * M_PI * 300 * (double)t / 16000)
                                     : 1e-4f * (float)((t * 7919) % 13 - 6) / 6;
        }
    *n = frames * 320;
    return x;
}

TEST(vad_level)
{
    float x[320];
    for (int i = 0; i < 320; i++)
        x[i] = (float)sin(2 * M_PI * 1000 * i / 16000.0);
    CHECK_NEAR(vad_level_db(x, 320), -3.01, 0.05);
    for (int i = 0; i < 320; i++)
        x[i] = 0;
    CHECK(vad_level_db(x, 320) <= -100);
}

TEST(vad_start_stop_to_the_frame)
{
    /* 10 silent, 20 speech, 5 silent (< 600 ms), 10 speech, 40 silent, 5 speech */
    const char *pat = "0000000000"
                      "11111111111111111111"
                      "00000"
                      "1111111111"
                      "0000000000000000000000000000000000000000"
                      "11111";
    int64_t n;
    float *x = vad_signal(pat, &n);
    REQUIRE(x != NULL);
    struct err e;
    struct vad_config c = { -45, 100, 600 };
    struct vad *v = vad_new(16000, &c, &e);
    REQUIRE(v != NULL);
    CHECK(vad_frame(v) == 320);
    struct vad_log l = { 0 };
    /* odd chunk sizes: frames are judged across pushes */
    for (int64_t at = 0; at < n; at += 123)
        vad_feed(v, x + at, n - at < 123 ? n - at : 123, vad_log_emit, &l);
    REQUIRE(l.n_start == 2);
    CHECK(l.start[0] == 10 * 320);
    CHECK(l.start[1] == 85 * 320);
    REQUIRE(l.n_stop == 1);
    /* last speech frame is frame 44; 30 silent frames (600 ms) later: end of frame 74 */
    CHECK(l.stop[0] == 75 * 320);
    /* padding: 100 ms = 5 frames before the start */
    CHECK(l.first_audio_pos == 5 * 320);
    CHECK(vad_active(v));
    vad_reset(v);
    CHECK(!vad_active(v));
    vad_free(v);
    free(x);
}

TEST(vad_threshold_and_padding_cap)
{
    const char *pat = "00111000000000000000000000000000000000";
    int64_t n;
    float *x = vad_signal(pat, &n);
    struct err e;
    struct vad_config c = { -10, 300, 200 }; /* the tone is about -23 dBFS */
    struct vad *v = vad_new(16000, &c, &e);
    REQUIRE(v && x);
    struct vad_log l = { 0 };
    vad_feed(v, x, n, vad_log_emit, &l);
    CHECK(l.n_start == 0);
    c.threshold_db = -30;
    vad_set_config(v, &c);
    vad_feed(v, x, n, vad_log_emit, &l);
    REQUIRE(l.n_start == 1);
    CHECK(l.start[0] == n + 2 * 320);
    /* 300 ms padding asked, the stream had only the 2 silent frames of this pass + all of the
     * first pass: 15 frames kept */
    CHECK(l.first_audio_pos == n + 2 * 320 - 15 * 320);
    REQUIRE(l.n_stop == 1);
    CHECK(l.stop[0] == n + 15 * 320); /* 3 speech + 10 silent (200 ms) frames */
    CHECK(l.audio == 15 * 320 + 13 * 320);
    vad_free(v);
    free(x);
}
