# flexmix_compare.R - softgate's Gaussian mixture of experts against R's
# flexmix (FLXMRglm gaussian experts with the concomitant model
# FLXPmultinom(~x): the same softmax-gated Gaussian mixture of experts), on
# the same data, the same number of experts and the same starting
# partitions (flexmix's cluster= argument; softgate fit --init-column),
# both run to the same relative tolerance.
#
# Usage (from the repository root; bench/compare/run_flexmix.sh does it):
#   Rscript bench/compare/flexmix_compare.R SOFTGATE_BINARY [STARTS] [TOL] [MAX_ITER]
# Prints one line per start and a Markdown table; exits non-zero if
# softgate's log-likelihood is below flexmix's on any start.
#
# Times: flexmix's is system.time() of the flexmix() call; softgate's is
# the CPU time of its whole command (process start, CSV, fit, JSON; the
# headline ratio, robust on a shared machine), and the wall time of the fit
# alone that it reports (--json "time_s"). Both single-threaded (softgate
# --threads 1, OPENBLAS_NUM_THREADS=1).
suppressPackageStartupMessages(library(flexmix))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) stop("usage: flexmix_compare.R SOFTGATE [STARTS] [TOL] [MAX_ITER]")
softgate <- args[1]
starts <- if (length(args) >= 2) as.integer(args[2]) else 5L
tol <- if (length(args) >= 3) as.numeric(args[3]) else 1e-10
max_iter <- if (length(args) >= 4) as.integer(args[4]) else 5000L  # the same cap for both
Sys.setenv(OPENBLAS_NUM_THREADS = "1")

# Data sets: a real one (Old Faithful, shipped in data/), flexmix's NPreg,
# a larger simulated one with three experts and two covariates, and a
# simulated one with three experts on one covariate.
cases <- list()
faithful_csv <- read.csv("data/faithful.csv")
cases[[length(cases) + 1]] <- list(name = "faithful", data = faithful_csv, y = "eruptions",
                                   x = "waiting", k = 2)
cases[[length(cases) + 1]] <- list(name = "faithful", data = faithful_csv, y = "eruptions",
                                   x = "waiting", k = 3)
data("NPreg", package = "flexmix")
cases[[length(cases) + 1]] <- list(name = "NPreg", data = NPreg[, c("x", "yn")], y = "yn",
                                   x = "x", k = 2)
set.seed(20261128)
n <- 2000
sim <- data.frame(x1 = rnorm(n), x2 = rnorm(n))
eta <- cbind(1.0 + 2 * sim$x1, -0.5 + 1.5 * sim$x2, 0)
g <- exp(eta - apply(eta, 1, max)); g <- g / rowSums(g)
z <- apply(g, 1, function(p) sample.int(3, 1, prob = p))
b <- rbind(c(0, 1, -1), c(3, -1, 0.5), c(-2, 0.5, 2))
sim$y <- rowSums(cbind(1, sim$x1, sim$x2) * b[z, ]) + rnorm(n, sd = c(0.5, 0.8, 0.3)[z])
cases[[length(cases) + 1]] <- list(name = "simulated", data = sim, y = "y", x = c("x1", "x2"), k = 3)
# One covariate, three experts whose lines cross, gated on x (n = 500).
set.seed(20261129)
n1 <- 500
s1 <- data.frame(x = runif(n1, -3, 3))
eta1 <- cbind(1 + 2 * s1$x, 1 - 2 * s1$x, 0)
g1 <- exp(eta1 - apply(eta1, 1, max)); g1 <- g1 / rowSums(g1)
z1 <- apply(g1, 1, function(p) sample.int(3, 1, prob = p))
b1 <- rbind(c(0, 1), c(2, -1), c(-1, 0.5))
s1$y <- rowSums(cbind(1, s1$x) * b1[z1, ]) + rnorm(n1, sd = c(0.3, 0.4, 0.5)[z1])
cases[[length(cases) + 1]] <- list(name = "sim1d", data = s1, y = "y", x = "x", k = 3)

# FLEXMIX_CASES="simulated" (a regular expression on "name E") runs a subset.
only <- Sys.getenv("FLEXMIX_CASES")
if (nzchar(only)) cases <- Filter(function(cs) grepl(only, paste(cs$name, cs$k)), cases)

json_num <- function(json, key) {
    m <- regmatches(json, regexpr(paste0("\"", key, "\":[^,}]*"), json))
    if (length(m) == 0) return(NA_real_)
    v <- sub(".*:", "", m)
    if (v == "null") NA_real_ else as.numeric(v)
}

rows <- list()
tmp <- tempfile("flexmix_compare")
dir.create(tmp)
for (cs in cases) {
    d <- cs$data
    fml <- as.formula(paste(cs$y, "~", paste(cs$x, collapse = " + ")))
    conc <- as.formula(paste("~", paste(cs$x, collapse = " + ")))
    set.seed(1000 + cs$k)
    for (s in seq_len(starts)) {
        cl <- sample.int(cs$k, nrow(d), replace = TRUE)
        # flexmix: the partition as cluster=, no component removal.
        ctrl <- list(tolerance = tol, iter.max = max_iter, minprior = 0)
        tf <- system.time(fm <- flexmix(fml, data = d, k = cs$k, cluster = cl,
                                        model = FLXMRglm(family = "gaussian"),
                                        concomitant = FLXPmultinom(conc), control = ctrl))
        cpu_f <- as.numeric(tf["user.self"] + tf["sys.self"])
        ll_f <- as.numeric(logLik(fm))
        # softgate: the same partition through --init-column.
        csv <- file.path(tmp, sprintf("%s_k%d_s%d.csv", cs$name, cs$k, s))
        dd <- d; dd$start <- cl
        write.csv(dd, csv, row.names = FALSE)
        cmd_args <- c("fit", csv, "--response", cs$y, "--features", paste(cs$x, collapse = ","),
                      "--experts", cs$k, "--init-column", "start", "--restarts", "1",
                      "--tol", format(tol), "--max-iter", max_iter, "--threads", "1", "--json")
        tw <- system.time(out <- system2(softgate, cmd_args, stdout = TRUE, stderr = TRUE))
        # The child's CPU time: the whole command (start, CSV, fit, JSON).
        cpu_s <- as.numeric(tw["user.child"] + tw["sys.child"])
        json <- paste(out, collapse = "")
        ll_s <- json_num(json, "loglik")
        ts <- json_num(json, "time_s")
        if (is.na(ll_s)) stop(paste("softgate failed:", json))
        rows[[length(rows) + 1]] <- data.frame(
            case = cs$name, n = nrow(d), E = cs$k, start = s,
            flexmix_k = fm@k, flexmix_iter = fm@iter, loglik_flexmix = ll_f,
            softgate_iter = json_num(json, "iterations"), loglik_softgate = ll_s,
            diff = ll_s - ll_f, softgate_ge = ll_s >= ll_f - 1e-9 * abs(ll_f),
            time_flexmix = as.numeric(tf["elapsed"]), time_softgate_fit = ts,
            time_softgate_cmd = as.numeric(tw["elapsed"]),
            cpu_flexmix = cpu_f, cpu_softgate_cmd = cpu_s,
            ratio_fit = as.numeric(tf["elapsed"]) / ts,
            ratio_cmd = as.numeric(tf["elapsed"]) / as.numeric(tw["elapsed"]),
            ratio_cpu = cpu_f / max(cpu_s, 1e-3))
        r <- rows[[length(rows)]]
        cat(sprintf("%-9s E=%d start %d: flexmix %.6f (%d it, k=%d)  softgate %.6f (%d it)  diff %+.2e  %s  time ratio %.1fx (CPU, command) %.1fx (wall, fit) %.1fx (wall, command)\n",
                    r$case, r$E, r$start, r$loglik_flexmix, r$flexmix_iter, r$flexmix_k,
                    r$loglik_softgate, as.integer(r$softgate_iter), r$diff,
                    if (r$softgate_ge) "softgate >= flexmix" else "SOFTGATE LOWER",
                    r$ratio_cpu, r$ratio_fit, r$ratio_cmd))
    }
}
# FLEXMIX_KEEP=DIR keeps the CSV files (data and start column) there.
keep <- Sys.getenv("FLEXMIX_KEEP")
if (nzchar(keep)) file.copy(list.files(tmp, full.names = TRUE), keep, overwrite = TRUE)
unlink(tmp, recursive = TRUE)
res <- do.call(rbind, rows)

cat("\n| data | n | E | start | flexmix loglik (iter) | softgate loglik (iter) | softgate - flexmix | >= | flexmix CPU s | softgate command CPU s | ratio (CPU) | ratio (wall, fit only) |\n")
cat("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
for (i in seq_len(nrow(res))) {
    r <- res[i, ]
    cat(sprintf("| %s | %d | %d | %d | %.6f (%d) | %.6f (%d) | %+.2e | %s | %.3f | %.3f | %.1fx | %.1fx |\n",
                r$case, r$n, r$E, r$start, r$loglik_flexmix, r$flexmix_iter, r$loglik_softgate,
                as.integer(r$softgate_iter), r$diff, if (r$softgate_ge) "yes" else "NO",
                r$cpu_flexmix, r$cpu_softgate_cmd, r$ratio_cpu, r$ratio_fit))
}
cat(sprintf("\nsoftgate >= flexmix on %d of %d starts; median time ratio (flexmix / softgate) %.1fx in CPU time (softgate's whole command), %.1fx wall (fit only), %.1fx wall (whole command); tolerance %g, iteration cap %d (reached by flexmix on %d starts, by softgate on %d)\n",
            sum(res$softgate_ge), nrow(res), median(res$ratio_cpu), median(res$ratio_fit),
            median(res$ratio_cmd), tol, max_iter, sum(res$flexmix_iter >= max_iter),
            sum(res$softgate_iter >= max_iter)))
# Starts where both reached the same local maximum (log-likelihoods within
# 0.5): there the comparison is of the fixed points themselves.
same <- abs(res$diff) < 0.5
if (any(same))
    cat(sprintf("same local maximum on %d starts: softgate >= flexmix on %d, softgate - flexmix median %+.2e, min %+.2e, max %+.2e\n",
                sum(same), sum(res$softgate_ge[same]), median(res$diff[same]), min(res$diff[same]),
                max(res$diff[same])))
cat("best over the starts:\n")
for (key in unique(paste(res$case, res$E))) {
    r <- res[paste(res$case, res$E) == key, ]
    cat(sprintf("  %-12s flexmix %.6f  softgate %.6f  (%+.2e)\n", key, max(r$loglik_flexmix),
                max(r$loglik_softgate), max(r$loglik_softgate) - max(r$loglik_flexmix)))
}
if (!all(res$softgate_ge)) quit(status = 1)
