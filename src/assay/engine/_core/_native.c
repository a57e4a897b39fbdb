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

/* ---------------------------------------------------------------------------------- */
/* Hashing: GrowthBook's FNV-1a 32 over UTF-16 code units.                             */

static uint32_t fnv_feed(uint32_t h, PyObject *s) {
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (kind == PyUnicode_1BYTE_KIND) {
        const unsigned char *p = (const unsigned char *)data;
        for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * FNV_PRIME;
        return h;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0x10000) {
            c -= 0x10000;
            h = (h ^ (0xD800 + (c >> 10))) * FNV_PRIME;
            h = (h ^ (0xDC00 + (c & 0x3FF))) * FNV_PRIME;
        } else {
            h = (h ^ c) * FNV_PRIME;
        }
    }
    return h;
}

/* gb_hash: 1 with *out set, 0 for an unknown version (the SDK's null). */
static int gb_hash(PyObject *seed, PyObject *value, long version, double *out) {
    if (version == 1) {
        uint32_t h = fnv_feed(fnv_feed(FNV_OFFSET, value), seed);
        *out = (double)(h % 1000u) / 1000.0;
        return 1;
    }
    if (version == 2) {
        uint32_t inner = fnv_feed(fnv_feed(FNV_OFFSET, seed), value);
        /* FNV of the decimal digits of inner, most significant first. */
        char digits[10];
        int len = 0;
        do {
            digits[len++] = (char)('0' + inner % 10u);
            inner /= 10u;
        } while (inner);
        uint32_t h = FNV_OFFSET;
        while (len) h = (h ^ (unsigned char)digits[--len]) * FNV_PRIME;
        *out = (double)(h % 10000u) / 10000.0;
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Small helpers.                                                                      */

/* mapping.get(key): a new reference (None when absent), NULL on error. */
static PyObject *mapping_get(PyObject *mapping, PyObject *key) {
    if (PyDict_CheckExact(mapping)) {
        PyObject *v = PyDict_GetItemWithError(mapping, key);
        if (v == NULL) {
            if (PyErr_Occurred()) return NULL;
            Py_RETURN_NONE;
        }
        return Py_NewRef(v);
    }
    return PyObject_CallMethodOneArg(mapping, s_get, key);
}

/* _decide._hash_value: a new reference to a str ("" when missing), NULL on error. */
static PyObject *one_hash_value(PyObject *attrs, PyObject *attribute) {
    PyObject *v = mapping_get(attrs, attribute);
    if (v == NULL) return NULL;
    if (PyUnicode_CheckExact(v)) return v;
    PyObject *hv = PyObject_CallOneArg(py_hashable, v);
    Py_DECREF(v);
    if (hv != NULL && !PyUnicode_Check(hv)) {
        Py_DECREF(hv);
        PyErr_SetString(PyExc_TypeError, "hash value is not a string");
        return NULL;
    }
    return hv;
}

static PyObject *hash_value(PyObject *attrs, PyObject *attribute, PyObject *fallback) {
    PyObject *hv = one_hash_value(attrs, attribute);
    if (hv == NULL) return NULL;
    if (PyUnicode_GET_LENGTH(hv) == 0 && fallback != Py_None) {
        Py_DECREF(hv);
        return one_hash_value(attrs, fallback);
    }
    return hv;
}

static inline int in_ranges(double n, PyObject *ranges) {
    Py_ssize_t count = PyTuple_GET_SIZE(ranges);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *r = PyTuple_GET_ITEM(ranges, i);
        if (PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(r, 0)) <= n && n < PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(r, 1)))
            return (int)i;
    }
    return -1;
}

/* _filtered_out: 1 filtered out, 0 not, -1 error. */
static int filtered_out(PyObject *filters, PyObject *attrs) {
    Py_ssize_t count = PyTuple_GET_SIZE(filters);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *f = PyTuple_GET_ITEM(filters, i);
        PyObject *hv = one_hash_value(attrs, PyTuple_GET_ITEM(f, 0));
        if (hv == NULL) return -1;
        double n;
        int ok = PyUnicode_GET_LENGTH(hv) > 0 &&
                 gb_hash(PyTuple_GET_ITEM(f, 1), hv, PyLong_AsLong(PyTuple_GET_ITEM(f, 2)), &n);
        Py_DECREF(hv);
        if (!ok || in_ranges(n, PyTuple_GET_ITEM(f, 3)) < 0) return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Conditions: 1 holds, 0 does not, -1 error.                                          */

static int truth_of_call(PyObject *fn, PyObject *value) {
    PyObject *r = PyObject_CallOneArg(fn, value);
    if (r == NULL) return -1;
    int t = PyObject_IsTrue(r);
    Py_DECREF(r);
    return t;
}

static int cond_eval(PyObject *node, PyObject *value) {
    long tag = PyLong_AsLong(PyTuple_GET_ITEM(node, 0));
    PyObject *fn = PyTuple_GET_ITEM(node, 1);
    switch (tag) {
    case C_ALL:
    case C_ANY: {
        PyObject *children = PyTuple_GET_ITEM(node, 2);
        Py_ssize_t n = PyTuple_GET_SIZE(children);
        for (Py_ssize_t i = 0; i < n; i++) {
            int t = cond_eval(PyTuple_GET_ITEM(children, i), value);
            if (t < 0) return -1;
            if (tag == C_ALL && !t) return 0;
            if (tag == C_ANY && t) return 1;
        }
        return tag == C_ALL;
    }
    case C_NOT: {
        int t = cond_eval(PyTuple_GET_ITEM(node, 2), value);
        return t < 0 ? -1 : !t;
    }
    case C_TRUE:
        return 1;
    case C_FALSE:
        return 0;
    case C_PATH:
        if (PyDict_CheckExact(value)) {
            PyObject *v = PyDict_GetItemWithError(value, PyTuple_GET_ITEM(node, 2));
            if (v == NULL) {
                if (PyErr_Occurred()) return -1;
                v = missing;
            }
            Py_INCREF(v);
            int t = cond_eval(PyTuple_GET_ITEM(node, 3), v);
            Py_DECREF(v);
            return t;
        }
        break;
    case C_STR_IN:
        if (PyUnicode_CheckExact(value)) return PySet_Contains(PyTuple_GET_ITEM(node, 2), value);
        break;
    case C_STR_EQ:
        if (PyUnicode_CheckExact(value)) {
            PyObject *expected = PyTuple_GET_ITEM(node, 2);
            if (value == expected) return 1;
            return PyUnicode_Compare(value, expected) == 0 ? 1 : (PyErr_Occurred() ? -1 : 0);
        }
        break;
    case C_IS:
        return value == PyTuple_GET_ITEM(node, 2);
    case C_STR_CMP:
        if (PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) > 0) {
            /* f is pure (see describe): its results are kept in the node's own dict. */
            PyObject *cache = PyTuple_GET_ITEM(node, 5);
            PyObject *mapped = PyDict_GetItemWithError(cache, value);
            if (mapped != NULL) {
                Py_INCREF(mapped);
            } else {
                if (PyErr_Occurred()) return -1;
                mapped = PyObject_CallOneArg(PyTuple_GET_ITEM(node, 2), value);
                if (mapped == NULL) return -1;
                if (PyDict_GET_SIZE(cache) < STR_CMP_CACHE && PyDict_SetItem(cache, value, mapped) < 0) {
                    Py_DECREF(mapped);
                    return -1;
                }
            }
            int t = PyObject_RichCompareBool(mapped, PyTuple_GET_ITEM(node, 3),
                                             (int)PyLong_AsLong(PyTuple_GET_ITEM(node, 4)));
            Py_DECREF(mapped);
            return t;
        }
        break;
    default:
        break;
    }
    return truth_of_call(fn, value);
}

/* ---------------------------------------------------------------------------------- */
/* Evaluation.                                                                         */

typedef struct {
    PyObject *value;       /* borrowed from the plan (or None) */
    PyObject *variant;     /* borrowed or NULL */
    PyObject *rule;        /* borrowed or NULL */
    int reason;
    PyObject *experiment;  /* borrowed or NULL */
    int experiment_reason; /* -1: None */
    int in_experiment;
    PyObject *hv;          /* owned or NULL */
    PyObject *assigned_by; /* the experiment plan that assigned (borrowed), or NULL */
    int stored;            /* assigned from the hash attribute's own document, which holds it */
} Outcome;

static inline void outcome_set(Outcome *o, PyObject *value, PyObject *variant, PyObject *rule,
                               int reason, PyObject *experiment, int experiment_reason,
                               int in_experiment, PyObject *hv) {
    o->value = value;
    o->variant = variant;
    o->rule = rule;
    o->reason = reason;
    o->experiment = experiment;
    o->experiment_reason = experiment_reason;
    o->in_experiment = in_experiment;
    Py_XSETREF(o->hv, hv);
}

static inline int is_true(PyObject *o) { return o == Py_True; }

/* _run without forced variations, holdouts or participation limits (those have no plan).
 * Returns a reason index (>= 0), -1 on error; *hv gets an owned reference or NULL. */
static int run_exp(PyObject *e, PyObject *attrs, Py_ssize_t *index, PyObject **hv) {
    *index = -1;
    *hv = NULL;
    if (is_true(PyTuple_GET_ITEM(e, E_ROLLED_BACK)))
        return PyTuple_GET_SIZE(PyTuple_GET_ITEM(e, E_VKEYS)) ? R_ROLLED_BACK : R_NO_VARIANTS;
    if (!is_true(PyTuple_GET_ITEM(e, E_RUNNING))) return R_EXPERIMENT_NOT_RUNNING;
    PyObject *h = hash_value(attrs, PyTuple_GET_ITEM(e, E_ATTR), PyTuple_GET_ITEM(e, E_FALLBACK));
    if (h == NULL) return -1;
    if (PyUnicode_GET_LENGTH(h) == 0) {
        Py_DECREF(h);
        return R_TARGETING_MISMATCH;
    }
    *hv = h;
    PyObject *cond = PyTuple_GET_ITEM(e, E_COND);
    if (cond != Py_None) {
        int t = cond_eval(cond, attrs);
        if (t < 0) return -1;
        if (!t) return R_TARGETING_MISMATCH;
    }
    PyObject *ns = PyTuple_GET_ITEM(e, E_NS);
    if (ns != Py_None) {
        double n;
        gb_hash(PyTuple_GET_ITEM(ns, 0), h, 1, &n);
        if (!(PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(ns, 1)) <= n && n < PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(ns, 2))))
            return R_LAYER_CONFLICT;
    }
    PyObject *filters = PyTuple_GET_ITEM(e, E_FILTERS);
    if (PyTuple_GET_SIZE(filters)) {
        int f = filtered_out(filters, attrs);
        if (f < 0) return -1;
        if (f) return R_LAYER_CONFLICT;
    }
    if (!is_true(PyTuple_GET_ITEM(e, E_ASSIGNABLE))) return R_NO_VARIANTS;
    double n;
    if (!gb_hash(PyTuple_GET_ITEM(e, E_SEED), h, PyLong_AsLong(PyTuple_GET_ITEM(e, E_VERSION)), &n))
        return R_OUTSIDE_TRAFFIC_ALLOCATION;
    int i = in_ranges(n, PyTuple_GET_ITEM(e, E_RANGES));
    if (i < 0) return R_OUTSIDE_TRAFFIC_ALLOCATION;
    *index = i;
    return is_true(PyTuple_GET_ITEM(PyTuple_GET_ITEM(e, E_PASSTHROUGH), i)) ? R_PASSTHROUGH
                                                                              : R_EXPERIMENT_ASSIGNED;
}

/* _run_sticky; BAIL when the fallback attribute's document would be merged in. */
static int run_sticky(PyObject *e, PyObject *attrs, PyObject *docs, Py_ssize_t *index, PyObject **hv,
                      int *from_own_doc) {
    if (is_true(PyTuple_GET_ITEM(e, E_ROLLED_BACK)) || !is_true(PyTuple_GET_ITEM(e, E_RUNNING)))
        return run_exp(e, attrs, index, hv);
    *index = -1;
    *hv = NULL;
    PyObject *attr = PyTuple_GET_ITEM(e, E_ATTR);
    PyObject *fallback = PyTuple_GET_ITEM(e, E_FALLBACK);
    PyObject *h = hash_value(attrs, attr, fallback);
    if (h == NULL) return -1;
    if (PyUnicode_GET_LENGTH(h) == 0) {
        Py_DECREF(h);
        return R_TARGETING_MISMATCH;
    }
    *hv = h;
    PyObject *cond = PyTuple_GET_ITEM(e, E_COND);
    if (cond != Py_None) {
        int t = cond_eval(cond, attrs);
        if (t < 0) return -1;
        if (!t) return R_TARGETING_MISMATCH;
    }
    PyObject *filters = PyTuple_GET_ITEM(e, E_FILTERS);
    if (PyTuple_GET_SIZE(filters)) {
        int f = filtered_out(filters, attrs);
        if (f < 0) return -1;
        if (f) return R_LAYER_CONFLICT;
    }
    PyObject *assignments = NULL;
    /* Without a fallback, the hash value is the hash attribute's own. */
    PyObject *own = fallback == Py_None ? Py_NewRef(h) : one_hash_value(attrs, attr);
    if (own == NULL) return -1;
    if (PyUnicode_GET_LENGTH(own)) {
        PyObject *key = PyTuple_Pack(2, attr, own);
        if (key == NULL) {
            Py_DECREF(own);
            return -1;
        }
        assignments = mapping_get(docs, key);
        Py_DECREF(key);
    } else {
        assignments = Py_NewRef(Py_None);
    }
    Py_DECREF(own);
    if (assignments == NULL) return -1;
    if (fallback != Py_None) {
        PyObject *other = one_hash_value(attrs, fallback);
        if (other == NULL) goto error;
        if (PyUnicode_GET_LENGTH(other)) {
            PyObject *key = PyTuple_Pack(2, fallback, other);
            PyObject *extra = key == NULL ? NULL : mapping_get(docs, key);
            Py_XDECREF(key);
            Py_DECREF(other);
            if (extra == NULL) goto error;
            int t = PyObject_IsTrue(extra);
            Py_DECREF(extra);
            if (t < 0) goto error;
            if (t) {
                Py_DECREF(assignments);
                return BAIL;
            }
        } else {
            Py_DECREF(other);
        }
    }
    int blocked = 0;
    int have = assignments == Py_None ? 0 : PyObject_IsTrue(assignments);
    if (have < 0) goto error;
    if (have) {
        PyObject *blocked_keys = PyTuple_GET_ITEM(e, E_BLOCKED);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(blocked_keys); i++) {
            int c = PySequence_Contains(assignments, PyTuple_GET_ITEM(blocked_keys, i));
            if (c < 0) goto error;
            if (c) {
                blocked = 1;
                break;
            }
        }
        if (!blocked) {
            PyObject *stored = mapping_get(assignments, PyTuple_GET_ITEM(e, E_STICKY_KEY));
            if (stored == NULL) goto error;
            if (stored != Py_None) {
                PyObject *vkeys = PyTuple_GET_ITEM(e, E_VKEYS);
                Py_ssize_t n = PyTuple_GET_SIZE(vkeys);
                for (Py_ssize_t i = 0; i < n; i++) {
                    int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(vkeys, i), stored, Py_EQ);
                    if (eq < 0) {
                        Py_DECREF(stored);
                        goto error;
                    }
                    if (eq) {
                        Py_DECREF(stored);
                        Py_DECREF(assignments);
                        *index = i;
                        /* Without a fallback, these are the hash attribute's own document's:
                         * it holds this assignment, so there is nothing to store. */
                        *from_own_doc = fallback == Py_None;
                        return is_true(PyTuple_GET_ITEM(PyTuple_GET_ITEM(e, E_PASSTHROUGH), i))
                                   ? R_PASSTHROUGH
                                   : R_STICKY_BUCKET;
                    }
                }
            }
            Py_DECREF(stored);
        }
    }
    Py_DECREF(assignments);
    Py_CLEAR(*hv);
    int reason = run_exp(e, attrs, index, hv);
    if (blocked && (reason == R_EXPERIMENT_ASSIGNED || reason == R_OUTSIDE_TRAFFIC_ALLOCATION ||
                    reason == R_PASSTHROUGH)) {
        *index = -1;
        return R_STICKY_BUCKET_BLOCKED;
    }
    return reason;
error:
    Py_XDECREF(assignments);
    return -1;
}

static int eval_flag(PyObject *plan, PyObject *attrs, PyObject *docs, PyObject **path, int depth, Outcome *o);

enum { V_PASS, V_FAIL, V_GATE, V_CYCLE };

/* _parents_verdict: a verdict (>= 0), -1 error, BAIL. */
static int parents_verdict(PyObject *parents, PyObject *attrs, PyObject *key, PyObject **path,
                           int depth, PyObject *docs) {
    if (depth + 1 >= MAX_PATH) return BAIL;
    path[depth] = key;
    int sub_depth = depth + 1;
    Py_ssize_t n = PyTuple_GET_SIZE(parents);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyTuple_GET_ITEM(parents, i);
        PyObject *target = PyTuple_GET_ITEM(p, P_TARGET);
        PyObject *value = Py_None;
        Outcome sub = {0};
        if (target != Py_None) {
            PyObject *target_key = PyTuple_GET_ITEM(p, P_TARGET_KEY);
            for (int j = 0; j < sub_depth; j++) {
                int eq = PyObject_RichCompareBool(path[j], target_key, Py_EQ);
                if (eq < 0) return -1;
                if (eq) return V_CYCLE;
            }
            int rc = eval_flag(target, attrs, docs, path, sub_depth, &sub);
            Py_CLEAR(sub.hv);
            if (rc < 0) return rc;
            if (sub.reason == R_PREREQUISITE_CYCLE) return V_CYCLE;
            value = sub.value;
        }
        PyObject *cond = PyTuple_GET_ITEM(p, P_COND);
        if (cond != Py_None && PyLong_AsLong(PyTuple_GET_ITEM(cond, 0)) == C_PATH &&
            PyUnicode_Check(PyTuple_GET_ITEM(cond, 2)) &&
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(cond, 2), "value") == 0) {
            /* The path "value" into {"value": value} is the value itself: no dict. */
            int t = cond_eval(PyTuple_GET_ITEM(cond, 3), value);
            if (t < 0) return -1;
            if (!t) return is_true(PyTuple_GET_ITEM(p, P_GATE)) ? V_GATE : V_FAIL;
        } else if (cond != Py_None) {
            PyObject *wrapped = PyDict_New();
            if (wrapped == NULL) return -1;
            if (PyDict_SetItem(wrapped, s_value, value) < 0) {
                Py_DECREF(wrapped);
                return -1;
            }
            int t = cond_eval(cond, wrapped);
            Py_DECREF(wrapped);
            if (t < 0) return -1;
            if (!t) return is_true(PyTuple_GET_ITEM(p, P_GATE)) ? V_GATE : V_FAIL;
        }
    }
    return V_PASS;
}

/* _evaluate for a flag with a plan: 0 with *o set (o->hv owned), -1 error, BAIL. */
static int eval_flag(PyObject *plan, PyObject *attrs, PyObject *docs, PyObject **path, int depth, Outcome *o) {
    PyObject *dflt = PyTuple_GET_ITEM(plan, F_DEFAULT);
    if (!is_true(PyTuple_GET_ITEM(plan, F_ENABLED))) {
        outcome_set(o, dflt, NULL, NULL, R_FLAG_OFF, NULL, -1, 0, NULL);
        return 0;
    }
    int experiment_reason = -1;
    PyObject *experiment_key = NULL;
    PyObject *rules = PyTuple_GET_ITEM(plan, F_RULES);
    Py_ssize_t count = PyTuple_GET_SIZE(rules);
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *rule = PyTuple_GET_ITEM(rules, r);
        PyObject *rule_id = PyTuple_GET_ITEM(rule, RU_ID);
        PyObject *parents = PyTuple_GET_ITEM(rule, RU_PARENTS);
        if (PyTuple_GET_SIZE(parents)) {
            int v = parents_verdict(parents, attrs, PyTuple_GET_ITEM(plan, F_KEY), path, depth, docs);
            if (v < 0) return v;
            if (v == V_FAIL) continue;
            if (v != V_PASS) {
                outcome_set(o, Py_None, NULL, rule_id, v == V_GATE ? R_PREREQUISITE_GATE : R_PREREQUISITE_CYCLE,
                            experiment_key, experiment_reason, 0, NULL);
                return 0;
            }
        }
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(rule, RU_KIND));
        if (kind == K_FORCE) {
            PyObject *cond = PyTuple_GET_ITEM(rule, FO_COND);
            int t = cond == Py_None ? 1 : cond_eval(cond, attrs);
            if (t < 0) return -1;
            if (!t) continue;
            PyObject *filters = PyTuple_GET_ITEM(rule, FO_FILTERS);
            if (PyTuple_GET_SIZE(filters)) {
                int f = filtered_out(filters, attrs);
                if (f < 0) return -1;
                if (f) continue;
            }
            outcome_set(o, PyTuple_GET_ITEM(rule, FO_VALUE), NULL, rule_id, R_FORCED, experiment_key,
                        experiment_reason, 0, NULL);
            return 0;
        }
        if (kind == K_ROLLOUT) {
            PyObject *cond = PyTuple_GET_ITEM(rule, RO_COND);
            if (cond != Py_None) {
                int t = cond_eval(cond, attrs);
                if (t < 0) return -1;
                if (!t) continue;
            }
            PyObject *filters = PyTuple_GET_ITEM(rule, RO_FILTERS);
            if (PyTuple_GET_SIZE(filters)) {
                int f = filtered_out(filters, attrs);
                if (f < 0) return -1;
                if (f) continue;
            }
            PyObject *bounds = PyTuple_GET_ITEM(rule, RO_RANGE);
            double coverage = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(rule, RO_COVERAGE));
            if (bounds == Py_None && coverage <= 0) continue;
            PyObject *h = hash_value(attrs, PyTuple_GET_ITEM(rule, RO_ATTR), PyTuple_GET_ITEM(rule, RO_FALLBACK));
            if (h == NULL) return -1;
            if (PyUnicode_GET_LENGTH(h) == 0) {
                Py_DECREF(h);
                continue;
            }
            double n;
            long version = PyLong_AsLong(PyTuple_GET_ITEM(rule, RO_VERSION));
            if (bounds != Py_None) {
                if (!gb_hash(PyTuple_GET_ITEM(rule, RO_SEED), h, version, &n) ||
                    !(PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(bounds, 0)) <= n &&
                      n < PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(bounds, 1)))) {
                    Py_DECREF(h);
                    continue;
                }
            } else if (coverage < 1) {
                if (!gb_hash(PyTuple_GET_ITEM(rule, RO_SEED), h, version, &n) || n > coverage) {
                    Py_DECREF(h);
                    continue;
                }
            }
            outcome_set(o, PyTuple_GET_ITEM(rule, RO_VALUE), NULL, rule_id, R_ROLLOUT, experiment_key,
                        experiment_reason, 0, h);
            return 0;
        }
        /* An experiment rule. */
        PyObject *e = PyTuple_GET_ITEM(rule, EX_PLAN);
        int reason;
        PyObject *key;
        if (e == Py_None) {
            reason = R_NO_ACTIVE_EXPERIMENT;
            key = PyTuple_GET_ITEM(rule, EX_KEY);
        } else {
            Py_ssize_t index;
            PyObject *hv;
            int from_own_doc = 0;
            reason = is_true(PyTuple_GET_ITEM(e, E_STICKY))
                         ? run_sticky(e, attrs, docs, &index, &hv, &from_own_doc)
                         : run_exp(e, attrs, &index, &hv);
            if (reason < 0) {
                return reason;
            }
            if (reason == R_EXPERIMENT_ASSIGNED || reason == R_STICKY_BUCKET) {
                outcome_set(o, PyTuple_GET_ITEM(PyTuple_GET_ITEM(e, E_VVALUES), index),
                            PyTuple_GET_ITEM(PyTuple_GET_ITEM(e, E_VKEYS), index), rule_id, reason,
                            PyTuple_GET_ITEM(e, E_KEY), experiment_reason, 1, hv);
                o->assigned_by = e;
                o->stored = reason == R_STICKY_BUCKET && from_own_doc;
                return 0;
            }
            Py_XDECREF(hv);
            if (reason == R_ROLLED_BACK) {
                outcome_set(o, PyTuple_GET_ITEM(e, E_CONTROL), NULL, rule_id, R_ROLLED_BACK,
                            PyTuple_GET_ITEM(e, E_KEY), experiment_reason, 0, NULL);
                return 0;
            }
            key = PyTuple_GET_ITEM(e, E_KEY);
        }
        if (experiment_reason < 0) {
            experiment_reason = reason;
            experiment_key = key;
        }
    }
    outcome_set(o, dflt, NULL, NULL, R_DEFAULT, experiment_key, experiment_reason, 0, NULL);
    return 0;
}

/* Whether _sticky_write may have something to store (1), or surely not (0; -1 error):
 * not for an experiment without sticky bucketing, nor when the document already holds
 * the assignment (_sticky_assignment). 1 hands the decision to _finish_sticky. */
static int needs_sticky_write(PyObject *e, PyObject *variant, PyObject *attrs, PyObject *docs) {
    if (e == NULL || variant == NULL || !is_true(PyTuple_GET_ITEM(e, E_STICKY))) return 0;
    PyObject *attribute = PyTuple_GET_ITEM(e, E_ATTR);
    PyObject *value = one_hash_value(attrs, attribute);
    if (value == NULL) return -1;
    PyObject *fallback = PyTuple_GET_ITEM(e, E_FALLBACK);
    if (PyUnicode_GET_LENGTH(value) == 0 && fallback != Py_None) {
        attribute = fallback;
        Py_SETREF(value, one_hash_value(attrs, attribute));
        if (value == NULL) return -1;
    }
    PyObject *key = PyTuple_Pack(2, attribute, value);
    Py_DECREF(value);
    if (key == NULL) return -1;
    PyObject *doc = mapping_get(docs, key);
    Py_DECREF(key);
    if (doc == NULL) return -1;
    int needs = 1;
    if (doc != Py_None) {
        PyObject *stored = mapping_get(doc, PyTuple_GET_ITEM(e, E_STICKY_KEY));
        if (stored == NULL) {
            Py_DECREF(doc);
            return -1;
        }
        int eq = PyObject_RichCompareBool(stored, variant, Py_EQ);
        Py_DECREF(stored);
        if (eq < 0) needs = -1;
        else if (eq) needs = 0;
    }
    Py_DECREF(doc);
    return needs;
}

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
