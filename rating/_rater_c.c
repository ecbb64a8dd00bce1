/* The rater's hot path in C: rating/rater.py's `Rater.authorise` and `Rater.rate`, everyday shape only.

Why: authorise + rate is ~40 bytecode-heavy lines per call; in Python the interpreter alone costs
~1.6 us per call with the table in cache, so 500k calls/s on one core is out of reach whatever the
table layout (benchmarks/RESULTS.md, rater section). Here the same steps run on the same data: the
package's CompiledTable dicts, the entry and shape tuples, the plan's integer terms.

Contract: `authorise(terms, reference, call, *args)` and `rate(terms, reference, call, *args)` return
exactly what the Python method `reference(call, *args)` returns, and call it themselves for every
input they are unsure of: keyword arguments, a call that is not a plain CallToRate, inbound /
internal / on-net calls, refusals, blocked categories, billing ends, daily caps, non-prepaid money
checks, numbers beyond 64 bits. So the Python methods stay the reference, and the only place that
refuses; tests/rating/test_rater_c.py checks the two agree on generated setups and calls.

Integer arithmetic: the Python expressions are evaluated in 128-bit integers with Python's floor
division; every operand is a 64-bit integer (else: reference), so no product overflows 127 bits,
and a result beyond 64 bits goes to the reference too. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef __int128 i128;

static PyTypeObject *Authorisation = NULL; /* rating.events.Authorisation (NamedTuple) */
static PyTypeObject *CallRated = NULL;     /* rating.events.CallRated (NamedTuple) */
static PyTypeObject *CallToRate = NULL;    /* rating.model.CallToRate (slots dataclass) */
static PyObject *OUTBOUND, *FORWARDED, *INTERNAL_PRICING, *UNANSWERED;
/* CallToRate's slot offsets, read from its member descriptors at setup */
static Py_ssize_t OFF_DIRECTION, OFF_ACCOUNT, OFF_DESTINATION, OFF_ON_NET, OFF_ANSWERED, OFF_DURATION;

/* The per-account terms tuple built by rater._Plan.fast_terms(); indexes below. */
enum {
    T_PIVOT,    /* int: pivot length P */
    T_PDICT,    /* dict: the pivot dict */
    T_LOWER,    /* tuple of (length, dict), longest first */
    T_UPPER,    /* tuple of (length, dict), longest first */
    T_BLOCKS,   /* int: the account's block mask */
    T_MODE,     /* int: MODE_* */
    T_CONNECT,  /* int: sell connect fee, micros */
    T_INITIAL,  /* int: package pulse */
    T_SUBSEQ,   /* int */
    T_BUNDLE,   /* int: free minutes per cycle */
    T_INTERNAL, /* bool: internal customer */
    T_CUSTOMER, /* str */
    T_PACKAGE,  /* str */
    T_CURRENCY, /* str */
    T_SIZE
};
enum { MODE_REFERENCE = 0, MODE_PREPAID = 1, MODE_UNLIMITED = 2 };

static inline PyObject *slot(PyObject *obj, Py_ssize_t offset) { return *(PyObject **)((char *)obj + offset); }

static inline int fits(i128 v) { return v >= (i128)LLONG_MIN && v <= (i128)LLONG_MAX; }

/* Python's floor division (b != 0); in 64 bits when both fit (a 128-bit division costs ~5x more) */
static inline i128 floordiv(i128 a, i128 b) {
    if (fits(a) && fits(b) && !(a == LLONG_MIN && b == -1)) {
        long long x = (long long)a, y = (long long)b, q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) q--;
        return q;
    }
    i128 q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* A plain int within 64 bits into *out; 0 when it is anything else (the caller then defers). */
static inline int i64(PyObject *o, long long *out) {
    if (!PyLong_CheckExact(o)) return 0;
#if PY_VERSION_HEX < 0x030C0000 && PyLong_SHIFT == 30
    /* CPython <= 3.11 layout: sign in ob_size, 30-bit digits; the common one- and two-digit ints
       read directly (PyLong_AsLongLongAndOverflow was ~12 % of the C path's instructions) */
    const digit *d = ((PyLongObject *)o)->ob_digit;
    switch (Py_SIZE(o)) {
        case 0: *out = 0; return 1;
        case 1: *out = (long long)d[0]; return 1;
        case -1: *out = -(long long)d[0]; return 1;
        case 2: *out = ((long long)d[1] << PyLong_SHIFT) | d[0]; return 1;
        case -2: *out = -(((long long)d[1] << PyLong_SHIFT) | d[0]); return 1;
        default: break;
    }
#endif
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

static PyObject *defer(PyObject *reference, PyObject *const *args, size_t nargs, PyObject *kwnames) {
    return PyObject_Vectorcall(reference, args, nargs, kwnames);
}

/* number[:n] as a new reference (the number itself when n >= its length, as Python's slice) */
static inline PyObject *head(PyObject *number, Py_ssize_t n) {
    if (n >= PyUnicode_GET_LENGTH(number)) return Py_NewRef(number);
    return PyUnicode_Substring(number, 0, n);
}

/* CompiledTable.find's probes: a borrowed entry, Py_None (no rated prefix: reference), or NULL (error) */
static PyObject *find(PyObject *terms, PyObject *number) {
    long long pivot;
    if (!i64(PyTuple_GET_ITEM(terms, T_PIVOT), &pivot)) return Py_None;
    PyObject *key = head(number, (Py_ssize_t)pivot);
    if (key == NULL) return NULL;
    PyObject *entry = PyDict_GetItemWithError(PyTuple_GET_ITEM(terms, T_PDICT), key);
    Py_DECREF(key);
    if (entry == NULL && PyErr_Occurred()) return NULL;
    if (entry != NULL && (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 6)) return Py_None;
    if (entry == NULL || PyTuple_GET_ITEM(entry, 5) != Py_False) {
        PyObject *probes = PyTuple_GET_ITEM(terms, entry == NULL ? T_LOWER : T_UPPER);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(probes); i++) {
            PyObject *probe = PyTuple_GET_ITEM(probes, i);
            long long n;
            if (!i64(PyTuple_GET_ITEM(probe, 0), &n)) return Py_None;
            key = head(number, (Py_ssize_t)n);
            if (key == NULL) return NULL;
            PyObject *hit = PyDict_GetItemWithError(PyTuple_GET_ITEM(probe, 1), key);
            Py_DECREF(key);
            if (hit == NULL && PyErr_Occurred()) return NULL;
            if (hit != NULL) {
                entry = hit;
                break;
            }
        }
    }
    if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 6 ||
        PyTuple_GET_ITEM(entry, 0) == Py_None)
        return Py_None;
    PyObject *shape = PyTuple_GET_ITEM(entry, 4);
    if (!PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != 10) return Py_None;
    return entry;
}

/* The account's terms (borrowed), or NULL with no error set: the reference decides. */
static PyObject *terms_of(PyObject *plans, PyObject *call) {
    PyObject *account = slot(call, OFF_ACCOUNT);
    if (account == NULL || !PyUnicode_CheckExact(account)) return NULL;
    PyObject *terms = PyDict_GetItemWithError(plans, account);
    if (terms == NULL || !PyTuple_CheckExact(terms) || PyTuple_GET_SIZE(terms) != T_SIZE) {
        PyErr_Clear();
        return NULL;
    }
    return terms;
}

static PyObject *build(PyTypeObject *type, PyObject **items, Py_ssize_t n) {
    PyObject *result = type->tp_alloc(type, n);
    if (result == NULL) {
        for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(items[i]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(result, i, items[i]);
    return result;
}

/* authorise(plans, reference, call, balance=0, spent_today=0, free_minutes_left=0, account_spent=0) */
static PyObject *authorise(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (nargs < 3) {
        PyErr_SetString(PyExc_TypeError, "authorise(plans, reference, call, ...)");
        return NULL;
    }
    PyObject *plans = args[0], *reference = args[1], *call = args[2];
    PyObject *const *rargs = args + 2;
    size_t rn = (size_t)(nargs - 2);
    if (kwnames != NULL || nargs > 7 || Py_TYPE(call) != CallToRate || !PyDict_CheckExact(plans))
        return defer(reference, rargs, rn, kwnames);
    PyObject *direction = slot(call, OFF_DIRECTION);
    if ((direction != OUTBOUND && direction != FORWARDED) || slot(call, OFF_ON_NET) != Py_False)
        return defer(reference, rargs, rn, NULL);
    PyObject *terms = terms_of(plans, call);
    PyObject *number = slot(call, OFF_DESTINATION);
    if (terms == NULL || number == NULL || !PyUnicode_CheckExact(number)) return defer(reference, rargs, rn, NULL);
    PyObject *route = find(terms, number);
    if (route == NULL) return NULL;
    if (route == Py_None) return defer(reference, rargs, rn, NULL);
    PyObject *shape = PyTuple_GET_ITEM(route, 4);
    long long flags, blocks, mode, sp2;
    if (!i64(PyTuple_GET_ITEM(shape, 9), &flags) || !i64(PyTuple_GET_ITEM(terms, T_BLOCKS), &blocks) ||
        !i64(PyTuple_GET_ITEM(terms, T_MODE), &mode) || !i64(PyTuple_GET_ITEM(route, 3), &sp2) ||
        (flags & blocks) || mode == MODE_REFERENCE)
        return defer(reference, rargs, rn, NULL);
    PyObject *max_seconds = Py_None;
    if (sp2 != 0 && PyTuple_GET_ITEM(terms, T_INTERNAL) != Py_True && mode == MODE_PREPAID) {
        /* `if plan.simple_prepaid and balance_micros > 0:` ... */
        long long balance = 0, free = 0, connect, q, q2, initial, subsequent, bundle;
        if ((nargs > 3 && !i64(args[3], &balance)) || (nargs > 5 && !i64(args[5], &free)) ||
            !i64(PyTuple_GET_ITEM(terms, T_CONNECT), &connect) || !i64(PyTuple_GET_ITEM(shape, 7), &q) ||
            !i64(PyTuple_GET_ITEM(shape, 8), &q2) || !i64(PyTuple_GET_ITEM(terms, T_INITIAL), &initial) ||
            !i64(PyTuple_GET_ITEM(terms, T_SUBSEQ), &subsequent) ||
            !i64(PyTuple_GET_ITEM(terms, T_BUNDLE), &bundle) || sp2 <= 0 || subsequent <= 0)
            return defer(reference, rargs, rn, NULL);
        /* the other arguments are only passed on: the reference checks their type where it reads them */
        if (balance <= 0) return defer(reference, rargs, rn, NULL);
        i128 budget = (i128)balance - connect;
        if (budget < 0) return defer(reference, rargs, rn, NULL);
        i128 raw = floordiv((i128)q2 * budget + q - 1, sp2);
        if (raw < initial) return defer(reference, rargs, rn, NULL);
        i128 paid = raw - (raw - initial) % subsequent; /* both >= 0 here: C's % is Python's */
        if (free > 0 && bundle) paid += (i128)free * 60;
        if (!fits(paid)) return defer(reference, rargs, rn, NULL);
        max_seconds = PyLong_FromLongLong((long long)paid);
        if (max_seconds == NULL) return NULL;
    } else if (mode != MODE_UNLIMITED && sp2 != 0 && PyTuple_GET_ITEM(terms, T_INTERNAL) != Py_True) {
        return defer(reference, rargs, rn, NULL);
    } else {
        Py_INCREF(max_seconds);
    }
    PyObject *items[4] = {Py_NewRef(Py_True), Py_NewRef(Py_None), max_seconds, Py_NewRef(route)};
    return build(Authorisation, items, 4);
}

/* rate(plans, reference, call, free_minutes_left=0, route=None) */
static PyObject *rate(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (nargs < 3) {
        PyErr_SetString(PyExc_TypeError, "rate(plans, reference, call, ...)");
        return NULL;
    }
    PyObject *plans = args[0], *reference = args[1], *call = args[2];
    PyObject *const *rargs = args + 2;
    size_t rn = (size_t)(nargs - 2);
    if (kwnames != NULL || nargs > 5 || Py_TYPE(call) != CallToRate || !PyDict_CheckExact(plans))
        return defer(reference, rargs, rn, kwnames);
    PyObject *direction = slot(call, OFF_DIRECTION);
    PyObject *answered = slot(call, OFF_ANSWERED);
    if ((direction != OUTBOUND && direction != FORWARDED) || slot(call, OFF_ON_NET) != Py_False ||
        (answered != Py_True && answered != Py_False))
        return defer(reference, rargs, rn, NULL);
    PyObject *terms = terms_of(plans, call);
    if (terms == NULL) return defer(reference, rargs, rn, NULL);
    PyObject *route = nargs > 4 ? args[4] : Py_None;
    if (route == Py_None) {
        PyObject *number = slot(call, OFF_DESTINATION);
        if (number == NULL || !PyUnicode_CheckExact(number)) return defer(reference, rargs, rn, NULL);
        route = find(terms, number);
        if (route == NULL) return NULL;
        if (route == Py_None) return defer(reference, rargs, rn, NULL);
    }
    if (!PyTuple_CheckExact(route) || PyTuple_GET_SIZE(route) != 6) return defer(reference, rargs, rn, NULL);
    PyObject *shape = PyTuple_GET_ITEM(route, 4);
    if (!PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != 10) return defer(reference, rargs, rn, NULL);
    PyObject *pricing = PyTuple_GET_ITEM(shape, 1);
    i128 billed = 0, used = 0, cost = 0, price = 0;
    if (answered == Py_False) {
        pricing = UNANSWERED;
    } else {
        long long duration, free = 0, cp2, sp2, cq, cq2, ci, cs, cconn, sq, sq2, pi, ps, pconn, bundle;
        PyObject *d = slot(call, OFF_DURATION);
        if (d == NULL || !i64(d, &duration) || (nargs > 3 && !i64(args[3], &free)) ||
            !i64(PyTuple_GET_ITEM(route, 2), &cp2) || !i64(PyTuple_GET_ITEM(route, 3), &sp2) ||
            !i64(PyTuple_GET_ITEM(shape, 2), &cq) || !i64(PyTuple_GET_ITEM(shape, 3), &cq2) ||
            !i64(PyTuple_GET_ITEM(shape, 4), &ci) || !i64(PyTuple_GET_ITEM(shape, 5), &cs) ||
            !i64(PyTuple_GET_ITEM(shape, 6), &cconn) || !i64(PyTuple_GET_ITEM(shape, 7), &sq) ||
            !i64(PyTuple_GET_ITEM(shape, 8), &sq2) || !i64(PyTuple_GET_ITEM(terms, T_INITIAL), &pi) ||
            !i64(PyTuple_GET_ITEM(terms, T_SUBSEQ), &ps) || !i64(PyTuple_GET_ITEM(terms, T_CONNECT), &pconn) ||
            !i64(PyTuple_GET_ITEM(terms, T_BUNDLE), &bundle) || cs <= 0 || cq2 <= 0 || ps <= 0 || sq2 <= 0)
            return defer(reference, rargs, rn, NULL);
        /* cost: carrier increments and carrier connect fee */
        i128 cb;
        if (duration > ci)
            cb = cs == 1 ? duration : ci - floordiv((i128)ci - duration, cs) * cs;
        else
            cb = duration > 0 ? ci : 0;
        cost = floordiv((i128)cp2 * cb + cq, cq2) + cconn;
        if (PyTuple_GET_ITEM(terms, T_INTERNAL) == Py_True) {
            sp2 = 0;
            pricing = INTERNAL_PRICING;
        }
        i128 rest = duration;
        if (sp2 && bundle && free > 0 && duration > 0) {
            i128 need = floordiv((i128)duration + 59, 60);
            if (need <= free) {
                used = need;
                rest = 0;
            } else {
                used = free;
                rest = (i128)duration - (i128)free * 60;
            }
        }
        if (rest > pi)
            billed = ps == 1 ? rest : pi - floordiv((i128)pi - rest, ps) * ps;
        else
            billed = rest > 0 ? pi : 0;
        price = sp2 ? floordiv((i128)sp2 * billed + sq, sq2) + pconn : 0;
        if (!fits(billed) || !fits(used) || !fits(cost) || !fits(price)) return defer(reference, rargs, rn, NULL);
    }
    PyObject *items[13] = {
        Py_NewRef(direction),
        Py_NewRef(PyTuple_GET_ITEM(terms, T_CUSTOMER)),
        Py_NewRef(slot(call, OFF_ACCOUNT)),
        Py_NewRef(PyTuple_GET_ITEM(terms, T_PACKAGE)),
        Py_NewRef(PyTuple_GET_ITEM(terms, T_CURRENCY)),
        Py_NewRef(PyTuple_GET_ITEM(route, 0)),
        Py_NewRef(PyTuple_GET_ITEM(route, 1)),
        Py_NewRef(PyTuple_GET_ITEM(shape, 0)),
        Py_NewRef(pricing),
        PyLong_FromLongLong((long long)billed),
        PyLong_FromLongLong((long long)used),
        PyLong_FromLongLong((long long)cost),
        PyLong_FromLongLong((long long)price),
    };
    for (int i = 9; i < 13; i++)
        if (items[i] == NULL) {
            for (int j = 0; j < 13; j++) Py_XDECREF(items[j]);
            return NULL;
        }
    return build(CallRated, items, 13);
}

static int offset_of(PyObject *cls, const char *name, Py_ssize_t *out) {
    PyObject *descr = PyObject_GetAttrString(cls, name);
    if (descr == NULL) return -1;
    int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
    if (ok) *out = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_DECREF(descr);
    if (!ok) PyErr_Format(PyExc_TypeError, "CallToRate.%s is not a slot", name);
    return ok ? 0 : -1;
}

static int tuple_class(PyObject *cls, Py_ssize_t fields, const char *what) {
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple subclass", what);
        return -1;
    }
    PyObject *names = PyObject_GetAttrString(cls, "_fields");
    if (names == NULL) return -1;
    Py_ssize_t n = PyObject_Length(names);
    Py_DECREF(names);
    if (n != fields) {
        PyErr_Format(PyExc_ValueError, "%s has %zd fields, this code fills %zd", what, n, fields);
        return -1;
    }
    return 0;
}

/* setup(Authorisation, CallRated, CallToRate, Direction.OUTBOUND, Direction.FORWARDED,
         Pricing.INTERNAL, Pricing.UNANSWERED) */
static PyObject *setup(PyObject *module, PyObject *args) {
    PyObject *auth, *rated, *call, *out, *fwd, *internal, *unanswered;
    if (!PyArg_ParseTuple(args, "OOO!OOOO", &auth, &rated, &PyType_Type, &call, &out, &fwd, &internal,
                          &unanswered))
        return NULL;
    if (tuple_class(auth, 4, "Authorisation") < 0 || tuple_class(rated, 13, "CallRated") < 0) return NULL;
    if (offset_of(call, "direction", &OFF_DIRECTION) < 0 || offset_of(call, "account_id", &OFF_ACCOUNT) < 0 ||
        offset_of(call, "destination", &OFF_DESTINATION) < 0 || offset_of(call, "on_net", &OFF_ON_NET) < 0 ||
        offset_of(call, "answered", &OFF_ANSWERED) < 0 || offset_of(call, "duration", &OFF_DURATION) < 0)
        return NULL;
    Py_XSETREF(Authorisation, (PyTypeObject *)Py_NewRef(auth));
    Py_XSETREF(CallRated, (PyTypeObject *)Py_NewRef(rated));
    Py_XSETREF(CallToRate, (PyTypeObject *)Py_NewRef(call));
    Py_XSETREF(OUTBOUND, Py_NewRef(out));
    Py_XSETREF(FORWARDED, Py_NewRef(fwd));
    Py_XSETREF(INTERNAL_PRICING, Py_NewRef(internal));
    Py_XSETREF(UNANSWERED, Py_NewRef(unanswered));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"authorise", (PyCFunction)(void (*)(void))authorise, METH_FASTCALL | METH_KEYWORDS,
     "authorise(plans, reference, call, *args) -> what reference(call, *args) returns."},
    {"rate", (PyCFunction)(void (*)(void))rate, METH_FASTCALL | METH_KEYWORDS,
     "rate(plans, reference, call, *args) -> what reference(call, *args) returns."},
    {"setup", setup, METH_VARARGS,
     "setup(Authorisation, CallRated, CallToRate, OUTBOUND, FORWARDED, Pricing.INTERNAL, Pricing.UNANSWERED)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "rating._rater_c", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rater_c(void) { return PyModule_Create(&module); }
