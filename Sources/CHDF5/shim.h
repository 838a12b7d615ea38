// Only includes: the HDF5 C library (serial), found through pkg-config (hdf5).
#include <hdf5.h>
