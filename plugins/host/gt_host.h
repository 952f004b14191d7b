/*
 * gt_host.h: plain C ABI for embedding the gt runtime in native apps (docs/ARCHITECTURE.md).
 *
 * libgt_host.so embeds CPython and drives gt_runtime's streaming Session through its
 * Python half, gt_runtime/host/bridge.py (the C side: plugins/host/gt_host_*.c):
 *
 *     gt_session* s;
 *     if (gt_create("may.gtb", NULL, &s) != GT_OK) { puts(gt_last_error(NULL)); return 1; }
 *     struct gt_stats st = GT_STATS_INIT;  gt_stats(s, &st);        // st.width, st.height
 *     uint8_t* rgb = malloc((size_t)st.width * st.height * 3);
 *     while (have_audio) {
 *         gt_push_audio(s, pcm, n, 16000);                         // any chunk size, any rate >= 4 kHz
 *         gt_frame_info fi = GT_FRAME_INFO_INIT;
 *         while (gt_next_frame(s, rgb, cap, &fi) == GT_FRAME_READY) show(rgb, fi.pts_s);
 *     }
 *     gt_finish(s);  while (gt_next_frame(s, rgb, cap, &fi) == GT_FRAME_READY) show(rgb, fi.pts_s);
 *     gt_destroy(s);
 *
 * Conventions
 *  - Every function returns a gt_status (or a string) and never aborts the host: NULL
 *    arguments, stale handles and Python exceptions all become an error code plus a
 *    one-line message from gt_last_error().  Error codes are negative.
 *  - Frames are RGB uint8, [H, W, 3] row-major (3 * W bytes per row, no padding), 25 fps.
 *  - Audio is mono float32 in [-1, 1], any chunk size, one sample rate per session
 *    (resampled to 16 kHz by the runtime; 4 kHz .. 384 kHz).
 *  - Structs the caller passes in (gt_options, gt_frame_info, gt_stats) start with
 *    `size_t struct_size`: set it to sizeof(the struct) (the GT_*_INIT macros do). The
 *    library reads / writes only the first struct_size bytes, so a host built against an
 *    older header keeps working with a newer library.
 *
 * Threads and the GIL
 *  - Any function may be called from any thread, including a thread other than the one
 *    that created the session.  Calls on one session are serialised by a per-session
 *    mutex; calls on different sessions run in parallel (the heavy stages release the GIL).
 *  - The GIL is held only inside calls.  If no interpreter runs in the process, the first
 *    gt_create starts one (signal handlers are left to the host) and releases the GIL; the
 *    interpreter then lives until the process exits (numpy / onnxruntime cannot be
 *    re-initialised, so it is never finalised).  If the host already runs Python (linked
 *    to the same libpython), gt_host attaches to it with PyGILState_Ensure.  Do not call
 *    gt_* while holding the GIL if another thread may be using the same session.
 *
 * Finding Python and gt_runtime (when gt_host starts the interpreter)
 *  1. The interpreter: gt_options.python_executable, else $GT_PYTHON, else
 *     $VIRTUAL_ENV/bin/python, else the venv the library was built beside (make host),
 *     else libpython's own prefix.  Pointing it at a venv's bin/python makes that venv's
 *     site-packages (numpy, onnxruntime, ...) importable.  PYTHONHOME / PYTHONPATH are
 *     honoured as by `python` itself.
 *  2. Extra sys.path entries (prepended, ':'-separated): gt_options.python_path, then
 *     $GT_PYTHONPATH, then the source checkout the library was built in.
 *
 * The model's contract (gt_runtime/contract.py) is the source of the names used here:
 *  - Stages: gt_frame_info.ms_<stage> and gt_stats.<stage> report the contract's STAGES
 *    audio_frontend, audio_encoder, deform, composite, raster; the ABI keeps the name
 *    `background` for the stage the contract calls "composite" (torso + background plate).
 *    The mapping is gt_runtime/host/bridge.py's FRAME_STAGES (tests/host/test_bridge.py
 *    checks it against this header).
 *  - Settings: GT_PYTHON, GT_PYTHONPATH, GT_ENGINE, GT_RASTER, GT_DEBUG are declared there.
 *    The library reads GT_PYTHON / GT_PYTHONPATH itself (needed before Python starts);
 *    GT_ENGINE, GT_RASTER and GT_DEBUG are read by the bridge, from Python's os.environ
 *    (a copy of the process environment taken when the interpreter started).
 */
#ifndef GT_HOST_H
#define GT_HOST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define GT_API __declspec(dllexport)
#else
#define GT_API __attribute__((visibility("default")))
#endif

#define GT_HOST_VERSION "0.1.0"

/* Status codes: >= 0 success, < 0 error (message in gt_last_error). */
typedef enum gt_status {
    GT_OK = 0,
    GT_FRAME_READY = 1,          /* gt_next_frame: a frame was copied into rgb */
    GT_NEED_MORE_AUDIO = 2,      /* gt_next_frame: no frame until more audio is pushed (or gt_finish) */
    GT_FINISHED = 3,             /* gt_next_frame: finished and every frame has been delivered */
    GT_ERR_INVALID_ARG = -1,     /* NULL pointer, bad size, sample rate <= 0, bad struct_size */
    GT_ERR_INVALID_HANDLE = -2,  /* NULL session, or a session already destroyed */
    GT_ERR_BUFFER_TOO_SMALL = -3,/* rgb capacity < width * height * 3; the frame stays queued */
    GT_ERR_STATE = -4,           /* call not allowed now: push_audio after gt_finish */
    GT_ERR_INPUT = -5,           /* the runtime refused the input: bad bundle, bad audio, bad rate, bad option */
    GT_ERR_PYTHON = -6,          /* the interpreter could not start, or gt_runtime / numpy cannot be imported */
    GT_ERR_INTERNAL = -7,        /* an unexpected exception inside the runtime (GT_DEBUG=1 prints the traceback) */
    GT_ERR_NO_MEMORY = -8        /* allocation failed (C or Python) */
} gt_status;

/* Opaque session handle.  It is a checked handle, not a pointer to memory: never
 * dereference it.  A destroyed handle is detected (GT_ERR_INVALID_HANDLE), also when a
 * later session reuses its slot. */
typedef struct gt_session gt_session;

/* Options of gt_create.  Zero / NULL fields mean "default". */
typedef struct gt_options {
    size_t struct_size;            /* = sizeof(gt_options) */
    const char* engine;            /* "auto", "onnxruntime", "array", "tensorrt", ... (gt play --engine); NULL: $GT_ENGINE or "auto" */
    const char* raster;            /* "auto", "cpu", "cuda", "reference"; NULL: $GT_RASTER or "auto" */
    int threads;                   /* deform engine threads; 0 = automatic */
    int batch;                     /* frames rendered together; 0 or 1 = lowest latency */
    int max_queued_frames;         /* frames kept when the host pulls too slowly; oldest dropped beyond it; 0 = unlimited */
    const char* python_executable; /* a venv's bin/python to take site-packages from (only if gt_host starts Python) */
    const char* python_path;       /* ':'-separated entries prepended to sys.path (e.g. the folder holding gt_runtime) */
} gt_options;
#define GT_OPTIONS_INIT {.struct_size = sizeof(gt_options)} /* C99; in C++ use {} then set struct_size */

/* What one delivered frame cost.  Stage times are this frame's share of its batch (ms). */
typedef struct gt_frame_info {
    size_t struct_size;            /* = sizeof(gt_frame_info), set by the caller */
    int64_t index;                 /* frame index in the speech, 0-based (dropped frames keep their index) */
    int32_t width, height;         /* pixels */
    double pts_s;                  /* presentation time: index / fps, seconds from the start of the audio */
    double ms_audio_frontend;      /* resample + mel, mean per frame over the session so far */
    double ms_audio_encoder;       /* audio window -> audio token */
    double ms_deform;              /* deformation network */
    double ms_background;          /* torso + background plate: contract stage "composite" */
    double ms_raster;              /* activations + rasterizer + uint8 conversion */
    double ms_wall;                /* wall time the runtime spent producing this frame (the first frame of a batch carries the batch) */
} gt_frame_info;
#define GT_FRAME_INFO_INIT {.struct_size = sizeof(gt_frame_info)}

/* One stage's latency (ms).  mean is per frame; p50 / p99 are over calls (per frame for
 * batch 1; the audio front end is timed per push). */
typedef struct gt_stage_stats {
    double mean_ms, p50_ms, p99_ms, total_ms;
} gt_stage_stats;

/* Like POSIX stat(): `struct gt_stats` (no typedef) is filled by the function gt_stats(). */
struct gt_stats {
    size_t struct_size;            /* = sizeof(gt_stats), set by the caller */
    int32_t width, height;         /* frame size, pixels */
    double fps;                    /* 25 */
    double lookahead_ms;           /* audio needed past a frame's own 40 ms before it can be rendered (batch 1) */
    int64_t frames_delivered;      /* frames returned by gt_next_frame */
    int64_t frames_rendered;       /* frames made by the runtime (delivered + queued + dropped) */
    int64_t frames_dropped;        /* dropped because more than max_queued_frames waited */
    int64_t frames_queued;         /* rendered, waiting for gt_next_frame */
    double audio_s;                /* audio pushed so far, seconds */
    double model_fps;              /* frames / (audio encoder + deform + raster time) */
    gt_stage_stats audio_frontend, audio_encoder, deform, background, raster; /* background: contract stage "composite" */
    gt_stage_stats wall;           /* per delivered frame: gt_frame_info.ms_wall */
    char engine[48];               /* e.g. "onnxruntime-fp32", "array-numpy" */
    char raster_backend[16];       /* "cpu", "cuda", "reference" */
};
#define GT_STATS_INIT {.struct_size = sizeof(struct gt_stats)}

/* Open a bundle and start a streaming session.
 *   bundle: path of a NAME.gtb directory (UTF-8).
 *   opts:   NULL for defaults, or a gt_options with struct_size set.
 *   out:    receives the handle; set to NULL on error.
 * Returns GT_OK, or GT_ERR_INVALID_ARG / GT_ERR_PYTHON / GT_ERR_INPUT (missing or
 * corrupt bundle, unknown engine) / GT_ERR_INTERNAL / GT_ERR_NO_MEMORY; the message is in
 * gt_last_error(NULL).  Sessions of one bundle with the same engine, raster, threads
 * and batch share one loaded model.  Thread-safe. */
GT_API gt_status gt_create(const char* bundle, const gt_options* opts, gt_session** out);

/* Push audio.
 *   pcm: n mono float32 samples (may be NULL when n == 0); copied, the caller keeps ownership.
 *   sample_rate: Hz, > 0; the same for every push of a session (4 kHz .. 384 kHz).
 * Does not render: frames are made by gt_next_frame.  Frames of an earlier push that are
 * not yet pulled are rendered first and queued.  Returns GT_OK, GT_ERR_INVALID_HANDLE,
 * GT_ERR_INVALID_ARG (NULL pcm with n > 0, rate <= 0), GT_ERR_STATE (after gt_finish),
 * GT_ERR_INPUT (NaN / Inf samples, unsupported or changed rate). */
GT_API gt_status gt_push_audio(gt_session* s, const float* pcm, size_t n, int sample_rate);

/* Next frame, in order.
 *   rgb:  receives width * height * 3 bytes (RGB uint8, row-major); cap: its size in bytes.
 *   info: NULL, or a gt_frame_info with struct_size set; filled on GT_FRAME_READY (width /
 *         height also on GT_ERR_BUFFER_TOO_SMALL).
 * Returns GT_FRAME_READY, GT_NEED_MORE_AUDIO (every frame whose audio window is complete
 * has been delivered), GT_FINISHED (after gt_finish, every frame delivered), or an
 * error; GT_ERR_BUFFER_TOO_SMALL leaves the frame queued.  Renders at most one batch. */
GT_API gt_status gt_next_frame(gt_session* s, uint8_t* rgb, size_t cap, gt_frame_info* info);

/* End of the speech: gt_next_frame then yields the tail (ceil(samples_16k / 640) frames
 * in all) and GT_FINISHED.  A second call is a no-op.  Returns GT_OK or an error. */
GT_API gt_status gt_finish(gt_session* s);

/* Session statistics (frame size, lookahead, per-stage latency, frames, drops) into
 * *out, whose struct_size is set.  Returns GT_OK or an error.  Thread-safe. */
GT_API gt_status gt_stats(gt_session* s, struct gt_stats* out);

/* Close the session and free it; queued frames are discarded.  Waits for a call in
 * flight on another thread.  gt_destroy(NULL) is a no-op returning GT_OK.  A second
 * gt_destroy of the same handle returns GT_ERR_INVALID_HANDLE (handles are checked,
 * never dereferenced), as does any later call with it. */
GT_API gt_status gt_destroy(gt_session* s);

/* Message of the most recent failed call: on session s (s != NULL), or on this thread
 * (s == NULL; the message of any failed gt_* call made by this thread, gt_create's
 * included).  "" if none.  The string is thread-local: valid until this thread's next
 * gt_* call.  Successful calls do not clear it. */
GT_API const char* gt_last_error(const gt_session* s);

/* "GT_OK", "GT_ERR_INPUT", ...; "GT_UNKNOWN" otherwise.  Static storage. */
GT_API const char* gt_status_name(gt_status status);

/* Library version, e.g. "0.1.0".  Static storage. */
GT_API const char* gt_version(void);

#ifdef __cplusplus
}
#endif
#endif /* GT_HOST_H */
