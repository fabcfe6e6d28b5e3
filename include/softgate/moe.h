/*
 * softgate/moe.h - token dispatch and combine, the MoE layer forward.
 * Part of the public API: include <softgate.h>, which includes this file.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/moe.h>"
#endif
