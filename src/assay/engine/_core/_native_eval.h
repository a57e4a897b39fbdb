/* The evaluation half of the compiled decide path (``_native.c`` includes it): GrowthBook's
 * hash, conditions from their described shapes, and ``_decide._evaluate`` over a flag's
 * plan. Static functions only, one compilation unit with ``_native.c``, whose module state
 * (``py_hashable``, ``missing``, the interned names) and plan layouts it uses.
 */
#ifndef ASSAY_NATIVE_EVAL_H
#define ASSAY_NATIVE_EVAL_H

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

/* _run_sticky (its order); BAIL when the fallback attribute's document would be merged in. */
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
    /* The filters before the stored assignment, the condition after it (a subject keeps
     * its variant when targeting changes), as GrowthBook's JavaScript SDK orders them. */
    PyObject *filters = PyTuple_GET_ITEM(e, E_FILTERS);
    if (PyTuple_GET_SIZE(filters)) {
        int f = filtered_out(filters, attrs);
        if (f < 0) return -1;
        if (f) {
            /* Out either way; the reason is run_exp's (the condition first). */
            PyObject *cond = PyTuple_GET_ITEM(e, E_COND);
            int t = cond == Py_None ? 1 : cond_eval(cond, attrs);
            if (t < 0) return -1;
            return t ? R_LAYER_CONFLICT : R_TARGETING_MISMATCH;
        }
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

#endif  /* ASSAY_NATIVE_EVAL_H */
