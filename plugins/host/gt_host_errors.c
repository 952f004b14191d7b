/*
 * gt_host_errors.c: status names and last-error strings.
 *
 * Every failed call leaves a one-line message in its thread's buffer (gt_last_error(NULL))
 * and, when it ran on a session, in that session's buffer (gt_last_error(s)).  A Python
 * exception is turned into a status + message by bridge.describe_error (gt_runtime/host/bridge.py).
 */
#include "gt_host_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char tls_err[GTH_ERR_LEN]; /* last error of this thread */
static _Thread_local char tls_ret[GTH_ERR_LEN]; /* gt_last_error(s) copies s's message here */

gt_status gth_fail(gth_session* p, gt_status code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_err, GTH_ERR_LEN, fmt, ap);
    va_end(ap);
    if (p) memcpy(p->err, tls_err, GTH_ERR_LEN);
    return code;
}

const char* gth_thread_error(void) { return tls_err; }

/* str(v) into buf, "" if that fails too (GIL held). */
static void py_str(PyObject* v, char* buf, size_t n) {
    PyObject* s = v ? PyObject_Str(v) : NULL;
    const char* u = s ? PyUnicode_AsUTF8(s) : NULL;
    snprintf(buf, n, "%s", u ? u : "");
    if (!u) PyErr_Clear();
    Py_XDECREF(s);
}

gt_status gth_py_fail(gth_session* p, const char* where) {
    PyObject *t = NULL, *v = NULL, *tb = NULL;
    PyErr_Fetch(&t, &v, &tb);
    if (!t) return gth_fail(p, GT_ERR_INTERNAL, "%s: failed without a Python exception", where);
    PyErr_NormalizeException(&t, &v, &tb);
    gt_status code = GT_ERR_INTERNAL;
    char msg[GTH_ERR_LEN] = "";
    PyObject* fn = gth_bridge("describe_error");
    PyObject* r = fn ? PyObject_CallFunctionObjArgs(fn, t, v ? v : Py_None, tb ? tb : Py_None, NULL) : NULL;
    const char *kind = NULL, *text = NULL;
    if (r && PyArg_ParseTuple(r, "ss", &kind, &text)) {
        if (!strcmp(kind, "input")) code = GT_ERR_INPUT;
        else if (!strcmp(kind, "python")) code = GT_ERR_PYTHON;
        else if (!strcmp(kind, "memory")) code = GT_ERR_NO_MEMORY;
        snprintf(msg, sizeof msg, "%s", text);
    } else { /* no bridge yet, or describe_error itself failed */
        PyErr_Clear();
        char text_v[GTH_ERR_LEN - 128]; /* leaves room for the type name */
        py_str(v, text_v, sizeof text_v);
        snprintf(msg, sizeof msg, "%.100s: %s", ((PyTypeObject*)t)->tp_name, *text_v ? text_v : "unexpected Python exception");
    }
    Py_XDECREF(r);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    if (code == GT_ERR_INTERNAL) return gth_fail(p, code, "%s: %s", where, msg);
    return gth_fail(p, code, "%s", msg);
}

GT_API const char* gt_last_error(const gt_session* s) {
    if (!s) return tls_err;
    gth_session* p = gth_tab_ref(s, "gt_last_error");
    if (!p) return tls_err; /* "invalid session handle" */
    pthread_mutex_lock(&p->mu);
    memcpy(tls_ret, p->err, GTH_ERR_LEN);
    pthread_mutex_unlock(&p->mu);
    gth_tab_unref(p);
    return tls_ret;
}

GT_API const char* gt_status_name(gt_status status) {
    switch (status) {
    case GT_OK: return "GT_OK";
    case GT_FRAME_READY: return "GT_FRAME_READY";
    case GT_NEED_MORE_AUDIO: return "GT_NEED_MORE_AUDIO";
    case GT_FINISHED: return "GT_FINISHED";
    case GT_ERR_INVALID_ARG: return "GT_ERR_INVALID_ARG";
    case GT_ERR_INVALID_HANDLE: return "GT_ERR_INVALID_HANDLE";
    case GT_ERR_BUFFER_TOO_SMALL: return "GT_ERR_BUFFER_TOO_SMALL";
    case GT_ERR_STATE: return "GT_ERR_STATE";
    case GT_ERR_INPUT: return "GT_ERR_INPUT";
    case GT_ERR_PYTHON: return "GT_ERR_PYTHON";
    case GT_ERR_INTERNAL: return "GT_ERR_INTERNAL";
    case GT_ERR_NO_MEMORY: return "GT_ERR_NO_MEMORY";
    }
    return "GT_UNKNOWN";
}
