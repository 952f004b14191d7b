/*
 * test_host_errors BUNDLE [--quick]: bad calls into libgt_host must return an error code with a
 * message and leave the process running; edge cases (8 / 48 kHz, drops, stale handles,
 * other threads) must work.  Prints one line per check; exit 0 when all pass.
 * --quick skips the sample-rate, drop and thread sections (for runs under valgrind).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gt_host.h"

static int failures, checks;

#define CHECK(cond, ...)                                 \
    do {                                                 \
        checks++;                                        \
        if (cond) printf("ok    ");                      \
        else {                                           \
            failures++;                                  \
            printf("FAIL  %s:%d  ", __FILE__, __LINE__); \
        }                                                \
        printf(__VA_ARGS__);                             \
        printf("\n");                                    \
        fflush(stdout);                                  \
    } while (0)

/* status == want and a non-empty message */
#define EXPECT_ERR(call, want, msgsrc)                                                                                          \
    do {                                                                                                                        \
        gt_status st_ = (call);                                                                                                 \
        const char* m_ = gt_last_error(msgsrc);                                                                                 \
        CHECK(st_ == (want) && m_ && *m_, "%-60s -> %s: %s", #call, gt_status_name(st_), m_ ? m_ : "(null)");                   \
    } while (0)

static float* tone(size_t n, int rate) {
    float* x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        x[i] = (float)(0.3 * (0.5 + 0.5 * sin(2 * M_PI * 3 * t)) * sin(2 * M_PI * 180 * t));
    }
    return x;
}

/* Push seconds of audio at rate in 20 ms chunks, pulling after each; finish; -> frames (or -1). */
static long run_stream(gt_session* s, int rate, double seconds, uint8_t* rgb, size_t cap, int64_t* last_index) {
    size_t n = (size_t)(seconds * rate), chunk = (size_t)rate / 50;
    float* x = tone(n, rate);
    long frames = 0;
    gt_frame_info fi = GT_FRAME_INFO_INIT;
    gt_status st = GT_OK;
    for (size_t pos = 0; pos < n; pos += chunk) {
        if (gt_push_audio(s, x + pos, n - pos < chunk ? n - pos : chunk, rate) != GT_OK) goto bad;
        while ((st = gt_next_frame(s, rgb, cap, &fi)) == GT_FRAME_READY) {
            if (fi.index != frames) goto bad;
            frames++;
        }
        if (st != GT_NEED_MORE_AUDIO) goto bad;
    }
    if (gt_finish(s) != GT_OK) goto bad;
    while ((st = gt_next_frame(s, rgb, cap, &fi)) == GT_FRAME_READY) {
        if (fi.index != frames) goto bad;
        frames++;
    }
    if (st != GT_FINISHED) goto bad;
    free(x);
    if (last_index) *last_index = fi.index;
    return frames;
bad:
    printf("      stream error: %s\n", gt_last_error(s));
    free(x);
    return -1;
}

static long expected_frames(gt_session* s) {
    struct gt_stats st = GT_STATS_INIT;
    if (gt_stats(s, &st) != GT_OK) return -2;
    long samples = lround(st.audio_s * 16000.0);
    return (samples + 639) / 640;
}

typedef struct job {
    const char* bundle;
    long frames, expected;
    gt_session* s; /* created by another thread when set */
} job;

static void* thread_main(void* arg) {
    job* j = arg;
    gt_session* s = j->s;
    if (!s && gt_create(j->bundle, NULL, &s) != GT_OK) {
        j->frames = -3;
        return NULL;
    }
    size_t cap = 1 << 20;
    uint8_t* rgb = malloc(cap);
    j->frames = run_stream(s, 16000, 0.7, rgb, cap, NULL);
    j->expected = expected_frames(s);
    free(rgb);
    if (!j->s) gt_destroy(s);
    return NULL;
}

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--quick"))) {
        fprintf(stderr, "usage: %s BUNDLE [--quick]\n", argv[0]);
        return 2;
    }
    const char* bundle = argv[1];
    int quick = argc == 3;
    CHECK(gt_version() && *gt_version(), "gt_version() = %s", gt_version());
    CHECK(!strcmp(gt_status_name(GT_ERR_INPUT), "GT_ERR_INPUT") && !strcmp(gt_status_name((gt_status)42), "GT_UNKNOWN"), "gt_status_name");

    /* ---- gt_create ---- */
    gt_session* s = (gt_session*)1;
    EXPECT_ERR(gt_create(NULL, NULL, &s), GT_ERR_INVALID_ARG, NULL);
    CHECK(s == NULL, "gt_create sets *out = NULL on error");
    EXPECT_ERR(gt_create(bundle, NULL, NULL), GT_ERR_INVALID_ARG, NULL);
    EXPECT_ERR(gt_create("/nonexistent/missing.gtb", NULL, &s), GT_ERR_INPUT, NULL);
    CHECK(strstr(gt_last_error(NULL), "missing.gtb") != NULL, "missing bundle message names the path");
    gt_options bad = GT_OPTIONS_INIT;
    bad.struct_size = 0;
    EXPECT_ERR(gt_create(bundle, &bad, &s), GT_ERR_INVALID_ARG, NULL);
    gt_options eng = GT_OPTIONS_INIT;
    eng.engine = "warp-drive";
    EXPECT_ERR(gt_create(bundle, &eng, &s), GT_ERR_INPUT, NULL);
    gt_options neg = GT_OPTIONS_INIT;
    neg.threads = -1;
    EXPECT_ERR(gt_create(bundle, &neg, &s), GT_ERR_INVALID_ARG, NULL);

    /* ---- NULL session ---- */
    uint8_t small[16];
    float pcm[320] = {0};
    EXPECT_ERR(gt_push_audio(NULL, pcm, 320, 16000), GT_ERR_INVALID_HANDLE, NULL);
    EXPECT_ERR(gt_next_frame(NULL, small, sizeof small, NULL), GT_ERR_INVALID_HANDLE, NULL);
    EXPECT_ERR(gt_finish(NULL), GT_ERR_INVALID_HANDLE, NULL);
    struct gt_stats stats = GT_STATS_INIT;
    EXPECT_ERR(gt_stats(NULL, &stats), GT_ERR_INVALID_HANDLE, NULL);
    CHECK(gt_destroy(NULL) == GT_OK, "gt_destroy(NULL) is a no-op");
    EXPECT_ERR(gt_push_audio((gt_session*)0x12345, pcm, 320, 16000), GT_ERR_INVALID_HANDLE, NULL);

    /* ---- a valid session ---- */
    gt_status st = gt_create(bundle, NULL, &s);
    CHECK(st == GT_OK && s, "gt_create(bundle) -> %s %s", gt_status_name(st), st ? gt_last_error(NULL) : "");
    if (st != GT_OK) return 1;
    CHECK(gt_stats(s, &stats) == GT_OK && stats.width > 0 && stats.height > 0 && stats.lookahead_ms > 200,
          "gt_stats: %dx%d, lookahead %.1f ms, engine %s, raster %s", stats.width, stats.height, stats.lookahead_ms, stats.engine,
          stats.raster_backend);
    size_t cap = (size_t)stats.width * stats.height * 3;
    uint8_t* rgb = malloc(cap);
    EXPECT_ERR(gt_stats(s, NULL), GT_ERR_INVALID_ARG, s);
    struct gt_stats zero;
    memset(&zero, 0, sizeof zero);
    EXPECT_ERR(gt_stats(s, &zero), GT_ERR_INVALID_ARG, s);
    EXPECT_ERR(gt_push_audio(s, pcm, 320, 0), GT_ERR_INVALID_ARG, s);
    EXPECT_ERR(gt_push_audio(s, pcm, 320, -16000), GT_ERR_INVALID_ARG, s);
    EXPECT_ERR(gt_push_audio(s, NULL, 320, 16000), GT_ERR_INVALID_ARG, s);
    CHECK(gt_push_audio(s, NULL, 0, 16000) == GT_OK, "gt_push_audio(s, NULL, 0, 16000) is an empty push");
    float nan_pcm[4] = {0, NAN, 0, 0};
    EXPECT_ERR(gt_push_audio(s, nan_pcm, 4, 16000), GT_ERR_INPUT, s);
    float* x = tone(16000, 16000);
    CHECK(gt_push_audio(s, x, 16000, 16000) == GT_OK, "push 1 s at 16 kHz");
    EXPECT_ERR(gt_push_audio(s, x, 160, 44100), GT_ERR_INPUT, s); /* rate changed */
    EXPECT_ERR(gt_next_frame(s, NULL, cap, NULL), GT_ERR_INVALID_ARG, s);
    gt_frame_info fi = GT_FRAME_INFO_INIT;
    EXPECT_ERR(gt_next_frame(s, small, sizeof small, &fi), GT_ERR_BUFFER_TOO_SMALL, s);
    CHECK(fi.width == stats.width && fi.height == stats.height && fi.index == 0, "too small: info has %dx%d, next index %lld", fi.width,
          fi.height, (long long)fi.index);
    gt_frame_info zfi;
    memset(&zfi, 0, sizeof zfi);
    EXPECT_ERR(gt_next_frame(s, rgb, cap, &zfi), GT_ERR_INVALID_ARG, s);
    long frames = 0;
    while ((st = gt_next_frame(s, rgb, cap, &fi)) == GT_FRAME_READY) {
        if (fi.index != frames) break;
        frames++;
        if (frames == 3) EXPECT_ERR(gt_next_frame(s, small, 3, NULL), GT_ERR_BUFFER_TOO_SMALL, s); /* frame 3 stays queued */
    }
    CHECK(st == GT_NEED_MORE_AUDIO && frames > 0, "1 s pushed: %ld frames ready, then %s", frames, gt_status_name(st));
    CHECK(gt_finish(s) == GT_OK && gt_finish(s) == GT_OK, "gt_finish twice is fine");
    EXPECT_ERR(gt_push_audio(s, x, 320, 16000), GT_ERR_STATE, s);
    while ((st = gt_next_frame(s, rgb, cap, &fi)) == GT_FRAME_READY) frames++;
    CHECK(st == GT_FINISHED && frames == 25, "after finish: %ld frames in all (expected 25), then %s", frames, gt_status_name(st));
    CHECK(gt_next_frame(s, rgb, cap, &fi) == GT_FINISHED, "GT_FINISHED again");
    CHECK(gt_stats(s, &stats) == GT_OK && stats.frames_delivered == 25 && stats.frames_dropped == 0 && stats.raster.mean_ms > 0,
          "stats: %lld delivered, raster %.2f ms, wall p99 %.2f ms", (long long)stats.frames_delivered, stats.raster.mean_ms,
          stats.wall.p99_ms);
    CHECK(stats.audio_frontend.total_ms > 0 && stats.audio_encoder.mean_ms > 0 && stats.deform.mean_ms > 0 && stats.background.mean_ms > 0 &&
              fi.ms_audio_encoder > 0 && fi.ms_deform > 0 && fi.ms_background > 0 && fi.ms_raster > 0,
          "every stage timed: encoder %.3f, deform %.3f, background (composite) %.3f, raster %.3f ms per frame", stats.audio_encoder.mean_ms,
          stats.deform.mean_ms, stats.background.mean_ms, stats.raster.mean_ms);
    CHECK(gt_destroy(s) == GT_OK, "gt_destroy");
    EXPECT_ERR(gt_destroy(s), GT_ERR_INVALID_HANDLE, NULL); /* double destroy is detected */
    EXPECT_ERR(gt_push_audio(s, x, 320, 16000), GT_ERR_INVALID_HANDLE, NULL);
    EXPECT_ERR(gt_next_frame(s, rgb, cap, &fi), GT_ERR_INVALID_HANDLE, NULL);
    CHECK(strstr(gt_last_error(s), "invalid session handle") != NULL, "gt_last_error(stale) says: %s", gt_last_error(s));

    /* ---- a stale handle stays stale when its slot is reused ---- */
    gt_session* s2 = NULL;
    st = gt_create(bundle, NULL, &s2);
    CHECK(st == GT_OK && s2 != s, "new session %p != stale %p", (void*)s2, (void*)s);
    EXPECT_ERR(gt_finish(s), GT_ERR_INVALID_HANDLE, NULL);
    CHECK(gt_finish(s2) == GT_OK, "the new session works");
    gt_destroy(s2);
    if (quick) goto done;

    /* ---- other sample rates: resampled by the runtime ---- */
    int rates[] = {8000, 48000, 44100};
    for (int k = 0; k < 3; k++) {
        gt_session* r = NULL;
        if (gt_create(bundle, NULL, &r) != GT_OK) {
            CHECK(0, "create for %d Hz: %s", rates[k], gt_last_error(NULL));
            continue;
        }
        long got = run_stream(r, rates[k], 1.0, rgb, cap, NULL), want = expected_frames(r);
        CHECK(got == want && got >= 25 && got <= 26, "%d Hz, 1 s in 20 ms chunks: %ld frames (expected %ld)", rates[k], got, want);
        gt_destroy(r);
    }
    gt_session* low = NULL;
    gt_create(bundle, NULL, &low);
    EXPECT_ERR(gt_push_audio(low, x, 100, 1000), GT_ERR_INPUT, low); /* below 4 kHz */
    gt_destroy(low);

    /* ---- drops: the host does not pull, the queue keeps the newest max_queued_frames ---- */
    gt_options q = GT_OPTIONS_INIT;
    q.max_queued_frames = 2;
    gt_session* d = NULL;
    CHECK(gt_create(bundle, &q, &d) == GT_OK, "create with max_queued_frames = 2");
    float* y = tone(32000, 16000);
    long n_ready = 0;
    gt_push_audio(d, y, 16000, 16000);
    CHECK(gt_next_frame(d, rgb, cap, &fi) == GT_FRAME_READY && fi.index == 0, "first frame");
    gt_push_audio(d, y + 16000, 16000, 16000); /* the rest of the first second is rendered and queued: 2 kept */
    gt_finish(d);
    int64_t prev = 0;
    int monotonic = 1;
    while (gt_next_frame(d, rgb, cap, &fi) == GT_FRAME_READY) {
        monotonic &= fi.index > prev;
        prev = fi.index;
        n_ready++;
    }
    gt_stats(d, &stats);
    CHECK(stats.frames_dropped > 0 && stats.frames_delivered + stats.frames_dropped == stats.frames_rendered && stats.frames_rendered == 50 &&
              monotonic && prev == 49,
          "drops: rendered %lld = delivered %lld + dropped %lld, last index %lld", (long long)stats.frames_rendered,
          (long long)stats.frames_delivered, (long long)stats.frames_dropped, (long long)prev);
    gt_destroy(d);
    free(y);

    /* ---- threads: a session used from another thread; two sessions at once ---- */
    job a = {bundle, 0, 0, NULL}, b = {bundle, 0, 0, NULL}, c = {bundle, 0, 0, NULL};
    CHECK(gt_create(bundle, NULL, &c.s) == GT_OK, "create on the main thread");
    pthread_t ta, tb, tc;
    pthread_create(&tc, NULL, thread_main, &c);
    pthread_join(tc, NULL);
    CHECK(c.frames == c.expected && c.frames > 0, "session made on main, driven on a thread: %ld frames (expected %ld)", c.frames, c.expected);
    gt_destroy(c.s);
    pthread_create(&ta, NULL, thread_main, &a);
    pthread_create(&tb, NULL, thread_main, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.frames == a.expected && b.frames == b.expected && a.frames > 0, "two threads, two sessions: %ld and %ld frames", a.frames,
          b.frames);

done:
    free(x);
    free(rgb);
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
