// Only includes: the CTurboJPEG system library, found through pkg-config (libturbojpeg).
#include <turbojpeg.h>
