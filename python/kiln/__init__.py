"""Kiln from Python: open a .kiln bundle, run it on float32 arrays, classify JPEG/PNG images.

A thin layer over libkiln (include/kiln.h) through ctypes. One `Model` may be used from many threads at once:
the GIL is released during every run, and libkiln's session is thread-safe.

    m = kiln.Model("fused.kiln")
    m.inputs            # [Port(name='input_1', shape=(None, 40, 56, 3))]
    m.run(x)            # {'dense': ndarray (n, 5)}: x read in place, each output copied once
    m.classify(["a.jpg", b"<png bytes>"], top=5)
"""
import ctypes
import os
import threading
from collections import namedtuple
from ctypes import POINTER, byref, c_int, c_int64, c_size_t, c_ubyte, c_void_p

import numpy as np

from . import _lib
from ._lib import lib

__all__ = ["Model", "Port", "Prediction", "KilnError", "BadInputError", "BadBundleError", "UnsupportedError",
           "InternalError", "version", "set_threads", "library_path"]

#: The path of the libkiln loaded.
library_path = _lib.path

Port = namedtuple("Port", "name shape")
Port.__doc__ = "An input or output of the model: its name and recorded shape (None for a free dimension)."
Prediction = namedtuple("Prediction", "label score index")
Prediction.__doc__ = "One class of one image: its label, its score, and its column in the output."


class KilnError(Exception):
    """A failure libkiln reported: `code` (negative, kiln.h kiln_error), `kind` (its name), the message."""

    def __init__(self, code, message):
        self.code = code
        self.kind = lib.kiln_error_name(code).decode()
        super().__init__(message)


class BadInputError(KilnError, ValueError):
    """The caller's input is wrong (KILN_ERR_BAD_INPUT)."""


class BadBundleError(KilnError):
    """The bundle is damaged or inconsistent (KILN_ERR_BAD_BUNDLE)."""


class UnsupportedError(KilnError):
    """Beyond what Kiln does (KILN_ERR_UNSUPPORTED)."""


class InternalError(KilnError):
    """A broken invariant of Kiln's own (KILN_ERR_INTERNAL)."""


_BY_CODE = {-1: BadInputError, -2: BadBundleError, -3: UnsupportedError, -4: InternalError}
_ERR_LEN = 1024


def _error(code, buffer):
    return _BY_CODE.get(code, KilnError)(code, buffer.value.decode("utf-8", "replace"))


def _check(code, buffer):
    if code != 0:
        raise _error(code, buffer)


def version():
    """The Kiln release of the loaded libkiln."""
    return lib.kiln_version().decode()


def set_threads(threads):
    """Kernel worker threads, process-wide (1..256)."""
    if lib.kiln_set_threads(int(threads)) != 0:
        raise BadInputError(-1, f"threads {threads} is not in 1...256")


def _text(p):
    return None if p is None else p.decode("utf-8", "replace")


class Model:
    """A .kiln bundle opened with libkiln, and one session over it.

    `output` chooses the output classes are read from (name or index; default the first), `softmax=True`
    makes classification scores probabilities, `plans_per_shape` is how many runs of one input shape go on at
    once (more threads than that wait), `reference=True` runs the naive reference kernels.
    """

    def __init__(self, path, *, output=None, softmax=False, plans_per_shape=2, max_shapes=8, reference=False):
        self.path = os.fspath(path)
        err = ctypes.create_string_buffer(_ERR_LEN)
        handle = c_void_p()
        _check(lib.kiln_model_open(os.fsencode(self.path), byref(handle), err, _ERR_LEN), err)
        self._model = handle
        self._session = None
        self._lock = threading.Lock()
        try:
            self.inputs = [self._port(i, lib.kiln_model_input_name, lib.kiln_model_input_shape)
                           for i in range(lib.kiln_model_input_count(handle))]
            self.outputs = [self._port(i, lib.kiln_model_output_name, lib.kiln_model_output_shape)
                            for i in range(lib.kiln_model_output_count(handle))]
            self.labels = [lib.kiln_model_label(handle, i).decode("utf-8", "replace")
                           for i in range(lib.kiln_model_label_count(handle))]
            info = _lib.ImageInput(struct_size=ctypes.sizeof(_lib.ImageInput))
            _check(lib.kiln_model_image_input(handle, byref(info), err, _ERR_LEN), err)
            #: How the bundle takes images (its metadata): size, layout, resizing, preprocessing, scores.
            self.image_input = {
                "takes_images": bool(info.takes_images), "height": info.height or None, "width": info.width or None,
                "layout": _text(info.layout), "resize": _text(info.resize),
                "resize_shorter": info.resize_shorter or None, "preprocessing": _text(info.preprocessing),
                "color": _text(info.color), "scores": _text(info.scores)}
            options = _lib.SessionOptions()
            lib.kiln_session_options_init(byref(options))
            options.plans_per_shape = int(plans_per_shape)
            options.max_shapes = int(max_shapes)
            options.reference_kernels = 1 if reference else 0
            options.softmax = 1 if softmax else 0
            if output is not None:
                names = [p.name for p in self.outputs]
                if isinstance(output, str):
                    if output not in names:
                        raise BadInputError(-1, f"no output named {output!r} (outputs: {', '.join(names)})")
                    output = names.index(output)
                options.output = int(output)
            session = c_void_p()
            _check(lib.kiln_session_new(handle, byref(options), byref(session), err, _ERR_LEN), err)
            self._session = session
        except BaseException:
            self.close()
            raise

    def _port(self, index, name_fn, shape_fn):
        err = ctypes.create_string_buffer(_ERR_LEN)
        rank = c_size_t()
        _check(shape_fn(self._model, index, None, 0, byref(rank), err, _ERR_LEN), err)
        dims = (c_int64 * max(rank.value, 1))()
        _check(shape_fn(self._model, index, dims, rank.value, byref(rank), err, _ERR_LEN), err)
        shape = tuple(None if d < 0 else int(d) for d in dims[:rank.value])
        return Port(name_fn(self._model, index).decode("utf-8", "replace"), shape)

    # -- lifetime ---------------------------------------------------------------------------------------------

    def close(self):
        """Frees the session and the model; the Model cannot be used afterwards. Not while a run goes on."""
        with self._lock:
            session, model = self._session, self._model
            self._session = self._model = None
        if session:
            lib.kiln_session_free(session)
        if model:
            lib.kiln_model_close(model)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_lock", None) is not None:
            self.close()

    def _handle(self):
        session = self._session
        if not session:
            raise ValueError("kiln.Model: closed")
        return session

    def __repr__(self):
        return f"kiln.Model({self.path!r}, inputs={self.inputs}, outputs={self.outputs})"

    # -- tensors ----------------------------------------------------------------------------------------------

    def output_shapes(self, input_shape):
        """The shape of every output for an input of `input_shape`, without running."""
        session = self._handle()
        shape = (c_int64 * len(input_shape))(*[int(d) for d in input_shape])
        n, max_rank = len(self.outputs), 8
        dims = (c_int64 * (n * max_rank))()
        ranks = (c_size_t * n)()
        err = ctypes.create_string_buffer(_ERR_LEN)
        _check(lib.kiln_output_shapes(session, shape, len(input_shape), n, dims, max_rank, ranks, err, _ERR_LEN), err)
        return [tuple(dims[i * max_rank:i * max_rank + ranks[i]]) for i in range(n)]

    def run(self, x):
        """Runs the model on `x` (float32, the layout of the first input) and returns {output name: ndarray}.

        A C-contiguous float32 array is read in place; anything else is converted once first. Each output is
        written by libkiln straight into a new array (one copy). The GIL is released during the run.
        """
        session = self._handle()
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 0:
            raise BadInputError(-1, "kiln.Model.run: x must have at least one dimension")
        shapes = self.output_shapes(x.shape)
        results = [np.empty(s, dtype=np.float32) for s in shapes]
        n = len(results)
        pointers = (c_void_p * n)(*[r.ctypes.data for r in results])
        counts = (c_size_t * n)(*[r.size for r in results])
        shape = (c_int64 * x.ndim)(*x.shape)
        err = ctypes.create_string_buffer(_ERR_LEN)
        _check(lib.kiln_run_outputs(session, x.ctypes.data, x.size, shape, x.ndim, n, pointers, counts, err, _ERR_LEN),
               err)
        return {port.name: r for port, r in zip(self.outputs, results)}

    # -- images -----------------------------------------------------------------------------------------------

    def classify(self, images, top=5, *, batch=8, errors="raise"):
        """The `top` best classes of each image, highest first, as Prediction(label, score, index).

        `images`: a path (str / os.PathLike), the bytes of a JPEG or PNG file, or a list of those; a single
        image gives one list of Predictions, a list gives one per image. Images are decoded and resized as the
        bundle records and run `batch` at a time. With errors="return", an image that cannot be classified
        gets its KilnError in its place instead of raising.
        """
        single = isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike))
        items = [images] if single else list(images)
        if errors not in ("raise", "return"):
            raise ValueError("errors must be 'raise' or 'return'")
        top = int(top)
        if top < 1:
            raise BadInputError(-1, f"top {top} is below 1")
        data, failures = [], {}
        for i, item in enumerate(items):
            if isinstance(item, (bytes, bytearray, memoryview)):
                data.append(bytes(item))
                continue
            try:
                with open(item, "rb") as f:
                    data.append(f.read())
            except OSError as e:
                failures[i] = BadInputError(-1, f"{os.fspath(item)}: {e.strerror or e}")
                data.append(b"")
        results = self._classify_bytes(data, top, batch, failures, items)
        if errors == "raise":
            for r in results:
                if isinstance(r, KilnError):
                    raise r
        return results[0] if single else results

    def _classify_bytes(self, data, top, batch, failures, items):
        session = self._handle()
        n = len(data)
        if n == 0:
            return []
        # Pointers into the bytes objects themselves (kept alive by `data`): no copy.
        pointers = (POINTER(c_ubyte) * n)(*[ctypes.cast(ctypes.c_char_p(d), POINTER(c_ubyte)) if d else None
                                            for d in data])
        lens = (c_size_t * n)(*[len(d) for d in data])
        out = (_lib.Class * (n * top))()
        codes = (c_int * n)()
        err = ctypes.create_string_buffer(_ERR_LEN)
        _check(lib.kiln_classify_images(session, pointers, lens, n, max(int(batch), 0), top, out, codes, err, _ERR_LEN),
               err)
        results = []
        for i in range(n):
            if i in failures:
                results.append(failures[i])
            elif codes[i] != 0:
                results.append(self._failure(data[i], items[i], i, codes[i]))
            else:
                results.append([Prediction(_text(c.label), float(c.score), int(c.index))
                                for c in out[i * top:(i + 1) * top]])
        return results

    def _failure(self, data, item, position, code):
        """The error of an image the batch could not classify, with libkiln's message (asked again alone)."""
        name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"image {position}"
        if data:
            err = ctypes.create_string_buffer(_ERR_LEN)
            out = (_lib.Class * 1)()
            pointer = ctypes.cast(ctypes.c_char_p(data), POINTER(c_ubyte))
            again = lib.kiln_classify_image_bytes(self._handle(), pointer, len(data), 1, out, err, _ERR_LEN)
            if again != 0:
                message = err.value.decode("utf-8", "replace")
                # libkiln names bytes "image"; name the caller's file or position instead.
                message = message[len("image: "):] if message.startswith("image: ") else message
                return _BY_CODE.get(again, KilnError)(again, f"{name}: {message}")
        return _BY_CODE.get(code, KilnError)(code, f"{name}: cannot be classified ({lib.kiln_error_name(code).decode()})")
