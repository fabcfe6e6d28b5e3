/*
 * softgate/io.h - reading data sets from CSV for the models (a design
 * matrix of doubles, a numeric response or class labels).
 * Part of the public API: include <softgate.h>, which includes this file.
 */
#ifndef SOFTGATE_H
#error "include <softgate.h>, not <softgate/io.h>"
#endif

/*
 * CSV rules (RFC 4180, and docs/CLI.md):
 *  - The first record is the header: one name per column, names unique
 *    (a duplicate is an error). A UTF-8 byte-order mark is skipped.
 *  - Records end with LF or CRLF (a lone CR is also accepted). Every record
 *    has as many fields as the header (otherwise an error naming the line).
 *    Empty lines at the end of the file are ignored; elsewhere an empty
 *    line is a record of one empty field (so an error when the header has
 *    more than one column, a missing value otherwise).
 *  - A field may be quoted with '"': it may then hold the delimiter, line
 *    breaks and doubled quotes ("" is one "). A quote inside an unquoted
 *    field, text after a closing quote, or an unterminated quote are errors
 *    naming the line and column. Unquoted fields are trimmed of spaces and
 *    tabs; quoted fields are taken as they are.
 *  - Missing values: an empty field, NA or NaN (any case). Numbers: what
 *    strtod accepts in the C locale, the whole field, finite (so "inf" and
 *    1e999 are malformed, not numbers).
 *  - Only the columns used (the features and the response) are checked;
 *    other columns may hold anything well-formed.
 * Errors name the physical line (1-based, the header is line 1; a quoted
 * field spanning lines is named by the line where it starts), the column
 * (1-based) and its header name, e.g.
 *   "line 7, column 3 ('waiting'): 'abc' is not a number".
 * With drop_missing, a record whose used fields hold a missing or malformed
 * value (or an unknown level under fixed levels) is dropped and counted
 * (sg_dataset_dropped) instead of failing. Structural errors (quotes, field
 * counts) and a used column with no numeric value at all ("column 'color'
 * is not numeric; declare it categorical") are errors either way. A data
 * set left with no record is an error.
 *
 * Categorical columns (named in options.categorical) are one-hot encoded
 * with treatment coding: levels sorted (numerically when every level is a
 * number, else by bytes), the first is the reference and gets no column,
 * each other level L of column c becomes a 0/1 column named "c=L", in place
 * of c in the feature order. Levels that only appear in dropped records are
 * not levels. A column with one level is an error (it would be constant).
 * With options.levels (e.g. when predicting with a fitted model), a
 * column's levels are the given ones, in the given order (the first is the
 * reference), and a value outside them is an error.
 *
 * Limits: the whole file is read into memory (no streaming; the reader
 * needs about the file size plus 8 bytes per used value and per record);
 * a file larger than options.max_bytes (default SG_CSV_DEFAULT_MAX_BYTES)
 * is refused, as are more than SG_CSV_MAX_COLUMNS columns and more than
 * SG_CSV_MAX_LEVELS levels in one categorical column or response.
 */
#define SG_CSV_DEFAULT_MAX_BYTES ((size_t)1 << 31)
#define SG_CSV_MAX_COLUMNS 100000
#define SG_CSV_MAX_LEVELS 10000

typedef enum sg_csv_response_kind {
    SG_CSV_RESPONSE_NUMERIC = 0, /* y: finite doubles                          */
    SG_CSV_RESPONSE_LABELS = 1   /* class labels (any strings, numbers too)   */
} sg_csv_response_kind;

/* The fixed levels of one categorical column: names[0] is the reference. */
typedef struct sg_csv_levels {
    const char *column;
    size_t count;
    const char *const *names;
} sg_csv_levels;

/*
 * Reader options. Start from sg_csv_options_default() (all zero/NULL):
 * response      header name of the response column, or NULL for none (a
 *               data set of features only, e.g. for prediction).
 * response_kind numeric y or class labels; labels are mapped to class
 *               indices 0..C-1 in sorted order (numeric order when every
 *               label is a number) unless class_labels fixes them.
 * class_labels  if n_class_labels > 0: the classes, in order; a label
 *               outside them is an error (or dropped with drop_missing).
 * features      the feature columns, in order (n_features names); NULL:
 *               every column except the response, in file order. A name
 *               that is not in the header is an error; so is the response
 *               named as a feature, or a feature named twice.
 * categorical   columns to one-hot encode (each must be a feature).
 * levels        fixed levels for some categorical columns (see above).
 * drop_missing  nonzero: drop records with missing/malformed used values.
 * delimiter     field separator; 0 means ','. Not '"', CR or LF.
 * max_bytes     largest input accepted; 0 means SG_CSV_DEFAULT_MAX_BYTES.
 */
typedef struct sg_csv_options {
    const char *response;
    sg_csv_response_kind response_kind;
    const char *const *class_labels;
    size_t n_class_labels;
    const char *const *features;
    size_t n_features;
    const char *const *categorical;
    size_t n_categorical;
    const sg_csv_levels *levels;
    size_t n_levels;
    int drop_missing;
    char delimiter;
    size_t max_bytes;
} sg_csv_options;

SG_API sg_csv_options sg_csv_options_default(void);

/* A data set read from CSV: owned by the caller, freed by sg_dataset_destroy. */
typedef struct sg_dataset sg_dataset;

/*
 * Reads a CSV file (path) or a buffer (data, size bytes; need not be
 * NUL-terminated). NULL options: the defaults (no response, every column a
 * numeric feature). On success *out is a new data set; on failure *out is
 * NULL and sg_context_error(ctx) names the problem (for files, errors from
 * opening or reading name the path). Never prints.
 */
SG_API sg_status sg_csv_read_file(sg_context *ctx, const char *path,
                                  const sg_csv_options *options, sg_dataset **out);
SG_API sg_status sg_csv_read_buffer(sg_context *ctx, const char *data, size_t size,
                                    const sg_csv_options *options, sg_dataset **out);
SG_API void sg_dataset_destroy(sg_dataset *data);

/* Records kept (n) and encoded feature columns (p). */
SG_API size_t sg_dataset_rows(const sg_dataset *data);
SG_API size_t sg_dataset_cols(const sg_dataset *data);
/* The design matrix, row-major [n x p], row stride p; no intercept column. */
SG_API const double *sg_dataset_x(const sg_dataset *data);
/* Name of encoded column j < p ("x" or "c=L"); NULL when j >= p. */
SG_API const char *sg_dataset_col_name(const sg_dataset *data, size_t j);
/* The feature columns as read (before one-hot encoding), in order: their
 * count and names (NULL when i is out of range). */
SG_API size_t sg_dataset_feature_count(const sg_dataset *data);
SG_API const char *sg_dataset_feature_name(const sg_dataset *data, size_t i);
/* The numeric response [n], or NULL (no response, or labels). */
SG_API const double *sg_dataset_y(const sg_dataset *data);
/* The class index of each record [n] (0..C-1), or NULL (no labels). */
SG_API const int32_t *sg_dataset_labels(const sg_dataset *data);
/* Number of classes C (0 without labels) and the name of class c < C. */
SG_API size_t sg_dataset_classes(const sg_dataset *data);
SG_API const char *sg_dataset_class_name(const sg_dataset *data, size_t c);
/* Physical line (1-based) where kept record i < n starts; 0 if i >= n. */
SG_API size_t sg_dataset_line(const sg_dataset *data, size_t i);
/* Records dropped by drop_missing, and the line of the first one (0: none). */
SG_API size_t sg_dataset_dropped(const sg_dataset *data);
SG_API size_t sg_dataset_first_dropped_line(const sg_dataset *data);
/*
 * The categorical columns as encoded: count, and for column k its name,
 * its number of levels and level l's name (level 0 is the reference).
 * These are what a model must keep to encode new data the same way
 * (pass them back through sg_csv_options.levels).
 */
SG_API size_t sg_dataset_categorical_count(const sg_dataset *data);
SG_API const char *sg_dataset_categorical_name(const sg_dataset *data, size_t k);
SG_API size_t sg_dataset_level_count(const sg_dataset *data, size_t k);
SG_API const char *sg_dataset_level_name(const sg_dataset *data, size_t k, size_t l);
