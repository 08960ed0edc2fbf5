/*
 * _records.h - the C functions of shmipc._records that the channel binding calls directly, so
 * a record channel packs a record straight into a buffer on the stack and builds a value
 * straight from the bytes it copied out: no bytes object per message.
 *
 * Exported by shmipc._records as the capsule SHMIPC_RECORDS_CAPSULE; the binding imports it
 * when a record codec is set on a channel.
 */
#ifndef SHMIPC_RECORDS_H
#define SHMIPC_RECORDS_H

#include <Python.h>

#define SHMIPC_RECORDS_CAPSULE "shmipc._records._api"

typedef struct {
    /* True if `codec` is a RecordCodec. */
    int (*check)(PyObject *codec);
    /* Bytes of one record. */
    Py_ssize_t (*size)(PyObject *codec);
    /* Pack `value` into out[0..size). 0, or -1 with the reference's error set (FieldTooLong,
     * RecordError...). May call Python code (the reference), so never hold a lock over it. */
    int (*pack)(PyObject *codec, PyObject *value, unsigned char *out);
    /* A value built from p[0..size), or NULL with the reference's error set. */
    PyObject *(*unpack)(PyObject *codec, const unsigned char *p);
} shmipc_records_api;

#endif
