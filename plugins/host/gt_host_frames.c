/*
 * gt_host_frames.c: frames from the bridge into a session's queue, and out to the caller.
 *
 * Session.frames() is a generator that must be drained before the next push or finish.
 * gt_next_frame pulls from it one frame at a time (bridge.pull); gt_push_audio / gt_finish
 * first drain what is left into the queue, dropping the oldest beyond max_queued_frames.
 * Pixels are copied once, from the numpy frame's buffer (buffer protocol) into the caller's.
 * Everything here runs with the GIL held.
 */
#include "gt_host_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int queue_push(gth_session* p, PyObject* frame, const gt_frame_info* info) {
    if (p->max_queue > 0 && p->qlen >= (size_t)p->max_queue) { /* drop the oldest */
        gth_frame_slot* old = &p->q[p->qhead];
        Py_DECREF(old->frame);
        p->qhead = (p->qhead + 1) % p->qcap;
        p->qlen--;
        p->dropped++;
    }
    if (p->qlen == p->qcap) {
        size_t n = p->qcap ? 2 * p->qcap : 8;
        gth_frame_slot* nq = malloc(n * sizeof *nq);
        if (!nq) return -1;
        for (size_t k = 0; k < p->qlen; k++) nq[k] = p->q[(p->qhead + k) % p->qcap];
        free(p->q);
        p->q = nq;
        p->qcap = n;
        p->qhead = 0;
    }
    gth_frame_slot* s = &p->q[(p->qhead + p->qlen) % p->qcap];
    s->frame = frame;
    s->info = *info;
    p->qlen++;
    return 0;
}

int gth_queue_pop(gth_session* p, PyObject** frame, gt_frame_info* info) {
    if (!p->qlen) return 0;
    gth_frame_slot* s = &p->q[p->qhead];
    *frame = s->frame;
    *info = s->info;
    p->qhead = (p->qhead + 1) % p->qcap;
    p->qlen--;
    return 1;
}

void gth_queue_clear(gth_session* p) {
    PyObject* f;
    gt_frame_info info;
    while (gth_queue_pop(p, &f, &info)) Py_DECREF(f);
}

int gth_pull(gth_session* p, PyObject** frame, gt_frame_info* info, const char* fn) {
    double t0 = now_ms();
    PyObject* r = PyObject_CallFunctionObjArgs(gth_bridge("pull"), p->it, p->sess, NULL);
    double t1 = now_ms();
    if (!r) {
        Py_CLEAR(p->it);
        p->broken = 1;
        return gth_py_fail(p, fn);
    }
    if (r == Py_None) {
        Py_DECREF(r);
        Py_CLEAR(p->it);
        return 0;
    }
    /* Stage seconds in bridge.FRAME_STAGES order: the struct's own field order (see gt_host.h). */
    PyObject* f = NULL;
    double st[5] = {0};
    if (!PyArg_ParseTuple(r, "O(ddddd)", &f, &st[0], &st[1], &st[2], &st[3], &st[4])) {
        Py_DECREF(r);
        p->broken = 1;
        return gth_py_fail(p, fn);
    }
    Py_INCREF(f);
    Py_DECREF(r);
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    info->index = p->rendered++;
    info->width = p->width;
    info->height = p->height;
    info->pts_s = (double)info->index / p->fps;
    info->ms_audio_frontend = 1e3 * st[0];
    info->ms_audio_encoder = 1e3 * st[1];
    info->ms_deform = 1e3 * st[2];
    info->ms_background = 1e3 * st[3]; /* contract stage "composite" */
    info->ms_raster = 1e3 * st[4];
    info->ms_wall = t1 - t0;
    *frame = f;
    return 1;
}

gt_status gth_drain(gth_session* p, const char* fn) {
    while (p->it) {
        PyObject* f;
        gt_frame_info info;
        int r = gth_pull(p, &f, &info, fn);
        if (r < 0) return (gt_status)r;
        if (r == 1 && queue_push(p, f, &info) != 0) {
            Py_DECREF(f);
            return gth_fail(p, GT_ERR_NO_MEMORY, "%s: out of memory queueing a frame", fn);
        }
    }
    return GT_OK;
}

gt_status gth_copy_frame(gth_session* p, PyObject* frame, uint8_t* rgb, size_t need, const char* fn) {
    Py_buffer view;
    if (PyObject_GetBuffer(frame, &view, PyBUF_C_CONTIGUOUS) != 0) return gth_py_fail(p, fn);
    gt_status rc = GT_OK;
    if ((size_t)view.len != need || view.itemsize != 1)
        rc = gth_fail(p, GT_ERR_INTERNAL, "%s: the runtime returned a frame of %zd bytes (itemsize %zd) | expected %zu bytes of uint8", fn,
                      view.len, view.itemsize, need);
    else
        memcpy(rgb, view.buf, need);
    PyBuffer_Release(&view);
    return rc;
}
