/*
 * _records.c - packing and unpacking C-layout records in C: the fast path of shmipc.records.
 *
 * A Record type (records.py) compiles its fields to a table of (code, offset, size, encoding)
 * and hands it to a RecordCodec here, with two Python callables that are the reference: when a
 * value cannot be packed (or a payload unpacked) here for any reason, the reference is called
 * and raises the error it would raise (FieldTooLong, RecordError naming the field and its
 * range, DecodeError), or returns what it made. So this file holds no error policy, only the
 * common path, and the two paths cannot disagree on a value that either accepts.
 *
 * Byte order: every field is little-endian, as the Record's struct.Struct ("<..."). Values
 * of the record's own class are read and built through its __slots__ member offsets (the
 * class is a slotted dataclass made by records.py); a class with anything else goes through
 * getattr and the class call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "_records.h"

#define MAX_FIELDS 256

typedef struct {
    char code;           /* struct code: b B ? h H e i I f q Q d c s */
    Py_ssize_t offset;   /* byte offset in the record */
    Py_ssize_t size;     /* bytes (N of Ns) */
    PyObject *name;      /* interned field name */
    PyObject *encoding;  /* str, or NULL: Ns fields only */
    Py_ssize_t slot;     /* byte offset of the value's slot in an instance, or -1 */
} field_t;

typedef struct {
    PyObject_HEAD
    Py_ssize_t size;
    Py_ssize_t nfields;
    field_t *fields;
    PyTypeObject *type;  /* the value class */
    int slots_ok;        /* every field has a member slot: build instances directly */
    PyObject *explain_pack;    /* value -> bytes, or raises the reference error */
    PyObject *explain_unpack;  /* payload -> value, or raises the reference error */
} RecordCodec;

static void store_le(unsigned char *p, uint64_t v, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t load_le(const unsigned char *p, Py_ssize_t n) {
    uint64_t v = 0;
    for (Py_ssize_t i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Pack one field's value at p. 0, or -1 with an exception set (the reference explains it). */
static int pack_field(const field_t *f, PyObject *v, unsigned char *p) {
    switch (f->code) {
    case 'b': case 'B': case 'h': case 'H': case 'i': case 'I': case 'q': {
        if (!PyLong_Check(v)) return -1; /* struct takes __index__ too: the reference does */
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) return -1;
        long long lo, hi;
        switch (f->code) {
        case 'b': lo = INT8_MIN; hi = INT8_MAX; break;
        case 'B': lo = 0; hi = UINT8_MAX; break;
        case 'h': lo = INT16_MIN; hi = INT16_MAX; break;
        case 'H': lo = 0; hi = UINT16_MAX; break;
        case 'i': lo = INT32_MIN; hi = INT32_MAX; break;
        case 'I': lo = 0; hi = UINT32_MAX; break;
        default: lo = INT64_MIN; hi = INT64_MAX; break;
        }
        if (x < lo || x > hi) return -1;
        store_le(p, (uint64_t)x, f->size);
        return 0;
    }
    case 'Q': {
        if (!PyLong_Check(v)) return -1;
        unsigned long long x = PyLong_AsUnsignedLongLong(v);
        if (x == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        store_le(p, x, 8);
        return 0;
    }
    case '?': {
        int t = PyObject_IsTrue(v);
        if (t < 0) return -1;
        p[0] = (unsigned char)t;
        return 0;
    }
    case 'c':
        if (!PyBytes_Check(v) || PyBytes_GET_SIZE(v) != 1) return -1;
        p[0] = (unsigned char)PyBytes_AS_STRING(v)[0];
        return 0;
    case 'e': case 'f': case 'd': {
        if (!PyFloat_Check(v) && !PyLong_Check(v)) return -1;
        double x = PyFloat_AsDouble(v);
        if (x == -1.0 && PyErr_Occurred()) return -1;
        if (f->code == 'e') return PyFloat_Pack2(x, (char *)p, 1);
        if (f->code == 'f') return PyFloat_Pack4(x, (char *)p, 1);
        return PyFloat_Pack8(x, (char *)p, 1);
    }
    case 's': {
        /* char[N]: exact bytes, never cut; shorter ones are NUL-padded */
        const char *s;
        Py_ssize_t n;
        if (PyBytes_Check(v)) {
            s = PyBytes_AS_STRING(v);
            n = PyBytes_GET_SIZE(v);
        } else if (PyUnicode_Check(v) && f->encoding != NULL &&
                   PyUnicode_CompareWithASCIIString(f->encoding, "utf-8") == 0) {
            s = PyUnicode_AsUTF8AndSize(v, &n);
            if (s == NULL) return -1;
        } else {
            return -1; /* str in another encoding, bytearray, memoryview: the reference */
        }
        if (n > f->size) return -1;
        memcpy(p, s, (size_t)n);
        memset(p + n, 0, (size_t)(f->size - n));
        return 0;
    }
    }
    return -1;
}

static PyObject *unpack_field(const field_t *f, const unsigned char *p) {
    switch (f->code) {
    case 'b': return PyLong_FromLong((int8_t)p[0]);
    case 'B': return PyLong_FromLong(p[0]);
    case 'h': return PyLong_FromLong((int16_t)load_le(p, 2));
    case 'H': return PyLong_FromLong((long)load_le(p, 2));
    case 'i': return PyLong_FromLong((int32_t)load_le(p, 4));
    case 'I': return PyLong_FromUnsignedLong((unsigned long)load_le(p, 4));
    case 'q': return PyLong_FromLongLong((long long)load_le(p, 8));
    case 'Q': return PyLong_FromUnsignedLongLong(load_le(p, 8));
    case '?': return PyBool_FromLong(p[0] != 0);
    case 'c': return PyBytes_FromStringAndSize((const char *)p, 1);
    case 'e': {
        double x = PyFloat_Unpack2((const char *)p, 1);
        return x == -1.0 && PyErr_Occurred() ? NULL : PyFloat_FromDouble(x);
    }
    case 'f': {
        double x = PyFloat_Unpack4((const char *)p, 1);
        return x == -1.0 && PyErr_Occurred() ? NULL : PyFloat_FromDouble(x);
    }
    case 'd': {
        double x = PyFloat_Unpack8((const char *)p, 1);
        return x == -1.0 && PyErr_Occurred() ? NULL : PyFloat_FromDouble(x);
    }
    case 's': {
        /* the C string: up to the first NUL (build() decodes fields with an encoding) */
        const void *nul = memchr(p, 0, (size_t)f->size);
        Py_ssize_t n = nul ? (const unsigned char *)nul - p : f->size;
        return PyBytes_FromStringAndSize((const char *)p, n);
    }
    }
    PyErr_SetString(PyExc_SystemError, "record codec: unknown field code");
    return NULL;
}

/* A plain failure the reference should explain (not MemoryError, KeyboardInterrupt...). */
static int failed_plainly(void) {
    return !PyErr_Occurred() ||
           (PyErr_ExceptionMatches(PyExc_Exception) && !PyErr_ExceptionMatches(PyExc_MemoryError));
}

static PyObject *explain(PyObject *callable, PyObject *arg) {
    if (!failed_plainly()) return NULL;
    PyErr_Clear();
    return PyObject_CallOneArg(callable, arg);
}

/* The value of field i of `value` (a new reference), or NULL with or without an exception. */
static PyObject *field_value(RecordCodec *self, PyObject *value, Py_ssize_t i, int kind) {
    const field_t *f = &self->fields[i];
    switch (kind) {
    case 0: { /* the record's own class: its slot */
        PyObject *v = *(PyObject **)((char *)value + f->slot);
        Py_XINCREF(v);
        return v;
    }
    case 1: { /* tuple or list */
        PyObject *v = PySequence_Fast_GET_ITEM(value, i);
        Py_INCREF(v);
        return v;
    }
    case 2: { /* dict */
        PyObject *v = PyDict_GetItemWithError(value, f->name);
        Py_XINCREF(v);
        return v;
    }
    }
    return NULL;
}

static int pack_into(RecordCodec *self, PyObject *value, unsigned char *out) {
    int kind;
    if (Py_TYPE(value) == self->type && self->slots_ok) kind = 0;
    else if ((PyTuple_CheckExact(value) || PyList_CheckExact(value)) &&
             PySequence_Fast_GET_SIZE(value) == self->nfields) kind = 1;
    else if (PyDict_CheckExact(value)) kind = 2;
    else return -1;
    memset(out, 0, (size_t)self->size); /* the padding bytes */
    for (Py_ssize_t i = 0; i < self->nfields; i++) {
        PyObject *v = field_value(self, value, i, kind);
        if (v == NULL) return -1;
        int rc = pack_field(&self->fields[i], v, out + self->fields[i].offset);
        Py_DECREF(v);
        if (rc < 0) return -1;
    }
    return 0;
}

static PyObject *RecordCodec_pack(RecordCodec *self, PyObject *value) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, self->size);
    if (out == NULL) return NULL;
    if (pack_into(self, value, (unsigned char *)PyBytes_AS_STRING(out)) == 0) return out;
    Py_DECREF(out);
    return explain(self->explain_pack, value);
}

static PyObject *build(RecordCodec *self, const unsigned char *p) {
    PyObject *values[MAX_FIELDS];
    Py_ssize_t n = self->nfields; /* 1..MAX_FIELDS: checked at init */
    values[0] = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        const field_t *f = &self->fields[i];
        if (f->code == 's' && f->encoding != NULL) {
            const void *nul = memchr(p + f->offset, 0, (size_t)f->size);
            Py_ssize_t len = nul ? (const unsigned char *)nul - (p + f->offset) : f->size;
            values[i] = PyUnicode_Decode((const char *)p + f->offset, len,
                                         PyUnicode_AsUTF8(f->encoding), "strict");
        } else {
            values[i] = unpack_field(f, p + f->offset);
        }
        if (values[i] == NULL) {
            for (Py_ssize_t j = 0; j < i; j++) Py_DECREF(values[j]);
            return NULL;
        }
    }
    if (self->slots_ok) {
        /* A slotted dataclass without __post_init__: its __init__ only stores the slots. */
        PyObject *obj = self->type->tp_alloc(self->type, 0);
        if (obj == NULL) {
            for (Py_ssize_t i = 0; i < n; i++) Py_DECREF(values[i]);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            *(PyObject **)((char *)obj + self->fields[i].slot) = values[i]; /* steals */
        return obj;
    }
    PyObject *obj = PyObject_Vectorcall((PyObject *)self->type, values, (size_t)n, NULL);
    for (Py_ssize_t i = 0; i < n; i++) Py_DECREF(values[i]);
    return obj;
}

static PyObject *RecordCodec_unpack(RecordCodec *self, PyObject *payload) {
    PyObject *obj = NULL;
    if (PyBytes_CheckExact(payload)) {
        if (PyBytes_GET_SIZE(payload) == self->size)
            obj = build(self, (const unsigned char *)PyBytes_AS_STRING(payload));
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) == 0) {
            if (view.len == self->size) obj = build(self, (const unsigned char *)view.buf);
            PyBuffer_Release(&view);
        }
    }
    if (obj != NULL) return obj;
    return explain(self->explain_unpack, payload);
}

static PyObject *RecordCodec_pack_into(RecordCodec *self, PyObject *args) {
    PyObject *buffer, *value;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "OnO:pack_into", &buffer, &offset, &value)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) { /* as struct.pack_into says it */
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "cannot write a record into a read-only buffer");
        }
        return NULL;
    }
    PyObject *result = NULL;
    if (offset < 0 || offset > view.len || view.len - offset < self->size) {
        PyErr_Format(PyExc_ValueError, "a record of %zd bytes at offset %zd does not fit a "
                     "buffer of %zd bytes", self->size, offset, view.len);
    } else {
        unsigned char tmp[4096], *out = self->size <= (Py_ssize_t)sizeof tmp ? tmp : NULL;
        PyObject *packed = NULL;
        if (out != NULL && pack_into(self, value, out) == 0) {
            memcpy((char *)view.buf + offset, out, (size_t)self->size);
            result = Py_NewRef(Py_None);
        } else if ((packed = out != NULL ? explain(self->explain_pack, value)
                                         : PyObject_CallOneArg(self->explain_pack, value))
                   != NULL) {
            if (PyBytes_Check(packed) && PyBytes_GET_SIZE(packed) == self->size) {
                memcpy((char *)view.buf + offset, PyBytes_AS_STRING(packed), (size_t)self->size);
                result = Py_NewRef(Py_None);
            } else {
                PyErr_SetString(PyExc_SystemError, "record reference packer returned no record");
            }
            Py_DECREF(packed);
        }
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *RecordCodec_unpack_from(RecordCodec *self, PyObject *args) {
    PyObject *buffer;
    Py_ssize_t offset = 0;
    if (!PyArg_ParseTuple(args, "O|n:unpack_from", &buffer, &offset)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *result = NULL;
    if (offset < 0 || offset > view.len || view.len - offset < self->size)
        PyErr_Format(PyExc_ValueError, "a record of %zd bytes at offset %zd does not fit a "
                     "buffer of %zd bytes", self->size, offset, view.len);
    else
        result = build(self, (const unsigned char *)view.buf + offset);
    PyBuffer_Release(&view);
    return result;
}

/* RecordCodec(size, fields, type, explain_pack, explain_unpack); fields: a sequence of
 * (name, code letter, offset, size, encoding or None). */
static int RecordCodec_init(RecordCodec *self, PyObject *args, PyObject *kwds) {
    Py_ssize_t size;
    PyObject *fields, *type, *explain_pack, *explain_unpack;
    static char *kwlist[] = {"size", "fields", "type", "explain_pack", "explain_unpack", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nOOOO:RecordCodec", kwlist, &size, &fields,
                                     &type, &explain_pack, &explain_unpack))
        return -1;
    if (self->fields != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RecordCodec is initialised once");
        return -1;
    }
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "type must be a class");
        return -1;
    }
    PyObject *seq = PySequence_Fast(fields, "fields must be a sequence");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > MAX_FIELDS || size < 1) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a record has 1 to 256 fields and a positive size");
        return -1;
    }
    self->fields = PyMem_Calloc((size_t)n, sizeof(field_t));
    if (self->fields == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    self->nfields = n;
    self->size = size;
    int slots_ok = 1;
    PyObject *type_dict = ((PyTypeObject *)type)->tp_dict;
    for (Py_ssize_t i = 0; i < n; i++) {
        field_t *f = &self->fields[i];
        PyObject *name, *encoding;
        const char *code;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "UsnnO", &name, &code,
                              &f->offset, &f->size, &encoding)) {
            Py_DECREF(seq);
            return -1;
        }
        f->code = code[0];
        if (strchr("bB?hHeiIfqQdcs", f->code) == NULL || code[1] != '\0' || f->offset < 0 ||
            f->size < 1 || f->offset + f->size > size) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "field %zd: bad code, offset or size", i);
            return -1;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        f->name = name;
        f->encoding = encoding == Py_None ? NULL : Py_NewRef(encoding);
        f->slot = -1;
        PyObject *descr = type_dict ? PyDict_GetItemWithError(type_dict, name) : NULL;
        if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READONLY)) f->slot = m->offset;
        }
        if (PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (f->slot < 0) slots_ok = 0;
    }
    Py_DECREF(seq);
    /* Built directly only when the class is exactly a slotted record class: its instances
     * carry nothing but the slots, and __init__ does nothing but store them. */
    if (PyObject_HasAttrString(type, "__post_init__")) slots_ok = 0;
    self->slots_ok = slots_ok;
    self->type = (PyTypeObject *)Py_NewRef(type);
    self->explain_pack = Py_NewRef(explain_pack);
    self->explain_unpack = Py_NewRef(explain_unpack);
    return 0;
}

static int RecordCodec_traverse(RecordCodec *self, visitproc visit, void *arg) {
    Py_VISIT(self->type);
    Py_VISIT(self->explain_pack);
    Py_VISIT(self->explain_unpack);
    return 0;
}

static int RecordCodec_clear(RecordCodec *self) {
    Py_CLEAR(self->type);
    Py_CLEAR(self->explain_pack);
    Py_CLEAR(self->explain_unpack);
    return 0;
}

static void RecordCodec_dealloc(RecordCodec *self) {
    PyObject_GC_UnTrack(self);
    RecordCodec_clear(self);
    if (self->fields != NULL) {
        for (Py_ssize_t i = 0; i < self->nfields; i++) {
            Py_XDECREF(self->fields[i].name);
            Py_XDECREF(self->fields[i].encoding);
        }
        PyMem_Free(self->fields);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef RecordCodec_methods[] = {
    {"pack", (PyCFunction)RecordCodec_pack, METH_O,
     "pack(value) -> bytes: the record's C bytes (errors as Record.pack)."},
    {"unpack", (PyCFunction)RecordCodec_unpack, METH_O,
     "unpack(payload) -> value: a value of the record class (errors as the reference)."},
    {"pack_into", (PyCFunction)RecordCodec_pack_into, METH_VARARGS,
     "pack_into(buffer, offset, value): write the record's C bytes at offset."},
    {"unpack_from", (PyCFunction)RecordCodec_unpack_from, METH_VARARGS,
     "unpack_from(buffer, offset=0) -> value."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RecordCodecType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmipc._records.RecordCodec",
    .tp_basicsize = sizeof(RecordCodec),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Private: packs and unpacks one Record type's values in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RecordCodec_init,
    .tp_dealloc = (destructor)RecordCodec_dealloc,
    .tp_traverse = (traverseproc)RecordCodec_traverse,
    .tp_clear = (inquiry)RecordCodec_clear,
    .tp_methods = RecordCodec_methods,
};

/* --- RecordBase: the C base of every record value class --------------------------------
 * Gives the values an == in C: two values of one class are equal when their slots are; any
 * other pair is left to the class's _shmipc_eq (records.py: the same schema, field by field).
 * Records are compared as often as dicts are, and a Python __eq__ costs more than a receive. */

static PyObject *RecordBase_richcompare(PyObject *a, PyObject *b, int op) {
    if (op != Py_EQ && op != Py_NE) Py_RETURN_NOTIMPLEMENTED;
    PyTypeObject *t = Py_TYPE(a);
    int equal;
    if (Py_TYPE(b) == t && t->tp_members != NULL) {
        equal = 1;
        for (PyMemberDef *m = t->tp_members; equal == 1 && m->name != NULL; m++) {
            if (m->type != T_OBJECT_EX) continue;
            PyObject *x = *(PyObject **)((char *)a + m->offset);
            PyObject *y = *(PyObject **)((char *)b + m->offset);
            if (x == NULL || y == NULL) equal = x == y;
            else equal = PyObject_RichCompareBool(x, y, Py_EQ);
        }
        if (equal < 0) return NULL;
    } else {
        static PyObject *name;
        if (name == NULL && (name = PyUnicode_InternFromString("_shmipc_eq")) == NULL)
            return NULL;
        PyObject *r = PyObject_CallMethodOneArg(a, name, b);
        if (r == NULL || r == Py_NotImplemented) return r;
        equal = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (equal < 0) return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? equal : !equal);
}

static PyTypeObject RecordBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmipc._records.RecordBase",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Private: the base of record value classes (== in C).",
    .tp_new = PyType_GenericNew,
    .tp_richcompare = RecordBase_richcompare,
    .tp_hash = PyObject_HashNotImplemented,
};

/* --- the C API for the channel binding (_records.h) ------------------------------------ */

static int api_check(PyObject *codec) { return PyObject_TypeCheck(codec, &RecordCodecType); }

static Py_ssize_t api_size(PyObject *codec) { return ((RecordCodec *)codec)->size; }

static int api_pack(PyObject *codec, PyObject *value, unsigned char *out) {
    RecordCodec *self = (RecordCodec *)codec;
    if (pack_into(self, value, out) == 0) return 0;
    PyObject *packed = explain(self->explain_pack, value);
    if (packed == NULL) return -1;
    int rc = 0;
    if (PyBytes_Check(packed) && PyBytes_GET_SIZE(packed) == self->size) {
        memcpy(out, PyBytes_AS_STRING(packed), (size_t)self->size);
    } else {
        PyErr_SetString(PyExc_SystemError, "record reference packer returned no record");
        rc = -1;
    }
    Py_DECREF(packed);
    return rc;
}

static PyObject *api_unpack(PyObject *codec, const unsigned char *p) {
    RecordCodec *self = (RecordCodec *)codec;
    PyObject *obj = build(self, p);
    if (obj != NULL) return obj;
    PyObject *payload = PyBytes_FromStringAndSize((const char *)p, self->size);
    if (payload == NULL) return NULL;
    obj = explain(self->explain_unpack, payload);
    Py_DECREF(payload);
    return obj;
}

static const shmipc_records_api records_api = {api_check, api_size, api_pack, api_unpack};

static struct PyModuleDef records_module = {
    PyModuleDef_HEAD_INIT, "shmipc._records",
    "Private: the C fast path of shmipc.records (packing and unpacking C-layout records).", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__records(void) {
    if (PyType_Ready(&RecordCodecType) < 0 || PyType_Ready(&RecordBaseType) < 0) return NULL;
    PyObject *m = PyModule_Create(&records_module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "RecordCodec", (PyObject *)&RecordCodecType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "RecordBase", (PyObject *)&RecordBaseType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *api = PyCapsule_New((void *)&records_api, SHMIPC_RECORDS_CAPSULE, NULL);
    int failed = api == NULL || PyModule_AddObjectRef(m, "_api", api) < 0;
    Py_XDECREF(api);
    if (failed) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
