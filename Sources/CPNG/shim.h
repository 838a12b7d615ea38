// Only includes: the CPNG system library, found through pkg-config (libpng).
#include <png.h>
