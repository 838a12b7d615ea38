/*
 * api_contract: checks that libkiln keeps the promises of include/kiln.h on bad arguments: every NULL pointer,
 * bad size, out-of-range index or top_k, and short error buffer gives its error code and a NUL-terminated
 * message, never a crash. Prints one line per failed check and "N passed, N failed".
 *
 *   ./api_contract model.kiln photo.jpg        (a fused bundle that takes images, and an image for it)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

static int passed, failed;

/* kiln_run_borrowed's callback: checks the lent output against `user` (kiln_run's copy of output 0) and returns
 * 0, or 7 when asked to fail (user == NULL). */
static int compare_outputs(void *user, const kiln_tensor_view *outputs, size_t count) {
    if (!user) return 7;
    const float *expected = user;
    if (count < 1 || outputs[0].rank != 2 || outputs[0].shape[0] != 1) return 1;
    for (size_t i = 0; i < outputs[0].count; i++)
        if (outputs[0].data[i] != expected[i]) return 2;
    return 0;
}

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) passed++;                                                \
        else { failed++; printf("FAIL line %d: ", __LINE__); printf(__VA_ARGS__); printf("\n"); } \
    } while (0)

/* The call gave `want` and, when it failed, a NUL-terminated, non-empty message in `err`. */
#define EXPECT_CODE(call, want)                                                               \
    do {                                                                                      \
        char err[256];                                                                        \
        memset(err, 'x', sizeof err);                                                         \
        int rc_ = (call);                                                                     \
        CHECK(rc_ == (want), "%s gave %d, wanted %d", #call, rc_, want);                      \
        CHECK(rc_ == 0 || (memchr(err, 0, sizeof err) != NULL && err[0] != 0),                \
              "%s left no message", #call);                                                   \
    } while (0)

#define ERR err, sizeof err

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s BUNDLE.kiln IMAGE\n", argv[0]); return 2; }
    FILE *f = fopen(argv[2], "rb");
    if (!f) { fprintf(stderr, "cannot read %s\n", argv[2]); return 2; }
    static unsigned char image[1 << 22];
    size_t image_len = fread(image, 1, sizeof image, f);
    fclose(f);

    /* Versions and names. */
    CHECK(strlen(kiln_version()) > 0, "kiln_version empty");
    CHECK(kiln_api_version() == KILN_API_VERSION, "api version %d", kiln_api_version());
    CHECK(strcmp(kiln_error_name(KILN_ERR_BAD_BUNDLE), "bad-bundle") == 0, "error name");
    CHECK(strcmp(kiln_error_name(12345), "unknown") == 0, "unknown error name");

    /* Opening. */
    kiln_model *model = NULL;
    EXPECT_CODE(kiln_model_open(NULL, &model, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_model_open(argv[1], NULL, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_model_open("/nonexistent/model.kiln", &model, ERR), KILN_ERR_BAD_INPUT);
    CHECK(model == NULL, "a failed open set *out");
    EXPECT_CODE(kiln_model_open(argv[2], &model, ERR), KILN_ERR_BAD_BUNDLE); /* an image is no bundle */
    CHECK(kiln_model_open(argv[1], &model, NULL, 0) == KILN_OK && model, "open with no error buffer");

    /* Short error buffers: cut, NUL-terminated, nothing written past err_len. */
    char small[8];
    memset(small, '#', sizeof small);
    CHECK(kiln_model_open(NULL, &model, small, 5) == KILN_ERR_BAD_INPUT, "open NULL");
    CHECK(strlen(small) == 4 && small[5] == '#', "err cut to 4 bytes + NUL, got '%.8s'", small);
    memset(small, '#', sizeof small);
    CHECK(kiln_model_open(NULL, &model, small, 1) == KILN_ERR_BAD_INPUT && small[0] == 0 && small[1] == '#',
          "err_len 1 gives an empty string");
    CHECK(kiln_model_open(NULL, &model, NULL, 100) == KILN_ERR_BAD_INPUT, "NULL err with a length");

    /* Metadata. */
    CHECK(kiln_model_input_count(NULL) == 0 && kiln_model_output_count(NULL) == 0, "counts of NULL");
    CHECK(kiln_model_input_count(model) == 1 && kiln_model_output_count(model) >= 1, "counts");
    CHECK(kiln_model_input_name(model, 0) != NULL && kiln_model_input_name(model, 1) == NULL, "input names");
    CHECK(kiln_model_output_name(model, (size_t)-1) == NULL && kiln_model_output_name(NULL, 0) == NULL, "names");
    size_t rank = 0;
    int64_t dims[8];
    EXPECT_CODE(kiln_model_input_shape(model, 0, NULL, 0, &rank, ERR), KILN_OK);
    CHECK(rank == 4, "input rank %zu", rank);
    EXPECT_CODE(kiln_model_input_shape(model, 0, dims, 2, &rank, ERR), KILN_OK); /* a short dims array */
    CHECK(rank == 4 && dims[0] == -1, "input shape [%lld, ...] rank %zu", (long long)dims[0], rank);
    EXPECT_CODE(kiln_model_input_shape(model, 0, NULL, 4, &rank, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_model_input_shape(model, 1, dims, 8, &rank, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_model_input_shape(model, 0, dims, (size_t)-1, &rank, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_model_output_shape(model, 0, dims, 8, NULL, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_model_output_shape(NULL, 0, dims, 8, &rank, ERR), KILN_ERR_BAD_INPUT);
    size_t labels = kiln_model_label_count(model);
    CHECK(labels > 0 && kiln_model_label(model, labels) == NULL && kiln_model_label(model, 0), "labels");
    kiln_image_input info = {.struct_size = sizeof info};
    EXPECT_CODE(kiln_model_image_input(model, &info, ERR), KILN_OK);
    CHECK(info.takes_images == 1 && info.height > 0 && info.width > 0 && strcmp(info.layout, "NHWC") == 0,
          "image input");
    kiln_image_input tiny = {.struct_size = 1};
    EXPECT_CODE(kiln_model_image_input(model, &tiny, ERR), KILN_ERR_BAD_INPUT);
    /* An older, shorter struct: only its fields are written. */
    struct { size_t struct_size; int takes_images; int height; int guard; } older = {sizeof older, 0, 0, 77};
    older.struct_size = offsetof(kiln_image_input, width);
    EXPECT_CODE(kiln_model_image_input(model, (kiln_image_input *)&older, ERR), KILN_OK);
    CHECK(older.height == info.height && older.guard == 77, "short struct written past its size");

    /* Sessions. */
    kiln_session *session = NULL;
    EXPECT_CODE(kiln_session_new(NULL, NULL, &session, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_session_new(model, NULL, NULL, ERR), KILN_ERR_BAD_INPUT);
    kiln_session_options opts;
    kiln_session_options_init(&opts);
    kiln_session_options_init(NULL);
    opts.plans_per_shape = 1000;
    EXPECT_CODE(kiln_session_new(model, &opts, &session, ERR), KILN_ERR_BAD_INPUT);
    kiln_session_options_init(&opts);
    opts.output = 99;
    EXPECT_CODE(kiln_session_new(model, &opts, &session, ERR), KILN_ERR_BAD_INPUT);
    opts.output = -5;
    EXPECT_CODE(kiln_session_new(model, &opts, &session, ERR), KILN_ERR_BAD_INPUT);
    opts.struct_size = 2;
    EXPECT_CODE(kiln_session_new(model, &opts, &session, ERR), KILN_ERR_BAD_INPUT);
    CHECK(session == NULL, "a failed kiln_session_new set *out");
    kiln_session_options_init(&opts);
    EXPECT_CODE(kiln_session_new(model, &opts, &session, ERR), KILN_OK);
    CHECK(kiln_set_threads(0) == KILN_ERR_BAD_INPUT && kiln_set_threads(100000) == KILN_ERR_BAD_INPUT, "threads");
    CHECK(kiln_set_threads(2) == KILN_OK, "threads 2");

    /* Tensor runs. */
    int64_t shape[4] = {1, info.height, info.width, 3};
    size_t count = (size_t)(info.height * info.width * 3);
    float *input = calloc(count, sizeof(float));
    size_t classes = 0;
    EXPECT_CODE(kiln_model_output_shape(model, 0, dims, 8, &rank, ERR), KILN_OK);
    classes = (size_t)dims[rank - 1];
    float *out = calloc(classes + 1, sizeof(float));
    EXPECT_CODE(kiln_run(session, input, count, shape, 4, 0, out, classes, ERR), KILN_OK);
    EXPECT_CODE(kiln_run(NULL, input, count, shape, 4, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, NULL, count, shape, 4, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count, NULL, 4, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count - 1, shape, 4, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count, shape, 3, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count, shape, 0, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count, shape, 4, 0, out, classes + 1, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count, shape, 4, 0, NULL, classes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, (size_t)-1, shape, 4, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count, shape, 4, 0, out, (size_t)-1, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count, shape, (size_t)-1, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count, shape, 4, 99, out, classes, ERR), KILN_ERR_BAD_INPUT);
    int64_t wrong[4] = {1, info.height + 1, info.width, 3};
    EXPECT_CODE(kiln_run(session, input, count, wrong, 4, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    int64_t negative[4] = {-1, info.height, info.width, 3};
    EXPECT_CODE(kiln_run(session, input, count, negative, 4, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    int64_t huge[4] = {INT64_MAX, INT64_MAX, info.width, 3};
    EXPECT_CODE(kiln_run(session, input, count, huge, 4, 0, out, classes, ERR), KILN_ERR_BAD_INPUT);
    int64_t big_batch[4] = {(int64_t)1 << 40, info.height, info.width, 3};
    int64_t odims[64];
    size_t oranks[8];
    size_t n_out = kiln_model_output_count(model);
    EXPECT_CODE(kiln_output_shapes(session, big_batch, 4, n_out, odims, 8, oranks, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_output_shapes(session, shape, 4, n_out + 1, odims, 8, oranks, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_output_shapes(session, shape, 4, n_out, NULL, 8, oranks, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_output_shapes(session, shape, 4, n_out, odims, 8, oranks, ERR), KILN_OK);
    float *outs[8] = {out};
    size_t counts[8] = {classes + 1};
    EXPECT_CODE(kiln_run_outputs(session, input, count, shape, 4, n_out, outs, counts, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run_outputs(session, input, count, shape, 4, n_out, NULL, counts, ERR), KILN_ERR_BAD_INPUT);
    counts[0] = classes;
    EXPECT_CODE(kiln_run_outputs(session, input, count, shape, 4, n_out + 3, outs, counts, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run_borrowed(session, input, count, shape, 4, NULL, NULL, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_run(session, input, count, shape, 4, 0, out, classes, ERR), KILN_OK);
    EXPECT_CODE(kiln_run_borrowed(session, input, count, shape, 4, compare_outputs, out, ERR), KILN_OK);
    CHECK(kiln_run_borrowed(session, input, count, shape, 4, compare_outputs, NULL, NULL, 0) == 7,
          "a callback's non-zero return comes back as it is");
    EXPECT_CODE(kiln_run_borrowed(session, input, count - 3, shape, 4, compare_outputs, out, ERR), KILN_ERR_BAD_INPUT);

    /* Classification. */
    kiln_class top[64];
    EXPECT_CODE(kiln_classify_image_bytes(session, image, image_len, 1, top, ERR), KILN_OK);
    CHECK(top[0].label != NULL && top[0].index >= 0 && (size_t)top[0].index < classes, "top-1 class");
    EXPECT_CODE(kiln_classify_image_bytes(session, image, image_len, 0, top, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_image_bytes(session, image, image_len, -3, top, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_image_bytes(session, image, image_len, (int)classes + 1, top, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_image_bytes(session, image, image_len, (int)classes, top, ERR), KILN_OK);
    CHECK(top[0].score >= top[classes - 1].score, "classes highest first");
    EXPECT_CODE(kiln_classify_image_bytes(session, NULL, image_len, 1, top, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_image_bytes(session, image, 0, 1, top, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_image_bytes(session, image, (size_t)-1, 1, top, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_image_bytes(session, image, image_len, 1, NULL, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_image_bytes(NULL, image, image_len, 1, top, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_image_bytes(session, image, image_len / 3, 1, top, ERR), KILN_ERR_BAD_INPUT);
    static const unsigned char text[] = "not an image at all";
    EXPECT_CODE(kiln_classify_image_bytes(session, text, sizeof text, 1, top, ERR), KILN_ERR_BAD_INPUT);
    const unsigned char *batch[3] = {image, text, NULL};
    size_t lens[3] = {image_len, sizeof text, 10};
    int codes[3] = {1, 1, 1};
    EXPECT_CODE(kiln_classify_images(session, batch, lens, 3, 0, 2, top, codes, ERR), KILN_OK);
    CHECK(codes[0] == 0 && codes[1] == KILN_ERR_BAD_INPUT && codes[2] == KILN_ERR_BAD_INPUT,
          "per-image codes %d %d %d", codes[0], codes[1], codes[2]);
    CHECK(top[2].label == NULL && top[0].label != NULL, "failed image's classes zeroed");
    EXPECT_CODE(kiln_classify_images(session, batch, lens, 3, 0, 0, top, codes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_images(session, NULL, lens, 3, 0, 1, top, codes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_images(session, batch, lens, 3, 0, 1, top, NULL, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_images(session, batch, lens, 0, 0, 1, NULL, NULL, ERR), KILN_OK);
    EXPECT_CODE(kiln_classify_images(session, batch, lens, (size_t)-1, 0, 1, top, codes, ERR), KILN_ERR_BAD_INPUT);
    EXPECT_CODE(kiln_classify_images(session, batch, lens, (size_t)1 << 62, 0, 64, top, codes, ERR), KILN_ERR_BAD_INPUT);

    /* A session keeps its model: close first, the session still works, then free it. */
    kiln_model_close(model);
    EXPECT_CODE(kiln_classify_image_bytes(session, image, image_len, 1, top, ERR), KILN_OK);
    kiln_session_free(session);
    kiln_session_free(NULL);
    kiln_model_close(NULL);
    free(input);
    free(out);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
