/*
 * _core.c - the Python binding of the shmipc core (src/, include/shmipc.h).
 *
 * Thin by design: it parses arguments, calls the core, releases the GIL around anything that
 * may block, and maps the core's return codes onto shmipc.errors. The protocol is in the core.
 *
 * Every call first runs the core with SHMIPC_TRY while holding the GIL (no wait of any kind:
 * the common case costs no GIL round trip); only if that would wait is the GIL released and
 * the call made again with its real timeout. Blocked calls honour PEP 475: the core calls
 * back at every signal and every slice, and a Python signal handler that raises ends the wait
 * with its own exception, leaving no lock held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* first, as Python asks; it defines _GNU_SOURCE as core.h does */

#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>

#include "_msgpack.h"
#include "_records.h"
#include "core.h"
#include "shmipc.h"
#include "testing.h"

#define CLAIM_BATCH 64    /* recv_many claims up to this many on the stack */
#define CLAIM_MAX 65536   /* and at most this many in one claim */

static PyObject *Empty, *Full, *EndOfChannel, *ChannelClosed, *MessageTooLarge,
    *CorruptChannel, *NotAChannel, *IncompatibleChannel, *DecodeError, *TooManyWaiters;

typedef struct {
    PyObject_HEAD
    shmipc_channel *ch;
    Py_buffer map;       /* the whole mapping (header + data), exported while attached */
    PyObject *encode;    /* object -> bytes (raises the codec's own errors) */
    PyObject *decode;    /* bytes -> object (raises the codec's own errors) */
    PyObject *pack;      /* optional fast object -> bytes; on failure `encode` explains */
    PyObject *unpack;    /* optional fast bytes -> object, called with these keywords: */
    PyObject *unpack_names;  /* tuple of the keyword names (a vectorcall: no dict per call) */
    PyObject *unpack_values[8];
    Py_ssize_t unpack_nkw;
    /* A record channel's codec (shmipc._records.RecordCodec), packed and built in C around
     * the copy; NULL otherwise. */
    PyObject *record_codec;
    const shmipc_records_api *records;
    Py_ssize_t record_size;
    /* Encode and decode with _msgpack.c first (the codec is the default msgpack one, whose
     * pack and unpack are the reference for what _msgpack.c gives up on). */
    int native_msgpack;
    int calls;           /* calls in progress with the GIL released (close waits for none) */
    PyObject *weakrefs;
} CoreChannel;

/* --- errors --------------------------------------------------------------------------- */

static PyObject *closed_handle(void) {
    PyErr_SetString(ChannelClosed, "this channel handle is closed; open the channel again");
    return NULL;
}

static int parse_timeout(PyObject *timeout, int64_t *ns) {
    if (timeout == NULL || timeout == Py_None) {
        *ns = SHMIPC_FOREVER;
        return 0;
    }
    double seconds = PyFloat_AsDouble(timeout);
    if (seconds == -1.0 && PyErr_Occurred()) return -1;
    if (!(seconds >= 0) || isinf(seconds)) {
        if (isinf(seconds) && seconds > 0) {
            *ns = SHMIPC_FOREVER;
            return 0;
        }
        PyErr_Format(PyExc_ValueError, "timeout must be >= 0 or None (got %R)", timeout);
        return -1;
    }
    *ns = seconds >= 9.2e9 ? SHMIPC_FOREVER : (int64_t)(seconds * 1e9);
    return 0;
}

static void describe_wait(char *buf, size_t n, int64_t timeout_ns) {
    if (timeout_ns == 0) snprintf(buf, n, "now");
    else snprintf(buf, n, "within %g s", (double)timeout_ns / 1e9);
}

/* Raise the exception for a return code. `size` is the message size of a send (for Full and
 * MessageTooLarge). Returns NULL. */
static PyObject *raise_code(CoreChannel *self, int rc, size_t size, int64_t timeout_ns) {
    char when[64];
    describe_wait(when, sizeof when, timeout_ns);
    switch (rc) {
    case SHMIPC_EINTR:
        if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
        return NULL;
    case SHMIPC_EFULL: {
        shmipc_state st;
        shmipc_channel_state(self->ch, &st);
        uint64_t cap = shmipc_channel_capacity(self->ch);
        uint64_t used = st.write_position - st.read_position;
        uint64_t free_bytes = used <= cap ? cap - used : 0;
        uint64_t need = 8 + ((size + 7) & ~(size_t)7);
        PyObject *msg = need <= free_bytes
            ? PyUnicode_FromFormat(
                  "no room for a message of %zu bytes %s: another producer held the producer "
                  "lock all the while (it waits for room, or is stopped); receive faster or "
                  "wait longer", size, when)
            : PyUnicode_FromFormat(
                  "no room for a message of %zu bytes %s: %llu of %llu bytes free; receive "
                  "faster, wait longer, or create the channel with a larger capacity=",
                  size, when, (unsigned long long)free_bytes, (unsigned long long)cap);
        if (msg == NULL) return NULL;
        PyObject *kwargs = Py_BuildValue("{s:K,s:K}", "size", (unsigned long long)need, "free",
                                         (unsigned long long)free_bytes);
        PyObject *args = PyTuple_Pack(1, msg);
        PyObject *exc = args && kwargs ? PyObject_Call(Full, args, kwargs) : NULL;
        Py_XDECREF(kwargs);
        Py_XDECREF(args);
        Py_DECREF(msg);
        if (exc != NULL) {
            PyErr_SetObject(Full, exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    case SHMIPC_EEMPTY:
        if (timeout_ns == 0) PyErr_SetString(Empty, "no message is waiting");
        else PyErr_Format(Empty, "no message arrived %s", when);
        return NULL;
    case SHMIPC_ECLOSED:
        PyErr_SetString(ChannelClosed, "the channel was closed for sending (close_send); no "
                                       "more messages go in");
        return NULL;
    case SHMIPC_EEND:
        PyErr_SetString(EndOfChannel, "the channel was closed for sending and is drained");
        return NULL;
    case SHMIPC_ETOOBIG: {
        PyObject *exc = PyObject_CallFunction(
            MessageTooLarge, "nnn", (Py_ssize_t)size,
            (Py_ssize_t)shmipc_channel_max_message(self->ch),
            (Py_ssize_t)shmipc_channel_capacity(self->ch));
        if (exc != NULL) {
            PyErr_SetObject(MessageTooLarge, exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    case SHMIPC_ECORRUPT:
        PyErr_SetString(CorruptChannel,
                        "the channel's positions or frames failed validation: its memory was "
                        "overwritten by something else than shmipc; its messages cannot be "
                        "trusted, so create the channel again");
        return NULL;
    case SHMIPC_ENOTCHANNEL:
        PyErr_SetString(NotAChannel, "not a shmipc channel (no shmipc magic at its start)");
        return NULL;
    case SHMIPC_EKIND:
        PyErr_Format(IncompatibleChannel,
                     "a record channel takes messages of exactly %zu bytes (one record), not "
                     "%zu; send records with RecordChannel.send()",
                     shmipc_channel_record_size(self->ch), size);
        return NULL;
    case SHMIPC_EVERSION:
        PyErr_SetString(IncompatibleChannel, "a shmipc channel of another format version");
        return NULL;
    case SHMIPC_ENOSEM:
        PyErr_SetString(CorruptChannel,
                        "a semaphore of the channel is missing or is not a semaphore; open the "
                        "channel again (shmipc rebuilds them), after `python -m shmipc cleanup`"
                        " if one is damaged");
        return NULL;
    case SHMIPC_EPERM:
        PyErr_SetString(PyExc_PermissionError,
                        "no permission to open the channel's semaphores");
        return NULL;
    case SHMIPC_EDEADLK:
        PyErr_SetString(PyExc_RuntimeError,
                        "this thread holds the lock this call waits for (inside a recv_view or "
                        "send_view block of a handle on the same channel): it would wait for "
                        "itself; finish the block first");
        return NULL;
    case SHMIPC_EINVAL:
        PyErr_SetString(PyExc_RuntimeError,
                        "a view from recv_view() or send_view() is open on this handle; finish "
                        "its block before another call on the handle");
        return NULL;
    default:
        PyErr_Format(PyExc_OSError, "shmipc: %s", shmipc_strerror(rc));
        return NULL;
    }
}

/* PEP 475: run the Python signal handlers; a handler that raised ends the wait. */
static int check_signals(void *arg) {
    (void)arg;
    PyGILState_STATE gil = PyGILState_Ensure();
    int stop = PyErr_CheckSignals() < 0;
    PyGILState_Release(gil);
    return stop;
}

/* Parse FASTCALL arguments into `out` (positional first, then keywords by name); `required`
 * of them must be given. The private _PyArg_Parser is avoided on purpose. */
static int parse_args(const char *fname, const char *const *names, int required,
                      PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      PyObject **out) {
    int total = 0;
    while (names[total] != NULL) total++;
    if (nargs > total) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname,
                     total, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < total && found < 0; i++)
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) found = i;
        if (found < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname,
                         key);
            return -1;
        }
        if (found < nargs) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[found]);
            return -1;
        }
        out[found] = args[nargs + k];
    }
    for (int i = 0; i < required; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    return 0;
}

/* --- lifecycle ------------------------------------------------------------------------ */

static int CoreChannel_init(CoreChannel *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"buffer", NULL};
    PyObject *buffer;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:CoreChannel", kwlist, &buffer)) return -1;
    if (self->ch != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the handle is attached already");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &self->map, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    int rc = shmipc_channel_attach(self->map.buf, (size_t)self->map.len, &self->ch);
    if (rc != SHMIPC_OK) {
        PyBuffer_Release(&self->map);
        self->ch = NULL;
        raise_code(self, rc, 0, 0);
        return -1;
    }
    shmipc_channel_set_interrupt(self->ch, check_signals, NULL);
    return 0;
}

static void detach(CoreChannel *self) {
    if (self->ch == NULL) return;
    shmipc_channel_close(self->ch);
    self->ch = NULL;
    PyBuffer_Release(&self->map);
}

static void CoreChannel_dealloc(CoreChannel *self) {
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    detach(self);
    Py_CLEAR(self->encode);
    Py_CLEAR(self->decode);
    Py_CLEAR(self->pack);
    Py_CLEAR(self->unpack);
    Py_CLEAR(self->unpack_names);
    for (Py_ssize_t i = 0; i < self->unpack_nkw; i++) Py_CLEAR(self->unpack_values[i]);
    self->unpack_nkw = 0;
    Py_CLEAR(self->record_codec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int CoreChannel_traverse(CoreChannel *self, visitproc visit, void *arg) {
    Py_VISIT(self->encode);
    Py_VISIT(self->decode);
    Py_VISIT(self->pack);
    Py_VISIT(self->unpack);
    Py_VISIT(self->unpack_names);
    for (Py_ssize_t i = 0; i < self->unpack_nkw; i++) Py_VISIT(self->unpack_values[i]);
    Py_VISIT(self->record_codec);
    return 0;
}

static int CoreChannel_clear(CoreChannel *self) {
    Py_CLEAR(self->encode);
    Py_CLEAR(self->decode);
    Py_CLEAR(self->pack);
    Py_CLEAR(self->unpack);
    Py_CLEAR(self->unpack_names);
    for (Py_ssize_t i = 0; i < self->unpack_nkw; i++) Py_CLEAR(self->unpack_values[i]);
    self->unpack_nkw = 0;
    Py_CLEAR(self->record_codec);
    return 0;
}

static PyObject *CoreChannel_detach(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->calls > 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot close this handle while %d call(s) on it wait in other threads; "
                     "end them first (a timeout, or close_send() on the channel)", self->calls);
        return NULL;
    }
    detach(self);
    Py_RETURN_NONE;
}

#define NATIVE_STACK 1024 /* messages up to this size are decoded from a copy on the stack */

/* A record codec for the channel: `record_codec` a shmipc._records.RecordCodec whose records
 * fit RECORD_STACK bytes (larger ones go through encode/decode and bytes objects). */
#define RECORD_STACK 512
static int set_record_codec(CoreChannel *self, PyObject *record_codec) {
    if (record_codec == Py_None) {
        Py_CLEAR(self->record_codec);
        return 0;
    }
    static const shmipc_records_api *api;
    if (api == NULL && (api = PyCapsule_Import(SHMIPC_RECORDS_CAPSULE, 0)) == NULL) return -1;
    if (!api->check(record_codec)) {
        PyErr_SetString(PyExc_TypeError, "record_codec must be a shmipc._records.RecordCodec");
        return -1;
    }
    Py_ssize_t size = api->size(record_codec);
    Py_XSETREF(self->record_codec, size <= RECORD_STACK ? Py_NewRef(record_codec) : NULL);
    self->records = api;
    self->record_size = size;
    return 0;
}

static PyObject *CoreChannel_set_native_msgpack(CoreChannel *self, PyObject *on) {
    int t = PyObject_IsTrue(on);
    if (t < 0) return NULL;
    self->native_msgpack = t;
    Py_RETURN_NONE;
}

static PyObject *CoreChannel_set_codec(CoreChannel *self, PyObject *args) {
    PyObject *encode, *decode, *pack = Py_None, *unpack = Py_None, *kwargs = Py_None;
    PyObject *record_codec = Py_None;
    if (!PyArg_ParseTuple(args, "OO|OOOO:_set_codec", &encode, &decode, &pack, &unpack, &kwargs,
                          &record_codec))
        return NULL;
    if (set_record_codec(self, record_codec) < 0) return NULL;
    self->native_msgpack = 0; /* for the default codec only: see _set_native_msgpack */
    if (kwargs != Py_None && (!PyDict_Check(kwargs) || PyDict_GET_SIZE(kwargs) > 8)) {
        PyErr_SetString(PyExc_TypeError, "unpack_kwargs must be a dict of at most 8 keywords");
        return NULL;
    }
    Py_INCREF(encode);
    Py_INCREF(decode);
    Py_XSETREF(self->encode, encode);
    Py_XSETREF(self->decode, decode);
    Py_XSETREF(self->pack, pack == Py_None ? NULL : (Py_INCREF(pack), pack));
    Py_XSETREF(self->unpack, unpack == Py_None ? NULL : (Py_INCREF(unpack), unpack));
    Py_CLEAR(self->unpack_names);
    for (Py_ssize_t i = 0; i < self->unpack_nkw; i++) Py_CLEAR(self->unpack_values[i]);
    self->unpack_nkw = 0;
    if (kwargs != Py_None) {
        Py_ssize_t pos = 0, i = 0;
        PyObject *key, *value;
        if ((self->unpack_names = PyTuple_New(PyDict_GET_SIZE(kwargs))) == NULL) return NULL;
        while (PyDict_Next(kwargs, &pos, &key, &value)) {
            Py_INCREF(key);
            PyTuple_SET_ITEM(self->unpack_names, i, key);
            Py_INCREF(value);
            self->unpack_values[i++] = value;
        }
        self->unpack_nkw = i;
    }
    Py_RETURN_NONE;
}

/* A failure of a fast codec call that the codec's own call should explain: an ordinary
 * Exception (not KeyboardInterrupt, SystemExit or MemoryError). */
static int fast_call_failed_plainly(void) {
    return PyErr_ExceptionMatches(PyExc_Exception) && !PyErr_ExceptionMatches(PyExc_MemoryError);
}

/* unpack(payload, **unpack_kwargs) as a vectorcall: keywords passed as a dict cost msgpack's
 * unpackb about 200 ns a call, most of a small message's decode. */
static PyObject *call_unpack(CoreChannel *self, PyObject *payload) {
    PyObject *args[1 + 8];
    args[0] = payload;
    for (Py_ssize_t i = 0; i < self->unpack_nkw; i++) args[1 + i] = self->unpack_values[i];
    return PyObject_Vectorcall(self->unpack, args, 1, self->unpack_names);
}

static PyObject *decode_one(CoreChannel *self, PyObject *payload) {
    if (self->native_msgpack && PyBytes_CheckExact(payload)) {
        PyObject *obj = shmipc_msgpack_decode((const unsigned char *)PyBytes_AS_STRING(payload),
                                              (size_t)PyBytes_GET_SIZE(payload));
        if (obj != NULL || PyErr_Occurred()) return obj;
    }
    if (self->unpack != NULL) {
        PyObject *obj = call_unpack(self, payload);
        if (obj != NULL || !fast_call_failed_plainly()) return obj;
        PyErr_Clear(); /* the codec decodes it again and raises its DecodeError */
    }
    return PyObject_CallOneArg(self->decode, payload);
}

/* --- msgpack batches ------------------------------------------------------------------
 * A batch costs one msgpack call per side, not one per message: send_many packs the list as
 * one msgpack array and sends its elements as the messages; recv_many puts an array header in
 * front of the messages it took and unpacks them in one call. Both rest on knowing where one
 * msgpack object ends, below: the messages themselves stay plain msgpack objects, so every
 * receive decodes them alike. This is the codec's framing, not the protocol's. */

static uint64_t big_endian(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Bytes of the msgpack object at p (n bytes there), or 0 if no complete object starts at p.
 * Untrusted input (another process wrote it): every length is checked against n, and nesting
 * is counted, not recursed into. */
static size_t msgpack_object_size(const unsigned char *p, size_t n) {
    size_t at = 0;
    uint64_t pending = 1; /* objects still to step over */
    while (pending > 0) {
        if (at >= n || pending > n - at) return 0; /* each object needs at least one byte */
        unsigned char b = p[at++];
        pending--;
        uint64_t skip = 0, more = 0;
        int width = 0;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        } else if (b <= 0x8f) {
            more = 2u * (b & 0x0f);
        } else if (b <= 0x9f) {
            more = b & 0x0f;
        } else if (b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: width = 1; break;                   /* bin8, str8 */
            case 0xc5: case 0xda: width = 2; break;                   /* bin16, str16 */
            case 0xc6: case 0xdb: width = 4; break;                   /* bin32, str32 */
            case 0xc7: width = 1; skip = 1; break;                    /* ext8 + its type */
            case 0xc8: width = 2; skip = 1; break;
            case 0xc9: width = 4; skip = 1; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xca: case 0xce: case 0xd2: skip = 4; break;
            case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                               /* fixext: type + data */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: case 0xde: width = 2; break;                   /* array16, map16 */
            case 0xdd: case 0xdf: width = 4; break;                   /* array32, map32 */
            default: return 0;                                        /* 0xc1: never used */
            }
            if (width) {
                if (n - at < (size_t)width) return 0;
                uint64_t count = big_endian(p + at, width);
                at += (size_t)width;
                if (b == 0xdc || b == 0xdd) more = count;
                else if (b == 0xde || b == 0xdf) more = 2 * count;
                else skip += count;
            }
        }
        if (skip > n - at) return 0;
        at += (size_t)skip;
        if (more > n) return 0;
        pending += more;
    }
    return at;
}

/* The elements of a packed msgpack array of `count` elements, as slices of `packed`; 0, or -1
 * if `packed` is not such an array (the caller then packs element by element). */
static int split_array(const unsigned char *packed, size_t n, size_t count,
                       struct iovec *iov) {
    size_t at;
    if (n < 1) return -1;
    if (packed[0] >= 0x90 && packed[0] <= 0x9f) {
        if ((size_t)(packed[0] & 0x0f) != count) return -1;
        at = 1;
    } else if (packed[0] == 0xdc && n >= 3 && big_endian(packed + 1, 2) == count) {
        at = 3;
    } else if (packed[0] == 0xdd && n >= 5 && big_endian(packed + 1, 4) == count) {
        at = 5;
    } else {
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        size_t size = msgpack_object_size(packed + at, n - at);
        if (size == 0) return -1;
        iov[i].iov_base = (void *)(packed + at);
        iov[i].iov_len = size;
        at += size;
    }
    return at == n ? 0 : -1;
}


/* Run `call` with SHMIPC_TRY holding the GIL, then, if it would wait and the caller allows
 * waiting, again with the GIL released. With a readiness descriptor open, a timeout of 0 runs
 * once holding the GIL: the core then waits for nothing (it arms the descriptor instead). */
#define NEVER_WAITS(self, timeout_ns) ((timeout_ns) == 0 && (self)->ch->ready_fd >= 0)
#define RUN_CORE(self, rc, timeout_ns, call_with_flags)                                    \
    do {                                                                                   \
        int flags = NEVER_WAITS(self, timeout_ns) ? 0 : SHMIPC_TRY;                        \
        rc = (call_with_flags);                                                            \
        if (rc == SHMIPC_EWOULDBLOCK && flags) {                                           \
            flags = 0;                                                                     \
            self->calls++;                                                                 \
            Py_BEGIN_ALLOW_THREADS rc = (call_with_flags);                                 \
            Py_END_ALLOW_THREADS self->calls--;                                            \
        }                                                                                  \
    } while (0)

/* --- sending -------------------------------------------------------------------------- */

static PyObject *send_buffer(CoreChannel *self, PyObject *data, int64_t timeout_ns) {
    if (self->ch == NULL) return closed_handle();
    int rc;
    if (PyBytes_CheckExact(data)) {
        const char *p = PyBytes_AS_STRING(data);
        size_t n = (size_t)PyBytes_GET_SIZE(data);
        Py_INCREF(data); /* alive while the GIL is released */
        RUN_CORE(self, rc, timeout_ns, shmipc_channel_send(self->ch, p, n, timeout_ns, flags));
        Py_DECREF(data);
        if (rc != SHMIPC_OK) return raise_code(self, rc, n, timeout_ns);
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    RUN_CORE(self, rc, timeout_ns,
             shmipc_channel_send(self->ch, view.buf, (size_t)view.len, timeout_ns, flags));
    size_t n = (size_t)view.len;
    PyBuffer_Release(&view);
    if (rc != SHMIPC_OK) return raise_code(self, rc, n, timeout_ns);
    Py_RETURN_NONE;
}

static PyObject *CoreChannel_send_sequenced(CoreChannel *self, PyObject *const *args,
                                            Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"data", "sequence", "timeout", NULL};
    PyObject *a[3] = {NULL, NULL, Py_None};
    if (parse_args("send_sequenced", names, 2, args, nargs, kwnames, a) < 0) return NULL;
    unsigned long long sequence = PyLong_AsUnsignedLongLong(a[1]);
    if (sequence == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (sequence == 0) {
        PyErr_SetString(PyExc_ValueError, "a sequence starts at 1 (0 means none applied)");
        return NULL;
    }
    int64_t ns;
    if (parse_timeout(a[2], &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    int rc;
    RUN_CORE(self, rc, ns,
             shmipc_channel_send_sequenced(self->ch, view.buf, (size_t)view.len, sequence, ns,
                                           flags));
    size_t n = (size_t)view.len;
    PyBuffer_Release(&view);
    if (rc == SHMIPC_EDUPLICATE) Py_RETURN_FALSE;
    if (rc != SHMIPC_OK) return raise_code(self, rc, n, ns);
    Py_RETURN_TRUE;
}

static PyObject *CoreChannel_applied_sequence(CoreChannel *self, PyObject *const *args,
                                              Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (parse_args("applied_sequence", names, 0, args, nargs, kwnames, &timeout) < 0)
        return NULL;
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    uint64_t sequence = 0;
    int rc;
    self->calls++;
    Py_BEGIN_ALLOW_THREADS rc = shmipc_channel_applied_sequence(self->ch, &sequence, ns);
    Py_END_ALLOW_THREADS self->calls--;
    if (rc != SHMIPC_OK) return raise_code(self, rc, 0, ns);
    return PyLong_FromUnsignedLongLong(sequence);
}

static PyObject *encode_obj(CoreChannel *self, PyObject *obj) {
    if (self->encode == NULL) {
        PyErr_SetString(PyExc_TypeError, "this channel carries no objects (no codec)");
        return NULL;
    }
    if (self->pack != NULL) {
        PyObject *payload = PyObject_CallOneArg(self->pack, obj);
        if (payload != NULL || !fast_call_failed_plainly()) return payload;
        PyErr_Clear(); /* the codec encodes it again and raises its EncodeError */
    }
    return PyObject_CallOneArg(self->encode, obj);
}

static PyObject *CoreChannel_send_bytes(CoreChannel *self, PyObject *const *args,
                                        Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"data", "timeout", NULL};
    PyObject *a[2] = {NULL, Py_None};
    if (parse_args("send_bytes", names, 1, args, nargs, kwnames, a) < 0) return NULL;
    PyObject *data = a[0], *timeout = a[1];
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    return send_buffer(self, data, ns);
}

static PyObject *CoreChannel_send_bytes_nowait(CoreChannel *self, PyObject *data) {
    return send_buffer(self, data, 0);
}

/* An object packed by _msgpack.c into a buffer on the stack, then sent. NULL without an
 * exception if it gave up (the codec packs the object or raises). */
static PyObject *send_native(CoreChannel *self, PyObject *obj, int64_t timeout_ns) {
    shmipc_packbuf b;
    shmipc_packbuf_init(&b);
    int packed = shmipc_msgpack_pack(&b, obj);
    PyObject *result = NULL;
    if (packed == 1) {
        int rc;
        RUN_CORE(self, rc, timeout_ns,
                 shmipc_channel_send(self->ch, b.buf, b.len, timeout_ns, flags));
        result = rc == SHMIPC_OK ? Py_NewRef(Py_None) : raise_code(self, rc, b.len, timeout_ns);
    }
    shmipc_packbuf_free(&b);
    return result;
}

/* A record: packed on the stack (the codec may call Python: no lock is held), then sent. */
static PyObject *send_record(CoreChannel *self, PyObject *value, int64_t timeout_ns) {
    unsigned char rec[RECORD_STACK];
    if (self->records->pack(self->record_codec, value, rec) < 0) return NULL;
    size_t n = (size_t)self->record_size;
    int rc;
    RUN_CORE(self, rc, timeout_ns, shmipc_channel_send(self->ch, rec, n, timeout_ns, flags));
    if (rc != SHMIPC_OK) return raise_code(self, rc, n, timeout_ns);
    Py_RETURN_NONE;
}

/* One object: a record packed in C, a plain object packed by _msgpack.c, or the codec's. */
static PyObject *send_object(CoreChannel *self, PyObject *obj, int64_t timeout_ns) {
    if (self->record_codec != NULL) return send_record(self, obj, timeout_ns);
    if (self->native_msgpack) {
        PyObject *done = send_native(self, obj, timeout_ns);
        if (done != NULL || PyErr_Occurred()) return done;
    }
    PyObject *payload = encode_obj(self, obj);
    if (payload == NULL) return NULL;
    PyObject *result = send_buffer(self, payload, timeout_ns);
    Py_DECREF(payload);
    return result;
}

static PyObject *CoreChannel_send(CoreChannel *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    static const char *const names[] = {"obj", "timeout", NULL};
    PyObject *a[2] = {NULL, Py_None};
    if (parse_args("send", names, 1, args, nargs, kwnames, a) < 0) return NULL;
    PyObject *obj = a[0], *timeout = a[1];
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    return send_object(self, obj, ns);
}

static PyObject *CoreChannel_send_nowait(CoreChannel *self, PyObject *obj) {
    if (self->ch == NULL) return closed_handle();
    return send_object(self, obj, 0);
}

/* Send a list of buffers (objects with the buffer protocol) as one batch. */
/* Send `count` messages (iov) as one batch: without waiting while holding the GIL, then the
 * rest with it released. Returns None, or NULL with the error (Full and ChannelClosed carry
 * `sent`). */
static PyObject *send_iov(CoreChannel *self, const struct iovec *iov, size_t count,
                          int64_t timeout_ns) {
    size_t sent = 0, total;
    int rc = shmipc_channel_sendv(self->ch, iov, count, &sent, timeout_ns,
                                  NEVER_WAITS(self, timeout_ns) ? 0 : SHMIPC_TRY);
    total = sent;
    if (rc == SHMIPC_EWOULDBLOCK) { /* the rest, waiting for room, without the GIL */
        self->calls++;
        Py_BEGIN_ALLOW_THREADS rc = shmipc_channel_sendv(self->ch, iov + total, count - total,
                                                         &sent, timeout_ns, 0);
        Py_END_ALLOW_THREADS self->calls--;
        total += sent;
    }
    if (rc == SHMIPC_OK) Py_RETURN_NONE;
    size_t size = 0;
    if (rc == SHMIPC_ETOOBIG || rc == SHMIPC_EKIND) {
        for (size_t i = 0; i < count; i++)
            if (iov[i].iov_len > size) size = iov[i].iov_len;
    } else if (total < count) {
        size = iov[total].iov_len;
    }
    raise_code(self, rc, size, timeout_ns);
    if (rc == SHMIPC_EFULL || rc == SHMIPC_ECLOSED || rc == SHMIPC_EINTR) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value != NULL) {
            PyObject *n = PyLong_FromSize_t(total);
            if (n != NULL) PyObject_SetAttrString(value, "sent", n);
            Py_XDECREF(n);
        }
        PyErr_Restore(type, value, tb);
    }
    return NULL;
}

/* Send a list of buffers (objects with the buffer protocol) as one batch. */
static PyObject *send_list(CoreChannel *self, PyObject *items, int64_t timeout_ns) {
    Py_ssize_t count = PyList_GET_SIZE(items);
    Py_buffer *views = PyMem_Calloc(count ? (size_t)count : 1, sizeof *views);
    struct iovec *iov = PyMem_Calloc(count ? (size_t)count : 1, sizeof *iov);
    Py_ssize_t got = 0;
    PyObject *result = NULL;
    if (views == NULL || iov == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < count; got++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(items, got), &views[got], PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        iov[got].iov_base = views[got].buf;
        iov[got].iov_len = (size_t)views[got].len;
    }
    result = send_iov(self, iov, (size_t)count, timeout_ns);
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(iov);
    return result;
}

/* send_many of objects in one msgpack call: pack the whole sequence as an array and send its
 * elements. Returns NULL without an error set when that does not apply (no fast pack, or the
 * pack failed: encoding one by one then names the object at fault). */
/* Every object packed by _msgpack.c into one buffer, sent as one batch. NULL without an
 * exception if it gave up on one of them (the caller packs them otherwise). */
static PyObject *send_native_batch(CoreChannel *self, PyObject *seq, int64_t timeout_ns) {
    size_t count = (size_t)PySequence_Fast_GET_SIZE(seq);
    PyObject *const *items = PySequence_Fast_ITEMS(seq);
    shmipc_packbuf b;
    shmipc_packbuf_init(&b);
    size_t *ends = PyMem_Malloc(count * sizeof *ends);
    struct iovec *iov = PyMem_Malloc(count * sizeof *iov);
    PyObject *result = NULL;
    int packed = 1;
    if (ends == NULL || iov == NULL) {
        PyErr_NoMemory();
        packed = -1;
    }
    for (size_t i = 0; packed == 1 && i < count; i++) {
        packed = shmipc_msgpack_pack(&b, items[i]);
        ends[i] = b.len;
    }
    if (packed == 1) {
        for (size_t i = 0, start = 0; i < count; start = ends[i++]) {
            iov[i].iov_base = b.buf + start;
            iov[i].iov_len = ends[i] - start;
        }
        result = send_iov(self, iov, count, timeout_ns);
    }
    PyMem_Free(iov);
    PyMem_Free(ends);
    shmipc_packbuf_free(&b);
    return result;
}

static PyObject *send_packed_array(CoreChannel *self, PyObject *seq, int64_t timeout_ns) {
    size_t count = (size_t)PySequence_Fast_GET_SIZE(seq);
    if (self->pack == NULL || count == 0) return NULL;
    if (self->native_msgpack) {
        PyObject *done = send_native_batch(self, seq, timeout_ns);
        if (done != NULL || PyErr_Occurred()) return done;
    }
    PyObject *packed = PyObject_CallOneArg(self->pack, seq);
    if (packed == NULL) {
        if (fast_call_failed_plainly()) PyErr_Clear();
        return NULL;
    }
    PyObject *result = NULL;
    struct iovec *iov = PyMem_Calloc(count, sizeof *iov);
    if (iov == NULL) PyErr_NoMemory();
    else if (!PyBytes_Check(packed) ||
             split_array((const unsigned char *)PyBytes_AS_STRING(packed),
                         (size_t)PyBytes_GET_SIZE(packed), count, iov) != 0)
        ; /* not what our packer makes: the caller encodes one by one */
    else
        result = send_iov(self, iov, count, timeout_ns);
    PyMem_Free(iov);
    Py_DECREF(packed);
    return result;
}

static PyObject *send_many_impl(CoreChannel *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames, int encode) {
    static const char *const names[] = {"messages", "timeout", NULL};
    PyObject *a[2] = {NULL, Py_None};
    if (parse_args(encode ? "send_many" : "send_many_bytes", names, 1, args, nargs, kwnames,
                   a) < 0)
        return NULL;
    PyObject *iterable = a[0], *timeout = a[1];
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    PyObject *seq = PySequence_Fast(iterable, "send_many takes an iterable of messages");
    if (seq == NULL) return NULL;
    if (encode) {
        PyObject *done = send_packed_array(self, seq, ns);
        if (done != NULL || PyErr_Occurred()) {
            Py_DECREF(seq);
            return done;
        }
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *items = PyList_New(n);
    if (items == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) { /* encode everything first: an error sends nothing */
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *payload = encode ? encode_obj(self, item) : (Py_INCREF(item), item);
        if (payload == NULL) {
            Py_DECREF(items);
            Py_DECREF(seq);
            return NULL;
        }
        PyList_SET_ITEM(items, i, payload);
    }
    Py_DECREF(seq);
    PyObject *result = send_list(self, items, ns);
    Py_DECREF(items);
    return result;
}

static PyObject *CoreChannel_send_many(CoreChannel *self, PyObject *const *args,
                                       Py_ssize_t nargs, PyObject *kwnames) {
    return send_many_impl(self, args, nargs, kwnames, 1);
}

static PyObject *CoreChannel_send_many_bytes(CoreChannel *self, PyObject *const *args,
                                             Py_ssize_t nargs, PyObject *kwnames) {
    return send_many_impl(self, args, nargs, kwnames, 0);
}

static PyObject *CoreChannel_close_send(CoreChannel *self, PyObject *const *args,
                                        Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (parse_args("close_send", names, 0, args, nargs, kwnames, &timeout) < 0) return NULL;
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    int rc;
    self->calls++;
    Py_BEGIN_ALLOW_THREADS rc = shmipc_channel_close_send(self->ch, ns);
    Py_END_ALLOW_THREADS self->calls--;
    if (rc == SHMIPC_EFULL) {
        PyErr_Format(Full, "a send in progress did not finish %s (a producer waits for room, "
                           "or is stopped); receive first or wait longer",
                     ns == 0 ? "at once" : "before the timeout");
        return NULL;
    }
    if (rc != SHMIPC_OK) return raise_code(self, rc, 0, ns);
    Py_RETURN_NONE;
}

/* --- receiving ------------------------------------------------------------------------ */

/* Claim up to `max` messages (waiting up to timeout_ns for the first). */
static int claim(CoreChannel *self, shmipc_slice *msgs, size_t max, size_t *count,
                 int64_t timeout_ns) {
    int rc;
    RUN_CORE(self, rc, timeout_ns,
             shmipc_channel_recv_claim_many(self->ch, msgs, max, count, timeout_ns, flags));
    if (rc == SHMIPC_EINVAL && self->ch->recv_claimed) {
        /* A recv_view whose view an exporter held at the end of its block: the Python layer
         * commits it now if the exporter has let go. */
        PyObject *settled = PyObject_CallMethod((PyObject *)self, "_settle_view", NULL);
        if (settled == NULL) return SHMIPC_EINTR; /* the Python error is set */
        int ok = PyObject_IsTrue(settled);
        Py_DECREF(settled);
        if (ok == 1)
            RUN_CORE(self, rc, timeout_ns,
                     shmipc_channel_recv_claim_many(self->ch, msgs, max, count, timeout_ns,
                                                    flags));
    }
    return rc;
}

static PyObject *recv_one(CoreChannel *self, int64_t timeout_ns, int decode) {
    if (self->ch == NULL) return closed_handle();
    shmipc_slice msg;
    size_t count;
    int rc = claim(self, &msg, 1, &count, timeout_ns);
    if (rc != SHMIPC_OK) return raise_code(self, rc, 0, timeout_ns);
    if (decode && self->native_msgpack && msg.length <= NATIVE_STACK) {
        /* copied out and committed before decoding (that may run Python code) */
        unsigned char copy[NATIVE_STACK];
        memcpy(copy, (const char *)shmipc_channel_data(self->ch) + msg.offset, msg.length);
        shmipc_channel_recv_commit(self->ch);
        PyObject *obj = shmipc_msgpack_decode(copy, msg.length);
        if (obj != NULL || PyErr_Occurred()) return obj;
        PyObject *payload = PyBytes_FromStringAndSize((const char *)copy, (Py_ssize_t)msg.length);
        if (payload == NULL) return NULL;
        obj = decode_one(self, payload);
        Py_DECREF(payload);
        return obj;
    }
    if (decode && self->record_codec != NULL && msg.length == (size_t)self->record_size) {
        /* copied out and committed before the value is built (that may run Python code) */
        unsigned char rec[RECORD_STACK];
        memcpy(rec, (const char *)shmipc_channel_data(self->ch) + msg.offset, msg.length);
        shmipc_channel_recv_commit(self->ch);
        return self->records->unpack(self->record_codec, rec);
    }
    PyObject *payload = PyBytes_FromStringAndSize(
        (const char *)shmipc_channel_data(self->ch) + msg.offset, (Py_ssize_t)msg.length);
    if (payload == NULL) {
        shmipc_channel_recv_abort(self->ch); /* out of memory: the message stays */
        return NULL;
    }
    shmipc_channel_recv_commit(self->ch);
    if (!decode) return payload;
    if (self->decode == NULL) return payload;
    PyObject *obj = decode_one(self, payload);
    Py_DECREF(payload);
    return obj;
}

static PyObject *recv_method(CoreChannel *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames, int decode) {
    static const char *const names[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (kwnames == NULL && nargs <= 1) {
        if (nargs == 1) timeout = args[0];
    } else if (parse_args(decode ? "recv" : "recv_bytes", names, 0, args, nargs, kwnames,
                          &timeout) < 0) {
        return NULL;
    }
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    return recv_one(self, ns, decode);
}

static PyObject *CoreChannel_recv(CoreChannel *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    return recv_method(self, args, nargs, kwnames, 1);
}

static PyObject *CoreChannel_recv_bytes(CoreChannel *self, PyObject *const *args,
                                        Py_ssize_t nargs, PyObject *kwnames) {
    return recv_method(self, args, nargs, kwnames, 0);
}

static PyObject *CoreChannel_recv_nowait(CoreChannel *self, PyObject *unused) {
    (void)unused;
    return recv_one(self, 0, 1);
}

static PyObject *CoreChannel_recv_bytes_nowait(CoreChannel *self, PyObject *unused) {
    (void)unused;
    return recv_one(self, 0, 0);
}

/* Decode one payload into `out`. A DecodeError is kept in its place (the message was
 * consumed) and the first one remembered in *failure; -1 for any other exception. */
static int append_object(PyObject *obj, PyObject *out, PyObject **failure) {
    if (obj == NULL) {
        if (!PyErr_ExceptionMatches(DecodeError)) return -1;
        PyObject *type, *tb;
        PyErr_Fetch(&type, &obj, &tb);
        PyErr_NormalizeException(&type, &obj, &tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        if (obj == NULL) return -1;
        if (*failure == NULL) {
            *failure = obj;
            Py_INCREF(obj);
        }
    }
    int rc = PyList_Append(out, obj);
    Py_DECREF(obj);
    return rc;
}

static int append_decoded(CoreChannel *self, PyObject *payload, PyObject *out,
                          PyObject **failure) {
    return append_object(decode_one(self, payload), out, failure);
}

/* Copy the claimed messages out, commit them, and append them to `out` (decoded if
 * `decoding`). Returns 0, 1 if out of memory left this claim in the channel (stop here with
 * what `out` holds), or -1 with an exception set. */
static int take_claimed(CoreChannel *self, const shmipc_slice *msgs, size_t count,
                        int decoding, PyObject *out, PyObject **failure) {
    const char *data = shmipc_channel_data(self->ch);
    if (!decoding) {
        Py_ssize_t before = PyList_GET_SIZE(out);
        for (size_t i = 0; i < count; i++) {
            PyObject *b = PyBytes_FromStringAndSize(data + msgs[i].offset,
                                                    (Py_ssize_t)msgs[i].length);
            int failed = b == NULL || PyList_Append(out, b) < 0;
            Py_XDECREF(b);
            if (failed) {
                PyList_SetSlice(out, before, PyList_GET_SIZE(out), NULL);
                shmipc_channel_recv_abort(self->ch); /* the messages stay in the channel */
                if (before == 0) return -1;
                PyErr_Clear();
                return 1;
            }
        }
        shmipc_channel_recv_commit(self->ch);
        return 0;
    }
    if (self->record_codec != NULL) {
        /* Records: all copied out and committed, then each value built from its bytes. */
        size_t size = (size_t)self->record_size;
        unsigned char *recs = PyMem_Malloc(count * size + 1);
        if (recs == NULL) {
            shmipc_channel_recv_abort(self->ch);
            if (PyList_GET_SIZE(out) == 0) return -1;
            PyErr_Clear();
            return 1;
        }
        for (size_t i = 0; i < count; i++) {
            if (msgs[i].length != size) { /* the core delivers records only: never here */
                PyMem_Free(recs);
                shmipc_channel_recv_abort(self->ch);
                PyErr_SetString(CorruptChannel, "a record channel delivered a frame that is "
                                "not one record");
                return -1;
            }
            memcpy(recs + i * size, data + msgs[i].offset, size);
        }
        shmipc_channel_recv_commit(self->ch);
        int rc = 0;
        for (size_t i = 0; rc == 0 && i < count; i++)
            rc = append_object(self->records->unpack(self->record_codec, recs + i * size), out,
                               failure);
        PyMem_Free(recs);
        return rc;
    }
    /* Decoding: one buffer for the whole claim, an array header in front, one unpack. */
    size_t total = 5;
    for (size_t i = 0; i < count; i++) total += msgs[i].length;
    PyObject *joined = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (joined == NULL) {
        shmipc_channel_recv_abort(self->ch);
        if (PyList_GET_SIZE(out) == 0) return -1;
        PyErr_Clear();
        return 1;
    }
    unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(joined), *at = buf + 5;
    buf[0] = 0xdd; /* array32 of `count` elements */
    for (int k = 0; k < 4; k++) buf[1 + k] = (unsigned char)(count >> (24 - 8 * k));
    /* every message exactly one object: one unpack (unless each is decoded natively) */
    int whole = self->unpack != NULL && !self->native_msgpack;
    for (size_t i = 0; i < count; i++) {
        size_t len = msgs[i].length;
        if (len != 0) memcpy(at, data + msgs[i].offset, len);
        whole = whole && msgpack_object_size(at, len) == len;
        at += len;
    }
    shmipc_channel_recv_commit(self->ch);
    if (self->native_msgpack) {
        /* each message decoded where it lies in the copy; one the decoder gives up on goes to
         * the codec (which decodes it or keeps its DecodeError in its place) */
        int rc = 0;
        at = buf + 5;
        for (size_t i = 0; rc == 0 && i < count; i++) {
            size_t len = msgs[i].length;
            PyObject *obj = shmipc_msgpack_decode(at, len);
            if (obj != NULL) {
                rc = append_object(obj, out, failure);
            } else if (PyErr_Occurred()) {
                rc = -1;
            } else {
                PyObject *b = PyBytes_FromStringAndSize((const char *)at, (Py_ssize_t)len);
                rc = b == NULL ? -1 : append_decoded(self, b, out, failure);
                Py_XDECREF(b);
            }
            at += len;
        }
        Py_DECREF(joined);
        return rc;
    }
    if (whole) {
        PyObject *part = call_unpack(self, joined);
        if (part != NULL && PyList_CheckExact(part) && (size_t)PyList_GET_SIZE(part) == count) {
            Py_ssize_t n = PyList_GET_SIZE(out);
            int rc = PyList_SetSlice(out, n, n, part);
            Py_DECREF(part);
            Py_DECREF(joined);
            return rc;
        }
        Py_XDECREF(part);
        if (part == NULL && !fast_call_failed_plainly()) {
            Py_DECREF(joined);
            return -1;
        }
        PyErr_Clear(); /* one by one below: the codec says which message is at fault */
    }
    int rc = 0;
    at = buf + 5;
    for (size_t i = 0; rc == 0 && i < count; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)at, (Py_ssize_t)msgs[i].length);
        rc = b == NULL ? -1 : append_decoded(self, b, out, failure);
        Py_XDECREF(b);
        at += msgs[i].length;
    }
    Py_DECREF(joined);
    return rc;
}

static PyObject *recv_many_impl(CoreChannel *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames, int decode) {
    static const char *const names[] = {"max_count", "timeout", NULL};
    PyObject *a[2] = {NULL, Py_None};
    if (parse_args(decode ? "recv_many" : "recv_many_bytes", names, 1, args, nargs, kwnames,
                   a) < 0)
        return NULL;
    Py_ssize_t max_count = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (max_count == -1 && PyErr_Occurred()) return NULL;
    if (max_count < 1) {
        PyErr_Format(PyExc_ValueError, "max_count must be at least 1 (got %zd)", max_count);
        return NULL;
    }
    int64_t ns;
    if (parse_timeout(a[1], &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    PyObject *out = PyList_New(0), *failure = NULL;
    if (out == NULL) return NULL;
    int decoding = decode && self->decode != NULL;
    /* One claim, one lock acquisition, for up to CLAIM_MAX messages. */
    size_t max = (size_t)max_count < CLAIM_MAX ? (size_t)max_count : CLAIM_MAX, count;
    shmipc_slice few[CLAIM_BATCH];
    shmipc_slice *msgs = max <= CLAIM_BATCH ? few : PyMem_Malloc(max * sizeof *msgs);
    if (msgs == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    int rc = claim(self, msgs, max, &count, ns);
    int taken = rc != SHMIPC_OK ? -1 : take_claimed(self, msgs, count, decoding, out, &failure);
    if (msgs != few) PyMem_Free(msgs);
    if (rc != SHMIPC_OK || taken < 0) {
        Py_DECREF(out);
        Py_XDECREF(failure);
        return rc != SHMIPC_OK ? raise_code(self, rc, 0, ns) : NULL;
    }
    if (failure == NULL) return out;
    /* Every message was consumed: the error carries them all, none is lost. */
    PyObject_SetAttrString(failure, "received", out);
    Py_DECREF(out);
    PyErr_SetObject((PyObject *)Py_TYPE(failure), failure);
    Py_DECREF(failure);
    return NULL;
}

static PyObject *CoreChannel_recv_many(CoreChannel *self, PyObject *const *args,
                                       Py_ssize_t nargs, PyObject *kwnames) {
    return recv_many_impl(self, args, nargs, kwnames, 1);
}

static PyObject *CoreChannel_recv_many_bytes(CoreChannel *self, PyObject *const *args,
                                             Py_ssize_t nargs, PyObject *kwnames) {
    return recv_many_impl(self, args, nargs, kwnames, 0);
}

/* --- zero-copy claims (the Python layer wraps them in recv_view / send_view) ---------- */

static PyObject *CoreChannel_recv_claim(CoreChannel *self, PyObject *timeout) {
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    shmipc_slice msg;
    size_t count;
    int rc = claim(self, &msg, 1, &count, ns);
    if (rc != SHMIPC_OK) return raise_code(self, rc, 0, ns);
    return Py_BuildValue("nn", (Py_ssize_t)msg.offset, (Py_ssize_t)msg.length);
}

static PyObject *CoreChannel_recv_finish(CoreChannel *self, PyObject *commit) {
    if (self->ch == NULL) return closed_handle();
    if (PyObject_IsTrue(commit)) shmipc_channel_recv_commit(self->ch);
    else shmipc_channel_recv_abort(self->ch);
    Py_RETURN_NONE;
}

/* Claim up to `max` messages with their positions; as claim(), settling a finished view. */
static int claim_positions(CoreChannel *self, shmipc_slice *msgs, uint64_t *positions,
                           size_t max, size_t *count, int64_t timeout_ns) {
    int rc;
    RUN_CORE(self, rc, timeout_ns,
             shmipc_channel_recv_claim_positions(self->ch, msgs, positions, max, count,
                                                 timeout_ns, flags));
    if (rc == SHMIPC_EINVAL && self->ch->recv_claimed) {
        PyObject *settled = PyObject_CallMethod((PyObject *)self, "_settle_view", NULL);
        if (settled == NULL) return SHMIPC_EINTR; /* the Python error is set */
        int ok = PyObject_IsTrue(settled);
        Py_DECREF(settled);
        if (ok == 1)
            RUN_CORE(self, rc, timeout_ns,
                     shmipc_channel_recv_claim_positions(self->ch, msgs, positions, max, count,
                                                         timeout_ns, flags));
    }
    return rc;
}

static PyObject *CoreChannel_recv_claim_many(CoreChannel *self, PyObject *args) {
    Py_ssize_t max_count;
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "n|O:_recv_claim_many", &max_count, &timeout)) return NULL;
    if (max_count < 1) {
        PyErr_Format(PyExc_ValueError, "max_count must be at least 1 (got %zd)", max_count);
        return NULL;
    }
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    size_t max = (size_t)max_count < CLAIM_MAX ? (size_t)max_count : CLAIM_MAX, count = 0;
    shmipc_slice *msgs = PyMem_Malloc(max * sizeof *msgs);
    uint64_t *positions = PyMem_Malloc(max * sizeof *positions);
    if (msgs == NULL || positions == NULL) {
        PyMem_Free(msgs);
        PyMem_Free(positions);
        return PyErr_NoMemory();
    }
    int rc = claim_positions(self, msgs, positions, max, &count, ns);
    PyObject *out = NULL;
    if (rc == SHMIPC_OK) {
        out = PyList_New((Py_ssize_t)count);
        for (size_t i = 0; out != NULL && i < count; i++) {
            PyObject *item = Py_BuildValue("nnK", (Py_ssize_t)msgs[i].offset,
                                           (Py_ssize_t)msgs[i].length,
                                           (unsigned long long)positions[i]);
            if (item == NULL) Py_CLEAR(out);
            else PyList_SET_ITEM(out, (Py_ssize_t)i, item);
        }
        if (out == NULL) shmipc_channel_recv_abort(self->ch); /* out of memory: they stay */
    }
    PyMem_Free(msgs);
    PyMem_Free(positions);
    if (rc != SHMIPC_OK) return raise_code(self, rc, 0, ns);
    return out;
}

static PyObject *CoreChannel_recv_position(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->ch == NULL) return closed_handle();
    uint64_t position;
    if (shmipc_channel_recv_position(self->ch, &position) != SHMIPC_OK) {
        PyErr_SetString(PyExc_RuntimeError, "no receive claim is open on this handle: the "
                                            "position is known inside the block only");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(position);
}

static PyObject *CoreChannel_send_claim(CoreChannel *self, PyObject *args) {
    Py_ssize_t size;
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "n|O:_send_claim", &size, &timeout)) return NULL;
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    if (size < 0) {
        PyErr_Format(PyExc_ValueError, "size must be >= 0 (got %zd)", size);
        return NULL;
    }
    size_t offset;
    int rc;
    RUN_CORE(self, rc, ns,
             shmipc_channel_send_claim(self->ch, (size_t)size, &offset, ns, flags));
    if (rc != SHMIPC_OK) return raise_code(self, rc, (size_t)size, ns);
    return PyLong_FromSize_t(offset);
}

static PyObject *CoreChannel_send_finish(CoreChannel *self, PyObject *used) {
    if (self->ch == NULL) return closed_handle();
    if (used == Py_None) {
        shmipc_channel_send_abort(self->ch);
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyLong_AsSsize_t(used);
    if (n == -1 && PyErr_Occurred()) return NULL;
    int rc = n < 0 ? SHMIPC_EINVAL : shmipc_channel_send_commit(self->ch, (size_t)n);
    if (rc != SHMIPC_OK) {
        shmipc_channel_send_abort(self->ch);
        PyErr_Format(PyExc_ValueError, "%zd bytes are more than the view holds", n);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* --- readiness ------------------------------------------------------------------------ */

static PyObject *CoreChannel_fileno(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->ch == NULL) return closed_handle();
    int fd, rc = shmipc_channel_ready_fd(self->ch, &fd);
    if (rc == SHMIPC_ENOSLOT) {
        PyErr_SetString(TooManyWaiters,
                        "every readiness slot of this channel (28) is held by a live handle; "
                        "close handles that no longer wait, or share one handle per process");
        return NULL;
    }
    if (rc != SHMIPC_OK) return raise_code(self, rc, 0, 0);
    return PyLong_FromLong(fd);
}

static PyObject *CoreChannel_ready_arm(CoreChannel *self, PyObject *sending) {
    if (self->ch == NULL) return closed_handle();
    int rc = shmipc_channel_ready_arm(
        self->ch, PyObject_IsTrue(sending) ? SHMIPC_READY_SEND : SHMIPC_READY_RECV);
    if (rc < 0) {
        PyErr_SetString(PyExc_RuntimeError, "call fileno() first: this handle has no readiness "
                                            "descriptor to arm");
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *CoreChannel_ready_peek(CoreChannel *self, PyObject *sending) {
    if (self->ch == NULL) return closed_handle();
    return PyBool_FromLong(shmipc_channel_ready_peek(
        self->ch, sending == Py_True ? SHMIPC_READY_SEND : SHMIPC_READY_RECV));
}

static PyObject *CoreChannel_ready_quiet(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->ch == NULL) return closed_handle();
    shmipc_channel_ready_quiet(self->ch);
    Py_RETURN_NONE;
}

static PyObject *CoreChannel_ready_drains(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->ch == NULL) return closed_handle();
    return PyLong_FromUnsignedLongLong(shmipc_channel_ready_drains(self->ch));
}

/* --- queues: unfinished tasks and message counts (src/tasks.c) ------------------------- */

/* multiprocessing.Queue's (block, timeout): block false does not wait whatever the timeout,
 * and a negative timeout does not wait either. */
static int block_timeout(PyObject *block, PyObject *timeout, int64_t *ns) {
    int blocking = block == NULL ? 1 : PyObject_IsTrue(block);
    if (blocking < 0) return -1;
    if (!blocking) {
        *ns = 0;
        return 0;
    }
    if (timeout != NULL && timeout != Py_None) {
        double seconds = PyFloat_AsDouble(timeout);
        if (seconds == -1.0 && PyErr_Occurred()) return -1;
        if (seconds < 0) {
            *ns = 0;
            return 0;
        }
    }
    return parse_timeout(timeout, ns);
}

static PyObject *CoreChannel_put(CoreChannel *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    static const char *const names[] = {"obj", "block", "timeout", NULL};
    PyObject *a[3] = {NULL, NULL, Py_None};
    int64_t ns = SHMIPC_FOREVER;
    if (kwnames == NULL && nargs == 1) {
        a[0] = args[0];
    } else {
        if (parse_args("put", names, 1, args, nargs, kwnames, a) < 0) return NULL;
        if (block_timeout(a[1], a[2], &ns) < 0) return NULL;
    }
    if (self->ch == NULL) return closed_handle();
    return send_object(self, a[0], ns);
}

static PyObject *CoreChannel_get(CoreChannel *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    static const char *const names[] = {"block", "timeout", NULL};
    PyObject *a[2] = {NULL, Py_None};
    int64_t ns = SHMIPC_FOREVER;
    if (!(kwnames == NULL && nargs == 0)) {
        if (parse_args("get", names, 0, args, nargs, kwnames, a) < 0) return NULL;
        if (block_timeout(a[0], a[1], &ns) < 0) return NULL;
    }
    return recv_one(self, ns, 1);
}

static PyObject *CoreChannel_task_done(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->ch == NULL) return closed_handle();
    uint64_t left = 0;
    if (shmipc_channel_task_done(self->ch, &left) != SHMIPC_OK) {
        PyErr_SetString(PyExc_ValueError, "task_done() called too many times (more than "
                                          "items were put)");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(left);
}

static PyObject *CoreChannel_tasks_unfinished(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->ch == NULL) return closed_handle();
    return PyLong_FromUnsignedLongLong(shmipc_channel_tasks_unfinished(self->ch));
}

static PyObject *CoreChannel_messages_waiting(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->ch == NULL) return closed_handle();
    return PyLong_FromUnsignedLongLong(shmipc_channel_messages_waiting(self->ch));
}

/* The result of a wait on counts: True when it ended by the condition, False at the timeout. */
static PyObject *count_wait_result(CoreChannel *self, int rc, int64_t ns) {
    if (rc == SHMIPC_OK) Py_RETURN_TRUE;
    if (rc == SHMIPC_EWOULDBLOCK) Py_RETURN_FALSE;
    return raise_code(self, rc, 0, ns);
}

static PyObject *CoreChannel_join_tasks(CoreChannel *self, PyObject *timeout) {
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    int rc;
    RUN_CORE(self, rc, ns, shmipc_channel_join_tasks(self->ch, ns, flags));
    return count_wait_result(self, rc, ns);
}

static PyObject *CoreChannel_wait_fewer(CoreChannel *self, PyObject *args) {
    unsigned long long max_messages;
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "K|O:_wait_fewer", &max_messages, &timeout)) return NULL;
    int64_t ns;
    if (parse_timeout(timeout, &ns) < 0) return NULL;
    if (self->ch == NULL) return closed_handle();
    if (max_messages == 0) {
        PyErr_SetString(PyExc_ValueError, "max_messages must be at least 1");
        return NULL;
    }
    int rc;
    RUN_CORE(self, rc, ns, shmipc_channel_wait_fewer(self->ch, max_messages, ns, flags));
    return count_wait_result(self, rc, ns);
}

/* --- state ---------------------------------------------------------------------------- */

static PyObject *CoreChannel_state(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->ch == NULL) return closed_handle();
    shmipc_state st;
    shmipc_channel_state(self->ch, &st);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:O,s:I}",
                         "write_position", (unsigned long long)st.write_position,
                         "read_position", (unsigned long long)st.read_position,
                         "sent", (unsigned long long)st.sent,
                         "received", (unsigned long long)st.received,
                         "recoveries", (unsigned long long)st.recoveries,
                         "producer_lock", (unsigned long long)st.producer_lock,
                         "consumer_lock", (unsigned long long)st.consumer_lock,
                         "receivers_waiting", (unsigned long long)st.receivers_waiting,
                         "senders_waiting", (unsigned long long)st.senders_waiting,
                         "closed", st.closed ? Py_True : Py_False,
                         "semaphore_generation", (unsigned)st.semaphore_generation);
}

static PyObject *CoreChannel_holder_alive(CoreChannel *self, PyObject *word) {
    if (self->ch == NULL) return closed_handle();
    unsigned long long holder = PyLong_AsUnsignedLongLong(word);
    if (holder == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(shmipc_channel_holder_alive(self->ch, holder));
}

static PyObject *CoreChannel_sleeps(CoreChannel *self, PyObject *unused) {
    (void)unused;
    if (self->ch == NULL) return closed_handle();
    return Py_BuildValue("KK", (unsigned long long)atomic_load(&self->ch->sleeps_woken),
                         (unsigned long long)atomic_load(&self->ch->sleeps_expired));
}

static PyObject *CoreChannel_get_spin(CoreChannel *self, void *closure) {
    (void)closure;
    if (self->ch == NULL) return closed_handle();
    return PyFloat_FromDouble((double)self->ch->spin_ns / 1e9);
}

static int CoreChannel_set_spin(CoreChannel *self, PyObject *value, void *closure) {
    (void)closure;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "spin cannot be deleted");
        return -1;
    }
    double seconds = PyFloat_AsDouble(value);
    if (seconds == -1.0 && PyErr_Occurred()) return -1;
    if (!(seconds >= 0) || seconds > 10) {
        PyErr_Format(PyExc_ValueError, "spin must be between 0 and 10 seconds (got %R)", value);
        return -1;
    }
    if (self->ch == NULL) {
        closed_handle();
        return -1;
    }
    shmipc_channel_set_spin(self->ch, (int64_t)(seconds * 1e9));
    return 0;
}

static PyObject *CoreChannel_get_attached(CoreChannel *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->ch != NULL);
}

#define FAST (PyCFunction)(void (*)(void))
static PyMethodDef CoreChannel_methods[] = {
    {"send_bytes", FAST CoreChannel_send_bytes, METH_FASTCALL | METH_KEYWORDS,
     "send_bytes(data, timeout=None)\n--\n\nSend one message of raw bytes (any bytes-like "
     "object).\n\nBlocks while the ring is full, up to ``timeout`` seconds (None: forever).\n\n"
     "Raises:\n    MessageTooLarge: the message can never fit (see max_message_size).\n"
     "    Full: no room before the timeout.\n    ChannelClosed: this handle was closed, or the "
     "channel was closed for sending."},
    {"send_bytes_nowait", (PyCFunction)CoreChannel_send_bytes_nowait, METH_O,
     "send_bytes_nowait(data)\n--\n\nSend raw bytes if there is room now; else raise Full."},
    {"send", FAST CoreChannel_send, METH_FASTCALL | METH_KEYWORDS,
     "send(obj, timeout=None)\n--\n\nSend one object, encoded with msgpack.\n\nRaises:\n"
     "    EncodeError: msgpack cannot encode ``obj`` (also a TypeError); nothing is sent.\n"
     "    MessageTooLarge, Full, ChannelClosed: as for send_bytes."},
    {"send_nowait", (PyCFunction)CoreChannel_send_nowait, METH_O,
     "send_nowait(obj)\n--\n\nSend one object if there is room now; else raise Full."},
    {"send_many", FAST CoreChannel_send_many, METH_FASTCALL | METH_KEYWORDS,
     "send_many(messages, timeout=None)\n--\n\nSend several objects in order under one lock "
     "acquisition.\n\nEvery object is encoded before anything is written, so an EncodeError "
     "sends nothing. Each message is committed as soon as it is written: consumers may take "
     "the first ones while the rest wait for room. If the timeout expires part-way, Full is "
     "raised and its ``sent`` attribute says how many were sent.\n\nRaises:\n    EncodeError, "
     "MessageTooLarge (nothing is sent), Full, ChannelClosed."},
    {"send_many_bytes", FAST CoreChannel_send_many_bytes, METH_FASTCALL | METH_KEYWORDS,
     "send_many_bytes(messages, timeout=None)\n--\n\nSend several raw-bytes messages under one "
     "lock acquisition (see send_many)."},
    {"send_sequenced", FAST CoreChannel_send_sequenced, METH_FASTCALL | METH_KEYWORDS,
     "send_sequenced(data, sequence, timeout=None)\n--\n\nSend raw bytes stamped with an "
     "application sequence number, committed together with the message.\n\nThe channel's "
     "applied sequence becomes ``sequence`` in the same commit as the message: a process "
     "killed at any instant leaves both or neither. A sequence not above the applied one "
     "sends nothing and returns False (a redelivery after a crash); else returns True. Meant "
     "for one sequenced producer per channel, such as a bridge from a log with sequence "
     "numbers (JetStream); others may send plain messages meanwhile.\n\nRaises:\n    "
     "ValueError: sequence is 0.\n    MessageTooLarge, Full, ChannelClosed: as for "
     "send_bytes."},
    {"applied_sequence", FAST CoreChannel_applied_sequence, METH_FASTCALL | METH_KEYWORDS,
     "applied_sequence(timeout=None)\n--\n\nThe sequence of the last message sent with "
     "send_sequenced (0 if none), read under the producer lock.\n\nRaises:\n    Full: the "
     "producer lock stayed held by another producer until the timeout."},
    {"close_send", FAST CoreChannel_close_send, METH_FASTCALL | METH_KEYWORDS,
     "close_send(timeout=None)\n--\n\nClose the channel for sending, for every process.\n\n"
     "Messages already sent stay and are received as usual; once they are drained, receives "
     "raise EndOfChannel and iteration stops. Later sends raise ChannelClosed. Waits for a "
     "send in progress to finish (up to ``timeout``; Full if it does not)."},
    {"recv", FAST CoreChannel_recv, METH_FASTCALL | METH_KEYWORDS,
     "recv(timeout=None)\n--\n\nReceive one object (decoded with msgpack), waiting up to "
     "``timeout`` seconds (None: forever).\n\nRaises:\n    Empty: no message before the "
     "timeout.\n    EndOfChannel: the channel was closed for sending and is drained.\n"
     "    DecodeError: the message is not valid msgpack; its bytes are in ``.payload``.\n"
     "    CorruptChannel: a frame failed validation."},
    {"recv_nowait", (PyCFunction)CoreChannel_recv_nowait, METH_NOARGS,
     "recv_nowait()\n--\n\nReceive one object if one is waiting; else raise Empty."},
    {"recv_bytes", FAST CoreChannel_recv_bytes, METH_FASTCALL | METH_KEYWORDS,
     "recv_bytes(timeout=None)\n--\n\nReceive one message as bytes, waiting up to ``timeout`` "
     "seconds (None: forever).\n\nA message sent with send() comes as its msgpack bytes.\n\n"
     "Raises:\n    Empty, EndOfChannel, CorruptChannel: as for recv."},
    {"recv_bytes_nowait", (PyCFunction)CoreChannel_recv_bytes_nowait, METH_NOARGS,
     "recv_bytes_nowait()\n--\n\nReceive one message as bytes if one is waiting; else raise "
     "Empty."},
    {"recv_many", FAST CoreChannel_recv_many, METH_FASTCALL | METH_KEYWORDS,
     "recv_many(max_count, timeout=None)\n--\n\nReceive up to ``max_count`` objects under one "
     "lock acquisition.\n\nWaits (up to ``timeout``) for the first; returns those waiting then, "
     "in order, at least one. If a payload cannot be decoded, the first DecodeError is raised "
     "with ``.received`` holding every message of the batch (decoded, or the DecodeError of "
     "each that failed): the messages are consumed and none is lost.\n\nRaises:\n    Empty, "
     "EndOfChannel, CorruptChannel, DecodeError."},
    {"recv_many_bytes", FAST CoreChannel_recv_many_bytes, METH_FASTCALL | METH_KEYWORDS,
     "recv_many_bytes(max_count, timeout=None)\n--\n\nReceive up to ``max_count`` raw messages "
     "under one lock (see recv_many)."},
    {"_recv_claim", (PyCFunction)CoreChannel_recv_claim, METH_O,
     "Private: claim the next message; (offset, length) in the data area."},
    {"_recv_finish", (PyCFunction)CoreChannel_recv_finish, METH_O,
     "Private: commit (True) or abort (False) the claimed message."},
    {"_recv_claim_many", (PyCFunction)CoreChannel_recv_claim_many, METH_VARARGS,
     "Private: claim up to max_count messages; [(offset, length, position), ...]."},
    {"_recv_position", (PyCFunction)CoreChannel_recv_position, METH_NOARGS,
     "Private: the read position of the first claimed message."},
    {"_send_claim", (PyCFunction)CoreChannel_send_claim, METH_VARARGS,
     "Private: claim room for a message of up to size bytes; its offset in the data area."},
    {"_send_finish", (PyCFunction)CoreChannel_send_finish, METH_O,
     "Private: commit the first n bytes of the claim as a message, or abort it (None)."},
    {"fileno", (PyCFunction)CoreChannel_fileno, METH_NOARGS,
     "fileno()\n--\n\nA file descriptor that becomes readable when a message may be waiting "
     "(or, after a send_nowait that raised Full, when room may be free), for select, poll, "
     "selectors and event loops.\n\nThe rule: wait until it is readable, then call "
     "recv_nowait() (or send_nowait()) until it raises Empty (Full); that re-arms it. A "
     "spurious wake-up is possible, a missed one is not. Never read the descriptor yourself. "
     "The first call claims one of the channel's 28 readiness slots; the descriptor belongs to "
     "this handle and is closed with it.\n\nFrom the first call on, the *_nowait calls of this "
     "handle wait for nothing, not even for a lock another process holds longer than a copy "
     "takes: they raise Empty (Full) and arm the descriptor for the lock's release.\n\n"
     "Hazards: a forked child gets its own descriptor (call fileno() again in the child); a peer "
     "killed between its commit and its signal leaves the descriptor quiet until the next "
     "message, so wait with a timeout (shmipc.wait and shmipc.aio re-check every 0.25 s); "
     "processes in different network namespaces cannot signal each other.\n\nRaises:\n"
     "    TooManyWaiters: all 28 readiness slots are held by live handles."},
    {"_ready_arm", (PyCFunction)CoreChannel_ready_arm, METH_O,
     "Private: arm the descriptor for receiving (False) or sending (True); True if ready now."},
    {"_ready_peek", (PyCFunction)CoreChannel_ready_peek, METH_O,
     "Private: whether a message may be waiting (False) or room be free (True), without "
     "arming anything."},
    {"_ready_quiet", (PyCFunction)CoreChannel_ready_quiet, METH_NOARGS,
     "Private: nobody waits on the descriptor: drain it and disarm every role."},
    {"_ready_drains", (PyCFunction)CoreChannel_ready_drains, METH_NOARGS,
     "Private: how many calls on this handle drained a signal from its descriptor."},
    {"_state", (PyCFunction)CoreChannel_state, METH_NOARGS,
     "Private: the shared counters and flags, as a dict."},
    {"_sleeps", (PyCFunction)CoreChannel_sleeps, METH_NOARGS,
     "Private: (sleeps ended by a wake-up, sleeps whose slice ran out) of this handle."},
    {"_holder_alive", (PyCFunction)CoreChannel_holder_alive, METH_O,
     "Private: judge a holder identity word as a waiter would (False: proven dead)."},
    {"_put", FAST CoreChannel_put, METH_FASTCALL | METH_KEYWORDS,
     "_put(obj, block=True, timeout=None)\n--\n\nPrivate: send with multiprocessing.Queue's "
     "put arguments (shmipc.Queue.put)."},
    {"_get", FAST CoreChannel_get, METH_FASTCALL | METH_KEYWORDS,
     "_get(block=True, timeout=None)\n--\n\nPrivate: receive with multiprocessing.Queue's "
     "get arguments (shmipc.Queue.get)."},
    {"_task_done", (PyCFunction)CoreChannel_task_done, METH_NOARGS,
     "Private: mark one task done (JoinableQueue); the tasks still unfinished. ValueError if "
     "none is unfinished."},
    {"_tasks_unfinished", (PyCFunction)CoreChannel_tasks_unfinished, METH_NOARGS,
     "Private: messages ever sent less task_done calls ever made."},
    {"_messages_waiting", (PyCFunction)CoreChannel_messages_waiting, METH_NOARGS,
     "Private: messages sent and not yet received (a snapshot)."},
    {"_join_tasks", (PyCFunction)CoreChannel_join_tasks, METH_O,
     "Private: wait (up to timeout) until no task is unfinished; False at the timeout."},
    {"_wait_fewer", (PyCFunction)CoreChannel_wait_fewer, METH_VARARGS,
     "Private: wait (up to timeout) until fewer than max_messages wait; False at the timeout."},
    {"_detach", (PyCFunction)CoreChannel_detach, METH_NOARGS,
     "Private: release the core handle and the mapping's buffer."},
    {"_set_native_msgpack", (PyCFunction)CoreChannel_set_native_msgpack, METH_O,
     "Private: encode and decode with the binding's msgpack code first (default codec only)."},
    {"_set_codec", (PyCFunction)CoreChannel_set_codec, METH_VARARGS,
     "Private: the callables that encode objects to bytes and decode them back."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef CoreChannel_getset[] = {
    {"spin", (getter)CoreChannel_get_spin, (setter)CoreChannel_set_spin,
     "Seconds a blocked receive or send polls the shared positions before it sleeps.\n\n"
     "Polling turns a wake-up of tens of microseconds into well under one while both sides "
     "are busy; after ``spin`` seconds without progress the caller sleeps on a semaphore and "
     "uses no CPU. 0 sleeps at once (always correct, only slower). Per handle; settable.",
     NULL},
    {"_attached", (getter)CoreChannel_get_attached, NULL, "Private: the core handle is open.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CoreChannelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmipc._core.CoreChannel",
    .tp_basicsize = sizeof(CoreChannel),
    .tp_dealloc = (destructor)CoreChannel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled core of a channel: the per-message protocol over a mapping.\n\n"
              "Private: use shmipc.Channel.",
    .tp_traverse = (traverseproc)CoreChannel_traverse,
    .tp_clear = (inquiry)CoreChannel_clear,
    .tp_weaklistoffset = offsetof(CoreChannel, weakrefs),
    .tp_methods = CoreChannel_methods,
    .tp_getset = CoreChannel_getset,
    .tp_init = (initproc)CoreChannel_init,
    .tp_new = PyType_GenericNew,
};

/* --- module functions ----------------------------------------------------------------- */

static PyObject *core_semaphore_name(PyObject *mod, PyObject *args) {
    (void)mod;
    const char *id;
    Py_ssize_t idlen;
    unsigned int generation;
    int role;
    if (!PyArg_ParseTuple(args, "y#IC:semaphore_name", &id, &idlen, &generation, &role))
        return NULL;
    if (idlen != 16) {
        PyErr_SetString(PyExc_ValueError, "a channel id is 16 bytes");
        return NULL;
    }
    char name[SHMIPC_SEM_NAME_MAX];
    shmipc_semaphore_name((const uint8_t *)id, generation, (char)role, name);
    return PyUnicode_FromString(name);
}

static PyObject *core_killpoint(PyObject *mod, PyObject *args) {
    (void)mod;
    const char *name;
    int after = 1, signo = SIGKILL;
    if (!PyArg_ParseTuple(args, "s|ii:_killpoint", &name, &after, &signo)) return NULL;
    for (int point = 0; point < shmipc_killpoint_count; point++)
        if (strcmp(name, shmipc_killpoint_names[point]) == 0) {
            shmipc_killpoint_arm(point, after, signo);
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "no kill point named %R", PyTuple_GET_ITEM(args, 0));
    return NULL;
}

static PyObject *core_header_offsets(PyObject *mod, PyObject *unused) {
    (void)mod;
    (void)unused;
#define OFF(f) #f, (Py_ssize_t)offsetof(struct shmipc_header, f)
    return Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,"
        "s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n}",
        OFF(magic), OFF(format_version), OFF(header_size), OFF(capacity), OFF(kind),
        OFF(record_size), OFF(channel_id), OFF(creator_pid), OFF(schema_length),
        OFF(created_ns), OFF(header_crc), OFF(schema), OFF(write_position), OFF(sent_total),
        OFF(producer_lock), OFF(read_position), OFF(received_total), OFF(consumer_lock),
        OFF(closed), OFF(semaphore_generation), OFF(recoveries), OFF(sleepers),
        OFF(namespaces), OFF(sequence_last), OFF(sequence_previous), OFF(sequence_end),
        OFF(waiter_slots), OFF(ready_armed), OFF(ready_owners), OFF(ready_epochs),
        OFF(tasks_done), OFF(queue_maxsize));
#undef OFF
}

static PyObject *core_judge_holder(PyObject *mod, PyObject *args) {
    (void)mod;
    Py_buffer header;
    unsigned long long word;
    if (!PyArg_ParseTuple(args, "y*K:judge_holder", &header, &word)) return NULL;
    if (header.len < SHMIPC_HEADER_SIZE) {
        PyBuffer_Release(&header);
        PyErr_SetString(PyExc_ValueError, "a channel header is 4096 bytes");
        return NULL;
    }
    /* A private copy: judging reads the namespace table, and changes nothing. */
    struct shmipc_header copy;
    memcpy(&copy, header.buf, sizeof copy);
    PyBuffer_Release(&header);
    char state;
    int verdict;
    Py_BEGIN_ALLOW_THREADS verdict = identity_judge(identity_observer(&copy), word, &state);
    Py_END_ALLOW_THREADS return Py_BuildValue(
        "sC", verdict > 0 ? "alive" : verdict == 0 ? "dead" : "unknown", (int)state);
}

/* _native_unpackb(data) -> (True, obj) or (False, None): the binding's decoder alone. */
static PyObject *core_native_unpackb(PyObject *module, PyObject *data) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *obj = shmipc_msgpack_decode((const unsigned char *)view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (obj == NULL && PyErr_Occurred()) return NULL;
    if (obj == NULL) return Py_BuildValue("(OO)", Py_False, Py_None);
    return Py_BuildValue("(ON)", Py_True, obj);
}

/* _native_packb(obj) -> (True, bytes) or (False, None): the binding's packer alone. */
static PyObject *core_native_packb(PyObject *module, PyObject *obj) {
    (void)module;
    shmipc_packbuf b;
    shmipc_packbuf_init(&b);
    int packed = shmipc_msgpack_pack(&b, obj);
    PyObject *result = packed < 0 ? NULL
                       : packed == 0 ? Py_BuildValue("(OO)", Py_False, Py_None)
                                     : Py_BuildValue("(Oy#)", Py_True, (const char *)b.buf,
                                                     (Py_ssize_t)b.len);
    shmipc_packbuf_free(&b);
    return result;
}

static PyObject *core_applied_sequence(PyObject *mod, PyObject *arg) {
    (void)mod;
    Py_buffer header;
    if (PyObject_GetBuffer(arg, &header, PyBUF_SIMPLE) < 0) return NULL;
    if (header.len < SHMIPC_HEADER_SIZE || ((uintptr_t)header.buf & 7) != 0) {
        PyBuffer_Release(&header);
        PyErr_SetString(PyExc_ValueError, "a channel header is 4096 bytes, 8-byte aligned");
        return NULL;
    }
    uint64_t sequence = shmipc_header_applied_sequence(header.buf);
    PyBuffer_Release(&header);
    return PyLong_FromUnsignedLongLong(sequence);
}

static PyMethodDef module_methods[] = {
    {"_native_packb", core_native_packb, METH_O,
     "Private, for tests: (True, bytes) if the binding's msgpack packer takes obj, else "
     "(False, None) (msgpack-python decides)."},
    {"_native_unpackb", core_native_unpackb, METH_O,
     "Private, for tests: (True, obj) if the binding's msgpack decoder takes data, else "
     "(False, None) (msgpack-python decides)."},
    {"applied_sequence", core_applied_sequence, METH_O,
     "applied_sequence(header)\n--\n\nThe applied sequence of send_sequenced read from a "
     "mapped channel header (read-only will do) without any lock, changing nothing."},
    {"judge_holder", core_judge_holder, METH_VARARGS,
     "judge_holder(header, word)\n--\n\nJudge a lock holder's identity word as a waiter would, "
     "changing nothing: ('alive' | 'dead' | 'unknown', /proc state letter or '?')."},
    {"semaphore_name", core_semaphore_name, METH_VARARGS,
     "semaphore_name(channel_id, generation, role)\n--\n\nThe POSIX name of a channel's "
     "semaphore, as the core derives it."},
    {"_killpoint", core_killpoint, METH_VARARGS,
     "_killpoint(name, after=1, signal=SIGKILL)\n--\n\nTests only: send this process `signal` "
     "the `after`-th time it reaches the named point of the protocol; '' disarms."},
    {"_header_offsets", core_header_offsets, METH_NOARGS,
     "The byte offset of every header field, as the C compiler lays out the struct."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "shmipc._core",
    "The compiled shmipc core (private: use shmipc.Channel).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

static int import_errors(void) {
    PyObject *errors = PyImport_ImportModule("shmipc.errors");
    if (errors == NULL) return -1;
    struct {
        PyObject **slot;
        const char *name;
    } table[] = {
        {&Empty, "Empty"}, {&Full, "Full"}, {&EndOfChannel, "EndOfChannel"},
        {&ChannelClosed, "ChannelClosed"}, {&MessageTooLarge, "MessageTooLarge"},
        {&CorruptChannel, "CorruptChannel"}, {&NotAChannel, "NotAChannel"},
        {&IncompatibleChannel, "IncompatibleChannel"}, {&DecodeError, "DecodeError"},
        {&TooManyWaiters, "TooManyWaiters"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if ((*table[i].slot = PyObject_GetAttrString(errors, table[i].name)) == NULL) {
            Py_DECREF(errors);
            return -1;
        }
    Py_DECREF(errors);
    return 0;
}

PyMODINIT_FUNC PyInit__core(void) {
    if (import_errors() < 0) return NULL;
    if (PyType_Ready(&CoreChannelType) < 0) return NULL;
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL) return NULL;
    Py_INCREF(&CoreChannelType);
    if (PyModule_AddObject(m, "CoreChannel", (PyObject *)&CoreChannelType) < 0 ||
        PyModule_AddIntConstant(m, "FORMAT_VERSION", SHMIPC_FORMAT_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_SIZE", SHMIPC_HEADER_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
