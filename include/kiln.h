/*
 * kiln.h — the C API of Kiln: open a .kiln bundle, run it on float32 tensors, classify JPEG/PNG images.
 *
 * Library: libkiln (libkiln.so, libkiln.a), built from the KilnC target by `swift build -c release`
 * (`make release` also names the files libkiln.so and libkiln.a in the release directory). Link:
 *
 *     cc -I include app.c -L "$(swift build -c release --show-bin-path)" -lkiln -Wl,-rpath,<that directory>
 *
 * libkiln.so carries the Swift runtime inside it (linked statically, its symbols hidden): a program that
 * uses it needs no Swift installation, only the C libraries Debian ships (libturbojpeg, libpng, libzstd,
 * libopenblas). README.md, "Embedding", shows the link line of libkiln.a.
 *
 * ---------------------------------------------------------------------------------------------------------
 * 1. Objects and ownership
 *
 *   kiln_model    A loaded, validated bundle: the file mapped read-only, weights packed once, its metadata.
 *                 Made by kiln_model_open, released by kiln_model_close. Every string the model hands out
 *                 (names, labels, kiln_class.label, the fields of kiln_image_input) is owned by the model
 *                 and stays valid until the model is closed and every session over it is freed.
 *   kiln_session  Runs of one model: execution plans kept per input shape (planning and the memory arena
 *                 happen once per shape), the output used for classes, kernel choice. Made by
 *                 kiln_session_new, released by kiln_session_free. A session holds a reference to its model:
 *                 kiln_model_close may come before kiln_session_free; the model is then freed with the last
 *                 session.
 *
 *   Buffers the caller passes (tensors, images, result arrays, error buffers) stay the caller's: the library
 *   reads or writes them only during the call and keeps no pointer to them afterwards.
 *   kiln_model_close(NULL) and kiln_session_free(NULL) do nothing.
 *
 * 2. Threads
 *
 *   Every function may be called from any thread. A model and a session may be used from many threads at
 *   once: runs of one session on one input shape share a small pool of plans (a run waits while all of that
 *   shape's plans are busy: kiln_session_options.plans_per_shape), runs of different shapes go on side by
 *   side. Closing or freeing an object while another thread still uses it is the caller's error (undefined).
 *   The kernels' own worker threads are process-wide: kiln_set_threads.
 *
 * 3. Errors
 *
 *   A function that can fail returns int: 0 (KILN_OK) on success, else a negative kiln_error below, one per
 *   kind of failure (they are the kinds of Kiln's ErrorKind). Such a function also takes `char *err,
 *   size_t err_len`: on failure it writes a one-line, NUL-terminated message there (naming the bundle, image
 *   or tensor when there is one), truncated to err_len - 1 bytes; err may be NULL or err_len 0 (no message).
 *   On failure the out-parameters are left as they were, except where a function says otherwise.
 *   Every argument is checked (NULL pointers, sizes, counts, top_k); no crash, abort or Swift error crosses
 *   this boundary for any argument values, only for pointers that do not point where they say (dangling, or
 *   buffers shorter than the count given).
 *
 * 4. Versions
 *
 *   KILN_API_VERSION is this header's version: major * 10000 + minor * 100 + patch. The major number
 *   changes only when a declaration here changes incompatibly; functions and trailing struct fields are
 *   added in minor versions. kiln_api_version() is the version of the library loaded at run time: a program
 *   built with this header needs kiln_api_version() / 10000 == KILN_API_VERSION / 10000 and
 *   kiln_api_version() >= KILN_API_VERSION. kiln_version() is the Kiln release as text ("0.1.0").
 *   Structs the caller fills in start with `size_t struct_size` (= sizeof of the caller's struct): the
 *   library reads only the fields that size holds and takes defaults for the rest.
 *
 * 5. Tensors
 *
 *   float32, row-major (C order), in the layout of the model's input as the bundle records it: for an image
 *   model `[N, H, W, 3]` (NHWC; kiln_image_input.layout says when it is NCHW) with RGB values 0–255 — a
 *   bundle made by `kiln fuse` does its own preprocessing. Input tensors are read in place (no copy).
 *   Shapes are int64_t arrays; -1 in a model's recorded shape marks a free dimension (the batch).
 * ---------------------------------------------------------------------------------------------------------
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_API_VERSION 10000 /* 1.0.0 */

/* ----- Errors ----------------------------------------------------------------------------------------- */

/** Return codes. 0 is success; each negative code is one kind of failure. */
typedef enum kiln_error {
    KILN_OK = 0,
    /** The caller's input is wrong: a NULL or bad argument, a tensor of the wrong shape or size, bytes that
     *  are not a JPEG or PNG image (or a damaged one), top_k out of range, a destination too small. */
    KILN_ERR_BAD_INPUT = -1,
    /** The bundle is damaged or inconsistent (checksums, tables, metadata), or cannot be read. */
    KILN_ERR_BAD_BUNDLE = -2,
    /** Well formed, but beyond what Kiln does: an op, a layout, an image format variant. */
    KILN_ERR_UNSUPPORTED = -3,
    /** An invariant of Kiln's own broke (a bug to report), or memory ran out. */
    KILN_ERR_INTERNAL = -4
} kiln_error;

/** The name of a return code ("ok", "bad-input", "bad-bundle", "unsupported", "internal"; "unknown" for
 *  any other value). Static storage: never freed. */
const char *kiln_error_name(int code);

/* ----- Versions --------------------------------------------------------------------------------------- */

/** The Kiln release of the loaded library, e.g. "0.1.0". Static storage. */
const char *kiln_version(void);

/** The API version of the loaded library (see KILN_API_VERSION). */
int kiln_api_version(void);

/* ----- Models ----------------------------------------------------------------------------------------- */

typedef struct kiln_model kiln_model;
typedef struct kiln_session kiln_session;

/** Opens, validates (checksums, tables, every op) and prepares the bundle at `path` (a .kiln file; the
 *  path as the OS takes it, NUL-terminated). On success *out is a new model the caller closes with
 *  kiln_model_close. Errors: BAD_INPUT (NULL path or out, no such file), BAD_BUNDLE, UNSUPPORTED. */
int kiln_model_open(const char *path, kiln_model **out, char *err, size_t err_len);

/** Releases the caller's reference to `model` (NULL: nothing); the model is freed now, or with the last
 *  session over it. */
void kiln_model_close(kiln_model *model);

/** Number of inputs and outputs of the model (0 for a NULL model). Runs feed input 0. */
size_t kiln_model_input_count(const kiln_model *model);
size_t kiln_model_output_count(const kiln_model *model);

/** The name of input / output `index` (owned by the model); NULL when model is NULL or index is out of
 *  range. */
const char *kiln_model_input_name(const kiln_model *model, size_t index);
const char *kiln_model_output_name(const kiln_model *model, size_t index);

/** The recorded shape of input / output `index` (-1 for a free dimension): its rank goes to *rank, and its
 *  first min(rank, capacity) dimensions to dims (dims may be NULL when capacity is 0, to ask the rank).
 *  Errors: BAD_INPUT (NULL model or rank, index out of range, dims NULL with capacity > 0). A capacity
 *  smaller than the rank is not an error: *rank says how many there are. */
int kiln_model_input_shape(const kiln_model *model, size_t index, int64_t *dims, size_t capacity,
                           size_t *rank, char *err, size_t err_len);
int kiln_model_output_shape(const kiln_model *model, size_t index, int64_t *dims, size_t capacity,
                            size_t *rank, char *err, size_t err_len);

/** The class labels the bundle records (`labels.names`, one per column of the classified output): their
 *  number, and label `index` (owned by the model; NULL when out of range). 0 when the bundle has none. */
size_t kiln_model_label_count(const kiln_model *model);
const char *kiln_model_label(const kiln_model *model, size_t index);

/** How the bundle takes images, from its metadata. Strings are owned by the model; a string the bundle
 *  does not record is NULL, a number it does not record is 0. */
typedef struct kiln_image_input {
    /** Set by the caller: sizeof(kiln_image_input). */
    size_t struct_size;
    /** 1 when the bundle takes images (it records how to resize them), else 0 (it takes tensors). */
    int takes_images;
    /** The image size the model takes (input.height, input.width); 0 when free. */
    int height, width;
    /** "NHWC" or "NCHW": how a batch is laid out. */
    const char *layout;
    /** The resizing (input.resize): "keras-nearest", "keras-bilinear", "torchvision", ...; NULL: tensors. */
    const char *resize;
    /** torchvision resizing: the shorter side before the centre crop (input.resize_shorter); else 0. */
    int resize_shorter;
    /** The preprocessing folded into the graph (input.preprocessing: "caffe", "tf", "torch", "none", ...)
     *  and the colour order the input is in (input.color). */
    const char *preprocessing;
    const char *color;
    /** The output classes are read from by default (its index among the outputs: the first;
     *  kiln_session_options.output chooses another) and what its numbers are: "probability" (a softmax's
     *  output) or "score" (anything else). */
    size_t output_index;
    const char *scores;
} kiln_image_input;

/** Fills `info` (the fields its struct_size holds). Errors: BAD_INPUT (NULL model or info, struct_size
 *  smaller than the first two fields). */
int kiln_model_image_input(const kiln_model *model, kiln_image_input *info, char *err, size_t err_len);

/* ----- Sessions --------------------------------------------------------------------------------------- */

/** Options of a session. Zero / -1 fields take the defaults; kiln_session_options_init sets them all. */
typedef struct kiln_session_options {
    /** Set by the caller: sizeof(kiln_session_options). */
    size_t struct_size;
    /** Plans kept per input shape: the runs of one shape that go on at once (default 2; 1..64). */
    int plans_per_shape;
    /** Input shapes whose plans are kept (default 8; 1..1024); the least recently used idle one goes. */
    int max_shapes;
    /** The output classes are read from, by index (default -1: the first output). */
    int output;
    /** 1: the naive reference kernels (slow; a test oracle). Default 0: the fast kernels. */
    int reference_kernels;
    /** 1: classification turns scores that are not already probabilities into probabilities (softmax).
     *  Default 0: the output's own numbers, as kiln-run prints them. */
    int softmax;
} kiln_session_options;

/** Sets every field of *opts to its default (struct_size = sizeof(kiln_session_options)). NULL: nothing. */
void kiln_session_options_init(kiln_session_options *opts);

/** A new session over `model` (opts NULL: defaults). The session keeps the model alive. Errors: BAD_INPUT
 *  (NULL model or out, an option out of range, struct_size too small for struct_size itself). */
int kiln_session_new(kiln_model *model, const kiln_session_options *opts, kiln_session **out, char *err,
                     size_t err_len);

/** Frees a session (NULL: nothing). Its plans and their memory go with it. */
void kiln_session_free(kiln_session *session);

/** Kernel worker threads, process-wide (every model and session): 1..256. The default is one per online
 *  CPU. Call it while no run is going on (at start-up). Errors: BAD_INPUT (out of range). */
int kiln_set_threads(int threads);

/* ----- Tensor runs ------------------------------------------------------------------------------------ */

/** The shapes of every output for an input of `shape` (`rank` dimensions), without running. Output i's
 *  rank goes to ranks[i] and its dimensions to dims[i * max_rank ...]; `ranks` holds `output_count`
 *  entries (= kiln_model_output_count) and `dims` output_count * max_rank. An output that this input
 *  cannot make (or whose rank exceeds max_rank) is an error. Errors: BAD_INPUT, UNSUPPORTED. */
int kiln_output_shapes(kiln_session *session, const int64_t *shape, size_t rank, size_t output_count,
                       int64_t *dims, size_t max_rank, size_t *ranks, char *err, size_t err_len);

/** Runs the model on `input` (`count` floats, shape `shape` of `rank` dimensions, read in place) and
 *  copies output `output` into `out`, which holds exactly `out_count` floats (the output's element count;
 *  kiln_output_shapes says it). `out` must not overlap `input`. Errors: BAD_INPUT (NULL pointers, count
 *  not the shape's product, a shape the model cannot take, out_count not the output's size, output out of
 *  range), UNSUPPORTED, INTERNAL. */
int kiln_run(kiln_session *session, const float *input, size_t count, const int64_t *shape, size_t rank,
             size_t output, float *out, size_t out_count, char *err, size_t err_len);

/** Runs once and copies every output: outputs[i] holds out_counts[i] floats for output i, for i below
 *  output_count (= kiln_model_output_count); an outputs[i] of NULL skips that output (its out_counts[i] is
 *  then not checked). Errors as kiln_run; on failure the outputs' contents are unspecified. */
int kiln_run_outputs(kiln_session *session, const float *input, size_t count, const int64_t *shape,
                     size_t rank, size_t output_count, float *const *outputs, const size_t *out_counts,
                     char *err, size_t err_len);

/** One output of a run, lent to a kiln_outputs_fn: valid only during that call, owned by the session. */
typedef struct kiln_tensor_view {
    const float *data;
    size_t count;
    const int64_t *shape;
    size_t rank;
} kiln_tensor_view;

/** Called by kiln_run_borrowed with every output of the run (`outputs[0 .. count-1]`, bundle order).
 *  Return 0 to succeed; a non-zero value is returned by kiln_run_borrowed as it is. It must not call back
 *  into the same session on the same shape (that plan is checked out), nor longjmp or throw out. */
typedef int (*kiln_outputs_fn)(void *user, const kiln_tensor_view *outputs, size_t count);

/** Runs without copying the outputs: `fn` reads them in the plan's own memory. Errors as kiln_run, or
 *  what fn returned. */
int kiln_run_borrowed(kiln_session *session, const float *input, size_t count, const int64_t *shape,
                      size_t rank, kiln_outputs_fn fn, void *user, char *err, size_t err_len);

/* ----- Classification --------------------------------------------------------------------------------- */

/** One class: its column in the output, its score (as kiln_image_input.scores says, or a probability
 *  with kiln_session_options.softmax), and its label (owned by the model; the column number as text when
 *  the bundle records no label for it). */
typedef struct { int index; float score; const char *label; } kiln_class;

/** Classifies one JPEG or PNG image held in memory (`len` bytes): decoded and resized exactly as the
 *  bundle records, one run, the `top_k` best classes highest first into out[0 .. top_k-1] (ties go to the
 *  lower column). top_k: 1 .. the number of classes. The bundle must take images of a fixed size.
 *  Errors: BAD_INPUT (NULL pointers, len 0, top_k out of range, not an image, a damaged or over-limit image,
 *  a bundle that takes tensors), UNSUPPORTED (an image variant Kiln refuses), INTERNAL. */
int kiln_classify_image_bytes(kiln_session *session, const unsigned char *bytes, size_t len, int top_k,
                              kiln_class *out, char *err, size_t err_len);

/** Classifies `count` images as batches of one run each (up to `batch` images a run; 0: all in one run):
 *  image i is images[i] (lens[i] bytes); its top_k classes go to out[i * top_k ...] and its return code to
 *  codes[i] (0, or the negative code of why that image could not be classified; its classes are then
 *  zeroed, labels NULL). The call returns 0 when the runs happened even if some images failed (see codes),
 *  else the error that stopped it (bad arguments, a failed run); out and codes are then unspecified. Image
 *  i's message is not kept: kiln_classify_image_bytes on that image alone gives it. */
int kiln_classify_images(kiln_session *session, const unsigned char *const *images, const size_t *lens,
                         size_t count, size_t batch, int top_k, kiln_class *out, int *codes, char *err,
                         size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
