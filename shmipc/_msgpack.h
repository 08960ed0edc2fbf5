/*
 * _msgpack.h - the binding's msgpack decoder for the common case (see _msgpack.c).
 */
#ifndef SHMIPC_MSGPACK_H
#define SHMIPC_MSGPACK_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

/* Decode the one msgpack object that p[0..n) holds. Returns a new reference; or NULL with no
 * exception set when msgpack-python must decide (ext types, invalid or unusual input: it
 * returns the value or raises the error); or NULL with an exception (MemoryError). */
PyObject *shmipc_msgpack_decode(const unsigned char *p, size_t n);

#endif
