/*
 * softgate/mixture.h - classical mixtures of experts fitted by EM.
 * Part of the public API: include <softgate.h>, which includes this file.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/mixture.h>"
#endif
