/* Digest hashing in C: sipcore/digest.py's nonce MAC and expected response, without Python glue.

Why: in an authenticated REGISTER, verifying the digest was a fifth of the server's work, and most
of it was not hashing but building strings, encoding them and wrapping hash objects around a few
dozen bytes. Here the same bytes go through MD5 (RFC 1321), SHA-256 (FIPS 180-4) and HMAC (RFC 2104)
written out below, so nothing is linked beyond Python itself.

Contract: `nonce_key`, `mint` and `issued` give what digest.py's `_mac_base` / `make_nonce` /
`_nonce_issued_at_py` give; `expected(...)` the hex of `_expected_py(...)`. digest.py stays the
reference; tests/sipcore/test_digest_hash_c.py compares them on random inputs. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- the context both hashes share: 64-byte blocks, a bit length in the last 8 bytes ---------- */
typedef struct {
    uint32_t h[8];   /* MD5 uses the first 4 */
    uint64_t length; /* bytes fed */
    unsigned char buf[64];
    size_t used;
    int sha; /* 1: SHA-256 (big-endian words and length), 0: MD5 (little-endian) */
} hash_ctx;

/* ---- MD5 (RFC 1321) ------------------------------------------------------------------------- */
static const uint32_t MD5_K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};
static uint32_t rol(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

/* the four rounds' functions, in the forms with one operation fewer (equal to RFC 1321's) */
#define MD5_F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MD5_G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define MD5_H(x, y, z) ((x) ^ (y) ^ (z))
#define MD5_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define MD5_STEP(f, a, b, c, d, x, k, s) (a) = (b) + rol((a) + f((b), (c), (d)) + (x) + (k), (s))
/* four steps of a round; message word of step i: idx(i) */
#define MD5_FOUR(f, i, idx, s0, s1, s2, s3)                        \
    MD5_STEP(f, a, b, c, d, m[idx(i)], MD5_K[i], s0);              \
    MD5_STEP(f, d, a, b, c, m[idx((i) + 1)], MD5_K[(i) + 1], s1);  \
    MD5_STEP(f, c, d, a, b, m[idx((i) + 2)], MD5_K[(i) + 2], s2);  \
    MD5_STEP(f, b, c, d, a, m[idx((i) + 3)], MD5_K[(i) + 3], s3)
#define IDX1(i) (i)
#define IDX2(i) ((5 * (i) + 1) & 15)
#define IDX3(i) ((3 * (i) + 5) & 15)
#define IDX4(i) ((7 * (i)) & 15)

static void md5_block(uint32_t h[4], const unsigned char *p) {
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
               (uint32_t)p[4 * i + 3] << 24;
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    for (int i = 0; i < 16; i += 4) {
        MD5_FOUR(MD5_F, i, IDX1, 7, 12, 17, 22);
    }
    for (int i = 16; i < 32; i += 4) {
        MD5_FOUR(MD5_G, i, IDX2, 5, 9, 14, 20);
    }
    for (int i = 32; i < 48; i += 4) {
        MD5_FOUR(MD5_H, i, IDX3, 4, 11, 16, 23);
    }
    for (int i = 48; i < 64; i += 4) {
        MD5_FOUR(MD5_I, i, IDX4, 6, 10, 15, 21);
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------------------------- */
static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t c[8], const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = c[0], b = c[1], cc = c[2], d = c[3], e = c[4], f = c[5], g = c[6], h = c[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + SHA_K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = cc;
        cc = b;
        b = a;
        a = t1 + t2;
    }
    c[0] += a;
    c[1] += b;
    c[2] += cc;
    c[3] += d;
    c[4] += e;
    c[5] += f;
    c[6] += g;
    c[7] += h;
}

static void md5_init(hash_ctx *c) {
    static const uint32_t iv[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    memcpy(c->h, iv, sizeof iv);
    c->length = 0;
    c->used = 0;
    c->sha = 0;
}

static void sha256_init(hash_ctx *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv);
    c->length = 0;
    c->used = 0;
    c->sha = 1;
}

/* ---- feeding and finishing, the same for both ------------------------------------------------- */
static void compress(hash_ctx *c, const unsigned char *block) {
    if (c->sha)
        sha256_block(c->h, block);
    else
        md5_block(c->h, block);
}

static void hash_update(hash_ctx *c, const unsigned char *p, size_t n) {
    c->length += n;
    while (n > 0) {
        size_t take = 64 - c->used < n ? 64 - c->used : n;
        memcpy(c->buf + c->used, p, take);
        c->used += take;
        p += take;
        n -= take;
        if (c->used == 64) {
            compress(c, c->buf);
            c->used = 0;
        }
    }
}

/* the padding (0x80, zeros, the bit length) and the digest in ``out``; returns its size, 16 or 32 */
static int hash_final(hash_ctx *c, unsigned char *out) {
    uint64_t bits = c->length * 8;
    c->buf[c->used++] = 0x80;
    if (c->used > 56) { /* no room left for the length: it goes in one more block */
        memset(c->buf + c->used, 0, 64 - c->used);
        compress(c, c->buf);
        c->used = 0;
    }
    memset(c->buf + c->used, 0, 56 - c->used);
    for (int i = 0; i < 8; i++) c->buf[56 + i] = (unsigned char)(bits >> (c->sha ? 56 - 8 * i : 8 * i));
    compress(c, c->buf);
    int words = c->sha ? 8 : 4;
    for (int i = 0; i < words; i++)
        for (int k = 0; k < 4; k++) out[4 * i + k] = (unsigned char)(c->h[i] >> (c->sha ? 24 - 8 * k : 8 * k));
    return 4 * words;
}

/* ---- nonces: HMAC-SHA-256 (RFC 2104) keyed once, base64url (RFC 4648 §5) ------------------------ */
typedef struct {
    hash_ctx inner; /* SHA-256 fed key ^ ipad and the tag | realm prefix */
    hash_ctx outer; /* SHA-256 fed key ^ opad */
} nonce_key_t;

#define BODY_LEN 16 /* timestamp (8) and salt (8) */
#define MAC_LEN 16
#define NONCE_CHARS 43 /* 32 bytes, base64url without its one "=" */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static signed char B64VAL[256];

static void init_tables(void) {
    memset(B64VAL, -1, sizeof B64VAL);
    for (int i = 0; i < 64; i++) B64VAL[(unsigned char)B64URL[i]] = (signed char)i;
}

static void nonce_mac(const nonce_key_t *key, const unsigned char body[BODY_LEN], unsigned char mac[32]) {
    hash_ctx c = key->inner;
    hash_update(&c, body, BODY_LEN);
    hash_final(&c, mac);
    c = key->outer;
    hash_update(&c, mac, 32);
    hash_final(&c, mac);
}

static PyObject *nonce_key(PyObject *self, PyObject *args) {
    Py_buffer key, prefix;
    if (!PyArg_ParseTuple(args, "y*y*", &key, &prefix)) return NULL;
    unsigned char k[64] = {0}, pad[64];
    if (key.len > 64) {
        hash_ctx c;
        sha256_init(&c);
        hash_update(&c, key.buf, (size_t)key.len);
        hash_final(&c, k);
    } else {
        memcpy(k, key.buf, (size_t)key.len);
    }
    nonce_key_t out;
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    sha256_init(&out.inner);
    hash_update(&out.inner, pad, 64);
    hash_update(&out.inner, prefix.buf, (size_t)prefix.len);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    sha256_init(&out.outer);
    hash_update(&out.outer, pad, 64);
    PyBuffer_Release(&key);
    PyBuffer_Release(&prefix);
    return PyBytes_FromStringAndSize((const char *)&out, sizeof out);
}

static const nonce_key_t *as_key(PyObject *obj) {
    const nonce_key_t *key = NULL;
    if (PyBytes_Check(obj) && PyBytes_GET_SIZE(obj) == (Py_ssize_t)sizeof(nonce_key_t))
        key = (const nonce_key_t *)PyBytes_AS_STRING(obj);
    if (key == NULL || key->inner.used >= 64 || key->outer.used >= 64) { /* (a buffer index it would trust) */
        PyErr_SetString(PyExc_TypeError, "not a nonce_key()");
        return NULL;
    }
    return key;
}

static PyObject *mint(PyObject *self, PyObject *args) {
    PyObject *keyobj;
    Py_buffer body;
    if (!PyArg_ParseTuple(args, "Oy*", &keyobj, &body)) return NULL;
    const nonce_key_t *key = as_key(keyobj);
    if (key == NULL || body.len != BODY_LEN) {
        if (key != NULL) PyErr_SetString(PyExc_ValueError, "a nonce body is 16 bytes");
        PyBuffer_Release(&body);
        return NULL;
    }
    unsigned char raw[33], mac[32];
    memcpy(raw, body.buf, BODY_LEN);
    PyBuffer_Release(&body);
    nonce_mac(key, raw, mac);
    memcpy(raw + BODY_LEN, mac, MAC_LEN);
    raw[32] = 0; /* the last group's missing byte */
    char text[44];
    for (int i = 0, o = 0; i < 33; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        text[o++] = B64URL[v >> 18];
        text[o++] = B64URL[(v >> 12) & 63];
        text[o++] = B64URL[(v >> 6) & 63];
        text[o++] = B64URL[v & 63];
    }
    return PyUnicode_DecodeASCII(text, NONCE_CHARS, NULL);
}

static PyObject *issued(PyObject *self, PyObject *args) {
    PyObject *nonce, *keys;
    if (!PyArg_ParseTuple(args, "UO!", &nonce, &PyTuple_Type, &keys)) return NULL;
    if (!PyUnicode_IS_ASCII(nonce) || PyUnicode_GET_LENGTH(nonce) != NONCE_CHARS) Py_RETURN_NONE;
    const unsigned char *s = PyUnicode_1BYTE_DATA(nonce);
    unsigned char raw[33];
    for (int i = 0, o = 0; i < 44; i += 4) {
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            int d = i + k < NONCE_CHARS ? B64VAL[s[i + k]] : 0;
            if (d < 0) Py_RETURN_NONE;
            v = v << 6 | (uint32_t)d;
        }
        raw[o++] = (unsigned char)(v >> 16);
        raw[o++] = (unsigned char)(v >> 8);
        raw[o++] = (unsigned char)v;
    }
    if (raw[32] != 0) Py_RETURN_NONE; /* the 2 spare bits set: one nonce has one spelling */
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(keys); k++) {
        const nonce_key_t *key = as_key(PyTuple_GET_ITEM(keys, k));
        if (key == NULL) return NULL;
        unsigned char mac[32], diff = 0;
        nonce_mac(key, raw, mac);
        for (int i = 0; i < MAC_LEN; i++) diff |= (unsigned char)(mac[i] ^ raw[BODY_LEN + i]);
        if (diff == 0) {
            uint64_t ms = 0;
            for (int i = 0; i < 8; i++) ms = ms << 8 | raw[i];
            return PyFloat_FromDouble((double)ms / 1000.0);
        }
    }
    Py_RETURN_NONE;
}

/* ---- the expected response (RFC 7616 §3.4.1, RFC 2617 without qop) ------------------------------ */
enum { ALGO_MD5 = 0, ALGO_SHA256 = 1 };

/* H(parts joined with ":") as lower-case hex into out (33 or 65 bytes); returns its length */
static Py_ssize_t h_joined(int algo, const char *const *parts, const Py_ssize_t *lens, int n, char *out) {
    static const char HEX[] = "0123456789abcdef";
    hash_ctx h;
    if (algo == ALGO_MD5)
        md5_init(&h);
    else
        sha256_init(&h);
    for (int i = 0; i < n; i++) {
        if (i) hash_update(&h, (const unsigned char *)":", 1);
        hash_update(&h, (const unsigned char *)parts[i], (size_t)lens[i]);
    }
    unsigned char d[32];
    int size = hash_final(&h, d);
    for (int i = 0; i < size; i++) {
        out[2 * i] = HEX[d[i] >> 4];
        out[2 * i + 1] = HEX[d[i] & 15];
    }
    return 2 * size;
}

/* the UTF-8 of a str argument; false with an exception set (not text, or not encodable) */
static int utf8(PyObject *obj, const char **p, Py_ssize_t *n) {
    if (!PyUnicode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "expected str");
        return 0;
    }
    *p = PyUnicode_AsUTF8AndSize(obj, n);
    return *p != NULL;
}

static PyObject *expected(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    /* expected(algo, sess, ha1|None, username, realm, password, nonce, nc, cnonce, qop|None, method, uri) */
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "expected() takes 12 arguments");
        return NULL;
    }
    long algo = PyLong_AsLong(args[0]);
    if (algo == -1 && PyErr_Occurred()) return NULL;
    if (algo != ALGO_MD5 && algo != ALGO_SHA256) {
        PyErr_SetString(PyExc_ValueError, "unknown algorithm code");
        return NULL;
    }
    int sess = PyObject_IsTrue(args[1]);
    if (sess < 0) return NULL;
    const char *v[12];
    Py_ssize_t n[12];
    int qop = args[9] != Py_None;
    for (int i = 3; i < 12; i++) { /* as the reference reads them: nc only with qop, cnonce with qop or sess */
        if ((i == 7 || i == 9) && !qop) continue;
        if (i == 8 && !qop && !sess) continue;
        if (!utf8(args[i], &v[i], &n[i])) return NULL;
    }
    char ha1[65], ha2[65], out[65];
    /* the same work whatever the account: H(A1) from the password even when an HA1 is stored */
    const char *a1[3] = {v[3], v[4], v[5]};
    Py_ssize_t a1n[3] = {n[3], n[4], n[5]};
    Py_ssize_t ha1n = h_joined((int)algo, a1, a1n, 3, ha1);
    const char *ha1p = ha1;
    if (args[2] != Py_None) {
        if (!utf8(args[2], &ha1p, &ha1n)) return NULL;
    }
    char sessed[65];
    if (sess) {
        const char *s[3] = {ha1p, v[6], v[8]};
        Py_ssize_t sn[3] = {ha1n, n[6], n[8]};
        ha1n = h_joined((int)algo, s, sn, 3, sessed);
        ha1p = sessed;
    }
    const char *a2[2] = {v[10], v[11]};
    Py_ssize_t a2n[2] = {n[10], n[11]};
    Py_ssize_t ha2n = h_joined((int)algo, a2, a2n, 2, ha2);
    Py_ssize_t outn;
    if (!qop) {
        const char *r[3] = {ha1p, v[6], ha2};
        Py_ssize_t rn[3] = {ha1n, n[6], ha2n};
        outn = h_joined((int)algo, r, rn, 3, out);
    } else {
        const char *r[6] = {ha1p, v[6], v[7], v[8], v[9], ha2};
        Py_ssize_t rn[6] = {ha1n, n[6], n[7], n[8], n[9], ha2n};
        outn = h_joined((int)algo, r, rn, 6, out);
    }
    return PyUnicode_DecodeASCII(out, outn, NULL);
}

static PyMethodDef methods[] = {
    {"nonce_key", nonce_key, METH_VARARGS, "nonce_key(key, prefix) -> the HMAC-SHA-256 key, keyed once."},
    {"mint", mint, METH_VARARGS, "mint(key, body16) -> the 43-character nonce of body and its MAC."},
    {"issued", issued, METH_VARARGS, "issued(nonce, keys) -> issue time (s) when a key made it, else None."},
    {"expected", (PyCFunction)(void (*)(void))expected, METH_FASTCALL,
     "expected(algo, sess, ha1, username, realm, password, nonce, nc, cnonce, qop, method, uri) -> hex."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sipcore._digest_hash_c", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__digest_hash_c(void) {
    init_tables();
    return PyModule_Create(&module);
}
