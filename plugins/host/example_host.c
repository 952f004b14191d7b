/*
 * example_host: drive a gt bundle from C as a live audio source would.
 *
 *     example_host BUNDLE SPEECH.wav OUTDIR [--ppm] [--engine NAME] [--raster NAME]
 *                  [--threads N] [--batch N] [--chunk-ms MS]
 *
 * Reads a 16/24/32-bit PCM or 32-bit float wav (any rate, channels mixed to mono) with the
 * small RIFF reader below, pushes it in 20 ms chunks, pulls every ready frame after each
 * push, and writes
 *     OUTDIR/frames.rgb        all frames, RGB uint8 [T, H, W, 3], concatenated
 *     OUTDIR/timings.csv       one row per frame: index, pts, per-stage ms
 *     OUTDIR/NNNNN.ppm         with --ppm: one binary PPM per frame
 * and prints the frame count, per-frame latency (mean / p99) and the lookahead.
 * Exit code 0 on success, 2 on bad input, 1 on an internal error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "gt_host.h"

/* ---- minimal RIFF/WAVE reader -------------------------------------------------------- */

typedef struct wav {
    float* pcm; /* [n] mono */
    size_t n;
    int rate, channels, bits, format; /* format: 1 PCM, 3 IEEE float */
} wav;

static uint32_t rd_u32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t rd_u16(const uint8_t* p) { return (uint16_t)(p[0] | p[1] << 8); }

static double sample_at(const uint8_t* p, int format, int bits) {
    if (format == 3) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    switch (bits) {
    case 8: return (p[0] - 128) / 128.0;
    case 16: return (int16_t)rd_u16(p) / 32768.0;
    case 24: return ((int32_t)((uint32_t)p[0] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 24) >> 8) / 8388608.0;
    default: return (int32_t)rd_u32(p) / 2147483648.0;
    }
}

/* -> 0, or -1 with a one-line message in err. */
static int read_wav(const char* path, wav* w, char* err, size_t errn) {
    memset(w, 0, sizeof *w);
    FILE* f = fopen(path, "rb");
    if (!f) return snprintf(err, errn, "%s: cannot open (%s)", path, strerror(errno)), -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t* buf = size > 0 ? malloc((size_t)size) : NULL;
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(buf);
        return snprintf(err, errn, "%s: cannot read", path), -1;
    }
    fclose(f);
    int rc = -1;
    const uint8_t *data = NULL, *fmt = NULL;
    size_t data_len = 0;
    if (size < 12 || memcmp(buf, "RIFF", 4) || memcmp(buf + 8, "WAVE", 4)) {
        snprintf(err, errn, "%s: not a RIFF/WAVE file | convert it: ffmpeg -i IN -ar 16000 -ac 1 out.wav", path);
        goto done;
    }
    for (size_t pos = 12; pos + 8 <= (size_t)size;) {
        uint32_t len = rd_u32(buf + pos + 4);
        const uint8_t* body = buf + pos + 8;
        size_t avail = (size_t)size - pos - 8;
        if (!memcmp(buf + pos, "fmt ", 4) && len >= 16 && len <= avail) fmt = body;
        if (!memcmp(buf + pos, "data", 4)) {
            data = body;
            data_len = len < avail ? len : avail; /* tolerate a truncated last chunk */
            break;
        }
        pos += 8 + (size_t)len + (len & 1);
    }
    if (!fmt || !data) {
        snprintf(err, errn, "%s: no %s chunk | not a valid wav file", path, fmt ? "data" : "fmt");
        goto done;
    }
    w->format = rd_u16(fmt);
    w->channels = rd_u16(fmt + 2);
    w->rate = (int)rd_u32(fmt + 4);
    w->bits = rd_u16(fmt + 14);
    if (w->format == 0xFFFE && rd_u16(fmt + 16) >= 22) w->format = rd_u16(fmt + 24); /* WAVE_FORMAT_EXTENSIBLE: sub-format GUID */
    int ok_pcm = w->format == 1 && (w->bits == 8 || w->bits == 16 || w->bits == 24 || w->bits == 32);
    int ok_float = w->format == 3 && w->bits == 32;
    if (!(ok_pcm || ok_float) || w->channels < 1 || w->rate <= 0) {
        snprintf(err, errn, "%s: unsupported wav (format %d, %d bits, %d channels) | expected 8/16/24/32-bit PCM or 32-bit float", path,
                 w->format, w->bits, w->channels);
        goto done;
    }
    size_t frame_bytes = (size_t)w->channels * (size_t)(w->bits / 8);
    w->n = data_len / frame_bytes;
    w->pcm = malloc((w->n ? w->n : 1) * sizeof(float));
    if (!w->pcm) {
        snprintf(err, errn, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < w->n; i++) {
        double acc = 0;
        for (int c = 0; c < w->channels; c++) acc += sample_at(data + i * frame_bytes + (size_t)c * (size_t)(w->bits / 8), w->format, w->bits);
        w->pcm[i] = (float)(acc / w->channels);
    }
    rc = 0;
done:
    free(buf);
    return rc;
}

/* ---- host ---------------------------------------------------------------------------- */

static int exit_code(gt_status st) { return st == GT_ERR_INPUT || st == GT_ERR_INVALID_ARG ? 2 : 1; }

static int write_ppm(const char* dir, int64_t index, const uint8_t* rgb, int w, int h) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%05lld.ppm", dir, (long long)index);
    FILE* f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "P6\n%d %d\n255\n", w, h);
    size_t n = (size_t)w * (size_t)h * 3;
    int ok = fwrite(rgb, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr,
                "usage: %s BUNDLE SPEECH.wav OUTDIR [--ppm] [--engine NAME] [--raster NAME] [--threads N] [--batch N] [--chunk-ms MS]\n",
                argv[0]);
        return 2;
    }
    const char *bundle = argv[1], *speech = argv[2], *outdir = argv[3];
    gt_options opt = GT_OPTIONS_INIT;
    int ppm = 0, chunk_ms = 20;
    for (int i = 4; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ppm")) ppm = 1;
        else if (!strcmp(a, "--engine") && v) opt.engine = v, i++;
        else if (!strcmp(a, "--raster") && v) opt.raster = v, i++;
        else if (!strcmp(a, "--threads") && v) opt.threads = atoi(v), i++;
        else if (!strcmp(a, "--batch") && v) opt.batch = atoi(v), i++;
        else if (!strcmp(a, "--chunk-ms") && v) chunk_ms = atoi(v), i++;
        else {
            fprintf(stderr, "example_host: unknown or incomplete option %s\n", a);
            return 2;
        }
    }
    if (chunk_ms <= 0) {
        fprintf(stderr, "example_host: --chunk-ms %d | expected > 0\n", chunk_ms);
        return 2;
    }
    char err[1024];
    wav w;
    if (read_wav(speech, &w, err, sizeof err) != 0) {
        fprintf(stderr, "example_host: %s\n", err);
        return 2;
    }
    if (mkdir(outdir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "example_host: %s: cannot create the folder (%s)\n", outdir, strerror(errno));
        free(w.pcm);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/frames.rgb", outdir);
    FILE* raw = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/timings.csv", outdir);
    FILE* csv = fopen(path, "w");
    if (!raw || !csv) {
        fprintf(stderr, "example_host: %s: cannot write (%s)\n", outdir, strerror(errno));
        return 2;
    }
    fprintf(csv, "index,pts_s,wall_ms,audio_frontend_ms,audio_encoder_ms,deform_ms,background_ms,raster_ms\n");

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    gt_session* s = NULL;
    gt_status st = gt_create(bundle, &opt, &s);
    if (st != GT_OK) {
        fprintf(stderr, "example_host: %s (%s)\n", gt_last_error(NULL), gt_status_name(st));
        return exit_code(st);
    }
    struct gt_stats stats = GT_STATS_INIT;
    gt_stats(s, &stats);
    size_t cap = (size_t)stats.width * (size_t)stats.height * 3;
    uint8_t* rgb = malloc(cap);
    size_t chunk = (size_t)w.rate * (size_t)chunk_ms / 1000;
    if (!chunk) chunk = 1;
    int64_t frames = 0;
    int rc = 0;
    /* Live-source loop: push one chunk, then take every frame it made ready. */
    for (size_t pos = 0; pos <= w.n && rc == 0;) {
        int last = pos >= w.n;
        if (last) st = gt_finish(s);
        else {
            size_t n = w.n - pos < chunk ? w.n - pos : chunk;
            st = gt_push_audio(s, w.pcm + pos, n, w.rate);
            pos += n;
        }
        if (st != GT_OK) {
            fprintf(stderr, "example_host: %s (%s)\n", gt_last_error(s), gt_status_name(st));
            rc = exit_code(st);
            break;
        }
        gt_frame_info fi = GT_FRAME_INFO_INIT;
        while ((st = gt_next_frame(s, rgb, cap, &fi)) == GT_FRAME_READY) {
            fwrite(rgb, 1, cap, raw);
            fprintf(csv, "%lld,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n", (long long)fi.index, fi.pts_s, fi.ms_wall, fi.ms_audio_frontend,
                    fi.ms_audio_encoder, fi.ms_deform, fi.ms_background, fi.ms_raster);
            if (ppm && write_ppm(outdir, fi.index, rgb, fi.width, fi.height) != 0) {
                fprintf(stderr, "example_host: %s: cannot write a ppm\n", outdir);
                rc = 2;
                break;
            }
            frames++;
        }
        if (st < 0) {
            fprintf(stderr, "example_host: %s (%s)\n", gt_last_error(s), gt_status_name(st));
            rc = exit_code(st);
        }
        if (last) break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (rc == 0 && gt_stats(s, &stats) == GT_OK) {
        printf("frames: %lld (%dx%d, %.1f s of audio at %d Hz)\n", (long long)frames, stats.width, stats.height, stats.audio_s, w.rate);
        printf("engine: %s, raster: %s\n", stats.engine, stats.raster_backend);
        printf("per frame: mean %.2f ms, p99 %.2f ms (wall in the runtime); model %.1f fps; %.1f s wall with start-up\n", stats.wall.mean_ms,
               stats.wall.p99_ms, stats.model_fps, wall);
        printf("stages (mean / p99 ms): audio front end %.2f / %.2f, audio encoder %.2f / %.2f, deform %.2f / %.2f, background %.2f / %.2f, "
               "raster %.2f / %.2f\n",
               stats.audio_frontend.mean_ms, stats.audio_frontend.p99_ms, stats.audio_encoder.mean_ms, stats.audio_encoder.p99_ms,
               stats.deform.mean_ms, stats.deform.p99_ms, stats.background.mean_ms, stats.background.p99_ms, stats.raster.mean_ms,
               stats.raster.p99_ms);
        printf("lookahead: %.1f ms (+ %d ms chunk), dropped: %lld\n", stats.lookahead_ms, chunk_ms, (long long)stats.frames_dropped);
        printf("wrote %s/frames.rgb and %s/timings.csv\n", outdir, outdir);
    }
    gt_status dst = gt_destroy(s);
    if (dst != GT_OK && rc == 0) {
        fprintf(stderr, "example_host: %s (%s)\n", gt_last_error(NULL), gt_status_name(dst));
        rc = 1;
    }
    free(rgb);
    free(w.pcm);
    if (fclose(raw) != 0 || fclose(csv) != 0) rc = rc ? rc : 1;
    return rc;
}
