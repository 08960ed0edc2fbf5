/*
 * _msgpack.c - a msgpack decoder for the common case, with msgpack-python as the reference.
 *
 * A received message is decoded here when it holds only nil, bools, ints, floats, str, bin,
 * arrays and maps with str or bytes keys: what msgpack.unpackb(raw=False,
 * strict_map_key=True, use_list=True) returns for it, built without msgpack-python's
 * generic machinery, and with map keys taken from a small cache of interned strings (a
 * stream of dicts repeats its keys: no new key string per message). Anything else - an ext
 * type (timestamps, records, user types), invalid UTF-8, a truncated or over-long object,
 * trailing bytes, nesting deeper than MAX_DEPTH - makes the decoder give up without an error,
 * and the caller decodes the message with msgpack-python, which returns the value or raises
 * the error it always did. So this file decides nothing about errors or ext types, and the
 * two decoders cannot disagree on a message this one accepts (tests/test_codec.py checks it
 * against msgpack on random objects and random bytes).
 *
 * The input is untrusted (another process wrote it): every length is checked against the
 * bytes left before it is used, and no container is allocated bigger than the bytes left
 * could fill (every element takes at least one byte).
 */
#include "_msgpack.h"

#include <string.h>

#define MAX_DEPTH 64
#define KEY_CACHE 512   /* entries, a power of two */
#define KEY_MAX 24      /* bytes: longer keys are not cached */

/* A direct-mapped cache of map keys: UTF-8 bytes -> interned str. Guarded by the GIL. */
static struct {
    PyObject *str;
    unsigned char len;
    unsigned char bytes[KEY_MAX];
} keys[KEY_CACHE];

typedef struct {
    const unsigned char *p, *end;
} reader;

#define GIVE_UP ((PyObject *)NULL) /* with no exception set: the reference decides */

static inline uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* n bytes from the reader, or NULL if fewer are left. */
static inline const unsigned char *take(reader *r, size_t n) {
    if ((size_t)(r->end - r->p) < n) return NULL;
    const unsigned char *at = r->p;
    r->p += n;
    return at;
}

static PyObject *key_str(const unsigned char *s, size_t n) {
    if (n > KEY_MAX) {
        PyObject *k = PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, "strict");
        if (k != NULL) PyUnicode_InternInPlace(&k);
        return k;
    }
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    h ^= (uint32_t)n;
    unsigned slot = h & (KEY_CACHE - 1);
    if (keys[slot].str != NULL && keys[slot].len == n && memcmp(keys[slot].bytes, s, n) == 0)
        return Py_NewRef(keys[slot].str);
    PyObject *k = PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, "strict");
    if (k == NULL) return NULL;
    PyUnicode_InternInPlace(&k);
    Py_XSETREF(keys[slot].str, Py_NewRef(k));
    keys[slot].len = (unsigned char)n;
    memcpy(keys[slot].bytes, s, n);
    return k;
}

/* Invalid UTF-8 is the reference's to report: give up instead of raising. */
static PyObject *utf8_or_give_up(PyObject *s) {
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
    return s;
}

static PyObject *decode_any(reader *r, int depth);

/* A str of n bytes (a map key: from the key cache). */
static PyObject *decode_str(reader *r, size_t n, int as_key) {
    const unsigned char *s = take(r, n);
    if (s == NULL) return GIVE_UP;
    if (as_key) return utf8_or_give_up(key_str(s, n));
    return utf8_or_give_up(PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, "strict"));
}

static PyObject *decode_array(reader *r, size_t n, int depth) {
    if (n > (size_t)(r->end - r->p)) return GIVE_UP; /* each element takes a byte at least */
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *item = decode_any(r, depth + 1);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

static PyObject *decode_key(reader *r) {
    const unsigned char *t = take(r, 1);
    if (t == NULL) return GIVE_UP;
    unsigned char c = *t;
    const unsigned char *h;
    if ((c & 0xe0) == 0xa0) return decode_str(r, c & 0x1f, 1);
    switch (c) {
    case 0xd9: return (h = take(r, 1)) ? decode_str(r, h[0], 1) : GIVE_UP;
    case 0xda: return (h = take(r, 2)) ? decode_str(r, be(h, 2), 1) : GIVE_UP;
    case 0xdb: return (h = take(r, 4)) ? decode_str(r, be(h, 4), 1) : GIVE_UP;
    case 0xc4: case 0xc5: case 0xc6: { /* bytes keys are allowed too */
        int w = c == 0xc4 ? 1 : c == 0xc5 ? 2 : 4;
        if ((h = take(r, (size_t)w)) == NULL) return GIVE_UP;
        size_t n = be(h, w);
        const unsigned char *s = take(r, n);
        return s ? PyBytes_FromStringAndSize((const char *)s, (Py_ssize_t)n) : GIVE_UP;
    }
    }
    return GIVE_UP; /* any other key: strict_map_key makes the reference raise */
}

static PyObject *decode_map(reader *r, size_t n, int depth) {
    if (n > (size_t)(r->end - r->p) / 2) return GIVE_UP; /* a key and a value: 2 bytes */
    PyObject *dict = _PyDict_NewPresized((Py_ssize_t)n);
    if (dict == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *k = decode_key(r);
        if (k == NULL) {
            Py_DECREF(dict);
            return NULL;
        }
        PyObject *v = decode_any(r, depth + 1);
        int rc = v == NULL ? -1 : PyDict_SetItem(dict, k, v);
        Py_DECREF(k);
        Py_XDECREF(v);
        if (rc < 0) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *decode_any(reader *r, int depth) {
    if (depth > MAX_DEPTH) return GIVE_UP;
    const unsigned char *t = take(r, 1), *h;
    if (t == NULL) return GIVE_UP;
    unsigned char c = *t;
    if (c <= 0x7f) return PyLong_FromLong(c);
    if (c >= 0xe0) return PyLong_FromLong((int8_t)c);
    if ((c & 0xe0) == 0xa0) return decode_str(r, c & 0x1f, 0);
    if ((c & 0xf0) == 0x90) return decode_array(r, c & 0x0f, depth);
    if ((c & 0xf0) == 0x80) return decode_map(r, c & 0x0f, depth);
    switch (c) {
    case 0xc0: Py_RETURN_NONE;
    case 0xc2: Py_RETURN_FALSE;
    case 0xc3: Py_RETURN_TRUE;
    case 0xcc: return (h = take(r, 1)) ? PyLong_FromLong(h[0]) : GIVE_UP;
    case 0xcd: return (h = take(r, 2)) ? PyLong_FromLong((long)be(h, 2)) : GIVE_UP;
    case 0xce: return (h = take(r, 4)) ? PyLong_FromUnsignedLongLong(be(h, 4)) : GIVE_UP;
    case 0xcf: return (h = take(r, 8)) ? PyLong_FromUnsignedLongLong(be(h, 8)) : GIVE_UP;
    case 0xd0: return (h = take(r, 1)) ? PyLong_FromLong((int8_t)h[0]) : GIVE_UP;
    case 0xd1: return (h = take(r, 2)) ? PyLong_FromLong((int16_t)be(h, 2)) : GIVE_UP;
    case 0xd2: return (h = take(r, 4)) ? PyLong_FromLong((int32_t)be(h, 4)) : GIVE_UP;
    case 0xd3: return (h = take(r, 8)) ? PyLong_FromLongLong((int64_t)be(h, 8)) : GIVE_UP;
    case 0xca: {
        if ((h = take(r, 4)) == NULL) return GIVE_UP;
        uint32_t bits = (uint32_t)be(h, 4);
        float f;
        memcpy(&f, &bits, 4);
        return PyFloat_FromDouble((double)f);
    }
    case 0xcb: {
        if ((h = take(r, 8)) == NULL) return GIVE_UP;
        uint64_t bits = be(h, 8);
        double d;
        memcpy(&d, &bits, 8);
        return PyFloat_FromDouble(d);
    }
    case 0xd9: return (h = take(r, 1)) ? decode_str(r, h[0], 0) : GIVE_UP;
    case 0xda: return (h = take(r, 2)) ? decode_str(r, be(h, 2), 0) : GIVE_UP;
    case 0xdb: return (h = take(r, 4)) ? decode_str(r, be(h, 4), 0) : GIVE_UP;
    case 0xc4: case 0xc5: case 0xc6: {
        int w = c == 0xc4 ? 1 : c == 0xc5 ? 2 : 4;
        if ((h = take(r, (size_t)w)) == NULL) return GIVE_UP;
        size_t n = be(h, w);
        const unsigned char *s = take(r, n);
        return s ? PyBytes_FromStringAndSize((const char *)s, (Py_ssize_t)n) : GIVE_UP;
    }
    case 0xdc: return (h = take(r, 2)) ? decode_array(r, be(h, 2), depth) : GIVE_UP;
    case 0xdd: return (h = take(r, 4)) ? decode_array(r, be(h, 4), depth) : GIVE_UP;
    case 0xde: return (h = take(r, 2)) ? decode_map(r, be(h, 2), depth) : GIVE_UP;
    case 0xdf: return (h = take(r, 4)) ? decode_map(r, be(h, 4), depth) : GIVE_UP;
    }
    return GIVE_UP; /* ext types (0xc7-0xc9, 0xd4-0xd8) and the unused byte 0xc1 */
}

PyObject *shmipc_msgpack_decode(const unsigned char *p, size_t n) {
    reader r = {p, p + n};
    PyObject *obj = decode_any(&r, 0);
    if (obj != NULL && r.p != r.end) { /* trailing bytes: the reference raises ExtraData */
        Py_DECREF(obj);
        return GIVE_UP;
    }
    return obj;
}

/* --- packing ---------------------------------------------------------------------------
 * The same bytes msgpack.Packer(use_bin_type=True) writes, for exact dicts, lists, tuples,
 * str, bytes, ints (that fit 64 bits), floats, bools and None; anything else (subclasses,
 * datetimes, records, ext types, memoryview, huge ints, unencodable str, deep nesting) makes
 * the packer give up, and msgpack-python packs it or raises its error. */

int shmipc_packbuf_reserve(shmipc_packbuf *b, size_t more) {
    if (b->cap - b->len >= more) return 0;
    size_t cap = b->cap * 2;
    while (cap - b->len < more) cap *= 2;
    unsigned char *grown;
    if (b->buf == b->stack) {
        grown = PyMem_Malloc(cap);
        if (grown != NULL) memcpy(grown, b->buf, b->len);
    } else {
        grown = PyMem_Realloc(b->buf, cap);
    }
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->buf = grown;
    b->cap = cap;
    return 0;
}

void shmipc_packbuf_init(shmipc_packbuf *b) {
    b->buf = b->stack;
    b->len = 0;
    b->cap = sizeof b->stack;
}

void shmipc_packbuf_free(shmipc_packbuf *b) {
    if (b->buf != b->stack) PyMem_Free(b->buf);
    shmipc_packbuf_init(b);
}

static int put(shmipc_packbuf *b, const void *p, size_t n) {
    if (shmipc_packbuf_reserve(b, n) < 0) return -1;
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 1;
}

/* type byte c followed by v in w big-endian bytes */
static int put_be(shmipc_packbuf *b, unsigned char c, uint64_t v, int w) {
    unsigned char h[9];
    h[0] = c;
    for (int i = 0; i < w; i++) h[1 + i] = (unsigned char)(v >> (8 * (w - 1 - i)));
    return put(b, h, (size_t)(1 + w));
}

/* a str/bin/array/map header: the fix form (fix_base | n) when n < fix_limit, else the
 * smallest of the 8 (if any), 16 and 32-bit forms */
static int put_header(shmipc_packbuf *b, size_t n, int fix_base, size_t fix_limit, int c8,
                      int c16, int c32) {
    if (n < fix_limit) {
        unsigned char c = (unsigned char)(fix_base | n);
        return put(b, &c, 1);
    }
    if (c8 >= 0 && n <= 0xff) return put_be(b, (unsigned char)c8, n, 1);
    if (n <= 0xffff) return put_be(b, (unsigned char)c16, n, 2);
    if (n <= 0xffffffffu) return put_be(b, (unsigned char)c32, n, 4);
    return 0; /* too large for msgpack: the reference raises */
}

static int pack_int(shmipc_packbuf *b, PyObject *o) {
    int overflow = 0;
    long long d = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (d == -1 && PyErr_Occurred()) return -1;
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(o);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0; /* above 2**64 - 1: the reference raises */
        }
        return put_be(b, 0xcf, u, 8);
    }
    if (overflow < 0) return 0;
    if (d < -(1LL << 5)) {
        if (d < -(1LL << 15)) {
            if (d < -(1LL << 31)) return put_be(b, 0xd3, (uint64_t)d, 8);
            return put_be(b, 0xd2, (uint64_t)d, 4);
        }
        if (d < -(1LL << 7)) return put_be(b, 0xd1, (uint64_t)d, 2);
        return put_be(b, 0xd0, (uint64_t)d, 1);
    }
    if (d < (1LL << 7)) {
        unsigned char c = (unsigned char)d;
        return put(b, &c, 1);
    }
    if (d < (1LL << 16)) return d < (1LL << 8) ? put_be(b, 0xcc, (uint64_t)d, 1)
                                               : put_be(b, 0xcd, (uint64_t)d, 2);
    if (d < (1LL << 32)) return put_be(b, 0xce, (uint64_t)d, 4);
    return put_be(b, 0xcf, (uint64_t)d, 8);
}

static int pack_any(shmipc_packbuf *b, PyObject *o, int depth);

static int pack_items(shmipc_packbuf *b, PyObject *const *items, Py_ssize_t n, int depth) {
    int rc = put_header(b, (size_t)n, 0x90, 16, -1, 0xdc, 0xdd);
    for (Py_ssize_t i = 0; rc == 1 && i < n; i++) rc = pack_any(b, items[i], depth + 1);
    return rc;
}

static int pack_any(shmipc_packbuf *b, PyObject *o, int depth) {
    if (depth > MAX_DEPTH) return 0;
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (s == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
            PyErr_Clear();
            return 0; /* lone surrogates: the reference raises */
        }
        int rc = put_header(b, (size_t)n, 0xa0, 32, 0xd9, 0xda, 0xdb);
        return rc == 1 ? put(b, s, (size_t)n) : rc;
    }
    if (t == &PyLong_Type) return pack_int(b, o);
    if (t == &PyDict_Type) {
        Py_ssize_t pos = 0, n = PyDict_GET_SIZE(o);
        PyObject *k, *v;
        int rc = put_header(b, (size_t)n, 0x80, 16, -1, 0xde, 0xdf);
        while (rc == 1 && PyDict_Next(o, &pos, &k, &v)) {
            Py_INCREF(k); /* PyDict_Next lends them; packing a value cannot free them, but */
            Py_INCREF(v); /* a str's UTF-8 cache is filled on the way: keep them alive */
            rc = pack_any(b, k, depth + 1);
            if (rc == 1) rc = pack_any(b, v, depth + 1);
            Py_DECREF(k);
            Py_DECREF(v);
        }
        if (rc == 1 && PyDict_GET_SIZE(o) != n) return 0; /* changed while packed */
        return rc;
    }
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(o);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return put_be(b, 0xcb, bits, 8);
    }
    if (o == Py_None) return put(b, "\xc0", 1);
    if (o == Py_True) return put(b, "\xc3", 1);
    if (o == Py_False) return put(b, "\xc2", 1);
    if (t == &PyList_Type) return pack_items(b, PySequence_Fast_ITEMS(o), PyList_GET_SIZE(o),
                                             depth);
    if (t == &PyTuple_Type) return pack_items(b, PySequence_Fast_ITEMS(o), PyTuple_GET_SIZE(o),
                                              depth);
    if (t == &PyBytes_Type) {
        size_t n = (size_t)PyBytes_GET_SIZE(o);
        int rc = put_header(b, n, 0, 0, 0xc4, 0xc5, 0xc6);
        return rc == 1 ? put(b, PyBytes_AS_STRING(o), n) : rc;
    }
    return 0;
}

int shmipc_msgpack_pack(shmipc_packbuf *b, PyObject *obj) {
    size_t start = b->len;
    int rc = pack_any(b, obj, 0);
    if (rc != 1) b->len = start; /* nothing of a given-up object stays */
    return rc;
}
