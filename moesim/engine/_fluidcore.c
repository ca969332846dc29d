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
 *     fair share is no larger than that of any link its flows cross), as moesim.engine.maxmin does;
 *   - components are tracked as labels: a flow that starts joins the labels of its links into one;
 *     a label may cover several components once flows have ended (solving more flows than needed,
 *     changing no rate), and the labels are recomputed exactly once a quarter of the flows in
 *     flight have ended since the last time.
 * Per link the alive flows' rates are kept summed, so a step costs what its solved flows cross,
 * not what the component holds. Every loop runs in an order fixed by the history of starts and
 * ends (slots, link and label lists), so the same inputs give the same bits. The numpy network is
 * the fallback and the reference this one is tested against.
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
    /* component labels: a union-find over links; each root lists the alive flows under it. A
       label may cover several components once flows have ended (solving more flows than needed,
       changing no rate) until the labels are recomputed exactly. */
    int32_t *parent;
    int32_t **gfl;
    int32_t *gcount, *gcapac;
    int32_t *flab, *gpos;   /* per slot: its label, its place in the label's list */
    int64_t ended_since;    /* flows ended since the labels were last exact */
    int64_t relabel_after;  /* ... and at least this many (tests set 1) */
    double *lload;          /* per link: the alive flows' rates summed */
    /* scratch */
    int64_t epoch;
    int64_t *lmark, *fmark, *rmark, *umark; /* visit stamps */
    double *lrem, *lshare, *lmin, *lkept, *rfloor;
    int32_t *lcnt, *lcntk;
    char *rstart;
    int32_t *qlinks;        /* links of the flows solved (or of the search when relabelling) */
    int32_t *roots;         /* labels touched by a step */
    int32_t *todo;          /* flows to solve; capslots */
    double *fmin, *fcur;     /* a flow's rate, its share this round */
    int32_t *act, *alinks;  /* the solve's unfrozen flows and the links they cross */
    char *frozen;
    int32_t *ended, *eroot;
    int32_t nended;
    /* utilisation */
    int record;
    Py_buffer out_links, out_vals; /* int64 and float64, at least L each */
    double *lastutil;
    int32_t *uchanged, *ulist;
    /* per link, the utilisation's integral so far: value x time held, time held above 0, the
       largest value held for some time, the time of the last change, whether it changed once */
    double *uarea, *upeak;
    int64_t *ubusy, *ulast;
    char *useen;
    /* counters */
    int64_t num_rate_solves, num_rounds, num_solved;
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
        GROW(alive, char); GROW(freeslots, int32_t); GROW(fmark, int64_t); GROW(flab, int32_t); GROW(gpos, int32_t);
        GROW(todo, int32_t); GROW(fmin, double); GROW(fcur, double); GROW(act, int32_t); GROW(frozen, char); GROW(ended, int32_t); GROW(eroot, int32_t);
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

static int32_t find(Core *c, int32_t l) {
    while (c->parent[l] != l) { c->parent[l] = c->parent[c->parent[l]]; l = c->parent[l]; }
    return l;
}

static int group_push(Core *c, int32_t r, int32_t s) {
    if (c->gcount[r] == c->gcapac[r]) {
        int32_t nc = c->gcapac[r] ? 2 * c->gcapac[r] : 4;
        int32_t *p = realloc(c->gfl[r], sizeof(int32_t) * nc);
        if (!p) { PyErr_NoMemory(); return -1; }
        c->gfl[r] = p; c->gcapac[r] = nc;
    }
    c->gpos[s] = c->gcount[r];
    c->gfl[r][c->gcount[r]++] = s;
    c->flab[s] = r;
    return 0;
}

static void group_remove(Core *c, int32_t s) {
    int32_t r = c->flab[s], p = c->gpos[s];
    int32_t last = c->gfl[r][--c->gcount[r]];
    c->gfl[r][p] = last;
    c->gpos[last] = p;
}

/* One label for the labels a and b (roots): the smaller list moves into the larger. */
static int32_t group_union(Core *c, int32_t a, int32_t b) {
    if (a == b) return a;
    if (c->gcount[a] < c->gcount[b]) { int32_t t = a; a = b; b = t; }
    for (int32_t j = 0; j < c->gcount[b]; j++) if (group_push(c, a, c->gfl[b][j]) < 0) return -1;
    c->gcount[b] = 0;
    c->parent[b] = a;
    return a;
}

/* Exact labels (one per connected component of the alive flows) and exact link loads. */
static int relabel(Core *c) {
    int32_t W = c->W;
    for (int32_t l = 0; l < c->L; l++) { c->parent[l] = l; c->gcount[l] = 0; }
    int64_t ep = ++c->epoch;
    for (int32_t s0 = 0; s0 < c->nslots; s0++) {
        if (!c->alive[s0] || c->fmark[s0] == ep) continue;
        int32_t root = c->path[(size_t)s0 * W];
        int32_t nq = 0;
        c->lmark[root] = ep; c->qlinks[nq++] = root;
        for (int32_t qi = 0; qi < nq; qi++) {
            int32_t l = c->qlinks[qi];
            c->parent[l] = root;
            int64_t *fl = c->lflows[l];
            for (int32_t j = 0; j < c->lcount[l]; j++) {
                int32_t s = (int32_t)(fl[j] >> 6);
                if (c->fmark[s] == ep) continue;
                c->fmark[s] = ep;
                if (group_push(c, root, s) < 0) return -1;
                for (int32_t k = 0; k < c->plen[s]; k++) {
                    int32_t l2 = c->path[(size_t)s * W + k];
                    if (c->lmark[l2] != ep) { c->lmark[l2] = ep; c->qlinks[nq++] = l2; }
                }
            }
        }
    }
    for (int32_t l = 0; l < c->L; l++) {
        double load = 0.0;
        int64_t *fl = c->lflows[l];
        for (int32_t j = 0; j < c->lcount[l]; j++) load += c->rate[fl[j] >> 6];
        c->lload[l] = load;
    }
    c->ended_since = 0;
    return 0;
}

static void Core_dealloc(Core *c) {
    free(c->cap); free(c->path); free(c->ppos); free(c->plen); free(c->rem); free(c->t0);
    free(c->rate); free(c->finish); free(c->due); free(c->nbytes); free(c->seq); free(c->alive);
    free(c->freeslots); free(c->started); free(c->flab); free(c->gpos);
    if (c->lflows) for (int32_t l = 0; l < c->L; l++) free(c->lflows[l]);
    if (c->gfl) for (int32_t l = 0; l < c->L; l++) free(c->gfl[l]);
    free(c->lflows); free(c->lcount); free(c->lcapac); free(c->gfl); free(c->gcount); free(c->gcapac);
    free(c->parent); free(c->lload); free(c->lmark); free(c->fmark); free(c->rmark); free(c->umark);
    free(c->lrem); free(c->lshare); free(c->lmin); free(c->lkept); free(c->rfloor); free(c->lcnt);
    free(c->lcntk); free(c->rstart); free(c->qlinks); free(c->roots); free(c->todo); free(c->act); free(c->alinks); free(c->fmin);
    free(c->fcur); free(c->frozen); free(c->ended); free(c->eroot); free(c->lastutil); free(c->uchanged);
    free(c->uarea); free(c->upeak); free(c->ubusy); free(c->ulast); free(c->useen);
    free(c->ulist);
    if (c->record) { PyBuffer_Release(&c->out_links); PyBuffer_Release(&c->out_vals); }
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int Core_init(Core *c, PyObject *args, PyObject *kw) {
    static char *names[] = {"capacity", "out_links", "out_vals", "relabel_after", NULL};
    Py_buffer capbuf;
    PyObject *ol = Py_None, *ov = Py_None;
    long long relabel_after = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|OOL", names, &capbuf, &ol, &ov, &relabel_after)) return -1;
    c->relabel_after = relabel_after > 1 ? relabel_after : 1;
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
    c->gfl = calloc(n, sizeof(int32_t *));
    c->gcount = calloc(n, sizeof(int32_t)); c->gcapac = calloc(n, sizeof(int32_t));
    c->parent = calloc(n, sizeof(int32_t)); c->lload = calloc(n, sizeof(double));
    c->lmark = calloc(n, sizeof(int64_t)); c->rmark = calloc(n, sizeof(int64_t)); c->umark = calloc(n, sizeof(int64_t));
    c->lrem = calloc(n, sizeof(double)); c->lshare = calloc(n, sizeof(double)); c->lmin = calloc(n, sizeof(double));
    c->lkept = calloc(n, sizeof(double)); c->rfloor = calloc(n, sizeof(double));
    c->lcnt = calloc(n, sizeof(int32_t)); c->lcntk = calloc(n, sizeof(int32_t)); c->rstart = calloc(n, 1);
    c->qlinks = calloc(n, sizeof(int32_t)); c->roots = calloc(n, sizeof(int32_t)); c->alinks = calloc(n, sizeof(int32_t));
    c->lastutil = calloc(n, sizeof(double)); c->uchanged = calloc(n, sizeof(int32_t)); c->ulist = calloc(n, sizeof(int32_t));
    c->uarea = calloc(n, sizeof(double)); c->upeak = calloc(n, sizeof(double));
    c->ubusy = calloc(n, sizeof(int64_t)); c->ulast = calloc(n, sizeof(int64_t)); c->useen = calloc(n, 1);
    if (!c->lflows || !c->lcount || !c->lcapac || !c->gfl || !c->gcount || !c->gcapac || !c->parent || !c->lload
        || !c->lmark || !c->rmark || !c->umark || !c->lrem || !c->lshare || !c->lmin || !c->lkept || !c->rfloor
        || !c->lcnt || !c->lcntk || !c->rstart || !c->qlinks || !c->roots || !c->alinks || !c->lastutil || !c->uchanged
        || !c->ulist || !c->uarea || !c->upeak || !c->ubusy || !c->ulast || !c->useen) { PyErr_NoMemory(); return -1; }
    for (int32_t l = 0; l < L; l++) c->parent[l] = l;
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
    /* the path first, checked, so a refused flow takes no slot */
    int32_t ids[MAXW];
    PyObject **items = PySequence_Fast_ITEMS(seqo);
    for (Py_ssize_t i = 0; i < k; i++) {
        long l = PyLong_AsLong(items[i]);
        if (l == -1 && PyErr_Occurred()) { Py_DECREF(seqo); return NULL; }
        if (l < 0 || l >= c->L) { Py_DECREF(seqo); PyErr_Format(PyExc_ValueError, "link id %ld out of range", l); return NULL; }
        ids[i] = (int32_t)l;
    }
    Py_DECREF(seqo);
    int32_t s;
    if (c->nfree) s = c->freeslots[--c->nfree];
    else {
        if (grow_slots(c, c->nslots + 1, (int32_t)k) < 0) return NULL;
        s = c->nslots++;
        c->alive[s] = 0;
    }
    if (k > c->W && grow_slots(c, c->nslots, (int32_t)k) < 0) return NULL;
    int32_t W = c->W;
    for (Py_ssize_t i = 0; i < k; i++) c->path[(size_t)s * W + i] = ids[i];
    c->plen[s] = (int32_t)k;
    for (Py_ssize_t i = 0; i < k; i++) {
        int32_t l = c->path[(size_t)s * W + i];
        c->ppos[(size_t)s * W + i] = c->lcount[l];
        if (link_push(c, l, ((int64_t)s << 6) | i) < 0) return NULL;
    }
    int32_t r = find(c, c->path[(size_t)s * W]);
    for (Py_ssize_t i = 1; i < k; i++) {
        r = group_union(c, r, find(c, c->path[(size_t)s * W + i]));
        if (r < 0) return NULL;
    }
    if (group_push(c, r, s) < 0) return NULL;
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
    /* rates land in fmin[i] for todo[i]; act lists the unfrozen i and alinks the links some
       unfrozen flow crosses, both compacted after every round */
    int32_t *act = c->act, *alinks = c->alinks;
    int32_t na = m, nl = 0;
    for (int32_t i = 0; i < m; i++) { act[i] = i; c->frozen[i] = 0; }
    for (int32_t i = l0; i < l1; i++) {
        int32_t l = c->qlinks[i];
        if (c->lrem[l] < 0.0) c->lrem[l] = 0.0;
        if (c->lcnt[l]) alinks[nl++] = l;
    }
    double *fm = c->fmin, *cur = c->fcur;
    while (na) {
        c->num_rounds++;
        for (int32_t j = 0; j < nl; j++) {
            int32_t l = alinks[j];
            c->lshare[l] = c->lrem[l] / (double)c->lcnt[l];
            c->lmin[l] = INFINITY;
        }
        for (int32_t j = 0; j < na; j++) {
            int32_t i = act[j];
            const int32_t *p = c->path + (size_t)todo[i] * W;
            int32_t n = c->plen[todo[i]];
            double v = INFINITY;
            for (int32_t k = 0; k < n; k++) { double x = c->lshare[p[k]]; if (x < v) v = x; }
            cur[i] = v;
            for (int32_t k = 0; k < n; k++) if (v < c->lmin[p[k]]) c->lmin[p[k]] = v;
        }
        for (int32_t j = 0; j < nl; j++) c->lmin[alinks[j]] *= (1.0 + TIE);
        /* freeze every flow crossing a link whose share is no larger than the share of any link
           its flows cross; then take what they hold off their links */
        int32_t nfro = 0;
        for (int32_t j = 0; j < na; j++) {
            int32_t i = act[j];
            const int32_t *p = c->path + (size_t)todo[i] * W;
            int32_t n = c->plen[todo[i]];
            for (int32_t k = 0; k < n; k++) {
                if (c->lshare[p[k]] <= c->lmin[p[k]]) { c->frozen[i] = 1; nfro++; break; }
            }
        }
        if (!nfro) {  /* cannot happen (the smallest share is a bottleneck); guard against a hang */
            for (int32_t j = 0; j < na; j++) fm[act[j]] = cur[act[j]];
            break;
        }
        int32_t keep = 0;
        for (int32_t j = 0; j < na; j++) {
            int32_t i = act[j];
            if (!c->frozen[i]) { act[keep++] = i; continue; }
            const int32_t *p = c->path + (size_t)todo[i] * W;
            int32_t n = c->plen[todo[i]];
            fm[i] = cur[i];
            for (int32_t k = 0; k < n; k++) {
                double r = c->lrem[p[k]] - cur[i];
                c->lrem[p[k]] = r > 0.0 ? r : 0.0;
                c->lcnt[p[k]]--;
            }
        }
        na = keep;
        int32_t kl = 0;
        for (int32_t j = 0; j < nl; j++) if (c->lcnt[alinks[j]]) alinks[kl++] = alinks[j];
        nl = kl;
    }
}

/* The value link l held since its last change, up to t, joins its integral (a value replaced
   at the instant it was set held for no time and counts nowhere). */
static void hold(Core *c, int32_t l, int64_t t) {
    int64_t dt = t - c->ulast[l];
    if (dt <= 0) return;
    double v = c->lastutil[l];
    c->uarea[l] += v * (double)dt;
    if (v > 0.0) c->ubusy[l] += dt;
    if (v > c->upeak[l]) c->upeak[l] = v;
}

/* step(now, end) -> (ended slots in start order, earliest finish of the alive flows or inf,
 * number of utilisation changes written to out_links / out_vals). */
static PyObject *Core_step(Core *c, PyObject *args) {
    long long now_i;
    int do_end;
    if (!PyArg_ParseTuple(args, "Lp", &now_i, &do_end)) return NULL;
    double now = (double)now_i;
    int32_t W = c->W;
    int32_t nchanged = 0;
    c->nended = 0;
    if (do_end && c->nalive) {
        for (int32_t s = 0; s < c->nslots; s++) {
            if (c->alive[s] && c->due[s] <= now) c->ended[c->nended++] = s;
        }
        if (c->nended > 1) { g_seq = c->seq; qsort(c->ended, c->nended, sizeof(int32_t), cmp_seq); }
        int64_t ep0 = ++c->epoch;
        for (int32_t i = 0; i < c->nended; i++) {
            int32_t s = c->ended[i];
            c->bytes_delivered += c->nbytes[s];
            c->alive[s] = 0;
            c->finish[s] = c->due[s] = INFINITY;
            c->nalive--;
            c->eroot[i] = c->flab[s];
            group_remove(c, s);
            link_remove(c, s);
            for (int32_t k = 0; k < c->plen[s]; k++) {
                int32_t l = c->path[(size_t)s * W + k];
                c->lload[l] = c->lcount[l] ? c->lload[l] - c->rate[s] : 0.0;
                if (c->umark[l] != ep0) { c->umark[l] = ep0; c->ulist[nchanged++] = l; }
            }
        }
    }
    /* the labels the ended and started flows belong to: where flows only ended, the floor is the
       slowest ended flow's rate; where a flow started, every flow of the label is solved */
    int64_t ep = ++c->epoch;
    int32_t nroots = 0;
    for (int32_t i = 0; i < c->nended; i++) {
        int32_t r = c->eroot[i];
        if (c->rmark[r] != ep) { c->rmark[r] = ep; c->rfloor[r] = INFINITY; c->rstart[r] = 0; c->roots[nroots++] = r; }
        if (c->rate[c->ended[i]] < c->rfloor[r]) c->rfloor[r] = c->rate[c->ended[i]];
    }
    for (int32_t i = 0; i < c->nstarted; i++) {
        int32_t r = c->flab[c->started[i]];
        if (c->rmark[r] != ep) { c->rmark[r] = ep; c->rfloor[r] = INFINITY; c->roots[nroots++] = r; }
        c->rstart[r] = 1;
    }
    int32_t m = 0, nq = 0;
    for (int32_t i = 0; i < nroots; i++) {
        int32_t r = c->roots[i];
        int32_t *g = c->gfl[r];
        if (c->rstart[r]) {
            for (int32_t j = 0; j < c->gcount[r]; j++) c->todo[m++] = g[j];
        } else {
            double thr = c->rfloor[r] * (1.0 - KEEP_MARGIN);
            for (int32_t j = 0; j < c->gcount[r]; j++) if (c->rate[g[j]] >= thr) c->todo[m++] = g[j];
        }
    }
    if (m) {
        /* what the kept flows (the others) leave of the links the solved ones cross */
        for (int32_t i = 0; i < m; i++) {
            int32_t s = c->todo[i];
            for (int32_t k = 0; k < c->plen[s]; k++) {
                int32_t l = c->path[(size_t)s * W + k];
                if (c->lmark[l] != ep) { c->lmark[l] = ep; c->qlinks[nq++] = l; c->lkept[l] = c->lload[l]; c->lcntk[l] = 0; }
                c->lkept[l] -= c->rate[s];
                c->lcntk[l]++;
            }
        }
        for (int32_t i = 0; i < nq; i++) {
            int32_t l = c->qlinks[i];
            if (c->lcntk[l] == c->lcount[l]) c->lkept[l] = 0.0;  /* no kept flow: exactly nothing */
            c->lrem[l] = c->cap[l] - c->lkept[l];
        }
        solve(c, m, 0, nq);
        c->num_rate_solves++;
        c->num_solved += m;
        for (int32_t i = 0; i < nq; i++) { int32_t l = c->qlinks[i]; c->lload[l] = c->lkept[l]; }
        for (int32_t i = 0; i < m; i++) {
            int32_t s = c->todo[i];
            double r = c->fmin[i];
            double rem = c->rem[s] - c->rate[s] * (now - c->t0[s]);
            c->rem[s] = rem;
            c->t0[s] = now;
            c->rate[s] = r;
            c->finish[s] = now + rem / r;
            c->due[s] = now + (rem - 1e-9 * c->nbytes[s]) / r - FINISH_SLACK_NS;
            for (int32_t k = 0; k < c->plen[s]; k++) c->lload[c->path[(size_t)s * W + k]] += r;
        }
    }
    /* utilisation of the links whose load changed */
    int32_t nu = 0;
    if (c->record) {
        int64_t ep1 = ++c->epoch;
        for (int32_t i = 0; i < nchanged; i++) c->umark[c->ulist[i]] = ep1;
        for (int32_t i = 0; i < nq; i++) {
            int32_t l = c->qlinks[i];
            if (c->umark[l] != ep1) { c->umark[l] = ep1; c->ulist[nchanged++] = l; }
        }
        int64_t *ol = (int64_t *)c->out_links.buf;
        double *ov = (double *)c->out_vals.buf;
        for (int32_t i = 0; i < nchanged; i++) {
            int32_t l = c->ulist[i];
            double u = c->lcount[l] ? c->lload[l] / c->cap[l] : 0.0;
            if (u > 1.0) u = 1.0;
            if (fabs(u - c->lastutil[l]) > 1e-12) {
                if (c->useen[l]) hold(c, l, now_i);
                c->useen[l] = 1;
                c->ulast[l] = now_i;
                c->lastutil[l] = u;
                c->uchanged[nu++] = l;
            }
        }
        if (nu > 1) qsort(c->uchanged, nu, sizeof(int32_t), cmp_i32);
        for (int32_t i = 0; i < nu; i++) { ol[i] = c->uchanged[i]; ov[i] = c->lastutil[c->uchanged[i]]; }
    }
    c->ended_since += c->nended;
    if (c->ended_since >= c->relabel_after && 4 * c->ended_since >= c->nalive && relabel(c) < 0) return NULL;
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
static PyObject *Core_get_rounds(Core *c, void *closure) { return PyLong_FromLongLong(c->num_rounds); }
static PyObject *Core_get_solved(Core *c, void *closure) { return PyLong_FromLongLong(c->num_solved); }

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

/* totals(horizon) -> list of (link, area, busy_ns, peak) of every link whose utilisation ever
   changed, in link order: the integral of its utilisation over [0, horizon) (the last value held
   up to the horizon), as moesim.analysis.timeline.step_integral computes it from the samples.
   The horizon may not fall before a link's last change (the sums so far cannot be cut back). */
static PyObject *Core_totals(Core *c, PyObject *args) {
    long long horizon;
    if (!PyArg_ParseTuple(args, "L", &horizon)) return NULL;
    if (!c->record) { PyErr_SetString(PyExc_ValueError, "totals: the core records no utilisation"); return NULL; }
    for (int32_t l = 0; l < c->L; l++) {
        if (c->useen[l] && c->ulast[l] > horizon) {
            PyErr_Format(PyExc_ValueError, "totals: horizon %lld ns is before link %d's last utilisation change "
                         "(%lld ns); the integrals cover the run to its end", horizon, l, (long long)c->ulast[l]);
            return NULL;
        }
    }
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (int32_t l = 0; l < c->L; l++) {
        if (!c->useen[l]) continue;
        double area = c->uarea[l], peak = c->upeak[l];
        int64_t busy = c->ubusy[l];
        int64_t dt = horizon - c->ulast[l];
        if (dt > 0) {
            double v = c->lastutil[l];
            area += v * (double)dt;
            if (v > 0.0) busy += dt;
            if (v > peak) peak = v;
        }
        PyObject *row = Py_BuildValue("(idLd)", l, area, (long long)busy, peak);
        if (!row || PyList_Append(out, row) < 0) { Py_XDECREF(row); Py_DECREF(out); return NULL; }
        Py_DECREF(row);
    }
    return out;
}

static PyMethodDef Core_methods[] = {
    {"totals", (PyCFunction)Core_totals, METH_VARARGS, "totals(horizon) -> [(link, area, busy_ns, peak)]"},
    {"add", (PyCFunction)Core_add, METH_VARARGS, "add(links, nbytes, now) -> slot"},
    {"step", (PyCFunction)Core_step, METH_VARARGS, "step(now, end) -> (ended, next_finish, n_util)"},
    {"rates", (PyCFunction)Core_rates, METH_NOARGS, "alive flows' (slot, rate), in start order"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Core_getset[] = {
    {"alive", (getter)Core_get_alive, NULL, "flows in flight", NULL},
    {"num_rate_solves", (getter)Core_get_solves, NULL, "steps that solved rates", NULL},
    {"bytes_delivered", (getter)Core_get_bytes, NULL, "bytes of the flows that ended", NULL},
    {"num_rounds", (getter)Core_get_rounds, NULL, "rounds of the solves (a lone flow's solve has none)", NULL},
    {"num_solved", (getter)Core_get_solved, NULL, "flows solved, summed over the solves", NULL},
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
