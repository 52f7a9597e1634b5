"""Numeric arrays in nested dicts, read from a pickle without running code or allocating
more than the file holds.

A pickle is a program: GLOBAL names a callable, REDUCE calls it, BUILD hands an object
its state. numpy's own callables would let a file build an object array from raw bytes
(pointers it chose), void scalars of any size from a few bytes, or an ``ndarray`` over
a 1-byte buffer with zero strides. So none of them reaches the stream as itself: each
name numpy's pickles use (numpy 1's ``numpy.core`` and numpy 2's ``numpy._core`` alike)
is answered by a stand-in here that checks its arguments and builds the array itself,
as a fresh C-contiguous copy of a bytes buffer whose length matches the declared shape
and dtype, for bool, integer and float dtypes only. ``ndarray(...)`` called directly is
refused. The stand-ins keep a running total of the bytes they declare, which may not
exceed the file's size (plus ``SLACK``), so memo reuse of one big buffer cannot
multiply it. Before unpickling, the opcodes are walked once (``pickletools.genops``):
CPython allocates a BINBYTES8's declared length before reading it, and a memo as long
as the largest index it is told, so every argument must be in the file and memo
indices must stay below the opcode count. What comes out must be dicts with str keys
down to arrays, each object once: no lists, tuples, strings or Python numbers.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from typing import Any

import numpy as np

from suite.errors import SuiteError

SLACK = 64 * 1024  # bytes the arrays may declare beyond the file's own size
MAX_OPCODES = 500_000  # a released checkpoint has a few thousand; each may make an object
MAX_DEPTH = 8  # {"params": {module: {name: array}}} is 3 deep
MAX_NDIM = 32
DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})
MULTIARRAY, NUMERIC = ("numpy.core.multiarray", "numpy._core.multiarray"), \
    ("numpy.core.numeric", "numpy._core.numeric")
NAMES = {  # what numpy's pickles name (numpy 1 and 2) -> the reader's stand-in for it
    **{(m, "_reconstruct"): "reconstruct" for m in MULTIARRAY},
    **{(m, "scalar"): "scalar" for m in MULTIARRAY},
    **{(m, "_frombuffer"): "frombuffer" for m in NUMERIC},
    ("numpy", "ndarray"): "ndarray", ("numpy", "dtype"): "dtype",
    ("collections", "OrderedDict"): "ordered_dict",
}


class PickleRefused(SuiteError):
    """A pickle that is not numeric arrays in dicts, or not safely so."""


def describe(value: Any, room: int = 60) -> str:
    """A short one-line description of a value from the file, never its full repr (a
    repr can be gigabytes, nested past the recursion limit, or an int too long to print)."""
    if value is None or type(value) in (bool, float, complex) or (
            type(value) is int and value.bit_length() < 64):
        return repr(value)
    if type(value) in (str, bytes, bytearray):
        text = repr(value[:room])
        return text + ("..." if len(value) > room else "")
    if type(value) is tuple and len(value) <= 6 and room > 20:
        return "(" + ", ".join(describe(v, room // 3) for v in value) + ")"
    if isinstance(value, StandIn | DType):
        return value.name
    if isinstance(value, Array):
        return "an array"
    return "a large int" if type(value) is int else kind(value)


def kind(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def clean(text: str, room: int = 80) -> str:
    """``text`` clipped, with newlines and other unprintables escaped: one line."""
    short = text[:room] if text[:room].isprintable() else repr(text[:room])[1:-1]
    return short + ("..." if len(text) > room else "")


def first_line(error: BaseException) -> str:
    text = str(error).splitlines()
    return (text[0] if text else type(error).__name__)[:200].encode(
        "ascii", "backslashreplace").decode()


class StandIn:
    """A name the pickle may use, answered by the reader's own checking function. Not a
    type (so NEWOBJ cannot make one without its checks) and without state to set."""
    __slots__ = ("name", "call")

    def __init__(self, name: str, call: Any):
        self.name, self.call = name, call

    def __call__(self, *args: Any) -> Any:
        return self.call(*args)

    def __setstate__(self, state: Any) -> None:
        raise PickleRefused(f"refused: the pickle sets a state on {self.name}")


class DType:
    """``numpy.dtype(spec, align, copy)`` as numpy pickles it; BUILD then sets the byte
    order. Only a spec naming a bool, integer or float type becomes a numpy dtype."""
    __slots__ = ("spec", "order", "built")

    def __init__(self, spec: str):
        self.spec, self.order, self.built = spec, "=", False

    @property
    def name(self) -> str:
        return f"dtype {self.spec!r}"

    def __setstate__(self, state: Any) -> None:
        if self.built or type(state) is not tuple or len(state) not in (8, 9) or \
                state[0] not in (3, 4) or state[1] not in ("<", ">", "|", "=") or \
                any(s is not None for s in state[2:5]):
            raise PickleRefused(f"refused: the state {describe(state)} of {self.name} is not "
                                "a plain dtype's, given once (no fields or subarrays)")
        self.order, self.built = state[1], True

    def numpy(self) -> np.dtype | None:
        if self.spec not in DTYPES:
            return None
        dtype = np.dtype(self.spec)
        return dtype.newbyteorder(self.order) if self.order in ("<", ">") else dtype


class Array:
    """An array as the pickle declares it: built by the reader, once, from checked parts,
    or the reason it is not (a dtype that is not numeric), reported with its place."""
    __slots__ = ("builder", "value", "problem", "pending")

    def __init__(self, builder: Builder, pending: bool = False):
        self.builder, self.value, self.problem, self.pending = builder, None, None, pending

    def __setstate__(self, state: Any) -> None:  # BUILD after numpy's _reconstruct
        self.builder.build(self, state)

    def result(self, where: str) -> np.ndarray:
        if self.problem:
            raise PickleRefused(f"{where}: {self.problem}")
        if self.value is None:
            raise PickleRefused(f"{where}: an array whose data never came (no BUILD)")
        return self.value


class Reader(pickle.Unpickler):
    """The unpickler: every global is a stand-in or refused. It holds nothing the stream
    builds beyond its memo, so the memo (and the raw bytes in it) goes when it does."""

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.stand_ins = Builder(len(data)).stand_ins

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.stand_ins:
            return self.stand_ins[module, name]
        raise PickleRefused(f"refused: the pickle names {clean(module)}.{clean(name)}, which "
                            "could run code when loaded; only numpy arrays and plain "
                            "containers are read (nothing was executed)")


class Builder:
    """The stand-ins' checks, and the running total of the bytes the arrays declare."""

    def __init__(self, size: int):
        self.size, self.declared = size, 0
        self.ndarray = StandIn("numpy.ndarray", self.refuse_ndarray)
        calls = {"reconstruct": self.reconstruct, "scalar": self.scalar,
                 "frombuffer": self.frombuffer, "dtype": self.dtype,
                 "ordered_dict": self.ordered_dict}
        self.stand_ins = {key: self.ndarray if kind == "ndarray" else
                          StandIn(f"{key[0]}.{key[1]}", calls[kind])
                          for key, kind in NAMES.items()}

    def refuse_ndarray(self, *args: Any) -> None:
        raise PickleRefused("refused: the pickle calls numpy.ndarray(...) directly (an array "
                            "over a buffer with strides of its choosing); arrays are read "
                            "only as numpy pickles them")

    def ordered_dict(self, *args: Any) -> dict:
        if args:
            raise PickleRefused(f"refused: OrderedDict{describe(args)}: numpy-era pickles "
                                "build it empty and fill it item by item")
        return {}

    def dtype(self, *args: Any) -> DType:
        spec = args[0] if args else None
        if not 1 <= len(args) <= 3 or type(spec) is not str or len(spec) > 16 or \
                any(type(flag) is not bool for flag in args[1:]):
            raise PickleRefused(f"refused: numpy.dtype{describe(args)}: only plain dtypes "
                                "such as 'f4' are read (no fields or subarrays)")
        return DType(spec)

    def reconstruct(self, *args: Any) -> Array:
        if len(args) != 3 or args[0] is not self.ndarray or type(args[1]) is not tuple or \
                args[1] != (0,) or args[2] not in (b"b", "b"):
            raise PickleRefused(f"refused: _reconstruct{describe(args)}: not how numpy pickles "
                                "an ndarray")
        return Array(self, pending=True)

    def build(self, array: Array, state: Any) -> None:
        """numpy's ndarray state: (version 1, shape, dtype, is_fortran, raw bytes)."""
        if not array.pending:
            raise PickleRefused("refused: the pickle sets an array's state twice")
        array.pending = False
        if type(state) is not tuple or len(state) != 5 or state[0] != 1 or \
                type(state[3]) is not bool or type(state[4]) is not bytes:
            raise PickleRefused(f"refused: an array's state {describe(state)} is not numpy's "
                                "(1, shape, dtype, is_fortran, bytes)")
        _, shape, dtype, fortran, raw = state
        self.fill(array, raw, dtype, shape, "F" if fortran else "C")  # F: copied to C order

    def scalar(self, *args: Any) -> Array:
        if len(args) != 2:
            raise PickleRefused(f"refused: scalar{describe(args)}: not how numpy pickles one")
        array = Array(self)
        self.fill(array, args[1], args[0], (), "C")
        return array

    def frombuffer(self, *args: Any) -> Array:
        """numpy >= 1.16 with pickle protocol 5: (buffer, dtype, shape, order[, axes])."""
        if len(args) not in (4, 5) or type(args[3]) is not str or args[3] not in "CFK" or \
                len(args[3]) != 1:
            raise PickleRefused(f"refused: _frombuffer{describe(args)}: not how numpy pickles "
                                "an array")
        axes = args[4] if len(args) == 5 else None
        if (axes is None) != (args[3] != "K") or axes is not None and (
                type(axes) is not tuple or type(args[2]) is not tuple
                or sorted(a if type(a) is int else -1 for a in axes) != list(range(len(args[2])))):
            raise PickleRefused(f"refused: _frombuffer with order {args[3]!r} and axes "
                                f"{describe(axes)}")
        array = Array(self)
        self.fill(array, args[0], args[1], args[2], args[3], axes)
        return array

    def fill(self, array: Array, raw: Any, dtype: Any, shape: Any, order: str,
             axes: tuple[int, ...] | None = None) -> None:
        """Build ``array`` from ``raw`` as a fresh C-contiguous copy in native byte order,
        after the checks; a dtype that is not numeric is noted, not built."""
        if not isinstance(dtype, DType):
            raise PickleRefused(f"refused: an array's dtype is {describe(dtype)}")
        if type(shape) is not tuple or len(shape) > MAX_NDIM or \
                any(type(d) is not int or not 0 <= d < 1 << 62 for d in shape):
            raise PickleRefused(f"refused: an array's shape {describe(shape)} is not a tuple "
                                f"of at most {MAX_NDIM} sizes")
        numeric = dtype.numpy()
        if numeric is None:
            array.problem = (f"an array of {dtype.name}: only bool, integer and float arrays "
                             "are read")
            return
        nbytes = math.prod(shape) * numeric.itemsize
        if type(raw) not in (bytes, bytearray) or len(raw) != nbytes:
            found = f"{len(raw):,} bytes" if type(raw) in (bytes, bytearray) else describe(raw)
            raise PickleRefused(f"refused: an array of shape {list(shape)} and {dtype.name} "
                                f"needs {nbytes:,} bytes of data, the pickle gives {found}")
        self.declared += nbytes
        if self.declared > self.size + SLACK:
            raise PickleRefused(f"refused: the arrays declare {self.declared:,} bytes so far, "
                                f"more than the file's {self.size:,} bytes hold (one buffer "
                                "used many times?); nothing more was allocated")
        flat = np.frombuffer(raw, dtype=numeric)  # a view of checked length, copied below
        shaped = flat.reshape(shape, order="C" if order == "K" else order)
        shaped = shaped.transpose(axes) if axes is not None else shaped
        array.value = np.array(shaped, dtype=numeric.newbyteorder("="), order="C", copy=True)


def scan(data: bytes) -> None:
    """Walk the opcodes once without building anything: each argument present, at most
    ``MAX_OPCODES`` of them, memo indices below the count so far."""
    try:
        for count, (op, arg, pos) in enumerate(pickletools.genops(data)):
            if count >= MAX_OPCODES:
                raise PickleRefused(f"refused: more than {MAX_OPCODES:,} pickle opcodes; a "
                                    "checkpoint has a few thousand")
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg > count:
                raise PickleRefused(f"refused: memo index {arg:,} at byte {pos:,}, after "
                                    f"{count:,} opcodes (the memo would be sized by it)")
    except PickleRefused:
        raise
    except Exception as e:  # truncated, an unknown opcode, a length past the end
        raise PickleRefused(f"not a readable checkpoint pickle ({first_line(e)})") from None


def tree(node: Any, path: str, depth: int, seen: dict[int, str]) -> dict | np.ndarray:
    """``node`` as dicts with str keys down to built arrays; each object once."""
    where = path or "the top level"
    if id(node) in seen:
        raise PickleRefused(f"{where} is the object already at {seen[id(node)]}; every "
                            "array and dict is stored once")
    seen[id(node)] = where
    if isinstance(node, Array):
        return node.result(where)
    if type(node) is not dict:
        plain = type(node) in (str, bytes, bytearray, int, float, complex, bool)
        what = kind(node) + (f" ({describe(node)})" if plain else "") \
            if not isinstance(node, StandIn | DType) else describe(node)
        raise PickleRefused(f"{where} is {what}: expected an array or a dict of them")
    if depth >= MAX_DEPTH:
        raise PickleRefused(f"{where}: dicts nested deeper than {MAX_DEPTH}")
    out = {}
    for key, value in node.items():
        if type(key) is not str:
            raise PickleRefused(f"{where} has the key {describe(key)}: keys are str")
        part = key if key.isprintable() and len(key) <= 100 else describe(key)
        out[key] = tree(value, f"{path}/{part}" if path else part, depth + 1, seen)
    return out


def load_arrays(data: bytes) -> dict | np.ndarray:
    """The arrays pickled in ``data`` as nested dicts with str keys: each leaf a fresh
    C-contiguous numpy array of bool, integer or float dtype. Raises PickleRefused."""
    scan(data)
    reader = Reader(data)
    try:
        loaded = reader.load()
    except (PickleRefused, MemoryError):
        raise
    except Exception as e:  # a corrupt stream the scan could not tell
        raise PickleRefused(f"not a readable checkpoint pickle ({type(e).__name__}: "
                            f"{first_line(e)})") from None
    return tree(loaded, "", 0, {})
