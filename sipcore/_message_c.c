/* The header section of a SIP message split into fields, in C: sipcore/message.py's `split_fields`,
for the everyday shape only.

Why: every message the server reads goes through it, and the Python loop (one partition, two strips,
a dict lookup and three list operations per header line) is most of `parse`. Contract, as for
registrar/_lane_c.c: `split(head, name_keys)` returns the very (first line, entries, index) that
`split_fields(head)` returns, or None, meaning "not decided here": the Python code then runs, stays
the reference and is the only one that refuses (with its precise reason). Passed on: any byte
outside printable ASCII, tab, CR and LF (so no UTF-8, no NUL, no DEL); a CR or LF that is not part
of the section's line ends (CRLF, or bare LF when the section has no CRLF); a folded line; a line
without a colon; a header name not yet in `name_keys` (message._NAME_KEYS: the Python code checks a
new name and memoises its key, so the next message's name is decided here).
tests/sipcore/test_message_c.py compares the two. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static int blank(char c) { return c == ' ' || c == '\t'; }

/* Header names as sent -> (key, name without trailing blanks): a cache of what name_keys answered,
   so an everyday name costs no string of its own. name_keys memoises a pure function of the name,
   so an entry never goes stale. */
#define SLOTS 512
#define NAME_MAX_LEN 40
static struct {
    Py_ssize_t len;
    char raw[NAME_MAX_LEN];
    PyObject *key, *name;
} cache[SLOTS];

static unsigned slot_of(const char *s, Py_ssize_t n) {
    unsigned h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h % SLOTS;
}

/* The key and stripped name of the raw name s[0:n] (new references), or 0 with *key NULL when
   name_keys does not know it; -1 on error. */
static int name_of(const char *s, Py_ssize_t n, PyObject *keys, PyObject **key, PyObject **name) {
    unsigned k = slot_of(s, n);
    if (n <= NAME_MAX_LEN && cache[k].key != NULL && cache[k].len == n && memcmp(cache[k].raw, s, (size_t)n) == 0) {
        *key = cache[k].key;
        *name = cache[k].name;
        Py_INCREF(*key);
        Py_INCREF(*name);
        return 1;
    }
    *key = *name = NULL;
    PyObject *raw = PyUnicode_FromStringAndSize(s, n);
    if (raw == NULL) return -1;
    PyObject *found = PyDict_GetItemWithError(keys, raw); /* borrowed */
    Py_DECREF(raw);
    if (found == NULL) return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t ne = n;
    while (ne > 0 && blank(s[ne - 1])) ne--;
    PyObject *stripped = PyUnicode_FromStringAndSize(s, ne);
    if (stripped == NULL) return -1;
    Py_INCREF(found);
    *key = found;
    *name = stripped;
    if (n <= NAME_MAX_LEN) {
        Py_XDECREF(cache[k].key);
        Py_XDECREF(cache[k].name);
        cache[k].len = n;
        memcpy(cache[k].raw, s, (size_t)n);
        Py_INCREF(found);
        Py_INCREF(stripped);
        cache[k].key = found;
        cache[k].name = stripped;
    }
    return 1;
}

/* One header line [a, b): append [key, name, value] to entries and its position to index.
   1: done; 0: pass the section on; -1: error set. */
static int add_field(const char *s, Py_ssize_t a, Py_ssize_t b, PyObject *keys, PyObject *entries,
                     PyObject *index) {
    if (blank(s[a])) return 0; /* a folded line */
    const char *colon = memchr(s + a, ':', (size_t)(b - a));
    if (colon == NULL) return 0;
    Py_ssize_t c = colon - s;
    PyObject *key, *name;
    int known = name_of(s + a, c - a, keys, &key, &name);
    if (known <= 0) return known;
    Py_ssize_t va = c + 1, vb = b;
    while (va < vb && blank(s[va])) va++;
    while (vb > va && blank(s[vb - 1])) vb--;
    PyObject *value = PyUnicode_FromStringAndSize(s + va, vb - va);
    PyObject *field = value ? PyList_New(3) : NULL;
    if (field == NULL) {
        Py_DECREF(key);
        Py_DECREF(name);
        Py_XDECREF(value);
        return -1;
    }
    PyList_SET_ITEM(field, 0, key);
    PyList_SET_ITEM(field, 1, name);
    PyList_SET_ITEM(field, 2, value);
    PyObject *at = PyLong_FromSsize_t(PyList_GET_SIZE(entries));
    int failed = at == NULL || PyList_Append(entries, field) < 0;
    Py_DECREF(field);
    if (failed) {
        Py_XDECREF(at);
        return -1;
    }
    PyObject *positions = PyDict_GetItemWithError(index, key); /* borrowed */
    if (positions != NULL) {
        failed = PyList_Append(positions, at) < 0;
    } else if (PyErr_Occurred()) {
        failed = 1;
    } else {
        positions = PyList_New(1);
        if (positions == NULL) {
            failed = 1;
        } else {
            Py_INCREF(at);
            PyList_SET_ITEM(positions, 0, at);
            failed = PyDict_SetItem(index, key, positions) < 0;
            Py_DECREF(positions);
        }
    }
    Py_DECREF(at);
    return failed ? -1 : 1;
}

static PyObject *split(PyObject *self, PyObject *args) {
    Py_buffer head;
    PyObject *keys;
    if (!PyArg_ParseTuple(args, "y*O!", &head, &PyDict_Type, &keys)) return NULL;
    const char *s = head.buf;
    Py_ssize_t n = head.len;
    int crlf = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) continue;
        if (c == '\t') continue;
        if (c == '\r') {
            if (i + 1 < n && s[i + 1] == '\n') {
                crlf = 1;
                i++;
                continue;
            }
            goto pass; /* a CR alone */
        }
        if (c == '\n') {
            if (crlf) goto pass; /* a bare LF in a section with CRLF line ends */
            continue;
        }
        goto pass;
    }
    /* A bare LF before the first CRLF is in the start line for both (split on CRLF): not passed on. */
    Py_ssize_t step = crlf ? 2 : 1;
    const char *nl = memchr(s, crlf ? '\r' : '\n', (size_t)n);
    Py_ssize_t first_end = nl ? nl - s : n;
    PyObject *entries = PyList_New(0), *index = PyDict_New(), *first = NULL, *out = NULL;
    if (entries == NULL || index == NULL) goto fail;
    Py_ssize_t a = first_end + step;
    while (a <= n && first_end < n) {
        const char *end = memchr(s + a, crlf ? '\r' : '\n', (size_t)(n - a));
        Py_ssize_t b = end ? end - s : n;
        if (b > a) {
            int done = add_field(s, a, b, keys, entries, index);
            if (done < 0) goto fail;
            if (done == 0) {
                Py_DECREF(entries);
                Py_DECREF(index);
                goto pass;
            }
        }
        if (end == NULL) break;
        a = b + step;
    }
    first = PyUnicode_FromStringAndSize(s, first_end);
    if (first == NULL) goto fail;
    out = PyTuple_Pack(3, first, entries, index);
fail:
    Py_XDECREF(first);
    Py_XDECREF(entries);
    Py_XDECREF(index);
    PyBuffer_Release(&head);
    return out;
pass:
    PyBuffer_Release(&head);
    Py_RETURN_NONE;
}

/* ---- one Via value: headers.Via.parse's everyday spelling -------------------------------------------
`via(text)` returns the (transport in upper case, host, port or None, [(name, value or None), ...])
that Via.parse builds from text when its fast pattern (headers._VIA_PLAIN) matches, or None: then
the Python code runs as before, stays the reference, and is the only one that refuses or reads the
general grammar. Taken here only: ASCII; "SIP/2.0/" + letters + one space; a host of letters, digits,
dots and hyphens that starts with a letter or digit and does not end with a hyphen; an optional port
of 1 to 5 digits, at most 65535; then ";name" or ";name=value" parameters, the name of token
characters, the value of printable ASCII but ';' and '"' (the pattern's [^;\s"] takes more: those
are passed on). Every Via the server reads goes through here (about ten per call).
tests/sipcore/test_via_c.py compares the two. */

static int alnum(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int token_char(unsigned char c) { return alnum(c) || (c != 0 && strchr("-.!%*_+`'~", c) != NULL); }

static int host_char(unsigned char c) { return alnum(c) || c == '.' || c == '-'; }

static PyObject *via(PyObject *self, PyObject *text) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) Py_RETURN_NONE;
    const unsigned char *s = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = 8;
    if (n < 11 || memcmp(s, "SIP/2.0/", 8) != 0) Py_RETURN_NONE;
    Py_ssize_t t0 = i;
    while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) i++;
    if (i == t0 || i - t0 > 64 || i >= n || s[i] != ' ') Py_RETURN_NONE;
    Py_ssize_t t1 = i++, h0 = i;
    if (i >= n || !alnum(s[i])) Py_RETURN_NONE;
    while (i < n && host_char(s[i])) i++;
    Py_ssize_t h1 = i;
    if (s[h1 - 1] == '-') Py_RETURN_NONE;
    long port = -1;
    if (i < n && s[i] == ':') {
        Py_ssize_t p0 = ++i;
        port = 0;
        while (i < n && i - p0 < 5 && s[i] >= '0' && s[i] <= '9') port = port * 10 + (s[i++] - '0');
        if (i == p0 || port > 65535) Py_RETURN_NONE;
    }
    /* the parameters are checked before anything is built */
    Py_ssize_t p_start = i, count = 0;
    while (i < n) {
        if (s[i] != ';') Py_RETURN_NONE;
        Py_ssize_t k0 = ++i;
        while (i < n && token_char(s[i])) i++;
        if (i == k0) Py_RETURN_NONE;
        if (i < n && s[i] == '=') {
            Py_ssize_t v0 = ++i;
            while (i < n && s[i] > 0x20 && s[i] < 0x7f && s[i] != ';' && s[i] != '"') i++;
            if (i == v0) Py_RETURN_NONE;
        }
        count++;
    }
    PyObject *params = PyList_New(count), *transport = NULL, *host = NULL, *port_obj = NULL, *out = NULL;
    if (params == NULL) return NULL;
    i = p_start;
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t k0 = ++i;
        while (i < n && s[i] != ';' && s[i] != '=') i++;
        PyObject *name = PyUnicode_FromStringAndSize((const char *)s + k0, i - k0), *value = NULL;
        if (name == NULL) goto fail;
        if (i < n && s[i] == '=') {
            Py_ssize_t v0 = ++i;
            while (i < n && s[i] != ';') i++;
            value = PyUnicode_FromStringAndSize((const char *)s + v0, i - v0);
            if (value == NULL) {
                Py_DECREF(name);
                goto fail;
            }
        } else {
            value = Py_NewRef(Py_None);
        }
        PyObject *pair = PyTuple_Pack(2, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (pair == NULL) goto fail;
        PyList_SET_ITEM(params, k, pair);
    }
    char upper[64]; /* the transport's length was bounded above */
    for (Py_ssize_t k = t0; k < t1; k++) upper[k - t0] = (char)(s[k] >= 'a' ? s[k] - 32 : s[k]);
    transport = PyUnicode_FromStringAndSize(upper, t1 - t0);
    host = PyUnicode_FromStringAndSize((const char *)s + h0, h1 - h0);
    port_obj = port < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(port);
    if (transport && host && port_obj) out = PyTuple_Pack(4, transport, host, port_obj, params);
fail:
    Py_XDECREF(transport);
    Py_XDECREF(host);
    Py_XDECREF(port_obj);
    Py_DECREF(params);
    return out;
}

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS,
     "split(head: bytes, name_keys: dict) -> (first, entries, index) | None: message.split_fields in C"},
    {"via", via, METH_O,
     "via(text: str) -> (transport, host, port, params) | None: headers.Via.parse's everyday spelling in C"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipcore._message_c", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__message_c(void) { return PyModule_Create(&module); }
