/* The fluid network's event step, compiled: flows in slots, links with the list of alive flows
 * crossing them, and at each instant where flows start or end, a max-min solve of the connected
 * components (flows joined through shared links) that those flows touch.
 *
 * The mechanism is moesim.engine.network.FluidNetwork's, step for step:
 *   - a flow is counted as arrived once what is left would drain within FINISH_SLACK_NS or is
 *     under a billionth of the flow ("due");
 *   - in a component where flows only ended, a flow slower than every flow that ended in it keeps
 *     its rate (max-min: removing flows faster than it cannot lower any link's saturation level
 *     below its own), the others are solved on what the kept ones leave of the links;
 *   - the solve freezes, in rounds, every flow crossing a locally bottlenecked link (a link whose
 *     fair share is no larger than that of any link its flows cross), as moesim.engine.maxmin does.
 * Components are found exactly at every step (a search over the touched links' flow lists), so no
 * label bookkeeping is needed. Every loop runs in an order fixed by the history of starts and
 * ends (slots and link lists), so the same inputs give the same bits. The numpy network is the fallback and the reference this one is tested against.
 *
 * Pure C against the Python C API and the buffer protocol: no numpy headers at build time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FINISH_SLACK_NS 1e-6
#define KEEP_MARGIN 1e-9
#define TIE 1e-12
#define MAXW 63 /* links per path: a list entry packs (slot << 6) | position */

typedef struct {
    PyObject_HEAD
    int32_t L;              /* links */
    double *cap;            /* capacity of every link, bytes per ns */
    /* flows, by slot */
    int32_t nslots, capslots;
    int32_t W;              /* path stride */
    int32_t *path;          /* capslots * W link ids */
    int32_t *ppos;          /* capslots * W: where each incidence sits in its link's list */
    int32_t *plen;
    double *rem, *t0, *rate, *finish, *due, *nbytes;
    int64_t *seq;           /* start order */
    char *alive;
    int32_t *freeslots;
    int32_t nfree;
    int64_t nextseq;
    int32_t nalive;
    /* started since the last step */
    int32_t *started;
    int32_t nstarted, capstarted;
    /* links: alive flows crossing each, as packed (slot << 6 | position in path) */
    int64_t **lflows;
    int32_t *lcount, *lcapac;
    /* scratch */
    int64_t epoch;
    int64_t *lmark, *fmark; /* visit stamps */
    int32_t *lcomp;         /* component of a visited link */
    double *lrem, *lshare, *lmin;
    int32_t *lcnt;
    int32_t *qlinks;        /* links of the components, in visit order */
    int32_t *members;       /* flows of the components, in visit order; capslots */
    int32_t *todo;          /* flows to solve; capslots */
    double *fmin, *fcur;     /* a flow's rate, its share this round */
    char *frozen;
    int32_t *ended;
    int32_t nended;
    /* components of one step */
    int32_t ncomp, capcomp;
    int32_t *cm0, *cm1, *cl0, *cl1; /* member and link ranges */
    char *cstarted;
    double *cfloor;
    /* utilisation */
    int record;
    Py_buffer out_links, out_vals; /* int64 and float64, at least L each */
    double *lastutil;
    int32_t *uchanged;
    /* counters */
    int64_t num_rate_solves;
    double bytes_delivered;
} Core;

static int grow_slots(Core *c, int32_t want, int32_t width) {
    int32_t n = c->capslots, w = c->W;
    int32_t nn = n, nw = w;
    if (want > nn) { nn = n ? n : 64; while (nn < want) nn *= 2; }
    if (width > nw) nw = width;
    if (nn == n && nw == w) return 0;
    int32_t *path = malloc(sizeof(int32_t) * (size_t)nn * nw);
    int32_t *ppos = malloc(sizeof(int32_t) * (size_t)nn * nw);
    if (!path || !ppos) { free(path); free(ppos); PyErr_NoMemory(); return -1; }
    for (int32_t s = 0; s < c->nslots; s++) {
        memcpy(path + (size_t)s * nw, c->path + (size_t)s * w, sizeof(int32_t) * w);
        memcpy(ppos + (size_t)s * nw, c->ppos + (size_t)s * w, sizeof(int32_t) * w);
    }
    free(c->path); free(c->ppos);
    c->path = path; c->ppos = ppos; c->W = nw;
    if (nn != n) {
#define GROW(field, type) do { void *p_ = realloc(c->field, sizeof(type) * (size_t)nn); \
        if (!p_) { PyErr_NoMemory(); return -1; } c->field = p_; } while (0)
        GROW(plen, int32_t); GROW(rem, double); GROW(t0, double); GROW(rate, double);
        GROW(finish, double); GROW(due, double); GROW(nbytes, double); GROW(seq, int64_t);
        GROW(alive, char); GROW(freeslots, int32_t); GROW(fmark, int64_t); GROW(members, int32_t);
        GROW(todo, int32_t); GROW(fmin, double); GROW(fcur, double); GROW(frozen, char); GROW(ended, int32_t);
#undef GROW
        for (int32_t s = n; s < nn; s++) c->fmark[s] = 0;
        c->capslots = nn;
    }
    return 0;
}

static int link_push(Core *c, int32_t l, int64_t entry) {
    if (c->lcount[l] == c->lcapac[l]) {
        int32_t nc = c->lcapac[l] ? 2 * c->lcapac[l] : 4;
        int64_t *p = realloc(c->lflows[l], sizeof(int64_t) * nc);
        if (!p) { PyErr_NoMemory(); return -1; }
        c->lflows[l] = p; c->lcapac[l] = nc;
    }
    c->lflows[l][c->lcount[l]++] = entry;
    return 0;
}

static void link_remove(Core *c, int32_t s) {
    int32_t W = c->W;
    for (int32_t k = 0; k < c->plen[s]; k++) {
        int32_t l = c->path[(size_t)s * W + k];
        int32_t p = c->ppos[(size_t)s * W + k];
        int64_t last = c->lflows[l][--c->lcount[l]];
        c->lflows[l][p] = last;
        c->ppos[(size_t)(last >> 6) * W + (last & 63)] = p;
    }
}

static void Core_dealloc(Core *c) {
    free(c->cap); free(c->path); free(c->ppos); free(c->plen); free(c->rem); free(c->t0);
    free(c->rate); free(c->finish); free(c->due); free(c->nbytes); free(c->seq); free(c->alive);
    free(c->freeslots); free(c->started);
    if (c->lflows) for (int32_t l = 0; l < c->L; l++) free(c->lflows[l]);
    free(c->lflows); free(c->lcount); free(c->lcapac); free(c->lmark); free(c->fmark); free(c->lcomp);
    free(c->lrem); free(c->lshare); free(c->lmin); free(c->lcnt); free(c->qlinks); free(c->members);
    free(c->todo); free(c->fmin); free(c->fcur); free(c->frozen); free(c->ended); free(c->cm0); free(c->cm1);
    free(c->cl0); free(c->cl1); free(c->cstarted); free(c->cfloor); free(c->lastutil); free(c->uchanged);
    if (c->record) { PyBuffer_Release(&c->out_links); PyBuffer_Release(&c->out_vals); }
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int Core_init(Core *c, PyObject *args, PyObject *kw) {
    static char *names[] = {"capacity", "out_links", "out_vals", NULL};
    Py_buffer capbuf;
    PyObject *ol = Py_None, *ov = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|OO", names, &capbuf, &ol, &ov)) return -1;
    if (capbuf.len % sizeof(double)) { PyBuffer_Release(&capbuf); PyErr_SetString(PyExc_ValueError, "capacity: float64 buffer"); return -1; }
    int32_t L = (int32_t)(capbuf.len / sizeof(double));
    c->L = L;
    c->cap = malloc(sizeof(double) * (L ? L : 1));
    if (!c->cap) { PyBuffer_Release(&capbuf); PyErr_NoMemory(); return -1; }
    memcpy(c->cap, capbuf.buf, sizeof(double) * L);
    PyBuffer_Release(&capbuf);
    size_t n = L ? (size_t)L : 1;
    c->lflows = calloc(n, sizeof(int64_t *));
    c->lcount = calloc(n, sizeof(int32_t)); c->lcapac = calloc(n, sizeof(int32_t));
    c->lmark = calloc(n, sizeof(int64_t)); c->lcomp = calloc(n, sizeof(int32_t));
    c->lrem = calloc(n, sizeof(double)); c->lshare = calloc(n, sizeof(double)); c->lmin = calloc(n, sizeof(double));
    c->lcnt = calloc(n, sizeof(int32_t)); c->qlinks = calloc(n, sizeof(int32_t));
    c->lastutil = calloc(n, sizeof(double)); c->uchanged = calloc(n, sizeof(int32_t));
    if (!c->lflows || !c->lcount || !c->lcapac || !c->lmark || !c->lcomp || !c->lrem || !c->lshare
        || !c->lmin || !c->lcnt || !c->qlinks || !c->lastutil || !c->uchanged) { PyErr_NoMemory(); return -1; }
    c->W = 1;
    c->path = calloc(1, sizeof(int32_t)); c->ppos = calloc(1, sizeof(int32_t));
    if (grow_slots(c, 64, 4) < 0) return -1;
    if (ol != Py_None) {
        if (PyObject_GetBuffer(ol, &c->out_links, PyBUF_WRITABLE) < 0) return -1;
        if (PyObject_GetBuffer(ov, &c->out_vals, PyBUF_WRITABLE) < 0) { PyBuffer_Release(&c->out_links); return -1; }
        if (c->out_links.len < (Py_ssize_t)(sizeof(int64_t) * L) || c->out_vals.len < (Py_ssize_t)(sizeof(double) * L)) {
            PyBuffer_Release(&c->out_links); PyBuffer_Release(&c->out_vals);
            PyErr_SetString(PyExc_ValueError, "out_links / out_vals: one int64 / float64 per link");
            return -1;
        }
        c->record = 1;
    }
    return 0;
}

/* add(links, nbytes, now) -> slot: a flow that starts now; solved at the next step. */
static PyObject *Core_add(Core *c, PyObject *args) {
    PyObject *links;
    double nbytes;
    long long now;
    if (!PyArg_ParseTuple(args, "OdL", &links, &nbytes, &now)) return NULL;
    PyObject *seqo = PySequence_Fast(links, "links: a sequence of link ids");
    if (!seqo) return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seqo);
    if (k < 1 || k > MAXW) { Py_DECREF(seqo); PyErr_Format(PyExc_ValueError, "a path of %zd links (1 to %d)", k, MAXW); return NULL; }
    int32_t s;
    if (c->nfree) s = c->freeslots[--c->nfree];
    else {
        if (grow_slots(c, c->nslots + 1, (int32_t)k) < 0) { Py_DECREF(seqo); return NULL; }
        s = c->nslots++;
    }
    if (k > c->W && grow_slots(c, c->nslots, (int32_t)k) < 0) { Py_DECREF(seqo); return NULL; }
    PyObject **items = PySequence_Fast_ITEMS(seqo);
    int32_t W = c->W;
    for (Py_ssize_t i = 0; i < k; i++) {
        long l = PyLong_AsLong(items[i]);
        if (l == -1 && PyErr_Occurred()) { Py_DECREF(seqo); return NULL; }
        if (l < 0 || l >= c->L) { Py_DECREF(seqo); PyErr_Format(PyExc_ValueError, "link id %ld out of range", l); return NULL; }
        c->path[(size_t)s * W + i] = (int32_t)l;
    }
    Py_DECREF(seqo);
    c->plen[s] = (int32_t)k;
    for (Py_ssize_t i = 0; i < k; i++) {
        int32_t l = c->path[(size_t)s * W + i];
        c->ppos[(size_t)s * W + i] = c->lcount[l];
        if (link_push(c, l, ((int64_t)s << 6) | i) < 0) return NULL;
    }
    c->rem[s] = c->nbytes[s] = nbytes;
    c->t0[s] = (double)now;
    c->rate[s] = 0.0;
    c->finish[s] = c->due[s] = INFINITY;
    c->seq[s] = c->nextseq++;
    c->alive[s] = 1;
    c->nalive++;
    if (c->nstarted == c->capstarted) {
        int32_t nc = c->capstarted ? 2 * c->capstarted : 64;
        int32_t *p = realloc(c->started, sizeof(int32_t) * nc);
        if (!p) return PyErr_NoMemory();
        c->started = p; c->capstarted = nc;
    }
    c->started[c->nstarted++] = s;
    return PyLong_FromLong(s);
}

static const int64_t *g_seq; /* the start order qsort compares by (set just before each sort) */
static int cmp_seq(const void *a, const void *b) {
    int64_t x = g_seq[*(const int32_t *)a], y = g_seq[*(const int32_t *)b];
    return (x > y) - (x < y);
}
static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int add_comp(Core *c) {
    if (c->ncomp == c->capcomp) {
        int32_t nc = c->capcomp ? 2 * c->capcomp : 16;
#define GROWC(f, t) do { void *p_ = realloc(c->f, sizeof(t) * nc); if (!p_) { PyErr_NoMemory(); return -1; } c->f = p_; } while (0)
        GROWC(cm0, int32_t); GROWC(cm1, int32_t); GROWC(cl0, int32_t); GROWC(cl1, int32_t);
        GROWC(cstarted, char); GROWC(cfloor, double);
#undef GROWC
        c->capcomp = nc;
    }
    return c->ncomp++;
}

/* Max-min rates of flows todo[0..m) on the component's links (lrem holds what is left of each). */
static void solve(Core *c, int32_t m, int32_t l0, int32_t l1) {
    int32_t W = c->W;
    int32_t *todo = c->todo;
    for (int32_t i = l0; i < l1; i++) c->lcnt[c->qlinks[i]] = 0;
    for (int32_t i = 0; i < m; i++) {
        int32_t s = todo[i];
        for (int32_t k = 0; k < c->plen[s]; k++) c->lcnt[c->path[(size_t)s * W + k]]++;
    }
    if (m == 1) {  /* alone: what is left of its narrowest link */
        int32_t s = todo[0];
        double r = INFINITY;
        for (int32_t k = 0; k < c->plen[s]; k++) {
            double v = c->lrem[c->path[(size_t)s * W + k]];
            if (v < r) r = v;
        }
        c->fmin[0] = r > 0.0 ? r : 0.0;
        return;
    }
    /* rates land in fmin[i] for todo[i]; unfrozen flows are todo[i] with !frozen[i] */
    for (int32_t i = 0; i < m; i++) c->frozen[i] = 0;
    int32_t left = m;
    for (int32_t i = l0; i < l1; i++) { int32_t l = c->qlinks[i]; if (c->lrem[l] < 0.0) c->lrem[l] = 0.0; }
    double *fm = c->fmin, *cur = c->fcur;
    while (left) {
        for (int32_t i = l0; i < l1; i++) {
            int32_t l = c->qlinks[i];
            int32_t n = c->lcnt[l];
            c->lshare[l] = c->lrem[l] / (double)(n > 1 ? n : 1);
            c->lmin[l] = INFINITY;
        }
        for (int32_t i = 0; i < m; i++) {
            if (c->frozen[i]) continue;
            int32_t s = todo[i];
            double v = INFINITY;
            for (int32_t k = 0; k < c->plen[s]; k++) {
                double x = c->lshare[c->path[(size_t)s * W + k]];
                if (x < v) v = x;
            }
            cur[i] = v;
            for (int32_t k = 0; k < c->plen[s]; k++) {
                int32_t l = c->path[(size_t)s * W + k];
                if (v < c->lmin[l]) c->lmin[l] = v;
            }
        }
        for (int32_t i = l0; i < l1; i++) { int32_t l = c->qlinks[i]; c->lmin[l] *= (1.0 + TIE); }
        /* freeze every flow crossing a link whose share is no larger than the share of any link
           its flows cross; then take what they hold off their links */
        int32_t nfro = 0;
        for (int32_t i = 0; i < m; i++) {
            if (c->frozen[i]) continue;
            int32_t s = todo[i];
            for (int32_t k = 0; k < c->plen[s]; k++) {
                int32_t l = c->path[(size_t)s * W + k];
                if (c->lshare[l] <= c->lmin[l]) { c->frozen[i] = 2; nfro++; break; }
            }
        }
        if (!nfro) {  /* cannot happen (the smallest share is a bottleneck); guard against a hang */
            for (int32_t i = 0; i < m; i++) if (!c->frozen[i]) { fm[i] = cur[i]; c->frozen[i] = 1; }
            break;
        }
        for (int32_t i = 0; i < m; i++) {
            if (c->frozen[i] != 2) continue;
            int32_t s = todo[i];
            fm[i] = cur[i];
            c->frozen[i] = 1;
            for (int32_t k = 0; k < c->plen[s]; k++) {
                int32_t l = c->path[(size_t)s * W + k];
                double r = c->lrem[l] - cur[i];
                c->lrem[l] = r > 0.0 ? r : 0.0;
                c->lcnt[l]--;
            }
        }
        left -= nfro;
    }
}

/* step(now, end) -> (ended slots in start order, earliest finish of the alive flows or inf,
 * number of utilisation changes written to out_links / out_vals). */
static PyObject *Core_step(Core *c, PyObject *args) {
    long long now_i;
    int do_end;
    if (!PyArg_ParseTuple(args, "Lp", &now_i, &do_end)) return NULL;
    double now = (double)now_i;
    int32_t W = c->W;
    c->nended = 0;
    if (do_end && c->nalive) {
        for (int32_t s = 0; s < c->nslots; s++) {
            if (c->alive[s] && c->due[s] <= now) c->ended[c->nended++] = s;
        }
        if (c->nended > 1) { g_seq = c->seq; qsort(c->ended, c->nended, sizeof(int32_t), cmp_seq); }
        for (int32_t i = 0; i < c->nended; i++) {
            int32_t s = c->ended[i];
            c->bytes_delivered += c->nbytes[s];
            c->alive[s] = 0;
            c->finish[s] = c->due[s] = INFINITY;
            c->nalive--;
            link_remove(c, s);
        }
    }
    /* components of the links the ended and started flows cross */
    c->epoch++;
    int64_t ep = c->epoch;
    c->ncomp = 0;
    int32_t nq = 0, nm = 0;
    for (int pass = 0; pass < 2; pass++) {
        int32_t *list = pass ? c->started : c->ended;
        int32_t cnt = pass ? c->nstarted : c->nended;
        for (int32_t i = 0; i < cnt; i++) {
            int32_t s0 = list[i];
            for (int32_t k0 = 0; k0 < c->plen[s0]; k0++) {
                int32_t root = c->path[(size_t)s0 * W + k0];
                if (c->lmark[root] == ep) continue;
                int ci = add_comp(c);
                if (ci < 0) return NULL;
                c->cm0[ci] = nm; c->cl0[ci] = nq; c->cstarted[ci] = 0; c->cfloor[ci] = INFINITY;
                c->lmark[root] = ep; c->lcomp[root] = ci; c->qlinks[nq++] = root;
                for (int32_t qi = c->cl0[ci]; qi < nq; qi++) {
                    int32_t l = c->qlinks[qi];
                    int64_t *fl = c->lflows[l];
                    for (int32_t j = 0; j < c->lcount[l]; j++) {
                        int32_t s = (int32_t)(fl[j] >> 6);
                        if (c->fmark[s] == ep) continue;
                        c->fmark[s] = ep;
                        c->members[nm++] = s;
                        for (int32_t k = 0; k < c->plen[s]; k++) {
                            int32_t l2 = c->path[(size_t)s * W + k];
                            if (c->lmark[l2] != ep) { c->lmark[l2] = ep; c->lcomp[l2] = ci; c->qlinks[nq++] = l2; }
                        }
                    }
                }
                c->cm1[ci] = nm; c->cl1[ci] = nq;
            }
        }
    }
    for (int32_t i = 0; i < c->nstarted; i++) c->cstarted[c->lcomp[c->path[(size_t)c->started[i] * W]]] = 1;
    for (int32_t i = 0; i < c->nended; i++) {
        int32_t s = c->ended[i];
        for (int32_t k = 0; k < c->plen[s]; k++) {
            int32_t ci = c->lcomp[c->path[(size_t)s * W + k]];
            if (c->rate[s] < c->cfloor[ci]) c->cfloor[ci] = c->rate[s];
        }
    }
    int solved = 0;
    for (int32_t ci = 0; ci < c->ncomp; ci++) {
        int32_t m0 = c->cm0[ci], m1 = c->cm1[ci];
        if (m0 == m1) continue;
        int32_t l0 = c->cl0[ci], l1 = c->cl1[ci];
        for (int32_t i = l0; i < l1; i++) { int32_t l = c->qlinks[i]; c->lrem[l] = c->cap[l]; }
        int32_t m = 0;
        double thr = c->cstarted[ci] ? INFINITY : c->cfloor[ci] * (1.0 - KEEP_MARGIN);
        for (int32_t i = m0; i < m1; i++) {
            int32_t s = c->members[i];
            if (!c->cstarted[ci] && c->rate[s] < thr) {  /* kept: takes its rate off its links */
                for (int32_t k = 0; k < c->plen[s]; k++) c->lrem[c->path[(size_t)s * W + k]] -= c->rate[s];
            } else {
                c->todo[m++] = s;
            }
        }
        if (!m) continue;
        solve(c, m, l0, l1);
        solved = 1;
        for (int32_t i = 0; i < m; i++) {
            int32_t s = c->todo[i];
            double r = c->fmin[i];
            double rem = c->rem[s] - c->rate[s] * (now - c->t0[s]);
            c->rem[s] = rem;
            c->t0[s] = now;
            c->rate[s] = r;
            c->finish[s] = now + rem / r;
            c->due[s] = now + (rem - 1e-9 * c->nbytes[s]) / r - FINISH_SLACK_NS;
        }
    }
    if (solved) c->num_rate_solves++;
    /* utilisation of the links of the touched components whose load changed */
    int32_t nu = 0;
    if (c->record) {
        int64_t *ol = (int64_t *)c->out_links.buf;
        double *ov = (double *)c->out_vals.buf;
        for (int32_t i = 0; i < nq; i++) {
            int32_t l = c->qlinks[i];
            double load = 0.0;
            int64_t *fl = c->lflows[l];
            int32_t n = c->lcount[l];
            for (int32_t j = 0; j < n; j++) load += c->rate[fl[j] >> 6];
            double u = n ? load / c->cap[l] : 0.0;
            if (u > 1.0) u = 1.0;
            if (fabs(u - c->lastutil[l]) > 1e-12) { c->lastutil[l] = u; c->uchanged[nu++] = l; }
        }
        if (nu > 1) qsort(c->uchanged, nu, sizeof(int32_t), cmp_i32);
        for (int32_t i = 0; i < nu; i++) { ol[i] = c->uchanged[i]; ov[i] = c->lastutil[c->uchanged[i]]; }
    }
    c->nstarted = 0;
    PyObject *ended = PyList_New(c->nended);
    if (!ended) return NULL;
    for (int32_t i = 0; i < c->nended; i++) {
        PyList_SET_ITEM(ended, i, PyLong_FromLong(c->ended[i]));
        c->freeslots[c->nfree++] = c->ended[i];
    }
    double nxt = INFINITY;
    if (c->nalive) for (int32_t s = 0; s < c->nslots; s++) if (c->finish[s] < nxt) nxt = c->finish[s];
    return Py_BuildValue("(Ndi)", ended, nxt, nu);
}

static PyObject *Core_get_alive(Core *c, void *closure) { return PyLong_FromLong(c->nalive); }
static PyObject *Core_get_solves(Core *c, void *closure) { return PyLong_FromLongLong(c->num_rate_solves); }
static PyObject *Core_get_bytes(Core *c, void *closure) { return PyFloat_FromDouble(c->bytes_delivered); }

/* rates() -> list of (slot, rate) of the alive flows, in start order (for tests) */
static PyObject *Core_rates(Core *c, PyObject *noargs) {
    int32_t n = 0;
    for (int32_t s = 0; s < c->nslots; s++) if (c->alive[s]) c->todo[n++] = s;
    g_seq = c->seq;
    qsort(c->todo, n, sizeof(int32_t), cmp_seq);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (int32_t i = 0; i < n; i++) PyList_SET_ITEM(out, i, Py_BuildValue("(id)", c->todo[i], c->rate[c->todo[i]]));
    return out;
}

static PyMethodDef Core_methods[] = {
    {"add", (PyCFunction)Core_add, METH_VARARGS, "add(links, nbytes, now) -> slot"},
    {"step", (PyCFunction)Core_step, METH_VARARGS, "step(now, end) -> (ended, next_finish, n_util)"},
    {"rates", (PyCFunction)Core_rates, METH_NOARGS, "alive flows' (slot, rate), in start order"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Core_getset[] = {
    {"alive", (getter)Core_get_alive, NULL, "flows in flight", NULL},
    {"num_rate_solves", (getter)Core_get_solves, NULL, "steps that solved rates", NULL},
    {"bytes_delivered", (getter)Core_get_bytes, NULL, "bytes of the flows that ended", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "moesim.engine._fluidcore.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Max-min fair flows over links, solved per touched component at each step.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
    .tp_getset = Core_getset,
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_fluidcore", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__fluidcore(void) {
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0) { Py_DECREF(&CoreType); Py_DECREF(m); return NULL; }
    return m;
}
