/*
 * gt_host_handles.c: checked session handles.
 *
 * A table of slots {session, generation}; a handle encodes (generation, slot + 1) and is
 * never dereferenced, so a destroyed handle is detected even when its slot is reused.
 * Each call takes a reference on the session (the table holds one too), then the
 * session's mutex; gt_destroy unlinks the slot, waits for the mutex and drops the table's
 * reference, and the last reference frees the session.
 */
#include "gt_host_internal.h"

#include <stdlib.h>

#define IDX_BITS 20u
#define IDX_MAX ((1u << IDX_BITS) - 1u)
#define GEN_MASK (UINTPTR_MAX >> IDX_BITS)

typedef struct slot {
    gth_session* p;
    uintptr_t gen;
} slot;

static pthread_mutex_t g_tab_mu = PTHREAD_MUTEX_INITIALIZER;
static slot* g_slots;
static size_t g_nslots;

void gth_session_free(gth_session* p) {
    pthread_mutex_destroy(&p->mu);
    free(p->q);
    free(p->wall);
    free(p);
}

gt_session* gth_tab_add(gth_session* p) {
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

gth_session* gth_tab_ref(const gt_session* h, const char* fn) {
    gth_session* p = NULL;
    if (!h) {
        gth_fail(NULL, GT_ERR_INVALID_HANDLE, "%s: session is NULL | pass the handle gt_create returned", fn);
        return NULL;
    }
    pthread_mutex_lock(&g_tab_mu);
    long i = tab_find(h);
    if (i >= 0) {
        p = g_slots[i].p;
        p->refs++;
    }
    pthread_mutex_unlock(&g_tab_mu);
    if (!p)
        gth_fail(NULL, GT_ERR_INVALID_HANDLE, "%s: invalid session handle %p (already destroyed?) | create a new one with gt_create", fn,
                 (const void*)h);
    return p;
}

void gth_tab_unref(gth_session* p) {
    pthread_mutex_lock(&g_tab_mu);
    int last = --p->refs == 0;
    pthread_mutex_unlock(&g_tab_mu);
    if (last) gth_session_free(p);
}

gth_session* gth_tab_remove(gt_session* h) {
    gth_session* p = NULL;
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

gth_session* gth_enter(gt_session* h, const char* fn) {
    gth_session* p = gth_tab_ref(h, fn);
    if (!p) return NULL;
    pthread_mutex_lock(&p->mu);
    if (p->dead) { /* destroyed while this call waited */
        pthread_mutex_unlock(&p->mu);
        gth_tab_unref(p);
        gth_fail(NULL, GT_ERR_INVALID_HANDLE, "%s: session was destroyed | create a new one with gt_create", fn);
        return NULL;
    }
    return p;
}

void gth_leave(gth_session* p) {
    pthread_mutex_unlock(&p->mu);
    gth_tab_unref(p);
}
