/* The worker owning a SIP message, from its bytes, in C: sipcore/ownership.py's `owner_of`, for the
everyday shape only.

Why: with several workers every datagram a worker reads is scanned for its owner before anything
else, and the Python scan (two finds, a strip, three membership tests, the fold's unpacking) costs
5-6 us a message, about 50 us a call. Contract, as for the other C readers: `owner(data, workers)`
returns the very index `owner_py(data, workers)` returns, or -1, meaning "not decided here": the
Python code then runs and stays the reference. Decided here: a Call-ID on one line spelled
"\nCall-ID:" without inner runs of blanks, tabs or CRs (what `_value`'s fast path takes), and for a
REGISTER the To URI's user on such a "\nTo:" line, unquoted, without a quoted display name and
without "%". Everything else (compact or other-case names, folded lines, no key at all) is passed
on. tests/sipcore/test_ownership_c.py compares the two. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define STEER_SHORT 16
#define STEER_LONG 32
#define FOLD_MUL 0x9E3779B1u
#define MIX_MUL 0x85EBCA6Bu

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* zlib.crc32 (IEEE 802.3, reflected) */
static uint32_t crc32_of(const unsigned char *s, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++) c = crc_table[(c ^ s[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint32_t word_at(const unsigned char *s) {
    return ((uint32_t)s[0] << 24) | ((uint32_t)s[1] << 16) | ((uint32_t)s[2] << 8) | (uint32_t)s[3];
}

/* ownership.call_id_slot's hash of a value of at least STEER_SHORT bytes */
static uint32_t fold_of(const unsigned char *s, Py_ssize_t n) {
    uint32_t h = word_at(s);
    if (n >= STEER_LONG) {
        for (int i = 1; i < 8; i++) h = (h * FOLD_MUL) ^ word_at(s + 4 * i);
    } else {
        for (int i = 1; i < 4; i++) h = (h * FOLD_MUL) ^ word_at(s + 4 * i);
        h = (h * FOLD_MUL) ^ word_at(s + n - 4);
    }
    h ^= h >> 15;
    h *= MIX_MUL;
    return h ^ (h >> 13);
}

/* bytes.find(needle, 0, end), or -1 */
static Py_ssize_t find_in(const char *p, Py_ssize_t from, Py_ssize_t to, const char *needle, Py_ssize_t k) {
    if (from < 0 || to - from < k) return -1;
    const char *hit = memmem(p + from, (size_t)(to - from), needle, (size_t)k);
    return hit == NULL ? -1 : hit - p;
}

static int py_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); } /* bytes.strip */

/* `_value`'s fast path for the header spelled `canonical`: 1 and the value's bounds when it takes
   the message, 0 when the Python code must look (its pattern). */
static int fast_value(const char *p, Py_ssize_t len, Py_ssize_t end, const char *canonical, Py_ssize_t k,
                      Py_ssize_t *vs, Py_ssize_t *ve) {
    Py_ssize_t pos = find_in(p, 0, end, canonical, k);
    if (pos < 0) return 0;
    Py_ssize_t start = pos + k;
    Py_ssize_t limit = end + 2 < len ? end + 2 : len;
    Py_ssize_t stop = find_in(p, start, limit, "\n", 1);
    if (stop <= 0) return 0;
    if (stop + 1 < len && (p[stop + 1] == ' ' || p[stop + 1] == '\t')) return 0; /* folded */
    Py_ssize_t a = start, b = stop;
    while (a < b && py_space((unsigned char)p[a])) a++;
    while (b > a && py_space((unsigned char)p[b - 1])) b--;
    if (a == b) return 0;
    for (Py_ssize_t i = a; i < b; i++) {
        char c = p[i];
        if (c == '\t' || c == '\r' || (c == ' ' && i + 1 < b && p[i + 1] == ' ')) return 0;
    }
    *vs = a;
    *ve = b;
    return 1;
}

static Py_ssize_t header_end(const char *p, Py_ssize_t len) {
    Py_ssize_t end = find_in(p, 0, len, "\r\n\r\n", 4);
    if (end < 0) end = find_in(p, 0, len, "\n\n", 2);
    return end < 0 ? len : end;
}

/* `to_user_of` on a To value p[a:b] the fast path read: 1 with the user's bounds, 0 to pass. */
static int to_user(const char *p, Py_ssize_t a, Py_ssize_t b, Py_ssize_t *us, Py_ssize_t *ue) {
    if (p[a] == '"') return 0; /* a quoted display name: `_after_display_name` */
    Py_ssize_t lt = find_in(p, a, b, "<", 1), ua, ub;
    if (lt >= 0) {
        Py_ssize_t gt = find_in(p, lt, b, ">", 1);
        ua = lt + 1;
        ub = gt >= 0 ? gt : b;
    } else {
        Py_ssize_t semi = find_in(p, a, b, ";", 1);
        ua = a;
        ub = semi >= 0 ? semi : b;
    }
    if (ua > ub) return 0;
    Py_ssize_t colon = find_in(p, ua, ub, ":", 1);
    Py_ssize_t rest = colon >= 0 ? colon + 1 : ua;
    Py_ssize_t at = find_in(p, rest, ub, "@", 1);
    if (at < 0) return 0; /* no user part: the whole URI, stripped (Python) */
    if (find_in(p, rest, at, "%", 1) >= 0) return 0; /* percent-decoded by Python */
    *us = rest;
    *ue = at;
    return 1;
}

static PyObject *owner(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "owner(data: bytes, workers: int)");
        return NULL;
    }
    Py_ssize_t workers = PyLong_AsSsize_t(args[1]);
    if (workers == -1 && PyErr_Occurred()) return NULL;
    if (workers < 2 || workers > 65535) return PyLong_FromLong(-1);
    const char *p = PyBytes_AS_STRING(args[0]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t end = header_end(p, len), a, b;
    const unsigned char *u = (const unsigned char *)p;
    if (len >= 9 && memcmp(p, "REGISTER ", 9) == 0) {
        Py_ssize_t us, ue;
        if (!fast_value(p, len, end, "\nTo:", 4, &a, &b) || !to_user(p, a, b, &us, &ue))
            return PyLong_FromLong(-1);
        return PyLong_FromSsize_t((Py_ssize_t)(crc32_of(u + us, ue - us) % (uint32_t)workers));
    }
    if (!fast_value(p, len, end, "\nCall-ID:", 9, &a, &b)) return PyLong_FromLong(-1);
    Py_ssize_t n = b - a;
    uint32_t h = n >= STEER_SHORT ? fold_of(u + a, n) : crc32_of(u + a, n);
    return PyLong_FromSsize_t((Py_ssize_t)(h % (uint32_t)workers));
}

static PyMethodDef methods[] = {
    {"owner", (PyCFunction)(void (*)(void))owner, METH_FASTCALL,
     "owner(data, workers) -> ownership.owner_py's index, or -1: not decided here"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "sipcore._ownership_c", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ownership_c(void) {
    crc_init();
    return PyModule_Create(&module);
}
