/*
 * open_run_close: the whole life of a model N times over (default 100): open the bundle, make a session,
 * one tensor run of every output on a zero image batch, classify one image's bytes, free the session,
 * close the model. Run it under valgrind (make embed-test does) to see that nothing leaks.
 *
 *   cc -I include examples/c/open_run_close.c -L "$BIN" -lkiln -Wl,-rpath,"$BIN" -o open_run_close
 *   ./open_run_close model.kiln photo.jpg [N] [--forget-close]
 *
 * --forget-close skips kiln_session_free and kiln_model_close: the leak a checker must then report (the test
 * of the test).
 * The bundle must take images of a fixed size (a fused bundle). Exit status 0 when every round succeeded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

#define MAX_OUTPUTS 8
#define MAX_RANK 8

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long size = ftell(f);
    rewind(f);
    unsigned char *buf = size > 0 ? malloc((size_t)size) : NULL;
    if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) { free(buf); buf = NULL; }
    fclose(f);
    *len = (size_t)size;
    return buf;
}

/* One round; returns 0 or prints why not and returns the code. */
static int round_trip(const char *bundle, const unsigned char *image, size_t image_len, int forget_close) {
    char err[256];
    kiln_model *model = NULL;
    kiln_session *session = NULL;
    float *input = NULL;
    float *outputs[MAX_OUTPUTS] = {0};
    int rc = kiln_model_open(bundle, &model, err, sizeof err);
    if (rc) goto done;
    rc = kiln_session_new(model, NULL, &session, err, sizeof err);
    if (rc) goto done;

    kiln_image_input info = {.struct_size = sizeof info};
    rc = kiln_model_image_input(model, &info, err, sizeof err);
    if (rc) goto done;
    int64_t shape[4] = {2, info.height, info.width, 3};
    size_t count = (size_t)(2 * info.height * info.width * 3);
    input = calloc(count, sizeof *input);
    size_t n = kiln_model_output_count(model);
    if (!input || n > MAX_OUTPUTS) { rc = KILN_ERR_INTERNAL; snprintf(err, sizeof err, "setup"); goto done; }

    int64_t dims[MAX_OUTPUTS * MAX_RANK];
    size_t ranks[MAX_OUTPUTS], counts[MAX_OUTPUTS];
    rc = kiln_output_shapes(session, shape, 4, n, dims, MAX_RANK, ranks, err, sizeof err);
    if (rc) goto done;
    for (size_t i = 0; i < n; i++) {
        counts[i] = 1;
        for (size_t j = 0; j < ranks[i]; j++) counts[i] *= (size_t)dims[i * MAX_RANK + j];
        outputs[i] = malloc(counts[i] * sizeof(float));
        if (!outputs[i]) { rc = KILN_ERR_INTERNAL; snprintf(err, sizeof err, "out of memory"); goto done; }
    }
    rc = kiln_run_outputs(session, input, count, shape, 4, n, outputs, counts, err, sizeof err);
    if (rc) goto done;

    kiln_class top[3];
    rc = kiln_classify_image_bytes(session, image, image_len, 1, top, err, sizeof err);

done:
    if (rc) fprintf(stderr, "open_run_close: %s (%s)\n", err, kiln_error_name(rc));
    for (size_t i = 0; i < MAX_OUTPUTS; i++) free(outputs[i]);
    free(input);
    if (!forget_close) {
        kiln_session_free(session);
        kiln_model_close(model);
    }
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s BUNDLE.kiln IMAGE [ROUNDS]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 3 ? atoi(argv[3]) : 100;
    int forget_close = argc > 4 && strcmp(argv[4], "--forget-close") == 0;
    size_t len = 0;
    unsigned char *image = read_file(argv[2], &len);
    if (!image) {
        fprintf(stderr, "open_run_close: cannot read %s\n", argv[2]);
        return 2;
    }
    int failed = 0;
    for (int r = 0; r < rounds && !failed; r++) failed = round_trip(argv[1], image, len, forget_close) != 0;
    free(image);
    printf("open_run_close: %d rounds, %s\n", rounds, failed ? "FAILED" : "ok");
    return failed;
}
