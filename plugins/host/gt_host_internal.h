/*
 * gt_host_internal.h: what the files of libgt_host.so share (not installed, not ABI).
 *
 * The library is split by job:
 *   gt_host_errors.c   status names, last-error strings (per thread and per session), and
 *                      Python exceptions -> status + one line (via bridge.describe_error)
 *   gt_host_python.c   finding and starting the interpreter, sys.path, importing the bridge
 *                      (gt_runtime/host/bridge.py, the Python half) and calling it
 *   gt_host_handles.c  the checked handle table and entering / leaving a call on a session
 *   gt_host_frames.c   pulling frames from the bridge into a session's queue, copying pixels out
 *   gt_host_api.c      the exported gt_* calls of gt_host.h
 *
 * Lock order in every call: a reference on the session (g_tab_mu, briefly), then the
 * session's mutex, then the GIL.  Functions marked "GIL held" need the GIL.
 */
#ifndef GT_HOST_INTERNAL_H
#define GT_HOST_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>

#include "gt_host.h"

#define GTH_ERR_LEN 1024

/* ---- a session --------------------------------------------------------------------------- */

typedef struct gth_frame_slot {
    PyObject* frame; /* numpy uint8 [H, W, 3] */
    gt_frame_info info;
} gth_frame_slot;

typedef struct gth_session {
    pthread_mutex_t mu; /* serialises calls on this session */
    int refs;           /* guarded by the table's mutex: table (1, until destroy) + calls in flight */
    int dead;           /* set by gt_destroy under mu */
    PyObject *key, *sess, *it; /* bridge's Player key, the Session, the active frames() generator or NULL */
    int32_t width, height;
    double fps, lookahead_ms;
    char engine[48], raster[16];
    int finished, dirty, broken; /* dirty: audio pushed / finish since the generator was made */
    int max_queue;
    gth_frame_slot* q; /* ring buffer of rendered, undelivered frames */
    size_t qhead, qlen, qcap;
    int64_t rendered, delivered, dropped;
    double* wall; /* ms_wall of each delivered frame */
    size_t nwall, capwall;
    char err[GTH_ERR_LEN]; /* last error on this session */
} gth_session;

/* ---- gt_host_errors.c ------------------------------------------------------------------- */

/* Format the message into this thread's last error (and p's, if p) and return code. */
gt_status gth_fail(gth_session* p, gt_status code, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
/* This thread's last error message (the buffer gt_last_error(NULL) returns). */
const char* gth_thread_error(void);
/* The current Python exception -> status + one-line message, as gth_fail (GIL held; clears it).
 * `where` (the C entry point) prefixes only internal errors: the runtime's messages name their input. */
gt_status gth_py_fail(gth_session* p, const char* where);

/* ---- gt_host_python.c ------------------------------------------------------------------- */

/* Start (or attach to) the interpreter, once, then put o->python_path on sys.path and import
 * the bridge if that has not succeeded yet.  Thread-safe; takes the GIL itself. */
gt_status gth_python_ready(const gt_options* o);
/* A bridge function (borrowed reference), or NULL before the bridge is imported. */
PyObject* gth_bridge(const char* name);

/* ---- gt_host_handles.c ------------------------------------------------------------------ */

/* Register p (one reference, the table's) -> its handle, or NULL (out of memory / slots). */
gt_session* gth_tab_add(gth_session* p);
/* A new reference on h's session, or NULL with the thread's error set (fn: the caller's name). */
gth_session* gth_tab_ref(const gt_session* h, const char* fn);
void gth_tab_unref(gth_session* p);
/* Unlink h (later lookups fail) -> its session with the table's reference, or NULL. */
gth_session* gth_tab_remove(gt_session* h);
/* Enter a call on h: reference + session mutex; NULL (thread's error set) if h is invalid or destroyed. */
gth_session* gth_enter(gt_session* h, const char* fn);
void gth_leave(gth_session* p);
/* Free a session the table no longer holds (no Python objects left). */
void gth_session_free(gth_session* p);

/* ---- gt_host_frames.c (GIL held) -------------------------------------------------------- */

/* Pull one frame from the active generator.  1: *frame (new reference) + *info; 0: exhausted
 * (generator cleared); < 0: a gt_status (error set, session marked broken). */
int gth_pull(gth_session* p, PyObject** frame, gt_frame_info* info, const char* fn);
/* Render what the active generator still holds into the queue (before a push / finish). */
gt_status gth_drain(gth_session* p, const char* fn);
/* Take the oldest queued frame: 1 (*frame a reference the caller now owns, *info), 0 if none. */
int gth_queue_pop(gth_session* p, PyObject** frame, gt_frame_info* info);
void gth_queue_clear(gth_session* p);
/* Copy frame's need bytes (uint8, C-contiguous) into rgb. */
gt_status gth_copy_frame(gth_session* p, PyObject* frame, uint8_t* rgb, size_t need, const char* fn);

#endif /* GT_HOST_INTERNAL_H */
