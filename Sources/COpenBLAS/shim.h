// Only includes: the COpenBLAS system library, found through pkg-config (openblas).
#include <cblas.h>
