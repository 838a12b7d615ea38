// Only includes: the CZstd system library, found through pkg-config (libzstd).
#include <zstd.h>
