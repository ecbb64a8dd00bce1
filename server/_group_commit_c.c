/* server/group_commit.py's fdatasync thread in C: a pthread that never takes the GIL.

Why: a Python thread that wakes every few milliseconds (after each fdatasync, after each pause) makes
every GIL-releasing system call of the event loop's thread dearer: measured on the 2-vCPU VM, a 200-byte
os.write went from 1.0 to 8-10 µs at the median with such a thread beside it, and not at all with a C
thread doing the same; on the wire the Python thread cost 0.11-0.15 ms of server CPU per call
(benchmarks/bench_call.py --journal-fsync background against off). This thread does what the Python
reference (`PyGroupCommit`) does: fdatasync the descriptor last asked for, at most once every
`interval`, covering every request made before it began; close retired descriptors after the fdatasync
running on them. What the Python one reports through callbacks from its thread (the duration of each
fdatasync, each failure) is kept here and handed to the event loop's thread by `news()`.
tests/server/test_group_commit.py runs the same cases on both. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_DURATIONS 4096 /* kept between two news() (one per request): beyond, not kept */
#define MAX_ERRORS 64

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
    int running;
    double interval;
    int fd, wanted, stopping, waiting;
    int *retired;
    Py_ssize_t n_retired, cap_retired;
    double durations[MAX_DURATIONS];
    Py_ssize_t n_durations;
    int errors[MAX_ERRORS];
    Py_ssize_t n_errors;
} Committer;

static int as_fd(PyObject *arg) {
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return -1;
    }
    return (int)v;
}

static double seconds(const struct timespec *t) { return (double)t->tv_sec + (double)t->tv_nsec / 1e9; }

static void *run(void *arg) {
    Committer *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!(c->wanted || c->n_retired || c->stopping)) {
            c->waiting = 1;
            pthread_cond_wait(&c->cond, &c->mu);
            c->waiting = 0;
        }
        int fd = c->wanted ? c->fd : -1;
        c->wanted = 0;
        int *retired = c->retired;
        Py_ssize_t n_retired = c->n_retired;
        c->retired = NULL;
        c->n_retired = c->cap_retired = 0;
        int stopping = c->stopping;
        pthread_mutex_unlock(&c->mu);

        struct timespec began, ended;
        clock_gettime(CLOCK_MONOTONIC, &began);
        int failed = 0;
        if (fd >= 0 && fdatasync(fd) != 0) failed = errno;
        clock_gettime(CLOCK_MONOTONIC, &ended);
        for (Py_ssize_t i = 0; i < n_retired; i++) close(retired[i]);
        free(retired);

        pthread_mutex_lock(&c->mu);
        if (fd >= 0) {
            if (failed) {
                if (c->n_errors < MAX_ERRORS) c->errors[c->n_errors++] = failed;
            } else if (c->n_durations < MAX_DURATIONS) {
                c->durations[c->n_durations++] = seconds(&ended) - seconds(&began);
            }
        }
        if (stopping) {
            if (!(c->wanted || c->n_retired)) break;
            continue;
        }
        /* the pause: requests meanwhile are grouped into the next fdatasync; stop cuts it short */
        double until = seconds(&began) + c->interval;
        struct timespec deadline = {(time_t)until, (long)((until - (double)(time_t)until) * 1e9)};
        if (deadline.tv_nsec >= 1000000000L) deadline.tv_nsec = 999999999L;
        while (!c->stopping && pthread_cond_timedwait(&c->cond, &c->mu, &deadline) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int init(Committer *c, PyObject *args, PyObject *kwds) {
    static char *names[] = {"interval", NULL};
    double interval;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "d", names, &interval)) return -1;
    if (c->running) {
        PyErr_SetString(PyExc_RuntimeError, "already started");
        return -1;
    }
    if (!(interval >= 0 && interval < 3600)) {
        PyErr_SetString(PyExc_ValueError, "interval must be in [0, 3600) seconds");
        return -1;
    }
    c->interval = interval;
    c->fd = -1;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&c->mu, NULL);
    int err = pthread_create(&c->thread, NULL, run, c);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    c->running = 1;
    return 0;
}

static PyObject *pending(Committer *c) {
    return PyLong_FromSsize_t(c->n_durations + c->n_errors);
}

/* request(fd) -> int: make what was written to fd so far durable soon; the news waiting */
static PyObject *request(Committer *c, PyObject *arg) {
    int fd = as_fd(arg);
    if (fd < 0) return NULL;
    if (!c->running) {
        PyErr_SetString(PyExc_RuntimeError, "stopped");
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    c->fd = fd;
    c->wanted = 1;
    if (c->waiting) pthread_cond_signal(&c->cond);
    PyObject *out = pending(c);
    pthread_mutex_unlock(&c->mu);
    return out;
}

/* retire(fd): fd is no longer written to; closed by the thread, never under its fdatasync */
static PyObject *retire(Committer *c, PyObject *arg) {
    int fd = as_fd(arg);
    if (fd < 0) return NULL;
    if (!c->running) {
        close(fd);
        Py_RETURN_NONE;
    }
    pthread_mutex_lock(&c->mu);
    if (c->n_retired == c->cap_retired) {
        Py_ssize_t cap = c->cap_retired ? c->cap_retired * 2 : 8;
        int *grown = realloc(c->retired, (size_t)cap * sizeof(int));
        if (grown == NULL) {
            pthread_mutex_unlock(&c->mu);
            return PyErr_NoMemory();
        }
        c->retired = grown;
        c->cap_retired = cap;
    }
    c->retired[c->n_retired++] = fd;
    if (c->fd == fd) {
        c->fd = -1;
        c->wanted = 0;
    }
    if (c->waiting) pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    Py_RETURN_NONE;
}

/* news() -> (durations: list[float], errnos: list[int]), emptied */
static PyObject *news(Committer *c, PyObject *unused) {
    double durations[MAX_DURATIONS];
    int errors[MAX_ERRORS];
    pthread_mutex_lock(&c->mu);
    Py_ssize_t nd = c->n_durations, ne = c->n_errors;
    memcpy(durations, c->durations, (size_t)nd * sizeof(double));
    memcpy(errors, c->errors, (size_t)ne * sizeof(int));
    c->n_durations = c->n_errors = 0;
    pthread_mutex_unlock(&c->mu);
    PyObject *d = PyList_New(nd), *e = PyList_New(ne);
    if (d == NULL || e == NULL) goto fail;
    for (Py_ssize_t i = 0; i < nd; i++) {
        PyObject *v = PyFloat_FromDouble(durations[i]);
        if (v == NULL) goto fail;
        PyList_SET_ITEM(d, i, v);
    }
    for (Py_ssize_t i = 0; i < ne; i++) {
        PyObject *v = PyLong_FromLong(errors[i]);
        if (v == NULL) goto fail;
        PyList_SET_ITEM(e, i, v);
    }
    return Py_BuildValue("(NN)", d, e);
fail:
    Py_XDECREF(d);
    Py_XDECREF(e);
    return NULL;
}

/* stop(timeout) -> bool: end the thread once it has done what was asked; False if it is still at it
   after timeout seconds (then it ends on its own later). */
static PyObject *stop(Committer *c, PyObject *arg) {
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    if (!c->running) Py_RETURN_TRUE;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double until = seconds(&now) + (timeout > 0 ? timeout : 0);
    struct timespec deadline = {(time_t)until, (long)((until - (double)(time_t)until) * 1e9)};
    if (deadline.tv_nsec >= 1000000000L) deadline.tv_nsec = 999999999L;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = pthread_timedjoin_np(c->thread, NULL, &deadline);
    Py_END_ALLOW_THREADS
    if (err != 0) {
        pthread_detach(c->thread); /* it finishes on its own; the object must then outlive it */
        c->running = 0;
        Py_INCREF(c); /* leaked on purpose: the detached thread still reads it */
        Py_RETURN_FALSE;
    }
    c->running = 0;
    Py_RETURN_TRUE;
}

static void dealloc(Committer *c) {
    if (c->running) {
        pthread_mutex_lock(&c->mu);
        c->stopping = 1;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->mu);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(c->thread, NULL);
        Py_END_ALLOW_THREADS
        c->running = 0;
    }
    free(c->retired);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef methods[] = {
    {"request", (PyCFunction)request, METH_O, "request(fd) -> news waiting: fdatasync fd soon"},
    {"retire", (PyCFunction)retire, METH_O, "retire(fd): close fd in the thread, after its fdatasync"},
    {"news", (PyCFunction)news, METH_NOARGS, "news() -> (durations, errnos), emptied"},
    {"stop", (PyCFunction)stop, METH_O, "stop(timeout) -> bool: finish what was asked, end the thread"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CommitterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "server._group_commit_c.Committer",
    .tp_basicsize = sizeof(Committer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Committer(interval): grouped fdatasync in a thread of its own, without the GIL",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)init,
    .tp_dealloc = (destructor)dealloc,
    .tp_methods = methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "server._group_commit_c", NULL, -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__group_commit_c(void) {
    if (PyType_Ready(&CommitterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&CommitterType);
    if (PyModule_AddObject(m, "Committer", (PyObject *)&CommitterType) < 0) {
        Py_DECREF(&CommitterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
