// The CPNG system library, found through pkg-config (libpng).
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

// libpng reports every error by longjmp, which Swift can neither set up (setjmp returns twice) nor let
// pass over its frames. So the few calls that can fail run here, each under its own setjmp, and return
// 0 on error with libpng's message in the kiln_png_source; the error and read callbacks are C as well,
// so no Swift frame is ever jumped over. Everything else (the transforms, the getters) is plain libpng.

/// The PNG bytes being read, the read position, and the last error message.
typedef struct {
    const unsigned char *data;
    size_t size;
    size_t offset;
    char message[256];
} kiln_png_source;

static inline void kiln_png_on_error(png_structp png, png_const_charp message) {
    kiln_png_source *source = (kiln_png_source *)png_get_error_ptr(png);
    if (source != NULL) {
        snprintf(source->message, sizeof source->message, "%s", message != NULL ? message : "libpng error");
    }
    png_longjmp(png, 1);
}

static inline void kiln_png_on_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;
}

static inline void kiln_png_on_read(png_structp png, png_bytep out, size_t count) {
    kiln_png_source *source = (kiln_png_source *)png_get_io_ptr(png);
    if (source == NULL || count > source->size - source->offset) {
        png_error(png, "file is truncated");
    }
    memcpy(out, source->data + source->offset, count);
    source->offset += count;
}

/// A read struct that reads from `source` and reports errors into it (NULL when out of memory).
static inline png_structp kiln_png_create_read(kiln_png_source *source) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, source, kiln_png_on_error, kiln_png_on_warning);
    if (png != NULL) {
        png_set_read_fn(png, source, kiln_png_on_read);
    }
    return png;
}

/// png_read_info under setjmp: 1 on success, 0 on error.
static inline int kiln_png_read_info(png_structp png, png_infop info) {
    if (setjmp(png_jmpbuf(png))) {
        return 0;
    }
    png_read_info(png, info);
    return 1;
}

/// png_read_update_info under setjmp: 1 on success, 0 on error.
static inline int kiln_png_read_update_info(png_structp png, png_infop info) {
    if (setjmp(png_jmpbuf(png))) {
        return 0;
    }
    png_read_update_info(png, info);
    return 1;
}

/// png_read_image under setjmp: 1 on success, 0 on error.
static inline int kiln_png_read_image(png_structp png, png_bytepp rows) {
    if (setjmp(png_jmpbuf(png))) {
        return 0;
    }
    png_read_image(png, rows);
    return 1;
}
