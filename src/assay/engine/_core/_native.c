/* The compiled decide hot path: ``_decide.decide`` for the common flag shapes, in C.
 *
 * Pure computation on immutable plans (built by ``_core/_plans.py`` when a snapshot is
 * compiled) and the caller's attributes: no I/O, no global state but the decision-id
 * counter. It answers exactly what the pure-Python ``decide`` answers, which stays the
 * reference: whatever this file does not handle (a flag without a plan, a prerequisite, a
 * forced variation, a holdout, a participation limit, a merged fallback sticky document,
 * an error of any kind, a caller's ``new_id``) is handed to the Python function with the
 * caller's own arguments, so an answer or a refusal is the Python path's, by construction.
 *
 * Conditions are evaluated from the shapes the compiled closures describe (see
 * ``_conditions.describe``); a closure without a description is called as is.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define NATIVE_ABI 2

/* Reason indices: the order of ``_plans.REASONS``. */
enum {
    R_FLAG_NOT_FOUND, R_FLAG_OFF, R_PREREQUISITE_FAILED, R_FORCED, R_ROLLOUT,
    R_NO_ACTIVE_EXPERIMENT, R_EXPERIMENT_NOT_RUNNING, R_TARGETING_MISMATCH,
    R_PARTICIPATION_LIMIT, R_LAYER_CONFLICT, R_OUTSIDE_TRAFFIC_ALLOCATION, R_NO_VARIANTS,
    R_EXPERIMENT_ASSIGNED, R_ROLLED_BACK, R_DEFAULT, R_FORCED_VARIATION, R_PASSTHROUGH,
    R_PREREQUISITE_GATE, R_PREREQUISITE_CYCLE, R_STICKY_BUCKET, R_STICKY_BUCKET_BLOCKED,
    R_COUNT
};

/* Condition node tags (``_plans`` builds the nodes: (tag, closure, ...)). */
enum { C_CALL, C_ALL, C_ANY, C_NOT, C_TRUE, C_FALSE, C_PATH, C_STR_IN, C_STR_EQ, C_IS, C_STR_CMP };

/* Rule kinds and tuple layouts (see _plans.py). */
enum { K_FORCE, K_ROLLOUT, K_EXPERIMENT };
enum { F_KEY, F_ENABLED, F_DEFAULT, F_REVISION, F_RULES };
enum { RU_KIND, RU_PARENTS, RU_ID };
enum { FO_COND = 3, FO_VALUE, FO_FILTERS };
enum { RO_COND = 3, RO_VALUE, RO_FILTERS, RO_COVERAGE, RO_SEED, RO_VERSION, RO_ATTR, RO_FALLBACK, RO_RANGE };
enum { EX_KEY = 3, EX_PLAN };
enum {
    E_KEY, E_ROLLED_BACK, E_RUNNING, E_ATTR, E_FALLBACK, E_COND, E_NS, E_FILTERS, E_ASSIGNABLE,
    E_SEED, E_VERSION, E_RANGES, E_VKEYS, E_VVALUES, E_PASSTHROUGH, E_CONTROL, E_STICKY,
    E_STICKY_KEY, E_BLOCKED
};
enum { P_TARGET, P_TARGET_KEY, P_COND, P_GATE };

#define BAIL (-2)
#define STR_CMP_CACHE 4096
#define MAX_PATH 64

static PyObject *py_decide;      /* the pure-Python decide: the reference and the fallback */
static PyObject *py_hashable;    /* _decide._hashable, for hash values that are not str */
static PyObject *py_finish;      /* _decide._finish_sticky(decision, snapshot, pid, attrs, docs) */
static PyObject *decision_type;
static PyObject *missing;
static PyObject *time_fn;
static PyObject *reasons[R_COUNT];
static PyObject *empty_docs;
static PyObject *kwnames;        /* Decision's keywords, in the order built below */
static PyObject *kwnames_sticky; /* ("sticky",) */
static PyObject *s_get, *s_id, *s_value, *s_native_plans;
static int enabled = 1;
static int configured = 0;

static char id_prefix[17];
static unsigned long long id_counter = 0;

#define FNV_OFFSET 0x811C9DC5u
#define FNV_PRIME 0x01000193u

#include "_native_eval.h"

/* ---------------------------------------------------------------------------------- */
/* Decision ids: 16 hex digits of per-process randomness, then a hex counter (%08x).   */

static PyObject *make_id(void) {
    static const char hex[] = "0123456789abcdef";
    char digits[16];
    int n = 0;
    for (unsigned long long c = ++id_counter; c; c >>= 4) digits[n++] = hex[c & 15];
    while (n < 8) digits[n++] = '0';
    PyObject *id = PyUnicode_New(16 + n, 127);
    if (id == NULL) return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(id);
    memcpy(out, id_prefix, 16);
    for (int i = 0; i < n; i++) out[16 + i] = (Py_UCS1)digits[n - 1 - i];
    return id;
}

/* time.time(), without the call. */
static PyObject *now(void) {
#if defined(CLOCK_REALTIME) && !defined(_WIN32)
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0) {
        /* As time.time() converts: nanoseconds as a double, over 1e9. */
        long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        return PyFloat_FromDouble((double)ns / 1e9);
    }
#endif
    return PyObject_CallNoArgs(time_fn);
}

static PyObject *next_id(PyObject *self, PyObject *unused) { return make_id(); }

static PyObject *reseed(PyObject *self, PyObject *prefix) {
    Py_ssize_t n;
    const char *p = PyUnicode_Check(prefix) ? PyUnicode_AsUTF8AndSize(prefix, &n) : NULL;
    if (p == NULL || n != 16) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "the prefix is 16 characters");
        return NULL;
    }
    memcpy(id_prefix, p, 16);
    id_counter = 0;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------- */
/* Entry points.                                                                       */

static PyObject *delegate(PyObject *const *args, size_t nargsf, PyObject *kw) {
    return PyObject_Vectorcall(py_decide, args, nargsf, kw);
}

/* The compiled decide for one flag: a new Decision, or NULL (never with an error set)
 * when the Python path must answer: no plan, attributes that are not a dict, or any error
 * (which the Python path then raises itself, the same way). ``plans`` is the snapshot's
 * (version, sticky project ids, {project id: {flag key: plan}}, {project key: id}). */
static PyObject *decide_fast(PyObject *snapshot, PyObject *plans, PyObject *project_id,
                             PyObject *flag_key, PyObject *subject, PyObject *attributes,
                             PyObject *docs, int *finished) {
    *finished = 0;
    PyObject *flags = PyDict_GetItemWithError(PyTuple_GET_ITEM(plans, 2), project_id);
    PyObject *plan = flags == NULL ? NULL : PyDict_GetItemWithError(flags, flag_key);
    if (plan == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *attrs;
    if (attributes == Py_None) {
        attrs = PyDict_New();
        if (attrs != NULL && PyDict_SetItem(attrs, s_id, subject) < 0) Py_CLEAR(attrs);
    } else if (PyDict_CheckExact(attributes)) {
        int has = PyDict_Contains(attributes, s_id);
        if (has > 0) {
            attrs = Py_NewRef(attributes);
        } else if (has == 0) {
            attrs = PyDict_Copy(attributes);
            if (attrs != NULL && PyDict_SetItem(attrs, s_id, subject) < 0) Py_CLEAR(attrs);
        } else {
            attrs = NULL;
        }
    } else {
        return NULL;
    }
    if (attrs == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *path[MAX_PATH];
    Outcome o = {0};
    int rc = eval_flag(plan, attrs, docs, path, 0, &o);
    if (rc < 0) {
        Py_XDECREF(o.hv);
        Py_DECREF(attrs);
        PyErr_Clear();
        return NULL;
    }
    PyObject *id = make_id();
    PyObject *decided_at = id == NULL ? NULL : now();
    PyObject *decision = NULL;
    if (decided_at != NULL) {
        PyObject *values[15] = {
            id, project_id, flag_key, subject, o.value,
            o.variant ? o.variant : Py_None, o.rule ? o.rule : Py_None, reasons[o.reason],
            o.experiment ? o.experiment : Py_None,
            o.experiment_reason < 0 ? Py_None : reasons[o.experiment_reason],
            o.in_experiment ? Py_True : Py_False, o.hv ? o.hv : Py_None,
            PyTuple_GET_ITEM(plan, F_REVISION), PyTuple_GET_ITEM(plans, 0), decided_at,
        };
        decision = PyObject_Vectorcall(decision_type, values, 0, kwnames);
    }
    Py_XDECREF(id);
    Py_XDECREF(decided_at);
    Py_XDECREF(o.hv);
    if (decision != NULL && o.in_experiment) {
        int sticky = PySet_Contains(PyTuple_GET_ITEM(plans, 1), project_id);
        if (sticky > 0 && o.stored) sticky = 0;
        if (sticky > 0) sticky = needs_sticky_write(o.assigned_by, o.variant, attrs, docs);
        if (sticky > 0) {
            PyObject *fargs[5] = {decision, snapshot, project_id, attrs, docs};
            Py_SETREF(decision, PyObject_Vectorcall(py_finish, fargs, 5, NULL));
            *finished = 1;
        } else if (sticky < 0) {
            Py_CLEAR(decision);
        }
    }
    Py_DECREF(attrs);
    if (decision == NULL) PyErr_Clear();
    return decision;
}

/* The snapshot's plans, or NULL (no error set) when it has none. */
static PyObject *plans_of(PyObject *snapshot) {
    PyObject *plans = PyObject_GetAttr(snapshot, s_native_plans);
    if (plans == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (!PyTuple_CheckExact(plans) || PyTuple_GET_SIZE(plans) != 4) {
        Py_DECREF(plans);
        return NULL;
    }
    return plans;
}

/* decide(snapshot, project_id, flag_key, subject, attributes=None, *, new_id=None, sticky=None) */
static PyObject *decide(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw) {
    if (!enabled || !configured || nargs < 4 || nargs > 5) return delegate(args, nargs, kw);
    PyObject *attributes = nargs == 5 ? args[4] : Py_None;
    PyObject *docs = empty_docs;
    if (kw != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kw);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *name = PyTuple_GET_ITEM(kw, i);
            PyObject *v = args[nargs + i];
            if (PyUnicode_CompareWithASCIIString(name, "sticky") == 0) {
                if (v != Py_None) docs = v;
            } else if (PyUnicode_CompareWithASCIIString(name, "new_id") == 0) {
                if (v != Py_None) return delegate(args, nargs, kw);
            } else if (nargs == 4 && PyUnicode_CompareWithASCIIString(name, "attributes") == 0) {
                attributes = v;
            } else {
                return delegate(args, nargs, kw);
            }
        }
    }
    PyObject *plans = plans_of(args[0]);
    if (plans == NULL) return delegate(args, nargs, kw);
    int finished;
    PyObject *decision =
        decide_fast(args[0], plans, args[1], args[2], args[3], attributes, docs, &finished);
    Py_DECREF(plans);
    return decision != NULL ? decision : delegate(args, nargs, kw);
}

/* ---------------------------------------------------------------------------------- */
/* Engine.decide, compiled: installed on an engine as its ``decide`` (see _runtime.py). */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *engine;
    PyObject *state;       /* the engine's __dict__: its attributes without a descriptor lookup */
    PyObject *slow;        /* Engine.decide bound to the engine: the reference */
    PyObject *core;        /* engine._decide_one: the cache, else the core decide */
    PyObject *enqueue;     /* the decision actor's enqueue when records are on, else None */
    PyObject *note;        /* sticky_buckets.note */
    PyObject *sticky_docs; /* sticky_buckets.by_project */
    long long sample;      /* LATENCY_SAMPLE: every sample-th decision is timed, in Python */
} EngineDecide;

static PyObject *s__snapshot, *s__default_project_id, *s_decisions_made, *s__logs_exposures,
    *s_sticky_bucket, *s_project;

/* An engine attribute (a new reference), from its __dict__; NULL when absent. */
static PyObject *state_get(EngineDecide *self, PyObject *name) {
    PyObject *v = PyDict_GetItemWithError(self->state, name);
    if (v == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_AttributeError, name);
        return NULL;
    }
    return Py_NewRef(v);
}

/* What Engine.decide does for a decision that is not timed, in a snapshot that logs no
 * exposures, called as decide(flag, subject[, attributes][, project=...]); anything else
 * goes to the Python method itself (before this counts the decision). */
static PyObject *engine_decide(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kw) {
    EngineDecide *self = (EngineDecide *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *project = Py_None;
    PyObject *snapshot = NULL, *plans = NULL, *project_id = NULL, *count = NULL, *docs = NULL;
    if (!enabled || !configured || nargs < 2 || nargs > 3) goto slow;
    if (kw != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kw);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            if (PyTuple_GET_ITEM(kw, i) != s_project &&
                PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kw, i), "project") != 0)
                goto slow;
            project = args[nargs + i];
        }
    }
    PyObject *flag = args[0], *subject = args[1];
    PyObject *attributes = nargs == 3 ? args[2] : Py_None;
    snapshot = state_get(self, s__snapshot);
    if (snapshot == NULL) goto error_slow;
    plans = plans_of(snapshot);
    if (plans == NULL) goto slow;
    PyObject *logs = state_get(self, s__logs_exposures);
    if (logs == NULL) goto error_slow;
    Py_DECREF(logs);
    if (logs != Py_False) goto slow;
    if (project == Py_None) {
        project_id = state_get(self, s__default_project_id);
        if (project_id == NULL) goto error_slow;
        if (!PyUnicode_Check(project_id)) goto slow;
    } else {
        project_id = PyDict_GetItemWithError(PyTuple_GET_ITEM(plans, 3), project);
        if (project_id == NULL) goto error_slow;
        Py_INCREF(project_id);
    }
    count = state_get(self, s_decisions_made);
    if (count == NULL) goto error_slow;
    if (!PyLong_CheckExact(count)) goto slow;
    long long n = PyLong_AsLongLong(count);
    if (n == -1 && PyErr_Occurred()) goto error_slow;
    if ((n + 1) % self->sample == 0) goto slow;
    int sticky = PySet_Contains(PyTuple_GET_ITEM(plans, 1), project_id);
    if (sticky < 0) goto error_slow;
    if (sticky) {
        docs = PyDict_GetItemWithError(self->sticky_docs, project_id);
        if (docs == NULL) goto error_slow;
        Py_INCREF(docs);
    }
    /* From here on, this is the decision Engine.decide would make. */
    Py_SETREF(count, PyLong_FromLongLong(n + 1));
    if (count == NULL || PyDict_SetItem(self->state, s_decisions_made, count) < 0) goto error;
    PyObject *decision;
    if (sticky) {
        int finished = 1;
        decision = decide_fast(snapshot, plans, project_id, flag, subject, attributes, docs, &finished);
        if (decision == NULL) {
            PyObject *dargs[6] = {snapshot, project_id, flag, subject, attributes, docs};
            decision = PyObject_Vectorcall(py_decide, dargs, 5, kwnames_sticky);
            if (decision == NULL) goto error;
            finished = 1;
        }
        /* Only _finish_sticky (or the Python path) sets a sticky_bucket. */
        PyObject *write = finished ? PyObject_GetAttr(decision, s_sticky_bucket) : Py_NewRef(Py_None);
        if (write == NULL) {
            Py_DECREF(decision);
            goto error;
        }
        if (write != Py_None) {
            PyObject *nargs2[2] = {project_id, write};
            PyObject *r = PyObject_Vectorcall(self->note, nargs2, 2, NULL);
            Py_XDECREF(r);
            if (r == NULL) {
                Py_DECREF(write);
                Py_DECREF(decision);
                goto error;
            }
        }
        Py_DECREF(write);
    } else {
        PyObject *cargs[5] = {snapshot, project_id, flag, subject, attributes};
        decision = PyObject_Vectorcall(self->core, cargs, 5, NULL);
        if (decision == NULL) goto error;
    }
    if (self->enqueue != Py_None) {
        PyObject *batch = PyTuple_Pack(1, decision);
        PyObject *r = batch == NULL ? NULL : PyObject_CallOneArg(self->enqueue, batch);
        Py_XDECREF(batch);
        if (r == NULL) {
            Py_DECREF(decision);
            goto error;
        }
        Py_DECREF(r);
    }
    Py_DECREF(snapshot);
    Py_DECREF(plans);
    Py_DECREF(project_id);
    Py_DECREF(count);
    Py_XDECREF(docs);
    return decision;
error:
    Py_XDECREF(snapshot);
    Py_XDECREF(plans);
    Py_XDECREF(project_id);
    Py_XDECREF(count);
    Py_XDECREF(docs);
    return NULL;
error_slow:
    PyErr_Clear();
slow:
    Py_XDECREF(snapshot);
    Py_XDECREF(plans);
    Py_XDECREF(project_id);
    Py_XDECREF(count);
    Py_XDECREF(docs);
    return PyObject_Vectorcall(self->slow, args, nargsf, kw);
}

static int engine_decide_traverse(EngineDecide *self, visitproc visit, void *arg) {
    Py_VISIT(self->engine);
    Py_VISIT(self->state);
    Py_VISIT(self->slow);
    Py_VISIT(self->core);
    Py_VISIT(self->enqueue);
    Py_VISIT(self->note);
    Py_VISIT(self->sticky_docs);
    return 0;
}

static int engine_decide_clear(EngineDecide *self) {
    Py_CLEAR(self->engine);
    Py_CLEAR(self->state);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->core);
    Py_CLEAR(self->enqueue);
    Py_CLEAR(self->note);
    Py_CLEAR(self->sticky_docs);
    return 0;
}

static void engine_decide_dealloc(EngineDecide *self) {
    PyObject_GC_UnTrack(self);
    engine_decide_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject EngineDecideType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "assay.engine._core._native.EngineDecide",
    .tp_basicsize = sizeof(EngineDecide),
    .tp_dealloc = (destructor)engine_decide_dealloc,
    .tp_vectorcall_offset = offsetof(EngineDecide, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Engine.decide, compiled (its common path; the rest goes to the method).",
    .tp_traverse = (traverseproc)engine_decide_traverse,
    .tp_clear = (inquiry)engine_decide_clear,
};

/* engine_decider(engine, slow, core, enqueue, note, sticky_docs, sample) */
static PyObject *engine_decider(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyDict_Check(args[5]) || !PyLong_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "engine_decider(engine, slow, core, enqueue, note, sticky_docs, sample)");
        return NULL;
    }
    long long sample = PyLong_AsLongLong(args[6]);
    if (sample < 1) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "sample must be >= 1");
        return NULL;
    }
    PyObject *state = PyObject_GenericGetDict(args[0], NULL);
    if (state == NULL) return NULL;
    if (!PyDict_CheckExact(state)) {
        Py_DECREF(state);
        PyErr_SetString(PyExc_TypeError, "the engine's __dict__ is not a dict");
        return NULL;
    }
    EngineDecide *self = PyObject_GC_New(EngineDecide, &EngineDecideType);
    if (self == NULL) {
        Py_DECREF(state);
        return NULL;
    }
    self->vectorcall = engine_decide;
    self->engine = Py_NewRef(args[0]);
    self->state = state;
    self->slow = Py_NewRef(args[1]);
    self->core = Py_NewRef(args[2]);
    self->enqueue = Py_NewRef(args[3]);
    self->note = Py_NewRef(args[4]);
    self->sticky_docs = Py_NewRef(args[5]);
    self->sample = sample;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* evaluate(plan, attrs, docs): _evaluate's 8-tuple, or None when the Python path must
 * answer (including on any error, which the Python path then raises itself). */
static PyObject *evaluate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "evaluate(plan, attrs, docs)");
        return NULL;
    }
    if (!enabled || !configured) Py_RETURN_NONE;
    PyObject *path[MAX_PATH];
    Outcome o = {0};
    int rc = eval_flag(args[0], args[1], args[2], path, 0, &o);
    if (rc < 0) {
        Py_XDECREF(o.hv);
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *t = PyTuple_Pack(8, o.value, o.variant ? o.variant : Py_None, o.rule ? o.rule : Py_None,
                               reasons[o.reason], o.experiment ? o.experiment : Py_None,
                               o.experiment_reason < 0 ? Py_None : reasons[o.experiment_reason],
                               o.in_experiment ? Py_True : Py_False, o.hv ? o.hv : Py_None);
    Py_XDECREF(o.hv);
    return t;
}

static PyObject *hash_fn(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "gb_hash(seed: str, value: str, version: int)");
        return NULL;
    }
    long version = PyLong_AsLong(args[2]);
    if (version == -1 && PyErr_Occurred()) return NULL;
    double n;
    if (!gb_hash(args[0], args[1], version, &n)) Py_RETURN_NONE;
    return PyFloat_FromDouble(n);
}

/* condition(node, value): a condition node evaluated as decide evaluates it (tests). */
static PyObject *condition_fn(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "condition(node: tuple, value)");
        return NULL;
    }
    int t = cond_eval(args[0], args[1]);
    if (t < 0) return NULL;
    return PyBool_FromLong(t);
}

/* choose(n, ranges): the index of the first range holding n, else -1 (tests). */
static PyObject *choose_fn(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyFloat_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "choose(n: float, ranges: tuple[tuple[float, float], ...])");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[1]); i++) {
        PyObject *r = PyTuple_GET_ITEM(args[1], i);
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2 || !PyFloat_Check(PyTuple_GET_ITEM(r, 0)) ||
            !PyFloat_Check(PyTuple_GET_ITEM(r, 1))) {
            PyErr_SetString(PyExc_TypeError, "ranges are pairs of floats");
            return NULL;
        }
    }
    return PyLong_FromLong(in_ranges(PyFloat_AS_DOUBLE(args[0]), args[1]));
}

static PyObject *set_enabled(PyObject *self, PyObject *arg) {
    int previous = enabled;
    int t = PyObject_IsTrue(arg);
    if (t < 0) return NULL;
    enabled = t;
    return PyBool_FromLong(previous);
}

/* configure(python_decide, hashable, finish_sticky, Decision, MISSING, reasons, fields) */
static PyObject *configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyTuple_Check(args[5]) || PyTuple_GET_SIZE(args[5]) != R_COUNT ||
        !PyTuple_Check(args[6]) || PyTuple_GET_SIZE(args[6]) != 15) {
        PyErr_SetString(PyExc_TypeError, "configure: unexpected arguments");
        return NULL;
    }
    Py_XSETREF(py_decide, Py_NewRef(args[0]));
    Py_XSETREF(py_hashable, Py_NewRef(args[1]));
    Py_XSETREF(py_finish, Py_NewRef(args[2]));
    Py_XSETREF(decision_type, Py_NewRef(args[3]));
    Py_XSETREF(missing, Py_NewRef(args[4]));
    for (int i = 0; i < R_COUNT; i++) Py_XSETREF(reasons[i], Py_NewRef(PyTuple_GET_ITEM(args[5], i)));
    Py_XSETREF(kwnames, Py_NewRef(args[6]));
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decide", (PyCFunction)(void (*)(void))decide, METH_FASTCALL | METH_KEYWORDS,
     "decide(snapshot, project_id, flag_key, subject, attributes=None, *, new_id=None, "
     "sticky=None)\n--\n\n_decide.decide_python, compiled: the same answers and refusals; "
     "what it does not handle goes to that function."},
    {"evaluate", (PyCFunction)(void (*)(void))evaluate, METH_FASTCALL,
     "evaluate(plan, attrs, docs)\n--\n\n_decide._evaluate for a flag's plan, or None "
     "when the Python path must answer."},
    {"gb_hash", (PyCFunction)(void (*)(void))hash_fn, METH_FASTCALL, NULL},
    {"condition", (PyCFunction)(void (*)(void))condition_fn, METH_FASTCALL, NULL},
    {"choose", (PyCFunction)(void (*)(void))choose_fn, METH_FASTCALL, NULL},
    {"engine_decider", (PyCFunction)(void (*)(void))engine_decider, METH_FASTCALL, NULL},
    {"next_id", next_id, METH_NOARGS, NULL},
    {"reseed", reseed, METH_O, NULL},
    {"set_enabled", set_enabled, METH_O, NULL},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    s_get = PyUnicode_InternFromString("get");
    s_id = PyUnicode_InternFromString("id");
    s_value = PyUnicode_InternFromString("value");
    s_native_plans = PyUnicode_InternFromString("native_plans");
    empty_docs = PyDict_New();
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL) return NULL;
    time_fn = PyObject_GetAttrString(time_module, "time");
    Py_DECREF(time_module);
    if (!s_get || !s_id || !s_value || !s_native_plans || !empty_docs || !time_fn) return NULL;
    memcpy(id_prefix, "0000000000000000", 16);
    s__snapshot = PyUnicode_InternFromString("_snapshot");
    s__default_project_id = PyUnicode_InternFromString("_default_project_id");
    s_decisions_made = PyUnicode_InternFromString("decisions_made");
    s__logs_exposures = PyUnicode_InternFromString("_logs_exposures");
    s_sticky_bucket = PyUnicode_InternFromString("sticky_bucket");
    s_project = PyUnicode_InternFromString("project");
    kwnames_sticky = Py_BuildValue("(s)", "sticky");
    if (!s__snapshot || !s__default_project_id || !s_decisions_made || !s__logs_exposures ||
        !s_sticky_bucket || !s_project || !kwnames_sticky)
        return NULL;
    if (PyType_Ready(&EngineDecideType) < 0) return NULL;
    if (PyModule_AddIntConstant(m, "ABI", NATIVE_ABI) < 0) return NULL;
    return m;
}
