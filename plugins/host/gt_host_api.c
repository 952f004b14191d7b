/*
 * gt_host_api.c: the exported calls of gt_host.h (libgt_host.so).
 *
 * Each call checks its arguments in C, enters the session (gt_host_handles.c: a reference,
 * then the session's mutex), takes the GIL only around the bridge calls
 * (gt_runtime/host/bridge.py: open_session, push, frames, pull, finish, stats,
 * close_session), and turns a Python exception into a status and a one-line message
 * (gt_host_errors.c).
 */
#include "gt_host_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The bridge's stats(): audio_s, model_fps, then (mean, p50, p99, total) ms of each of the five
 * stages in gt_stats' order (bridge.STATS_LEN). */
#define STATS_LEN (2 + 4 * 5)

static int bad_struct_size(size_t n) { return n < sizeof(size_t) || n > (1u << 16); }

/* Copy the fields both sides know (after struct_size, which stays the caller's). */
static void copy_out(void* dst, const void* src, size_t dst_size, size_t src_size) {
    size_t n = dst_size < src_size ? dst_size : src_size;
    memcpy((char*)dst + sizeof(size_t), (const char*)src + sizeof(size_t), n - sizeof(size_t));
}

/* Call a bridge function on the session (GIL held) -> new reference, or NULL with a Python error set. */
static PyObject* call_bridge(const char* name, PyObject* sess) {
    return PyObject_CallFunctionObjArgs(gth_bridge(name), sess, NULL);
}

GT_API gt_status gt_create(const char* bundle, const gt_options* opts, gt_session** out) {
    static const char* fn = "gt_create";
    if (!out) return gth_fail(NULL, GT_ERR_INVALID_ARG, "%s: out is NULL | pass the address of a gt_session*", fn);
    *out = NULL;
    if (!bundle || !*bundle) return gth_fail(NULL, GT_ERR_INVALID_ARG, "%s: bundle path is NULL or empty | pass the path of a .gtb bundle", fn);
    gt_options o = GT_OPTIONS_INIT;
    if (opts) {
        if (bad_struct_size(opts->struct_size))
            return gth_fail(NULL, GT_ERR_INVALID_ARG, "%s: options.struct_size is %zu | set it to sizeof(gt_options) (%zu) or use GT_OPTIONS_INIT",
                            fn, opts->struct_size, sizeof(gt_options));
        copy_out(&o, opts, sizeof o, opts->struct_size);
    }
    if (o.threads < 0 || o.batch < 0 || o.max_queued_frames < 0)
        return gth_fail(NULL, GT_ERR_INVALID_ARG, "%s: options threads %d, batch %d, max_queued_frames %d | expected >= 0 (0 = default)", fn,
                        o.threads, o.batch, o.max_queued_frames);
    gt_status rc = gth_python_ready(&o);
    if (rc != GT_OK) return rc;

    gth_session* p = calloc(1, sizeof *p);
    if (!p) return gth_fail(NULL, GT_ERR_NO_MEMORY, "%s: out of memory", fn);
    pthread_mutex_init(&p->mu, NULL);
    p->max_queue = o.max_queued_frames;

    PyGILState_STATE gs = PyGILState_Ensure();
    /* engine / raster "": the bridge falls back to $GT_ENGINE / $GT_RASTER, then "auto" */
    PyObject* r = PyObject_CallFunction(gth_bridge("open_session"), "sssii", bundle, o.engine ? o.engine : "", o.raster ? o.raster : "",
                                        o.threads, o.batch > 1 ? o.batch : 1);
    if (!r) rc = gth_py_fail(NULL, fn);
    if (rc == GT_OK) {
        const char *eng = "", *ras = "";
        if (!PyArg_ParseTuple(r, "OOiiddss", &p->key, &p->sess, &p->width, &p->height, &p->fps, &p->lookahead_ms, &eng, &ras)) {
            rc = gth_py_fail(NULL, fn);
            p->key = p->sess = NULL;
        } else {
            Py_INCREF(p->key);
            Py_INCREF(p->sess);
            snprintf(p->engine, sizeof p->engine, "%s", eng);
            snprintf(p->raster, sizeof p->raster, "%s", ras);
        }
    }
    Py_XDECREF(r);
    gt_session* h = NULL;
    if (rc == GT_OK && !(h = gth_tab_add(p))) rc = gth_fail(NULL, GT_ERR_NO_MEMORY, "%s: no free session slot (out of memory)", fn);
    if (rc != GT_OK && p->sess) { /* undo open_session */
        PyObject* c = PyObject_CallFunctionObjArgs(gth_bridge("close_session"), p->key, p->sess, NULL);
        if (!c) PyErr_Clear();
        Py_XDECREF(c);
    }
    if (rc != GT_OK) {
        Py_XDECREF(p->key);
        Py_XDECREF(p->sess);
    }
    PyGILState_Release(gs);
    if (rc != GT_OK) {
        gth_session_free(p);
        return rc;
    }
    *out = h;
    return GT_OK;
}

GT_API gt_status gt_push_audio(gt_session* s, const float* pcm, size_t n, int sample_rate) {
    static const char* fn = "gt_push_audio";
    gth_session* p = gth_enter(s, fn);
    if (!p) return GT_ERR_INVALID_HANDLE;
    gt_status rc = GT_OK;
    static const float empty[1] = {0};
    if (!pcm && n) rc = gth_fail(p, GT_ERR_INVALID_ARG, "%s: pcm is NULL with n = %zu | pass n float32 samples", fn, n);
    else if (sample_rate <= 0)
        rc = gth_fail(p, GT_ERR_INVALID_ARG, "%s: sample rate %d Hz | expected a positive rate (4 kHz to 384 kHz)", fn, sample_rate);
    else if (n > (size_t)(PY_SSIZE_T_MAX / sizeof(float))) rc = gth_fail(p, GT_ERR_INVALID_ARG, "%s: n = %zu samples is too large", fn, n);
    else if (p->finished)
        rc = gth_fail(p, GT_ERR_STATE, "%s: the session is finished (gt_finish was called) | create a new session for new speech", fn);
    else if (p->broken) rc = gth_fail(p, GT_ERR_STATE, "%s: the session failed earlier (%s) | destroy it and create a new one", fn, p->err);
    if (rc != GT_OK) {
        gth_leave(p);
        return rc;
    }
    PyGILState_STATE gs = PyGILState_Ensure();
    rc = gth_drain(p, fn);
    if (rc == GT_OK) {
        PyObject* mv = PyMemoryView_FromMemory((char*)(n ? pcm : empty), (Py_ssize_t)(n * sizeof(float)), PyBUF_READ);
        PyObject* r = mv ? PyObject_CallFunction(gth_bridge("push"), "OOi", p->sess, mv, sample_rate) : NULL;
        if (!r) rc = gth_py_fail(p, fn);
        else p->dirty = 1;
        Py_XDECREF(r);
        Py_XDECREF(mv);
    }
    PyGILState_Release(gs);
    gth_leave(p);
    return rc;
}

/* Keep fi's ms_wall for gt_stats' wall percentiles (best effort: skipped when out of memory). */
static void record_wall(gth_session* p, double ms) {
    if (p->nwall == p->capwall) {
        size_t n = p->capwall ? 2 * p->capwall : 256;
        double* w = realloc(p->wall, n * sizeof *w);
        if (w) {
            p->wall = w;
            p->capwall = n;
        }
    }
    if (p->nwall < p->capwall) p->wall[p->nwall++] = ms;
}

GT_API gt_status gt_next_frame(gt_session* s, uint8_t* rgb, size_t cap, gt_frame_info* info) {
    static const char* fn = "gt_next_frame";
    gth_session* p = gth_enter(s, fn);
    if (!p) return GT_ERR_INVALID_HANDLE;
    size_t need = (size_t)p->width * (size_t)p->height * 3;
    gt_status rc = GT_OK;
    if (info && bad_struct_size(info->struct_size))
        rc = gth_fail(p, GT_ERR_INVALID_ARG, "%s: info->struct_size is %zu | set it to sizeof(gt_frame_info) (%zu) or use GT_FRAME_INFO_INIT", fn,
                      info->struct_size, sizeof(gt_frame_info));
    else if (!rgb) rc = gth_fail(p, GT_ERR_INVALID_ARG, "%s: rgb is NULL | pass a buffer of width * height * 3 = %zu bytes", fn, need);
    else if (cap < need) {
        if (info) {
            gt_frame_info fi = {.struct_size = sizeof fi, .index = p->rendered - (int64_t)p->qlen, .width = p->width, .height = p->height};
            copy_out(info, &fi, info->struct_size, sizeof fi);
        }
        rc = gth_fail(p, GT_ERR_BUFFER_TOO_SMALL, "%s: rgb buffer has %zu bytes | a %dx%d frame needs %zu (width * height * 3)", fn, cap,
                      (int)p->width, (int)p->height, need);
    }
    if (rc != GT_OK) {
        gth_leave(p);
        return rc;
    }
    PyGILState_STATE gs = PyGILState_Ensure();
    PyObject* frame = NULL;
    gt_frame_info fi;
    for (;;) { /* queued first, then the active generator, then a new one if audio came since */
        if (gth_queue_pop(p, &frame, &fi)) break;
        if (p->it) {
            int r = gth_pull(p, &frame, &fi, fn);
            if (r < 0) {
                rc = (gt_status)r;
                break;
            }
            if (r == 1) break;
            continue;
        }
        if (p->dirty && !p->broken) {
            p->dirty = 0;
            p->it = call_bridge("frames", p->sess);
            if (!p->it) {
                rc = gth_py_fail(p, fn);
                break;
            }
            continue;
        }
        rc = p->broken ? gth_fail(p, GT_ERR_STATE, "%s: the session failed earlier | destroy it and create a new one", fn)
             : p->finished ? GT_FINISHED
                           : GT_NEED_MORE_AUDIO;
        break;
    }
    if (frame) {
        rc = gth_copy_frame(p, frame, rgb, need, fn);
        Py_DECREF(frame);
        if (rc == GT_OK) {
            rc = GT_FRAME_READY;
            p->delivered++;
            record_wall(p, fi.ms_wall);
            if (info) copy_out(info, &fi, info->struct_size, sizeof fi);
        }
    }
    PyGILState_Release(gs);
    gth_leave(p);
    return rc;
}

GT_API gt_status gt_finish(gt_session* s) {
    static const char* fn = "gt_finish";
    gth_session* p = gth_enter(s, fn);
    if (!p) return GT_ERR_INVALID_HANDLE;
    gt_status rc = GT_OK;
    if (p->finished) {
        gth_leave(p);
        return GT_OK;
    }
    if (p->broken) {
        rc = gth_fail(p, GT_ERR_STATE, "%s: the session failed earlier | destroy it and create a new one", fn);
        gth_leave(p);
        return rc;
    }
    PyGILState_STATE gs = PyGILState_Ensure();
    rc = gth_drain(p, fn);
    if (rc == GT_OK) {
        PyObject* r = call_bridge("finish", p->sess);
        if (!r) rc = gth_py_fail(p, fn);
        else {
            p->finished = 1;
            p->dirty = 1;
        }
        Py_XDECREF(r);
    }
    PyGILState_Release(gs);
    gth_leave(p);
    return rc;
}

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

static double pct(const double* sorted, size_t n, double q) { /* numpy's linear percentile */
    if (!n) return 0.0;
    double pos = q / 100.0 * (double)(n - 1);
    size_t i = (size_t)pos;
    if (i + 1 >= n) return sorted[n - 1];
    return sorted[i] + (pos - (double)i) * (sorted[i + 1] - sorted[i]);
}

/* gt_stats' wall: percentiles of the delivered frames' ms_wall, computed here (the bridge never sees them). */
static gt_stage_stats wall_stats(const gth_session* p) {
    gt_stage_stats out = {0, 0, 0, 0};
    double* w = p->nwall ? malloc(p->nwall * sizeof *w) : NULL;
    if (!w) return out;
    memcpy(w, p->wall, p->nwall * sizeof *w);
    qsort(w, p->nwall, sizeof *w, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < p->nwall; i++) sum += w[i];
    out = (gt_stage_stats){sum / (double)p->nwall, pct(w, p->nwall, 50), pct(w, p->nwall, 99), sum};
    free(w);
    return out;
}

GT_API gt_status gt_stats(gt_session* s, struct gt_stats* out) {
    static const char* fn = "gt_stats";
    gth_session* p = gth_enter(s, fn);
    if (!p) return GT_ERR_INVALID_HANDLE;
    gt_status rc = GT_OK;
    if (!out) rc = gth_fail(p, GT_ERR_INVALID_ARG, "%s: out is NULL | pass a struct gt_stats with struct_size set", fn);
    else if (bad_struct_size(out->struct_size))
        rc = gth_fail(p, GT_ERR_INVALID_ARG, "%s: out->struct_size is %zu | set it to sizeof(struct gt_stats) (%zu) or use GT_STATS_INIT", fn,
                      out->struct_size, sizeof(struct gt_stats));
    if (rc != GT_OK) {
        gth_leave(p);
        return rc;
    }
    struct gt_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    st.width = p->width;
    st.height = p->height;
    st.fps = p->fps;
    st.lookahead_ms = p->lookahead_ms;
    st.frames_delivered = p->delivered;
    st.frames_rendered = p->rendered;
    st.frames_dropped = p->dropped;
    st.frames_queued = (int64_t)p->qlen;
    snprintf(st.engine, sizeof st.engine, "%s", p->engine);
    snprintf(st.raster_backend, sizeof st.raster_backend, "%s", p->raster);
    st.wall = wall_stats(p);
    PyGILState_STATE gs = PyGILState_Ensure();
    PyObject* r = call_bridge("stats", p->sess);
    if (!r) rc = gth_py_fail(p, fn);
    else {
        PyObject* seq = PySequence_Fast(r, "stats");
        if (seq && PySequence_Fast_GET_SIZE(seq) == STATS_LEN) {
            double v[STATS_LEN];
            for (int i = 0; i < STATS_LEN; i++) v[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
            st.audio_s = v[0];
            st.model_fps = v[1];
            /* bridge.FRAME_STAGES order; background is the contract's "composite" */
            gt_stage_stats* stages[5] = {&st.audio_frontend, &st.audio_encoder, &st.deform, &st.background, &st.raster};
            for (int k = 0; k < 5; k++) *stages[k] = (gt_stage_stats){v[2 + 4 * k], v[3 + 4 * k], v[4 + 4 * k], v[5 + 4 * k]};
        } else if (!PyErr_Occurred()) {
            rc = gth_fail(p, GT_ERR_INTERNAL, "%s: the runtime's stats have an unexpected layout", fn);
        }
        if (PyErr_Occurred()) rc = gth_py_fail(p, fn);
        Py_XDECREF(seq);
        Py_DECREF(r);
    }
    PyGILState_Release(gs);
    if (rc == GT_OK) copy_out(out, &st, out->struct_size, sizeof st);
    gth_leave(p);
    return rc;
}

GT_API gt_status gt_destroy(gt_session* s) {
    static const char* fn = "gt_destroy";
    if (!s) return GT_OK;
    gth_session* p = gth_tab_remove(s);
    if (!p)
        return gth_fail(NULL, GT_ERR_INVALID_HANDLE, "%s: invalid session handle %p (already destroyed?) | destroy each session once", fn,
                        (const void*)s);
    pthread_mutex_lock(&p->mu); /* wait for a call in flight */
    p->dead = 1;
    gt_status rc = GT_OK;
    PyGILState_STATE gs = PyGILState_Ensure();
    Py_CLEAR(p->it); /* closes the generator (GeneratorExit) */
    if (PyErr_Occurred()) PyErr_Clear();
    gth_queue_clear(p);
    PyObject* r = PyObject_CallFunctionObjArgs(gth_bridge("close_session"), p->key, p->sess, NULL);
    if (!r) rc = gth_py_fail(p, fn);
    Py_XDECREF(r);
    Py_CLEAR(p->key);
    Py_CLEAR(p->sess);
    PyGILState_Release(gs);
    pthread_mutex_unlock(&p->mu);
    gth_tab_unref(p); /* the table's reference; frees unless a waiting call still holds one */
    return rc;
}

GT_API const char* gt_version(void) { return GT_HOST_VERSION; }
