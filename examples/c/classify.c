/*
 * classify: opens a fused .kiln bundle with libkiln and prints the top class of each JPEG/PNG file given.
 *
 *   cc -I include examples/c/classify.c -L "$BIN" -lkiln -Wl,-rpath,"$BIN" -o classify
 *   ./classify model.kiln photo1.jpg photo2.png ...
 *
 * Output: one line per file, "FILE<TAB>LABEL<TAB>SCORE"; a file that cannot be classified prints
 * "FILE<TAB>error<TAB>MESSAGE" on the same stream and makes the exit status 1. Bad usage or a bundle that
 * does not open: exit status 2.
 */
#include <stdio.h>
#include <stdlib.h>

#include "kiln.h"

/* The whole file in memory; NULL (errno set) when it cannot be read. The caller frees it. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        unsigned char *bigger = realloc(buf, cap *= 2);
        if (!bigger) { free(buf); buf = NULL; }
        else buf = bigger;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return NULL; }
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s BUNDLE.kiln IMAGE...\n", argv[0]);
        return 2;
    }
    if (kiln_api_version() / 10000 != KILN_API_VERSION / 10000 || kiln_api_version() < KILN_API_VERSION) {
        fprintf(stderr, "libkiln %s has API %d, this program needs %d\n", kiln_version(), kiln_api_version(),
                KILN_API_VERSION);
        return 2;
    }
    char err[512];
    kiln_model *model = NULL;
    int rc = kiln_model_open(argv[1], &model, err, sizeof err);
    if (rc != KILN_OK) {
        fprintf(stderr, "%s: %s (%s)\n", argv[0], err, kiln_error_name(rc));
        return 2;
    }
    kiln_session *session = NULL;
    rc = kiln_session_new(model, NULL, &session, err, sizeof err);
    if (rc != KILN_OK) {
        fprintf(stderr, "%s: %s (%s)\n", argv[0], err, kiln_error_name(rc));
        kiln_model_close(model);
        return 2;
    }
    int status = 0;
    for (int i = 2; i < argc; i++) {
        size_t len = 0;
        unsigned char *bytes = read_file(argv[i], &len);
        if (!bytes) {
            printf("%s\terror\tcannot read the file\n", argv[i]);
            status = 1;
            continue;
        }
        kiln_class top;
        rc = kiln_classify_image_bytes(session, bytes, len, 1, &top, err, sizeof err);
        free(bytes);
        if (rc != KILN_OK) {
            printf("%s\terror\t%s\n", argv[i], err);
            status = 1;
            continue;
        }
        printf("%s\t%s\t%.6g\n", argv[i], top.label, top.score);
    }
    kiln_session_free(session);
    kiln_model_close(model);
    return status;
}
