/* Digest parameter lists in C: sipcore/digest.py's `_parse_params`, for the everyday shape only.

Why: every authenticated REGISTER and INVITE carries one, and splitting it with regular expressions
is a tenth of a REGISTER's processing. Contract, as for registrar/_lane_c.c: `params(value)`
returns the very dict `_parse_params(value, ...)[1]` returns, or None, meaning "not decided here":
the Python parser then runs, stays the reference and is the only one that refuses (with its precise
reason). Passed on: any byte outside printable ASCII and the blank (so no tab, CR, LF, UTF-8), a
backslash, anything the grammar refuses, a duplicate, a value over its limit, too many parameters.
tests/sipcore/test_digest_c.py compares the two. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <strings.h>

static PyObject *field_limits = NULL; /* digest.FIELD_LIMITS */
static Py_ssize_t other_limit = 0, max_params = 0, max_len = 0;
static unsigned char TOKEN[256]; /* digest._TOKEN: ! % ' * + - . 0-9 A-Z ^ _ ` a-z | ~ */
static unsigned char BARE[256];  /* digest._BARE: printable ASCII but blank, '"', ',' and '\' */

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        TOKEN[c] = (unsigned char)(alnum || (c && strchr("!%'*+-.^_`|~", c) != NULL));
        BARE[c] = (unsigned char)(c > 0x20 && c < 0x7f && c != '"' && c != ',' && c != '\\');
    }
}

static PyObject *params(PyObject *self, PyObject *arg) {
    if (!PyUnicode_Check(arg) || !PyUnicode_IS_ASCII(arg)) Py_RETURN_NONE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    const char *s = (const char *)PyUnicode_1BYTE_DATA(arg);
    if (n > max_len) Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\') Py_RETURN_NONE;
    /* _SCHEME_RE: blanks, "Digest" in any case, then blanks or the end */
    Py_ssize_t i = 0;
    while (i < n && s[i] == ' ') i++;
    if (n - i < 6 || strncasecmp(s + i, "digest", 6) != 0) Py_RETURN_NONE;
    i += 6;
    if (i < n && s[i] != ' ') Py_RETURN_NONE;
    while (i < n && s[i] == ' ') i++;
    /* body: trailing blanks and then one trailing comma dropped */
    Py_ssize_t end = n;
    while (end > i && s[end - 1] == ' ') end--;
    if (end > i && s[end - 1] == ',') end--;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    Py_ssize_t count = 0;
    char name[64];
    while (i < end) {
        while (i < end && s[i] == ' ') i++;
        Py_ssize_t a = i;
        while (i < end && TOKEN[(unsigned char)s[i]]) i++;
        Py_ssize_t nn = i - a;
        if (nn == 0 || nn > (Py_ssize_t)sizeof name) goto pass;
        for (Py_ssize_t k = 0; k < nn; k++) {
            char c = s[a + k];
            name[k] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        }
        while (i < end && s[i] == ' ') i++;
        if (i == end || s[i] != '=') goto pass;
        i++;
        while (i < end && s[i] == ' ') i++;
        Py_ssize_t v0, v1;
        if (i < end && s[i] == '"') {
            v0 = ++i;
            while (i < end && s[i] != '"') i++;
            if (i == end) goto pass;
            v1 = i++;
        } else {
            v0 = i;
            while (i < end && BARE[(unsigned char)s[i]]) i++;
            v1 = i;
            if (v1 == v0) goto pass;
        }
        while (i < end && s[i] == ' ') i++;
        if (i < end) {
            if (s[i] != ',') goto pass;
            i++;
        }
        if (++count > max_params) goto pass;
        PyObject *key = PyUnicode_DecodeASCII(name, nn, NULL);
        if (key == NULL) goto error;
        int dup = PyDict_Contains(out, key);
        PyObject *limit = dup == 0 ? PyDict_GetItemWithError(field_limits, key) : NULL;
        Py_ssize_t cap = other_limit;
        if (limit != NULL) cap = PyLong_AsSsize_t(limit);
        if (dup != 0 || PyErr_Occurred() || v1 - v0 > cap) {
            Py_DECREF(key);
            if (PyErr_Occurred()) goto error;
            goto pass;
        }
        PyObject *value = PyUnicode_DecodeASCII(s + v0, v1 - v0, NULL);
        int bad = value == NULL || PyDict_SetItem(out, key, value) < 0;
        Py_DECREF(key);
        Py_XDECREF(value);
        if (bad) goto error;
    }
    return out;
pass:
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_DECREF(out);
    return NULL;
}

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *limits;
    Py_ssize_t other, maxp, maxl;
    if (!PyArg_ParseTuple(args, "O!nnn", &PyDict_Type, &limits, &other, &maxp, &maxl)) return NULL;
    Py_XSETREF(field_limits, Py_NewRef(limits));
    other_limit = other;
    max_params = maxp;
    max_len = maxl;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"params", params, METH_O, "params(value) -> {name: value}, or None: ask digest._parse_params."},
    {"setup", setup, METH_VARARGS, "setup(FIELD_LIMITS, OTHER_FIELD_LIMIT, MAX_PARAMS, MAX_HEADER_LEN)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipcore._digest_c", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__digest_c(void) {
    init_tables();
    return PyModule_Create(&module);
}
