#!/bin/sh
# run_flexmix.sh - builds softgate and compares its Gaussian mixture of
# experts with R's flexmix from the same starting partitions
# (bench/compare/flexmix_compare.R; results in BENCHMARKS.md, section
# "Mixture of experts vs flexmix").
#
#   bench/compare/run_flexmix.sh [STARTS] [TOL] [MAX_ITER]   (from anywhere;
#   defaults 10, 1e-10, 5000: the same tolerance and cap for both)
#
# Needs R with flexmix: apt-get install -y r-base-core r-cran-flexmix
set -e
cd "$(dirname "$0")/../.."
command -v Rscript >/dev/null || { echo "Rscript missing: apt-get install -y r-base-core r-cran-flexmix" >&2; exit 2; }
Rscript -e 'suppressPackageStartupMessages(library(flexmix))' >/dev/null 2>&1 || { echo "R package flexmix missing: apt-get install -y r-cran-flexmix" >&2; exit 2; }
make -s all
Rscript -e 'cat("R", R.version$major, ".", R.version$minor, ", flexmix ", format(packageVersion("flexmix")), "\n", sep = "")'
exec Rscript bench/compare/flexmix_compare.R "$PWD/build/softgate" "${1:-10}" "${2:-1e-10}" "${3:-5000}"
