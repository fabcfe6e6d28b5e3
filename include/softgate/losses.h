/*
 * softgate/losses.h - losses (cross-entropy with z-loss, spherical Z-loss), confidence scores, fused softmax + top-k.
 * Part of the public API: include <softgate.h>, which includes this file.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/losses.h>"
#endif
