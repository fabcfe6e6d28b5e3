/*
 * softgate/route.h - MoE gates and routers, load and balance.
 * Part of the public API: include <softgate.h>, which includes this file.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/route.h>"
#endif
