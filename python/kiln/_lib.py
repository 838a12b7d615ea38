"""Loading libkiln and declaring the functions of include/kiln.h for ctypes.

ctypes releases the GIL around every call into a CDLL, so runs and classifications of one model go on side
by side in Python threads; libkiln's sessions are thread-safe (kiln.h, "Threads").
"""
import ctypes
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_float, c_int, c_int64, c_size_t, c_ubyte, c_void_p)

API_VERSION = 10000  # KILN_API_VERSION of the header this module was written against

_NAMES = ("libkiln.so", "libkiln-shared.so")


def _candidates():
    env = os.environ.get("KILN_LIBRARY")
    if env:
        if os.path.isdir(env):
            return [os.path.join(env, n) for n in _NAMES], env
        return [env], env
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(d, n) for d in (here, os.path.dirname(here)) for n in _NAMES], None


def _load():
    paths, env = _candidates()
    for path in paths:
        if os.path.isfile(path):
            return ctypes.CDLL(path), path
    where = f"KILN_LIBRARY={env!r}" if env else "beside the package (" + os.path.dirname(paths[0]) + ")"
    raise ImportError(f"kiln: libkiln not found {where}; set KILN_LIBRARY to libkiln.so or to the folder of a "
                      "release build (swift build -c release --show-bin-path)")


class ImageInput(Structure):
    _fields_ = [("struct_size", c_size_t), ("takes_images", c_int), ("height", c_int), ("width", c_int),
                ("layout", c_char_p), ("resize", c_char_p), ("resize_shorter", c_int),
                ("preprocessing", c_char_p), ("color", c_char_p), ("output_index", c_size_t),
                ("scores", c_char_p)]


class SessionOptions(Structure):
    _fields_ = [("struct_size", c_size_t), ("plans_per_shape", c_int), ("max_shapes", c_int), ("output", c_int),
                ("reference_kernels", c_int), ("softmax", c_int)]


class Class(Structure):
    _fields_ = [("index", c_int), ("score", c_float), ("label", c_char_p)]


lib, path = _load()

_ERR = (POINTER(c_char), c_size_t)


def _declare(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)


_declare("kiln_version", c_char_p)
_declare("kiln_api_version", c_int)
_declare("kiln_error_name", c_char_p, c_int)
_declare("kiln_model_open", c_int, c_char_p, POINTER(c_void_p), *_ERR)
_declare("kiln_model_close", None, c_void_p)
_declare("kiln_model_input_count", c_size_t, c_void_p)
_declare("kiln_model_output_count", c_size_t, c_void_p)
_declare("kiln_model_input_name", c_char_p, c_void_p, c_size_t)
_declare("kiln_model_output_name", c_char_p, c_void_p, c_size_t)
_declare("kiln_model_input_shape", c_int, c_void_p, c_size_t, POINTER(c_int64), c_size_t, POINTER(c_size_t), *_ERR)
_declare("kiln_model_output_shape", c_int, c_void_p, c_size_t, POINTER(c_int64), c_size_t, POINTER(c_size_t), *_ERR)
_declare("kiln_model_label_count", c_size_t, c_void_p)
_declare("kiln_model_label", c_char_p, c_void_p, c_size_t)
_declare("kiln_model_image_input", c_int, c_void_p, POINTER(ImageInput), *_ERR)
_declare("kiln_session_options_init", None, POINTER(SessionOptions))
_declare("kiln_session_new", c_int, c_void_p, POINTER(SessionOptions), POINTER(c_void_p), *_ERR)
_declare("kiln_session_free", None, c_void_p)
_declare("kiln_set_threads", c_int, c_int)
_declare("kiln_output_shapes", c_int, c_void_p, POINTER(c_int64), c_size_t, c_size_t, POINTER(c_int64), c_size_t,
         POINTER(c_size_t), *_ERR)
_declare("kiln_run_outputs", c_int, c_void_p, c_void_p, c_size_t, POINTER(c_int64), c_size_t, c_size_t,
         POINTER(c_void_p), POINTER(c_size_t), *_ERR)
_declare("kiln_classify_images", c_int, c_void_p, POINTER(POINTER(c_ubyte)), POINTER(c_size_t), c_size_t, c_size_t,
         c_int, POINTER(Class), POINTER(c_int), *_ERR)

_found = lib.kiln_api_version()
if _found // 10000 != API_VERSION // 10000 or _found < API_VERSION:
    raise ImportError(f"kiln: {path} has API version {_found}, this package needs {API_VERSION} (same major)")
_declare("kiln_classify_image_bytes", c_int, c_void_p, POINTER(c_ubyte), c_size_t, c_int, POINTER(Class), *_ERR)
