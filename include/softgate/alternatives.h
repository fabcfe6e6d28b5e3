/*
 * softgate/alternatives.h - softmax alternatives: softpick, stablemax, sigmoid and normalized sigmoid, Gumbel-softmax, adaptive temperature.
 * Part of the public API: include <softgate.h>, which includes this file.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/alternatives.h>"
#endif
