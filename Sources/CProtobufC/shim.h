// Only includes: the CProtobufC system library, found through pkg-config (libprotobuf-c).
#include <protobuf-c/protobuf-c.h>
