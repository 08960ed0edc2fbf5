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

/* A growing buffer for packing: starts in its own stack area, moves to the heap if needed. */
typedef struct {
    unsigned char *buf;
    size_t len, cap;
    unsigned char stack[1024];
} shmipc_packbuf;

void shmipc_packbuf_init(shmipc_packbuf *b);
void shmipc_packbuf_free(shmipc_packbuf *b);
int shmipc_packbuf_reserve(shmipc_packbuf *b, size_t more);

/* Append obj packed as msgpack.Packer(use_bin_type=True) packs it. 1 packed; 0 given up (no
 * exception, nothing appended: msgpack-python must pack it or raise); -1 an exception
 * (MemoryError). */
int shmipc_msgpack_pack(shmipc_packbuf *b, PyObject *obj);

#endif
