/*
 * gt_host.c -> libgt_host.so: the C ABI of gt_host.h, by embedding CPython and driving
 * gt_runtime.playback.session.Session (DESIGN.md section 8).
 *
 * Layout
 *  - Handles: a table of slots {session, generation}; a handle encodes (generation, slot)
 *    and is never dereferenced, so a destroyed handle is detected even when its slot is
 *    reused.  Each call takes a reference on the session (the table holds one too), then
 *    the session's mutex, then the GIL, in that order; gt_destroy unlinks the slot, waits
 *    for the mutex, closes the Python session and drops the table's reference.
 *  - Python: a small helper module (HELPER_SRC below) is executed once into `_gt_host`;
 *    it opens sessions (sharing one Player per bundle/engine/raster/threads/batch), pushes
 *    audio, pulls one frame plus its stage times, and turns exceptions into
 *    (kind, one-line message).
 *  - Frames: Session.frames() is a generator that must be drained before the next push.
 *    gt_next_frame pulls from it one frame at a time; gt_push_audio / gt_finish drain what
 *    is left into the session's queue (oldest dropped beyond max_queued_frames).  Pixels
 *    are copied once, from the numpy frame's buffer (buffer protocol) into the caller's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h> /* dladdr: Python.h defines _GNU_SOURCE */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gt_host.h"

#ifndef GT_HOST_DEFAULT_PYTHON
#define GT_HOST_DEFAULT_PYTHON "" /* make host: the checkout's .venv/bin/python */
#endif
#ifndef GT_HOST_DEFAULT_PATH
#define GT_HOST_DEFAULT_PATH "" /* make host: the checkout (the folder that holds gt_runtime) */
#endif

#define ERR_LEN 1024

/* ------------------------------------------------------------------------------------ */
/* Errors                                                                               */

static _Thread_local char tls_err[ERR_LEN]; /* last error of this thread */
static _Thread_local char tls_ret[ERR_LEN]; /* gt_last_error(s) copies s's message here */

typedef struct frame_slot {
    PyObject* frame; /* numpy uint8 [H, W, 3] */
    gt_frame_info info;
} frame_slot;

typedef struct impl {
    pthread_mutex_t mu; /* serialises calls on this session */
    int refs;           /* guarded by g_tab_mu: table (1, until destroy) + calls in flight */
    int dead;           /* set by gt_destroy under mu */
    PyObject *key, *sess, *it; /* Player cache key, Session, active frames() generator or NULL */
    int32_t width, height;
    double fps, lookahead_ms;
    char engine[48], raster[16];
    int finished, dirty, broken; /* dirty: audio pushed / finish since the generator was made */
    int max_queue;
    frame_slot* q; /* ring buffer of rendered, undelivered frames */
    size_t qhead, qlen, qcap;
    int64_t rendered, delivered, dropped;
    double* wall; /* ms_wall of each delivered frame */
    size_t nwall, capwall;
    char err[ERR_LEN];
} impl;

static void set_err(impl* p, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_err, ERR_LEN, fmt, ap);
    va_end(ap);
    if (p) memcpy(p->err, tls_err, ERR_LEN);
}

static gt_status fail(impl* p, gt_status code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_err, ERR_LEN, fmt, ap);
    va_end(ap);
    if (p) memcpy(p->err, tls_err, ERR_LEN);
    return code;
}

/* ------------------------------------------------------------------------------------ */
/* Handle table                                                                         */

#define IDX_BITS 20u
#define IDX_MAX ((1u << IDX_BITS) - 1u)
#define GEN_MASK (UINTPTR_MAX >> IDX_BITS)

typedef struct slot {
    impl* p;
    uintptr_t gen;
} slot;

static pthread_mutex_t g_tab_mu = PTHREAD_MUTEX_INITIALIZER;
static slot* g_slots;
static size_t g_nslots;

static void impl_free(impl* p) {
    pthread_mutex_destroy(&p->mu);
    free(p->q);
    free(p->wall);
    free(p);
}

/* Register p -> handle (NULL when out of memory / slots). */
static gt_session* tab_add(impl* p) {
    gt_session* h = NULL;
    pthread_mutex_lock(&g_tab_mu);
    size_t i = 0;
    while (i < g_nslots && g_slots[i].p) i++;
    if (i == g_nslots && g_nslots < IDX_MAX) {
        size_t n = g_nslots ? 2 * g_nslots : 16;
        if (n > IDX_MAX) n = IDX_MAX;
        slot* ns = realloc(g_slots, n * sizeof *ns);
        if (ns) {
            for (size_t k = g_nslots; k < n; k++) ns[k] = (slot){NULL, 1};
            g_slots = ns;
            g_nslots = n;
        }
    }
    if (i < g_nslots) {
        g_slots[i].p = p;
        p->refs = 1;
        h = (gt_session*)(((g_slots[i].gen & GEN_MASK) << IDX_BITS) | (uintptr_t)(i + 1));
    }
    pthread_mutex_unlock(&g_tab_mu);
    return h;
}

/* Caller holds g_tab_mu.  -> slot index or -1. */
static long tab_find(const gt_session* h) {
    uintptr_t v = (uintptr_t)h;
    size_t i = (size_t)(v & IDX_MAX);
    uintptr_t gen = v >> IDX_BITS;
    if (i == 0 || i > g_nslots) return -1;
    i -= 1;
    if (!g_slots[i].p || (g_slots[i].gen & GEN_MASK) != gen) return -1;
    return (long)i;
}

/* Take a reference on h's session, or NULL (tls message set). */
static impl* tab_ref(const gt_session* h, const char* fn) {
    impl* p = NULL;
    if (!h) {
        set_err(NULL, "%s: session is NULL | pass the handle gt_create returned", fn);
        return NULL;
    }
    pthread_mutex_lock(&g_tab_mu);
    long i = tab_find(h);
    if (i >= 0) {
        p = g_slots[i].p;
        p->refs++;
    }
    pthread_mutex_unlock(&g_tab_mu);
    if (!p) set_err(NULL, "%s: invalid session handle %p (already destroyed?) | create a new one with gt_create", fn, (const void*)h);
    return p;
}

static void tab_unref(impl* p) {
    pthread_mutex_lock(&g_tab_mu);
    int last = --p->refs == 0;
    pthread_mutex_unlock(&g_tab_mu);
    if (last) impl_free(p);
}

/* Unlink h (later lookups fail) -> its session with the table's reference, or NULL. */
static impl* tab_remove(gt_session* h) {
    impl* p = NULL;
    pthread_mutex_lock(&g_tab_mu);
    long i = tab_find(h);
    if (i >= 0) {
        p = g_slots[i].p;
        g_slots[i].p = NULL;
        g_slots[i].gen = (g_slots[i].gen + 1) & GEN_MASK;
        if (!g_slots[i].gen) g_slots[i].gen = 1;
    }
    pthread_mutex_unlock(&g_tab_mu);
    return p;
}

/* Enter a call on h: reference + session mutex; NULL (tls message set) if h is invalid. */
static impl* enter(gt_session* h, const char* fn) {
    impl* p = tab_ref(h, fn);
    if (!p) return NULL;
    pthread_mutex_lock(&p->mu);
    if (p->dead) { /* destroyed while this call waited */
        pthread_mutex_unlock(&p->mu);
        tab_unref(p);
        set_err(NULL, "%s: session was destroyed | create a new one with gt_create", fn);
        return NULL;
    }
    return p;
}

static void leave(impl* p) {
    pthread_mutex_unlock(&p->mu);
    tab_unref(p);
}

/* ------------------------------------------------------------------------------------ */
/* Python                                                                               */

static const char HELPER_SRC[] =
    "import os, sys, threading, time\n"
    "_players = {}\n"
    "# Threads switch between bytecodes even with the GIL, so the shared-Player table is locked:\n"
    "# one Player per key, and it is closed only when its last session closes.\n"
    "_players_lock = threading.Lock()\n"
    "STAGES = ('audio_encoder', 'deform', 'background', 'raster')\n"
    "ALL = ('audio_frontend',) + STAGES\n"
    "\n"
    "def add_paths(spec):\n"
    "    for p in reversed([p for p in spec.split(os.pathsep) if p]):\n"
    "        if p in sys.path:\n"
    "            sys.path.remove(p)\n"
    "        sys.path.insert(0, p)\n"
    "\n"
    "def check_imports():\n"
    "    import numpy, gt_runtime.playback.player  # noqa: F401\n"
    "\n"
    "def open_session(bundle, engine, raster, threads, batch):\n"
    "    from gt_runtime.playback.player import Player\n"
    "    key = (os.path.realpath(bundle), engine, raster, threads, batch)\n"
    "    with _players_lock:\n"
    "        ent = _players.get(key)\n"
    "        if ent is None:\n"
    "            p = Player(bundle, engine=engine, raster=raster, threads=threads or None, batch=batch)\n"
    "            ent = _players[key] = [p, 0]\n"
    "        p = ent[0]\n"
    "        s = p.session()\n"
    "        ent[1] += 1\n"
    "    return (key, s, int(p.width), int(p.height), float(p.fps), float(s.lookahead_ms),\n"
    "            str(p.engines.name), str(p.pipeline.raster))\n"
    "\n"
    "def close_session(key, s):\n"
    "    try:\n"
    "        s.close()\n"
    "    finally:\n"
    "        with _players_lock:\n"
    "            ent = _players.get(key)\n"
    "            if ent is not None:\n"
    "                ent[1] -= 1\n"
    "                if ent[1] <= 0:\n"
    "                    del _players[key]\n"
    "                    ent[0].close()\n"
    "\n"
    "def push(s, mv, sr):\n"
    "    import numpy as np\n"
    "    s.push_audio(np.frombuffer(mv, np.float32).copy(), sr)\n"
    "\n"
    "def pull(it, s):\n"
    "    f = next(it, None)\n"
    "    if f is None:\n"
    "        return None\n"
    "    tm = s.timings\n"
    "    st = [tm.total.get('audio_frontend', 0.0) / max(tm.frames, 1)]\n"
    "    for k in STAGES:\n"
    "        v = tm.samples.get(k)\n"
    "        st.append(float(v[-1]) if v else 0.0)\n"
    "    return f, tuple(st)\n"
    "\n"
    "def stats(s):\n"
    "    tm = s.timings\n"
    "    summ = tm.summary()['stages']\n"
    "    fps = float(tm.model_fps())\n"
    "    out = [s.samples_16k / 16000.0, fps if fps == fps else 0.0]\n"
    "    for k in ALL:\n"
    "        st = summ.get(k)\n"
    "        out += [0.0] * 4 if st is None else [st['ms_per_frame'], st['p50_ms'], st['p99_ms'], 1e3 * tm.total[k]]\n"
    "    return tuple(float(x) for x in out)\n"
    "\n"
    "def describe_error(t, v, tb):\n"
    "    if os.environ.get('GT_DEBUG'):\n"
    "        import traceback\n"
    "        traceback.print_exception(t, v, tb)\n"
    "    msg = ' '.join(str(v).split()) if v is not None else ''\n"
    "    try:\n"
    "        from gt_runtime.errors import InputError\n"
    "    except Exception:\n"
    "        InputError = ()\n"
    "    if InputError and issubclass(t, InputError):\n"
    "        return 'input', msg\n"
    "    if issubclass(t, MemoryError):\n"
    "        return 'memory', 'out of memory' + (': ' + msg if msg else '')\n"
    "    if issubclass(t, ImportError):\n"
    "        return 'python', (f'{t.__name__}: {msg} | point GT_PYTHON (or gt_options.python_executable) at the venv'\n"
    "                          \"'s bin/python and GT_PYTHONPATH at the folder that holds gt_runtime\")\n"
    "    return 'internal', f'{t.__name__}: {msg} | set GT_DEBUG=1 for the traceback'\n";

static pthread_mutex_t g_init_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_init_state; /* 0 not tried, 1 ready, -1 failed */
static char g_init_err[ERR_LEN];
static PyObject* g_helper; /* module _gt_host */

static PyObject* helper_fn(const char* name) { /* borrowed */
    return PyDict_GetItemString(PyModule_GetDict(g_helper), name);
}

/* Current Python exception -> status + one-line message (GIL held; clears the error). */
static gt_status py_fail(impl* p, const char* where) {
    PyObject *t = NULL, *v = NULL, *tb = NULL;
    PyErr_Fetch(&t, &v, &tb);
    if (!t) return fail(p, GT_ERR_INTERNAL, "%s: failed without a Python exception", where);
    PyErr_NormalizeException(&t, &v, &tb);
    gt_status code = GT_ERR_INTERNAL;
    char msg[ERR_LEN] = "";
    PyObject* fn = g_helper ? helper_fn("describe_error") : NULL;
    PyObject* r = fn ? PyObject_CallFunctionObjArgs(fn, t, v ? v : Py_None, tb ? tb : Py_None, NULL) : NULL;
    const char *kind = NULL, *text = NULL;
    if (r && PyArg_ParseTuple(r, "ss", &kind, &text)) {
        if (!strcmp(kind, "input")) code = GT_ERR_INPUT;
        else if (!strcmp(kind, "python")) code = GT_ERR_PYTHON;
        else if (!strcmp(kind, "memory")) code = GT_ERR_NO_MEMORY;
        snprintf(msg, sizeof msg, "%s", text);
    } else {
        PyErr_Clear();
        snprintf(msg, sizeof msg, "%s: unexpected Python exception", ((PyTypeObject*)t)->tp_name);
    }
    Py_XDECREF(r);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    /* The runtime's messages already name the file / option; prefix the C entry point only for internal errors. */
    if (code == GT_ERR_INTERNAL) return fail(p, code, "%s: %s", where, msg);
    return fail(p, code, "%s", msg);
}

static gt_status add_paths(impl* p, const char* spec) {
    if (!spec || !*spec) return GT_OK;
    PyObject* r = PyObject_CallFunction(helper_fn("add_paths"), "s", spec);
    if (!r) return py_fail(p, "gt_create: python_path");
    Py_DECREF(r);
    return GT_OK;
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

/* Start (or attach to) the interpreter and load the helper, once.  Thread-safe. */
static gt_status ensure_python(const gt_options* o) {
    gt_status rc = GT_OK;
    pthread_mutex_lock(&g_init_mu);
    if (g_init_state == 1) goto out;
    if (g_init_state == -1) {
        rc = fail(NULL, GT_ERR_PYTHON, "%s", g_init_err);
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
            snprintf(g_init_err, ERR_LEN, "gt_create: the Python interpreter did not start (%s%s%s) | check PYTHONHOME, GT_PYTHON",
                     st.func ? st.func : "", st.func ? ": " : "", st.err_msg ? st.err_msg : "unknown error");
            g_init_state = -1;
            rc = fail(NULL, GT_ERR_PYTHON, "%s", g_init_err);
            goto out;
        }
        PyEval_SaveThread(); /* hold the GIL only inside calls from now on */
    }
    PyGILState_STATE gs = PyGILState_Ensure();
    PyObject* m = PyModule_New("_gt_host");
    PyObject* d = m ? PyModule_GetDict(m) : NULL;
    PyObject* r = NULL;
    if (d && PyDict_SetItemString(d, "__builtins__", PyEval_GetBuiltins()) == 0) r = PyRun_String(HELPER_SRC, Py_file_input, d, d);
    if (!r) {
        Py_XDECREF(m);
        rc = py_fail(NULL, "gt_create: loading the host helper");
        snprintf(g_init_err, ERR_LEN, "%s", tls_err);
        g_init_state = -1;
        rc = GT_ERR_PYTHON;
    } else {
        Py_DECREF(r);
        g_helper = m;
        /* sys.path: build default, then $GT_PYTHONPATH in front of it (gt_options.python_path per create). */
        if (add_paths(NULL, GT_HOST_DEFAULT_PATH) == GT_OK && add_paths(NULL, getenv("GT_PYTHONPATH")) == GT_OK) g_init_state = 1;
        else {
            rc = GT_ERR_PYTHON;
            snprintf(g_init_err, ERR_LEN, "%s", tls_err);
            g_init_state = -1;
        }
    }
    PyGILState_Release(gs);
out:
    pthread_mutex_unlock(&g_init_mu);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Options, struct sizes                                                                */

static int bad_struct_size(size_t n) { return n < sizeof(size_t) || n > (1u << 16); }

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* ------------------------------------------------------------------------------------ */
/* Frame queue (GIL held for the PyObject parts)                                          */

static int q_push(impl* p, PyObject* frame, const gt_frame_info* info) {
    if (p->max_queue > 0 && p->qlen >= (size_t)p->max_queue) { /* drop the oldest */
        frame_slot* old = &p->q[p->qhead];
        Py_DECREF(old->frame);
        p->qhead = (p->qhead + 1) % p->qcap;
        p->qlen--;
        p->dropped++;
    }
    if (p->qlen == p->qcap) {
        size_t n = p->qcap ? 2 * p->qcap : 8;
        frame_slot* nq = malloc(n * sizeof *nq);
        if (!nq) return -1;
        for (size_t k = 0; k < p->qlen; k++) nq[k] = p->q[(p->qhead + k) % p->qcap];
        free(p->q);
        p->q = nq;
        p->qcap = n;
        p->qhead = 0;
    }
    frame_slot* s = &p->q[(p->qhead + p->qlen) % p->qcap];
    s->frame = frame;
    s->info = *info;
    p->qlen++;
    return 0;
}

static void q_clear(impl* p) {
    while (p->qlen) {
        Py_DECREF(p->q[p->qhead].frame);
        p->qhead = (p->qhead + 1) % p->qcap;
        p->qlen--;
    }
}

/* Pull one frame from the active generator.  1: *frame (new ref) + *info; 0: exhausted
 * (generator cleared); < 0: status (error set). */
static int pull(impl* p, PyObject** frame, gt_frame_info* info, const char* fn) {
    double t0 = now_ms();
    PyObject* r = PyObject_CallFunctionObjArgs(helper_fn("pull"), p->it, p->sess, NULL);
    double t1 = now_ms();
    if (!r) {
        Py_CLEAR(p->it);
        p->broken = 1;
        return py_fail(p, fn);
    }
    if (r == Py_None) {
        Py_DECREF(r);
        Py_CLEAR(p->it);
        return 0;
    }
    PyObject* f = NULL;
    double st[5] = {0};
    if (!PyArg_ParseTuple(r, "O(ddddd)", &f, &st[0], &st[1], &st[2], &st[3], &st[4])) {
        Py_DECREF(r);
        p->broken = 1;
        return py_fail(p, fn);
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
    info->ms_background = 1e3 * st[3];
    info->ms_raster = 1e3 * st[4];
    info->ms_wall = t1 - t0;
    *frame = f;
    return 1;
}

/* Render what the active generator still holds into the queue (before a push / finish). */
static gt_status drain(impl* p, const char* fn) {
    while (p->it) {
        PyObject* f;
        gt_frame_info info;
        int r = pull(p, &f, &info, fn);
        if (r < 0) return (gt_status)r;
        if (r == 1 && q_push(p, f, &info) != 0) {
            Py_DECREF(f);
            return fail(p, GT_ERR_NO_MEMORY, "%s: out of memory queueing a frame", fn);
        }
    }
    return GT_OK;
}

/* Copy a frame into rgb via the buffer protocol (GIL held). */
static gt_status copy_frame(impl* p, PyObject* frame, uint8_t* rgb, size_t need, const char* fn) {
    Py_buffer view;
    if (PyObject_GetBuffer(frame, &view, PyBUF_C_CONTIGUOUS) != 0) return py_fail(p, fn);
    gt_status rc = GT_OK;
    if ((size_t)view.len != need || view.itemsize != 1)
        rc = fail(p, GT_ERR_INTERNAL, "%s: the runtime returned a frame of %zd bytes (itemsize %zd) | expected %zu bytes of uint8",
                  fn, view.len, view.itemsize, need);
    else
        memcpy(rgb, view.buf, need);
    PyBuffer_Release(&view);
    return rc;
}

static void copy_out(void* dst, const void* src, size_t dst_size, size_t src_size) {
    size_t n = dst_size < src_size ? dst_size : src_size;
    memcpy((char*)dst + sizeof(size_t), (const char*)src + sizeof(size_t), n - sizeof(size_t));
}

/* ------------------------------------------------------------------------------------ */
/* API                                                                                  */

GT_API gt_status gt_create(const char* bundle, const gt_options* opts, gt_session** out) {
    static const char* fn = "gt_create";
    if (!out) return fail(NULL, GT_ERR_INVALID_ARG, "%s: out is NULL | pass the address of a gt_session*", fn);
    *out = NULL;
    if (!bundle || !*bundle) return fail(NULL, GT_ERR_INVALID_ARG, "%s: bundle path is NULL or empty | pass the path of a .gtb bundle", fn);
    gt_options o = GT_OPTIONS_INIT;
    if (opts) {
        if (bad_struct_size(opts->struct_size))
            return fail(NULL, GT_ERR_INVALID_ARG, "%s: options.struct_size is %zu | set it to sizeof(gt_options) (%zu) or use GT_OPTIONS_INIT",
                        fn, opts->struct_size, sizeof(gt_options));
        copy_out(&o, opts, sizeof o, opts->struct_size);
    }
    if (o.threads < 0 || o.batch < 0 || o.max_queued_frames < 0)
        return fail(NULL, GT_ERR_INVALID_ARG, "%s: options threads %d, batch %d, max_queued_frames %d | expected >= 0 (0 = default)", fn,
                    o.threads, o.batch, o.max_queued_frames);
    gt_status rc = ensure_python(&o);
    if (rc != GT_OK) return rc;

    impl* p = calloc(1, sizeof *p);
    if (!p) return fail(NULL, GT_ERR_NO_MEMORY, "%s: out of memory", fn);
    pthread_mutex_init(&p->mu, NULL);
    p->max_queue = o.max_queued_frames;

    PyGILState_STATE gs = PyGILState_Ensure();
    PyObject* r = NULL;
    rc = add_paths(NULL, o.python_path);
    if (rc == GT_OK) {
        const char* engine = o.engine && *o.engine ? o.engine : getenv("GT_ENGINE");
        const char* raster = o.raster && *o.raster ? o.raster : getenv("GT_RASTER");
        r = PyObject_CallFunction(helper_fn("open_session"), "sssii", bundle, engine && *engine ? engine : "auto",
                                  raster && *raster ? raster : "auto", o.threads, o.batch > 1 ? o.batch : 1);
        if (!r) rc = py_fail(NULL, fn);
    }
    if (rc == GT_OK) {
        const char *eng = "", *ras = "";
        if (!PyArg_ParseTuple(r, "OOiiddss", &p->key, &p->sess, &p->width, &p->height, &p->fps, &p->lookahead_ms, &eng, &ras)) {
            rc = py_fail(NULL, fn);
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
    if (rc == GT_OK && !(h = tab_add(p))) rc = fail(NULL, GT_ERR_NO_MEMORY, "%s: no free session slot (out of memory)", fn);
    if (rc != GT_OK && p->sess) { /* undo open_session */
        PyObject* c = PyObject_CallFunctionObjArgs(helper_fn("close_session"), p->key, p->sess, NULL);
        if (!c) PyErr_Clear();
        Py_XDECREF(c);
    }
    if (rc != GT_OK) {
        Py_XDECREF(p->key);
        Py_XDECREF(p->sess);
    }
    PyGILState_Release(gs);
    if (rc != GT_OK) {
        impl_free(p);
        return rc;
    }
    *out = h;
    return GT_OK;
}

GT_API gt_status gt_push_audio(gt_session* s, const float* pcm, size_t n, int sample_rate) {
    static const char* fn = "gt_push_audio";
    impl* p = enter(s, fn);
    if (!p) return GT_ERR_INVALID_HANDLE;
    gt_status rc = GT_OK;
    static const float empty[1] = {0};
    if (!pcm && n) rc = fail(p, GT_ERR_INVALID_ARG, "%s: pcm is NULL with n = %zu | pass n float32 samples", fn, n);
    else if (sample_rate <= 0) rc = fail(p, GT_ERR_INVALID_ARG, "%s: sample rate %d Hz | expected a positive rate (4 kHz to 384 kHz)", fn, sample_rate);
    else if (n > (size_t)(PY_SSIZE_T_MAX / sizeof(float))) rc = fail(p, GT_ERR_INVALID_ARG, "%s: n = %zu samples is too large", fn, n);
    else if (p->finished) rc = fail(p, GT_ERR_STATE, "%s: the session is finished (gt_finish was called) | create a new session for new speech", fn);
    else if (p->broken) rc = fail(p, GT_ERR_STATE, "%s: the session failed earlier (%s) | destroy it and create a new one", fn, p->err);
    if (rc != GT_OK) {
        leave(p);
        return rc;
    }
    PyGILState_STATE gs = PyGILState_Ensure();
    rc = drain(p, fn);
    if (rc == GT_OK) {
        PyObject* mv = PyMemoryView_FromMemory((char*)(n ? pcm : empty), (Py_ssize_t)(n * sizeof(float)), PyBUF_READ);
        PyObject* r = mv ? PyObject_CallFunction(helper_fn("push"), "OOi", p->sess, mv, sample_rate) : NULL;
        if (!r) rc = py_fail(p, fn);
        else p->dirty = 1;
        Py_XDECREF(r);
        Py_XDECREF(mv);
    }
    PyGILState_Release(gs);
    leave(p);
    return rc;
}

GT_API gt_status gt_next_frame(gt_session* s, uint8_t* rgb, size_t cap, gt_frame_info* info) {
    static const char* fn = "gt_next_frame";
    impl* p = enter(s, fn);
    if (!p) return GT_ERR_INVALID_HANDLE;
    size_t need = (size_t)p->width * (size_t)p->height * 3;
    gt_status rc = GT_OK;
    if (info && bad_struct_size(info->struct_size))
        rc = fail(p, GT_ERR_INVALID_ARG, "%s: info->struct_size is %zu | set it to sizeof(gt_frame_info) (%zu) or use GT_FRAME_INFO_INIT", fn,
                  info->struct_size, sizeof(gt_frame_info));
    else if (!rgb) rc = fail(p, GT_ERR_INVALID_ARG, "%s: rgb is NULL | pass a buffer of width * height * 3 = %zu bytes", fn, need);
    else if (cap < need) {
        if (info) {
            gt_frame_info fi = {.struct_size = sizeof fi, .index = p->rendered - (int64_t)p->qlen, .width = p->width, .height = p->height};
            copy_out(info, &fi, info->struct_size, sizeof fi);
        }
        rc = fail(p, GT_ERR_BUFFER_TOO_SMALL, "%s: rgb buffer has %zu bytes | a %dx%d frame needs %zu (width * height * 3)", fn, cap,
                  (int)p->width, (int)p->height, need);
    }
    if (rc != GT_OK) {
        leave(p);
        return rc;
    }
    PyGILState_STATE gs = PyGILState_Ensure();
    PyObject* frame = NULL;
    gt_frame_info fi;
    for (;;) {
        if (p->qlen) {
            frame_slot* sl = &p->q[p->qhead];
            frame = sl->frame;
            fi = sl->info;
            p->qhead = (p->qhead + 1) % p->qcap;
            p->qlen--;
            break;
        }
        if (p->it) {
            int r = pull(p, &frame, &fi, fn);
            if (r < 0) {
                rc = (gt_status)r;
                break;
            }
            if (r == 1) break;
            continue;
        }
        if (p->dirty && !p->broken) {
            p->dirty = 0;
            p->it = PyObject_CallMethod(p->sess, "frames", NULL);
            if (!p->it) {
                rc = py_fail(p, fn);
                break;
            }
            continue;
        }
        rc = p->broken ? fail(p, GT_ERR_STATE, "%s: the session failed earlier | destroy it and create a new one", fn)
                       : p->finished ? GT_FINISHED : GT_NEED_MORE_AUDIO;
        break;
    }
    if (frame) {
        rc = copy_frame(p, frame, rgb, need, fn);
        Py_DECREF(frame);
        if (rc == GT_OK) {
            rc = GT_FRAME_READY;
            p->delivered++;
            if (p->nwall == p->capwall) {
                size_t n = p->capwall ? 2 * p->capwall : 256;
                double* w = realloc(p->wall, n * sizeof *w);
                if (w) {
                    p->wall = w;
                    p->capwall = n;
                }
            }
            if (p->nwall < p->capwall) p->wall[p->nwall++] = fi.ms_wall;
            if (info) copy_out(info, &fi, info->struct_size, sizeof fi);
        }
    }
    PyGILState_Release(gs);
    leave(p);
    return rc;
}

GT_API gt_status gt_finish(gt_session* s) {
    static const char* fn = "gt_finish";
    impl* p = enter(s, fn);
    if (!p) return GT_ERR_INVALID_HANDLE;
    gt_status rc = GT_OK;
    if (p->finished) {
        leave(p);
        return GT_OK;
    }
    if (p->broken) {
        rc = fail(p, GT_ERR_STATE, "%s: the session failed earlier | destroy it and create a new one", fn);
        leave(p);
        return rc;
    }
    PyGILState_STATE gs = PyGILState_Ensure();
    rc = drain(p, fn);
    if (rc == GT_OK) {
        PyObject* r = PyObject_CallMethod(p->sess, "finish", NULL);
        if (!r) rc = py_fail(p, fn);
        else {
            p->finished = 1;
            p->dirty = 1;
        }
        Py_XDECREF(r);
    }
    PyGILState_Release(gs);
    leave(p);
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

GT_API gt_status gt_stats(gt_session* s, struct gt_stats* out) {
    static const char* fn = "gt_stats";
    impl* p = enter(s, fn);
    if (!p) return GT_ERR_INVALID_HANDLE;
    gt_status rc = GT_OK;
    if (!out) rc = fail(p, GT_ERR_INVALID_ARG, "%s: out is NULL | pass a struct gt_stats with struct_size set", fn);
    else if (bad_struct_size(out->struct_size))
        rc = fail(p, GT_ERR_INVALID_ARG, "%s: out->struct_size is %zu | set it to sizeof(struct gt_stats) (%zu) or use GT_STATS_INIT", fn,
                  out->struct_size, sizeof(struct gt_stats));
    if (rc != GT_OK) {
        leave(p);
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
    if (p->nwall) {
        double* w = malloc(p->nwall * sizeof *w);
        if (w) {
            memcpy(w, p->wall, p->nwall * sizeof *w);
            qsort(w, p->nwall, sizeof *w, cmp_double);
            double sum = 0;
            for (size_t i = 0; i < p->nwall; i++) sum += w[i];
            st.wall = (gt_stage_stats){sum / (double)p->nwall, pct(w, p->nwall, 50), pct(w, p->nwall, 99), sum};
            free(w);
        }
    }
    PyGILState_STATE gs = PyGILState_Ensure();
    PyObject* r = PyObject_CallFunctionObjArgs(helper_fn("stats"), p->sess, NULL);
    if (!r) rc = py_fail(p, fn);
    else {
        double v[22];
        PyObject* seq = PySequence_Fast(r, "stats");
        if (seq && PySequence_Fast_GET_SIZE(seq) == 22) {
            for (int i = 0; i < 22; i++) v[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
            st.audio_s = v[0];
            st.model_fps = v[1];
            gt_stage_stats* stages[5] = {&st.audio_frontend, &st.audio_encoder, &st.deform, &st.background, &st.raster};
            for (int k = 0; k < 5; k++) *stages[k] = (gt_stage_stats){v[2 + 4 * k], v[3 + 4 * k], v[4 + 4 * k], v[5 + 4 * k]};
        } else if (!PyErr_Occurred()) {
            rc = fail(p, GT_ERR_INTERNAL, "%s: the runtime's stats have an unexpected layout", fn);
        }
        if (PyErr_Occurred()) rc = py_fail(p, fn);
        Py_XDECREF(seq);
        Py_DECREF(r);
    }
    PyGILState_Release(gs);
    if (rc == GT_OK) copy_out(out, &st, out->struct_size, sizeof st);
    leave(p);
    return rc;
}

GT_API gt_status gt_destroy(gt_session* s) {
    static const char* fn = "gt_destroy";
    if (!s) return GT_OK;
    impl* p = tab_remove(s);
    if (!p) return fail(NULL, GT_ERR_INVALID_HANDLE, "%s: invalid session handle %p (already destroyed?) | destroy each session once", fn,
                        (const void*)s);
    pthread_mutex_lock(&p->mu); /* wait for a call in flight */
    p->dead = 1;
    gt_status rc = GT_OK;
    PyGILState_STATE gs = PyGILState_Ensure();
    Py_CLEAR(p->it); /* closes the generator (GeneratorExit) */
    if (PyErr_Occurred()) PyErr_Clear();
    q_clear(p);
    PyObject* r = PyObject_CallFunctionObjArgs(helper_fn("close_session"), p->key, p->sess, NULL);
    if (!r) rc = py_fail(p, fn);
    Py_XDECREF(r);
    Py_CLEAR(p->key);
    Py_CLEAR(p->sess);
    PyGILState_Release(gs);
    pthread_mutex_unlock(&p->mu);
    tab_unref(p); /* the table's reference; frees unless a waiting call still holds one */
    return rc;
}

GT_API const char* gt_last_error(const gt_session* s) {
    if (!s) return tls_err;
    impl* p = tab_ref(s, "gt_last_error");
    if (!p) return tls_err; /* "invalid session handle" */
    pthread_mutex_lock(&p->mu);
    memcpy(tls_ret, p->err, ERR_LEN);
    pthread_mutex_unlock(&p->mu);
    tab_unref(p);
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

GT_API const char* gt_version(void) { return GT_HOST_VERSION; }
