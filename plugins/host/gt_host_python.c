/*
 * gt_host_python.c: the embedded interpreter and the bridge to gt_runtime.
 *
 * The first gt_create starts CPython (or attaches to the host's), puts the checkout and
 * $GT_PYTHONPATH on sys.path, then each gt_create prepends its gt_options.python_path and,
 * until that has worked once, imports gt_runtime.host.bridge: the Python half, which every
 * other call goes through (gth_bridge).  A failed import is not remembered, so a later
 * gt_create with a better python_path can still succeed.
 *
 * GT_PYTHON and GT_PYTHONPATH are declared with the other settings in gt_runtime/contract.py;
 * they are read here with getenv because they are needed before Python runs.  The other
 * settings (GT_ENGINE, GT_RASTER, GT_DEBUG) are read by the bridge, through the contract.
 */
#include "gt_host_internal.h"

#include <dlfcn.h> /* dladdr: Python.h (first) defines _GNU_SOURCE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef GT_HOST_DEFAULT_PYTHON
#define GT_HOST_DEFAULT_PYTHON "" /* make host: the checkout's .venv/bin/python */
#endif
#ifndef GT_HOST_DEFAULT_PATH
#define GT_HOST_DEFAULT_PATH "" /* make host: the checkout (the folder that holds gt_runtime) */
#endif

#define BRIDGE_MODULE "gt_runtime.host.bridge"
/* The fix for an ImportError; bridge.IMPORT_HINT says the same (tests/host/test_bridge.py checks). */
#define IMPORT_HINT "point GT_PYTHON (or gt_options.python_executable) at the venv's bin/python and GT_PYTHONPATH at the folder that holds gt_runtime"

static pthread_mutex_t g_init_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_init_state; /* 0 not tried, 1 running, -1 failed to start (for good) */
static char g_init_err[GTH_ERR_LEN];
static PyObject* g_bridge; /* the bridge module once imported; read and written with the GIL held */

PyObject* gth_bridge(const char* name) { /* borrowed */
    return g_bridge ? PyDict_GetItemString(PyModule_GetDict(g_bridge), name) : NULL;
}

/* Move (or insert) one sys.path entry to the front.  GIL held; -1 with a Python error set. */
static int path_to_front(PyObject* path, const char* s, size_t n) {
    PyObject* item = PyUnicode_DecodeFSDefaultAndSize(s, (Py_ssize_t)n);
    if (!item) return -1;
    int rc = 0;
    Py_ssize_t i = PySequence_Index(path, item);
    if (i >= 0) rc = PySequence_DelItem(path, i);
    else if (PyErr_ExceptionMatches(PyExc_ValueError)) PyErr_Clear(); /* not there yet */
    else rc = -1;
    if (rc == 0) rc = PyList_Insert(path, 0, item);
    Py_DECREF(item);
    return rc;
}

/* Prepend spec's ':'-separated entries to sys.path, keeping their order.  GIL held; -1 with a Python error set. */
static int add_paths(const char* spec) {
    if (!spec || !*spec) return 0;
    PyObject* path = PySys_GetObject("path"); /* borrowed */
    if (!path || !PyList_Check(path)) {
        PyErr_SetString(PyExc_RuntimeError, "sys.path is missing or not a list");
        return -1;
    }
    const char* end = spec + strlen(spec);
    for (;;) { /* last entry first, so the first ends up in front */
        const char* start = end;
        while (start > spec && start[-1] != ':') start--;
        if (end > start && path_to_front(path, start, (size_t)(end - start)) < 0) return -1;
        if (start == spec) return 0;
        end = start - 1;
    }
}

static const char* pick_python(const gt_options* o, char* buf, size_t n) {
    const char* c = o->python_executable;
    if (c && *c) return c;
    if ((c = getenv("GT_PYTHON")) && *c) return c;
    if ((c = getenv("VIRTUAL_ENV")) && *c) {
        snprintf(buf, n, "%s/bin/python", c);
        if (access(buf, X_OK) == 0) return buf;
    }
    if (*GT_HOST_DEFAULT_PYTHON && access(GT_HOST_DEFAULT_PYTHON, X_OK) == 0) return GT_HOST_DEFAULT_PYTHON;
    return NULL;
}

/* Start (or attach to) the interpreter and set the process-wide sys.path entries, once. */
static gt_status start_once(const gt_options* o) {
    gt_status rc = GT_OK;
    pthread_mutex_lock(&g_init_mu);
    if (g_init_state == 1) goto out;
    if (g_init_state == -1) {
        rc = gth_fail(NULL, GT_ERR_PYTHON, "%s", g_init_err);
        goto out;
    }
    /* Extension modules (numpy, ...) resolve Py* symbols globally: promote libpython to
     * RTLD_GLOBAL in case the host dlopen()ed us with RTLD_LOCAL. */
    Dl_info di;
    if (dladdr((void*)&Py_InitializeFromConfig, &di) && di.dli_fname) dlopen(di.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    if (!Py_IsInitialized()) {
        char buf[4096];
        const char* exe = pick_python(o, buf, sizeof buf);
        PyConfig config;
        PyConfig_InitPythonConfig(&config);
        config.install_signal_handlers = 0; /* the host owns SIGINT & co (as Py_InitializeEx(0)) */
        config.parse_argv = 0;
        PyStatus st = PyStatus_Ok();
        if (exe) st = PyConfig_SetBytesString(&config, &config.executable, exe);
        if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&config);
        PyConfig_Clear(&config);
        if (PyStatus_Exception(st)) {
            snprintf(g_init_err, GTH_ERR_LEN, "gt_create: the Python interpreter did not start (%s%s%s) | check PYTHONHOME, GT_PYTHON",
                     st.func ? st.func : "", st.func ? ": " : "", st.err_msg ? st.err_msg : "unknown error");
            g_init_state = -1;
            rc = gth_fail(NULL, GT_ERR_PYTHON, "%s", g_init_err);
            goto out;
        }
        PyEval_SaveThread(); /* hold the GIL only inside calls from now on */
    }
    PyGILState_STATE gs = PyGILState_Ensure();
    /* sys.path: the build's checkout, then $GT_PYTHONPATH in front of it (gt_options.python_path per create). */
    if (add_paths(GT_HOST_DEFAULT_PATH) == 0 && add_paths(getenv("GT_PYTHONPATH")) == 0) {
        g_init_state = 1;
    } else {
        rc = gth_py_fail(NULL, "gt_create: sys.path");
        snprintf(g_init_err, GTH_ERR_LEN, "%s", gth_thread_error());
        g_init_state = -1;
        rc = GT_ERR_PYTHON;
    }
    PyGILState_Release(gs);
out:
    pthread_mutex_unlock(&g_init_mu);
    return rc;
}

/* Import the bridge.  GIL held. */
static gt_status import_bridge(void) {
    PyObject* m = PyImport_ImportModule(BRIDGE_MODULE);
    if (m) {
        if (g_bridge) Py_DECREF(m); /* another thread got there first (the import released the GIL) */
        else g_bridge = m;
        return GT_OK;
    }
    PyObject *t = NULL, *v = NULL, *tb = NULL;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    PyObject* s = v ? PyObject_Str(v) : NULL;
    const char* text = s ? PyUnicode_AsUTF8(s) : NULL;
    if (!text) PyErr_Clear();
    char msg[GTH_ERR_LEN];
    snprintf(msg, sizeof msg, "%s", text ? text : "");
    for (char* c = msg; *c; c++)
        if (*c == '\n' || *c == '\r' || *c == '\t') *c = ' '; /* one line */
    const char* type = t ? ((PyTypeObject*)t)->tp_name : "unknown error";
    gt_status rc;
    if (t && PyErr_GivenExceptionMatches(t, PyExc_ImportError))
        rc = gth_fail(NULL, GT_ERR_PYTHON, "%s: %s | " IMPORT_HINT, type, msg);
    else
        rc = gth_fail(NULL, GT_ERR_PYTHON, "gt_create: importing " BRIDGE_MODULE " failed (%s: %s) | check that gt_runtime and numpy work in that Python",
                      type, msg);
    Py_XDECREF(s);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    return rc;
}

gt_status gth_python_ready(const gt_options* o) {
    gt_status rc = start_once(o);
    if (rc != GT_OK) return rc;
    PyGILState_STATE gs = PyGILState_Ensure();
    if (add_paths(o->python_path) != 0) rc = gth_py_fail(NULL, "gt_create: python_path");
    else if (!g_bridge) rc = import_bridge();
    PyGILState_Release(gs);
    return rc;
}
