/*
 * softgate/sparse.h - sparse normalizers: entmax (1.5 and alpha), sparse-softmax (top-k softmax).
 * Part of the public API: include <softgate.h>, which includes this file.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/sparse.h>"
#endif
