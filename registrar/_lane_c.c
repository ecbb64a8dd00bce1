/* The REGISTER lane's reader in C: registrar/lane.py's `read_py`, for the everyday shape only.

Why: on the wire a registration costs the server ~0.25 ms of CPU, and reading the two REGISTERs is
the largest single part of it (~35 % of the processing). This reads them with plain byte scans.

Contract: `read(data, remote)` returns the very LaneRequest `read_py(data, remote)` returns, or
None, which means "not decided here": the caller then runs `read_py`, which stays the reference
(and the only place that refuses). So every input this code is unsure of -- a byte outside
printable ASCII, a name longer than a buffer, a number too long -- is simply passed on.
tests/registrar/test_lane_c.py checks the two agree on generated and recorded messages.

Each step below names the regular expression or Python statement of lane.py it stands for. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *LaneRequest = NULL;  /* the NamedTuple class */
static PyObject *stable_tag = NULL;   /* sipcore.message.stable_tag */
static PyObject *same_host = NULL;    /* sipcore.flow.same_host */
static PyObject *str_register = NULL; /* "REGISTER" */

#define FIELDS 21

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

/* token = TOKEN_CHARS (sipcore.grammar): A-Za-z0-9 - . ! % * _ + ` ' ~ */
static unsigned char TOKEN[256];
static unsigned char HOSTC[256];  /* [A-Za-z0-9.-] */
static unsigned char ALNUM[256];

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        ALNUM[c] = (unsigned char)alnum;
        HOSTC[c] = (unsigned char)(alnum || c == '.' || c == '-');
        TOKEN[c] = (unsigned char)(alnum || (c && strchr("-.!%*_+`'~", c) != NULL));
    }
}

/* header keys the lane knows (lane._COPIED, _READ, _GENERAL_ONLY) */
enum {
    K_OTHER = 0, K_VIA, K_FROM, K_TO, K_CALL_ID, K_CSEQ,         /* copied */
    K_CONTACT, K_EXPIRES, K_AUTHORIZATION, K_MAX_FORWARDS, K_USER_AGENT, K_CONTENT_LENGTH, /* read */
    K_ONCE_END, K_GENERAL = 100
};

static const char *const KNOWN[] = {
    NULL, "via", "from", "to", "call-id", "cseq", "contact", "expires", "authorization",
    "max-forwards", "user-agent", "content-length",
};
static const char *const GENERAL[] = {
    "require", "proxy-require", "path", "route", "content-type", "content-encoding",
    "proxy-authorization", NULL,
};

static int classify(const char *key, Py_ssize_t n) {
    for (int i = 1; i < K_ONCE_END; i++)
        if ((Py_ssize_t)strlen(KNOWN[i]) == n && memcmp(KNOWN[i], key, (size_t)n) == 0) return i;
    for (int i = 0; GENERAL[i]; i++)
        if ((Py_ssize_t)strlen(GENERAL[i]) == n && memcmp(GENERAL[i], key, (size_t)n) == 0) return K_GENERAL;
    return K_OTHER;
}

/* compact forms: letter -> class, filled from COMPACT at setup */
static int COMPACT_CLASS[256];

static int span_eq(span s, const char *lit) {
    size_t n = strlen(lit);
    return (size_t)s.n == n && memcmp(s.p, lit, n) == 0;
}

/* digits only, non-empty; value into *out, -1 when longer than 18 digits (caller passes it on) */
static int digits(span s, long long *out) {
    if (s.n == 0 || s.n > 18) return s.n == 0 ? 0 : -1;
    long long v = 0;
    for (Py_ssize_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c < '0' || c > '9') return 0;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 1;
}

/* HOST (lane._HOST): first alnum, then [A-Za-z0-9.-]*, not ending in '-'. Length taken, 0 if none. */
static Py_ssize_t host_run(const char *p, Py_ssize_t n) {
    if (n == 0 || !ALNUM[(unsigned char)p[0]]) return 0;
    Py_ssize_t i = 1;
    while (i < n && HOSTC[(unsigned char)p[i]]) i++;
    return p[i - 1] == '-' ? 0 : i;
}

/* ":" [0-9]{1,5} at p (optional): 1 with *port set, 0 when absent (no ':'), -1 malformed */
static int opt_port(const char *p, Py_ssize_t n, Py_ssize_t *used, long *port) {
    *used = 0;
    *port = -1;
    if (n == 0 || p[0] != ':') return 0;
    Py_ssize_t i = 1;
    long v = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9') {
        v = v * 10 + (p[i] - '0');
        i++;
        if (i > 6) return -1;
    }
    if (i == 1) return -1;
    *used = i;
    *port = v;
    return 1;
}

/* a parameter list ``(;TOKEN(=VALUE)?)*`` to the end of s; VALUE is 1+ chars not in ``bad`` (and not
   blank); with ``empty_ok`` (the URI grammar) VALUE may be empty. Up to `max` (name, value) spans are
   recorded; value.p == NULL for a flag. Returns the count, -1 when the text does not match, -2 when
   there are more than `max` (passed on). */
typedef struct {
    span name, value;
} param;

static int params(span s, const char *bad, int empty_ok, param *out, int max) {
    Py_ssize_t i = 0;
    int count = 0;
    while (i < s.n) {
        if (s.p[i] != ';') return -1;
        i++;
        Py_ssize_t a = i;
        while (i < s.n && TOKEN[(unsigned char)s.p[i]]) i++;
        if (i == a) return -1;
        if (count == max) return -2;
        out[count].name.p = s.p + a;
        out[count].name.n = i - a;
        out[count].value.p = NULL;
        out[count].value.n = 0;
        if (i < s.n && s.p[i] == '=') {
            i++;
            Py_ssize_t b = i;
            while (i < s.n && s.p[i] != ' ' && strchr(bad, s.p[i]) == NULL) i++;
            if (i == b && !empty_ok) return -1;
            out[count].value.p = s.p + b;
            out[count].value.n = i - b;
        }
        if (i < s.n && s.p[i] != ';') return -1;
        count++;
    }
    return count;
}

/* lane._param_map lookup: first parameter whose lower-cased name is `name` (given lower case) */
static param *find_param(param *ps, int n, const char *name) {
    size_t len = strlen(name);
    for (int i = 0; i < n; i++) {
        if ((size_t)ps[i].name.n != len) continue;
        size_t k = 0;
        for (; k < len; k++) {
            char c = ps[i].name.p[k];
            if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
            if (c != name[k]) break;
        }
        if (k == len) return &ps[i];
    }
    return NULL;
}

/* lane._DISPLAY: optional token words or a quoted display name, then blanks. Returns the offset
   after it, -1 if what is there is neither. */
static Py_ssize_t display(span s) {
    Py_ssize_t i = 0;
    if (s.n == 0) return 0;
    if (s.p[0] == '"') {
        i = 1;
        while (i < s.n && s.p[i] != '"') {
            if (s.p[i] == '\\') return -1;
            i++;
        }
        if (i == s.n) return -1;
        i++;
    } else if (TOKEN[(unsigned char)s.p[0]]) {
        while (i < s.n && TOKEN[(unsigned char)s.p[i]]) i++;
        for (;;) {
            Py_ssize_t j = i;
            while (j < s.n && s.p[j] == ' ') j++;
            if (j > i && j < s.n && TOKEN[(unsigned char)s.p[j]]) {
                i = j;
                while (i < s.n && TOKEN[(unsigned char)s.p[i]]) i++;
                continue;
            }
            break;
        }
    } else {
        return 0;  /* no display name: '<' must follow */
    }
    while (i < s.n && s.p[i] == ' ') i++;
    return i;
}

static PyObject *str_of(span s) { return PyUnicode_DecodeASCII(s.p ? s.p : "", s.n, NULL); }

static PyObject *int_or_none(long long v, int present) {
    if (!present) Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

#define MAX_PARAMS 24
#define NAME_BUF 32

typedef struct {
    int key;
    span name;  /* as sent, trailing blanks dropped */
    span value; /* stripped */
} copied_t;

static PyObject *lane_read(PyObject *self, PyObject *args) {
    Py_buffer buf;
    PyObject *remote;
    if (!PyArg_ParseTuple(args, "y*O", &buf, &remote)) return NULL;
    PyObject *result = NULL;
    PyObject *items[FIELDS] = {0};
    const char *d = (const char *)buf.buf;
    Py_ssize_t L = buf.len;
    PyObject *ip_obj;
    long src_port;
    const char *ip;
    Py_ssize_t ip_len;

    if (!PyTuple_Check(remote) || PyTuple_GET_SIZE(remote) != 2) goto pass;
    ip_obj = PyTuple_GET_ITEM(remote, 0);
    if (!PyUnicode_Check(ip_obj) || !PyLong_Check(PyTuple_GET_ITEM(remote, 1))) goto pass;
    src_port = PyLong_AsLong(PyTuple_GET_ITEM(remote, 1));
    if (src_port < 0) {
        PyErr_Clear();
        goto pass;
    }
    ip = PyUnicode_AsUTF8AndSize(ip_obj, &ip_len);
    if (ip == NULL) {
        PyErr_Clear();
        goto pass;
    }
    if (ip_len == 0 || ip_len > 64) goto pass;
    for (Py_ssize_t i = 0; i < ip_len; i++)
        if ((unsigned char)ip[i] <= ' ' || (unsigned char)ip[i] >= 0x7f || ip[i] == ';' || ip[i] == ',' ||
            ip[i] == '"')
            goto pass;

    /* end = data.find(b"\r\n\r\n"), which must end the datagram; only printable ASCII and CRLF */
    if (L < 4 || memcmp(d + L - 4, "\r\n\r\n", 4) != 0) goto pass;
    Py_ssize_t end = L - 4;
    for (Py_ssize_t i = 0; i < end; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c >= 0x20 && c < 0x7f) continue;
        if (c == '\r' && i + 2 < end && d[i + 1] == '\n' && d[i + 2] != '\r') {
            i++;
            continue;
        }
        goto pass; /* a control byte, a bare CR or LF, an empty line, or non-ASCII */
    }

    /* the request line: _REQUEST_LINE */
    const char *nl = memchr(d, '\r', (size_t)end);
    Py_ssize_t line_end = nl ? nl - d : end;
    span rl = {d, line_end};
    if (rl.n < 13 || memcmp(rl.p, "REGISTER sip:", 13) != 0) goto pass;
    Py_ssize_t hl = host_run(rl.p + 13, rl.n - 13);
    if (hl == 0) goto pass;
    span ruri_host = {rl.p + 13, hl};
    Py_ssize_t used;
    long ruri_port;
    if (opt_port(rl.p + 13 + hl, rl.n - 13 - hl, &used, &ruri_port) < 0) goto pass;
    Py_ssize_t after = 13 + hl + used;
    if (rl.n - after != 8 || memcmp(rl.p + after, " SIP/2.0", 8) != 0) goto pass;
    span request_uri = {rl.p + 9, after - 9};
    if (ruri_port > 65535) goto pass;

    /* the header lines */
    span values[K_ONCE_END];
    int seen[K_ONCE_END] = {0};
    copied_t copied[5];
    int n_copied = 0;
    Py_ssize_t pos = line_end + 2;
    while (pos < end + 2 && line_end < end) {
        const char *lp = d + pos;
        const char *cr = memchr(lp, '\r', (size_t)(end - pos));
        Py_ssize_t ln = cr ? cr - lp : end - pos;
        line_end = pos + ln;
        pos = line_end + 2;
        const char *colon = memchr(lp, ':', (size_t)ln);
        if (colon == NULL || colon == lp || lp[0] == ' ') goto pass;
        Py_ssize_t nn = colon - lp;
        while (nn > 0 && lp[nn - 1] == ' ') nn--;
        if (nn == 0 || nn > NAME_BUF) goto pass;
        char key[NAME_BUF];
        for (Py_ssize_t i = 0; i < nn; i++) {
            unsigned char c = (unsigned char)lp[i];
            if (!TOKEN[c]) goto pass;
            key[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        }
        int k = nn == 1 ? COMPACT_CLASS[(unsigned char)key[0]] : classify(key, nn);
        if (k == -1) k = classify(key, nn); /* a letter COMPACT does not map: its own name */
        if (k == K_GENERAL) goto pass;
        if (k == K_OTHER) continue;
        if (seen[k]) goto pass;
        seen[k] = 1;
        span v = {colon + 1, lp + ln - (colon + 1)};
        while (v.n && v.p[0] == ' ') v.p++, v.n--;
        while (v.n && v.p[v.n - 1] == ' ') v.n--;
        values[k] = v;
        if (k <= K_CSEQ) {
            copied[n_copied].key = k;
            copied[n_copied].name.p = lp;
            copied[n_copied].name.n = nn;
            copied[n_copied].value = v;
            n_copied++;
        }
    }
    if (!seen[K_VIA] || !seen[K_CALL_ID] || values[K_CALL_ID].n == 0 || !seen[K_CSEQ] || !seen[K_FROM] ||
        !seen[K_TO] || !seen[K_CONTACT])
        goto pass;

    /* CSeq: _CSEQ, below 2**31 */
    span cs = values[K_CSEQ];
    Py_ssize_t cd = 0;
    while (cd < cs.n && cs.p[cd] >= '0' && cs.p[cd] <= '9') cd++;
    if (cd == 0 || cd > 10 || cs.n - cd != 9 || memcmp(cs.p + cd, " REGISTER", 9) != 0) goto pass;
    long long cseq = 0;
    for (Py_ssize_t i = 0; i < cd; i++) cseq = cseq * 10 + (cs.p[i] - '0');
    if (cseq >= 2147483648LL) goto pass;
    long long num;
    if (seen[K_MAX_FORWARDS] && digits(values[K_MAX_FORWARDS], &num) != 1) goto pass;
    long long header_expires = 0;
    if (seen[K_EXPIRES] && (digits(values[K_EXPIRES], &header_expires) != 1 || header_expires > (1LL << 40)))
        goto pass;
    if (seen[K_CONTENT_LENGTH] && (digits(values[K_CONTENT_LENGTH], &num) != 1 || num != 0)) goto pass;

    /* Via: _VIA */
    span via = values[K_VIA];
    if (via.n < 12 || memcmp(via.p, "SIP/2.0/", 8) != 0) goto pass;
    span transport = {via.p + 8, 3};
    if (!(span_eq(transport, "UDP") || span_eq(transport, "TCP") || span_eq(transport, "TLS") ||
          span_eq(transport, "udp") || span_eq(transport, "tcp") || span_eq(transport, "tls")) ||
        via.p[11] != ' ')
        goto pass;
    const char *vh = via.p + 12;
    Py_ssize_t vrest = via.n - 12;
    Py_ssize_t vhl = host_run(vh, vrest);
    if (vhl == 0) goto pass;
    span via_host = {vh, vhl};
    long via_port;
    if (opt_port(vh + vhl, vrest - vhl, &used, &via_port) < 0 || via_port > 65535) goto pass;
    span vparams_text = {vh + vhl + used, vrest - vhl - used};
    param vp[MAX_PARAMS];
    int nvp = params(vparams_text, ";\",", 0, vp, MAX_PARAMS);
    if (nvp < 0) goto pass;
    param *branch = find_param(vp, nvp, "branch");
    if (branch == NULL || branch->value.n < 7 || memcmp(branch->value.p, "z9hG4bK", 7) != 0 ||
        find_param(vp, nvp, "maddr") != NULL)
        goto pass;
    param *rport = find_param(vp, nvp, "rport");
    int add_rport = rport != NULL && rport->value.n == 0;
    int add_received = add_rport;
    if (!add_rport && !((size_t)vhl == (size_t)ip_len && memcmp(vh, ip, (size_t)ip_len) == 0)) {
        PyObject *h = str_of(via_host);
        if (h == NULL) goto error;
        PyObject *same = PyObject_CallFunctionObjArgs(same_host, h, ip_obj, NULL);
        Py_DECREF(h);
        if (same == NULL) goto error;
        add_received = !PyObject_IsTrue(same);
        Py_DECREF(same);
    }
    PyObject *via_value;
    span received = {NULL, 0};
    int has_received = 0;
    long long dest_port_v = -1;
    if (add_received) {
        /* the stamped Via (§18.2.1, RFC 3581): "SIP/2.0/UDP host[:port]" (the port as a number), the
           parameters kept, then rport and received */
        Py_ssize_t cap = 12 + vhl + 8 + vparams_text.n + 32 + 10 + ip_len;
        char *vb = PyMem_Malloc((size_t)cap);
        if (vb == NULL) goto error;
        memcpy(vb, "SIP/2.0/", 8);
        for (int j = 0; j < 3; j++) {
            char c = transport.p[j];
            vb[8 + j] = (char)((c >= 'a' && c <= 'z') ? c - 32 : c);
        }
        vb[11] = ' ';
        Py_ssize_t w = 12;
        memcpy(vb + w, vh, (size_t)vhl);
        w += vhl;
        if (via_port >= 0) w += sprintf(vb + w, ":%ld", via_port);
        for (int j = 0; j < nvp; j++) {
            if (find_param(&vp[j], 1, "received") || (add_rport && find_param(&vp[j], 1, "rport"))) continue;
            const char *a = vp[j].name.p - 1;
            const char *b = vp[j].value.p ? vp[j].value.p + vp[j].value.n : vp[j].name.p + vp[j].name.n;
            memcpy(vb + w, a, (size_t)(b - a));
            w += b - a;
        }
        if (add_rport) w += sprintf(vb + w, ";rport=%ld", src_port);
        memcpy(vb + w, ";received=", 10);
        w += 10;
        memcpy(vb + w, ip, (size_t)ip_len);
        w += ip_len;
        via_value = PyUnicode_DecodeASCII(vb, w, NULL);
        PyMem_Free(vb);
        if (via_value == NULL) goto error;
        received.p = ip;
        received.n = ip_len;
        has_received = 1;
        if (add_rport) {
            dest_port_v = src_port;
        } else if (rport != NULL && rport->value.n > 0) {
            /* the first rport kept (received changes, rport does not) */
            int r = digits(rport->value, &dest_port_v);
            if (r < 0) {
                Py_DECREF(via_value);
                goto pass;
            }
            if (r == 0) dest_port_v = -1;
        }
    } else {
        via_value = NULL; /* the Via as sent */
        param *rec = find_param(vp, nvp, "received");
        if (rec != NULL && rec->value.n > 0) {
            received = rec->value;
            has_received = 1;
        }
        if (rport != NULL && rport->value.n > 0) {
            int r = digits(rport->value, &dest_port_v);
            if (r < 0) goto pass;
            if (r == 0) dest_port_v = -1;
        }
    }
    if (dest_port_v < 0) dest_port_v = via_port > 0 ? via_port : 5060;
    span dest_host = has_received ? received : via_host;
    if (dest_host.n >= 2 && dest_host.p[0] == '[' && dest_host.p[dest_host.n - 1] == ']') {
        dest_host.p++;
        dest_host.n -= 2;
    }
    long sent_by_port = via_port >= 0 ? via_port : 5060;

    /* From: _FROM */
    span from = values[K_FROM];
    Py_ssize_t i = display(from);
    if (i < 0 || i >= from.n || from.p[i] != '<') goto fail_via;
    i++;
    while (i < from.n && from.p[i] != ':') {
        char c = from.p[i];
        if (c == '<' || c == '>' || c == '"' || c == ' ') goto fail_via;
        i++;
    }
    if (i == from.n) goto fail_via;
    i++;
    while (i < from.n && from.p[i] != '>') {
        char c = from.p[i];
        if (c == '<' || c == '"' || c == ' ') goto fail_via;
        i++;
    }
    if (i == from.n) goto fail_via;
    i++;
    param fp[MAX_PARAMS];
    span from_params = {from.p + i, from.n - i};
    if (params(from_params, ";\"", 0, fp, MAX_PARAMS) < 0) goto fail_via;

    /* To: _TO */
    span to = values[K_TO];
    i = display(to);
    if (i < 0 || to.n - i < 5 || memcmp(to.p + i, "<sip:", 5) != 0) goto fail_via;
    i += 5;
    Py_ssize_t ua = i;
    while (i < to.n && to.p[i] != '@') {
        char c = to.p[i];
        if (c == ':' || c == ';' || c == '?' || c == '<' || c == '>' || c == '"' || c == ' ') goto fail_via;
        i++;
    }
    if (i == ua || i == to.n) goto fail_via;
    span to_user = {to.p + ua, i - ua};
    i++;
    Py_ssize_t thl = host_run(to.p + i, to.n - i);
    if (thl == 0) goto fail_via;
    span to_host = {to.p + i, thl};
    i += thl;
    long to_port;
    if (opt_port(to.p + i, to.n - i, &used, &to_port) < 0 || to_port > 65535) goto fail_via;
    i += used;
    if (to.n - i != 1 || to.p[i] != '>') goto fail_via;

    /* Contact: _CONTACT, then _SIP_PLAIN on the URI */
    span contact = values[K_CONTACT];
    i = display(contact);
    if (i < 0 || contact.n - i < 5 || memcmp(contact.p + i, "<sip:", 5) != 0) goto fail_via;
    Py_ssize_t cu = i + 1;
    i += 5;
    Py_ssize_t ci = i;
    while (i < contact.n && contact.p[i] != '>') {
        char c = contact.p[i];
        if (c == '<' || c == '"' || c == ' ') goto fail_via;
        i++;
    }
    if (i == ci || i == contact.n) goto fail_via;
    span contact_uri = {contact.p + cu, i - cu};
    span inner = {contact.p + ci, i - ci};
    span cparams_text = {contact.p + i + 1, contact.n - i - 1};
    param cp[MAX_PARAMS];
    int ncp = params(cparams_text, ";\",", 0, cp, MAX_PARAMS);
    if (ncp < 0) goto fail_via;
    {
        Py_ssize_t j = 0;
        while (j < inner.n && !strchr("@:;?", inner.p[j])) j++;
        Py_ssize_t h0 = (j < inner.n && inner.p[j] == '@' && j > 0) ? j + 1 : 0;
        Py_ssize_t uhl = host_run(inner.p + h0, inner.n - h0);
        if (uhl == 0) goto fail_via;
        long uport;
        Py_ssize_t k = h0 + uhl;
        if (opt_port(inner.p + k, inner.n - k, &used, &uport) < 0 || uport > 65535) goto fail_via;
        k += used;
        param up[MAX_PARAMS];
        span uparams = {inner.p + k, inner.n - k};
        if (params(uparams, ";?@", 1, up, MAX_PARAMS) < 0) goto fail_via;
    }
    long long param_expires = 0;
    param *pe = find_param(cp, ncp, "expires");
    if (pe != NULL) {
        Py_ssize_t n = pe->value.n;
        if (n == 0) goto fail_via;
        long long v = 0;
        for (Py_ssize_t j = 0; j < n; j++) {
            char c = pe->value.p[j];
            if (c < '0' || c > '9') goto fail_via;
            if (v < 4294967295LL) v = v * 10 + (c - '0');
        }
        param_expires = v > 4294967295LL ? 4294967295LL : v;
    }
    long long q = 0;
    param *pq = find_param(cp, ncp, "q");
    if (pq != NULL) { /* headers.parse_qvalue */
        span t = pq->value;
        if (t.n == 0 || (t.p[0] != '0' && t.p[0] != '1')) goto fail_via;
        q = (t.p[0] - '0') * 1000;
        if (t.n > 1) {
            if (t.p[1] != '.' || t.n - 2 > 3) goto fail_via;
            long long frac = 0, scale = 100;
            for (Py_ssize_t j = 2; j < t.n; j++, scale /= 10) {
                if (t.p[j] < '0' || t.p[j] > '9') goto fail_via;
                frac += (t.p[j] - '0') * scale;
            }
            q += frac;
        }
        if (q > 1000) goto fail_via;
    }
    param *instance = find_param(cp, ncp, "+sip.instance");
    param *reg_id = find_param(cp, ncp, "reg-id");

    /* the answer's copied headers: a stamped Via first, under its full name */
    int order[6];
    int n_order = 0;
    if (via_value != NULL) order[n_order++] = -1;
    for (int c = 0; c < n_copied; c++)
        if (via_value == NULL || copied[c].key != K_VIA) order[n_order++] = c;
    PyObject *copied_t_obj = PyTuple_New(n_order);
    if (copied_t_obj == NULL) goto error_via;
    long to_index = -1;
    for (int o = 0; o < n_order; o++) {
        PyObject *pair;
        if (order[o] == -1) {
            pair = Py_BuildValue("(sO)", "Via", via_value);
        } else {
            copied_t *c = &copied[order[o]];
            if (c->key == K_TO) to_index = o;
            PyObject *nm = str_of(c->name);
            PyObject *vl = str_of(c->value);
            pair = (nm && vl) ? PyTuple_Pack(2, nm, vl) : NULL;
            Py_XDECREF(nm);
            Py_XDECREF(vl);
        }
        if (pair == NULL) {
            Py_DECREF(copied_t_obj);
            goto error_via;
        }
        PyTuple_SET_ITEM(copied_t_obj, o, pair);
    }
    items[3] = copied_t_obj;
    items[4] = PyLong_FromLong(to_index);

    /* tag = stable_tag(f"{call_id}|{from_value}|{branch}") */
    {
        span cid = values[K_CALL_ID];
        Py_ssize_t n = cid.n + 1 + from.n + 1 + branch->value.n;
        char small[1024];
        char *tb = n <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)n);
        if (tb == NULL) goto error_via;
        memcpy(tb, cid.p, (size_t)cid.n);
        tb[cid.n] = '|';
        memcpy(tb + cid.n + 1, from.p, (size_t)from.n);
        tb[cid.n + 1 + from.n] = '|';
        memcpy(tb + cid.n + 2 + from.n, branch->value.p, (size_t)branch->value.n);
        PyObject *text = PyUnicode_DecodeASCII(tb, n, NULL);
        if (tb != small) PyMem_Free(tb);
        if (text == NULL) goto error_via;
        items[7] = PyObject_CallOneArg(stable_tag, text);
        Py_DECREF(text);
        if (items[7] == NULL) goto error_via;
    }
    {
        char lower[256];
        if (via_host.n > (Py_ssize_t)sizeof lower) goto pass_via;
        for (Py_ssize_t j = 0; j < via_host.n; j++) {
            char c = via_host.p[j];
            lower[j] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        }
        PyObject *b = str_of(branch->value);
        PyObject *h = PyUnicode_DecodeASCII(lower, via_host.n, NULL);
        PyObject *p = PyLong_FromLong(sent_by_port);
        items[8] = (b && h && p) ? PyTuple_Pack(4, b, h, p, str_register) : NULL;
        Py_XDECREF(b);
        Py_XDECREF(h);
        Py_XDECREF(p);
        PyObject *dh = str_of(dest_host);
        PyObject *dp = PyLong_FromLongLong(dest_port_v);
        items[9] = (dh && dp) ? PyTuple_Pack(2, dh, dp) : NULL;
        Py_XDECREF(dh);
        Py_XDECREF(dp);
    }
    items[0] = str_of(request_uri);
    items[1] = str_of(ruri_host);
    items[2] = ruri_port >= 0 ? PyLong_FromLong(ruri_port) : Py_NewRef(Py_None);
    items[5] = str_of(values[K_CALL_ID]);
    items[6] = PyLong_FromLongLong(cseq);
    items[10] = str_of(to_user);
    items[11] = str_of(to_host);
    items[12] = to_port >= 0 ? PyLong_FromLong(to_port) : Py_NewRef(Py_None);
    items[13] = str_of(contact_uri);
    items[14] = int_or_none(param_expires, pe != NULL);
    items[15] = int_or_none(q, pq != NULL);
    items[16] = instance ? str_of(instance->value) : Py_NewRef(Py_None);
    items[17] = reg_id ? str_of(reg_id->value) : Py_NewRef(Py_None);
    items[18] = int_or_none(header_expires, seen[K_EXPIRES]);
    items[19] = seen[K_AUTHORIZATION] ? str_of(values[K_AUTHORIZATION]) : Py_NewRef(Py_None);
    items[20] = seen[K_USER_AGENT] ? str_of(values[K_USER_AGENT]) : Py_NewRef(Py_None);
    Py_XDECREF(via_value);
    for (int f = 0; f < FIELDS; f++)
        if (items[f] == NULL) goto error;
    result = ((PyTypeObject *)LaneRequest)->tp_alloc((PyTypeObject *)LaneRequest, FIELDS);
    if (result == NULL) goto error;
    for (int f = 0; f < FIELDS; f++) {
        PyTuple_SET_ITEM(result, f, items[f]);
        items[f] = NULL;
    }
    PyBuffer_Release(&buf);
    return result;

pass_via:
fail_via:
    Py_XDECREF(via_value);
pass:
    for (int f = 0; f < FIELDS; f++) Py_XDECREF(items[f]);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
error_via:
    Py_XDECREF(via_value);
error:
    for (int f = 0; f < FIELDS; f++) Py_XDECREF(items[f]);
    PyBuffer_Release(&buf);
    return NULL;
}

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *cls, *tag, *same, *comp;
    if (!PyArg_ParseTuple(args, "OOOO!", &cls, &tag, &same, &PyDict_Type, &comp)) return NULL;
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "LaneRequest must be a tuple subclass");
        return NULL;
    }
    PyObject *fields = PyObject_GetAttrString(cls, "_fields");
    if (fields == NULL) return NULL;
    Py_ssize_t n_fields = PyObject_Length(fields);
    Py_DECREF(fields);
    if (n_fields != FIELDS) {
        PyErr_Format(PyExc_ValueError, "LaneRequest has %zd fields, this reader fills %d", n_fields, FIELDS);
        return NULL;
    }
    for (int c = 0; c < 256; c++) COMPACT_CLASS[c] = -1;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(comp, &pos, &k, &v)) {
        Py_ssize_t kn, vn;
        const char *ks = PyUnicode_AsUTF8AndSize(k, &kn);
        const char *vs = ks ? PyUnicode_AsUTF8AndSize(v, &vn) : NULL;
        if (vs == NULL) return NULL;
        if (kn == 1) COMPACT_CLASS[(unsigned char)ks[0]] = classify(vs, vn);
    }
    Py_XSETREF(LaneRequest, Py_NewRef(cls));
    Py_XSETREF(stable_tag, Py_NewRef(tag));
    Py_XSETREF(same_host, Py_NewRef(same));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"read", lane_read, METH_VARARGS, "read(data, remote) -> LaneRequest, or None: ask lane.read_py."},
    {"setup", setup, METH_VARARGS, "setup(LaneRequest, stable_tag, same_host, COMPACT)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "registrar._lane_c", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__lane_c(void) {
    init_tables();
    str_register = PyUnicode_InternFromString("REGISTER");
    if (str_register == NULL) return NULL;
    return PyModule_Create(&module);
}
