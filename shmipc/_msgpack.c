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
