"""The weight importer reads hostile pickles as data: a file that forges an object array,
declares huge void scalars, nests memo-shared lists, calls ``numpy.ndarray`` with zero
strides, reuses one buffer for many arrays, or sizes CPython's memo or a bytes8 past the
file is refused in one line, allocates next to nothing and writes nothing. Mutated real
checkpoints and synthetic opcode streams only ever give numeric arrays in dicts or that
one-line error. The loads run in a child process under an address-space limit, so a
regression fails the test instead of the machine."""

import json
import os
import pickle
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy._core import multiarray

from suite.cli import main
from suite.weights.official import OfficialFormatError, read_pickle

LIMIT = 1 << 30  # the child's address space: numpy and the suite take ~150 MB of it
PEAK_MB = 300  # the most the child may have held at once, all hostile files read


class Call:
    """Pickles as ``fn(*args)`` then BUILD ``state``: how a hostile file calls what it
    names (numpy's own callables, pickled by name)."""

    def __init__(self, fn, *args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def released(leaf) -> bytes:
    """A checkpoint in the released layout with ``leaf`` as its one array."""
    return pickle.dumps({"params": {"m": {"w": leaf}}, "state": {}}, protocol=4)


def reconstructed(shape, dtype, raw) -> Call:
    return Call(multiarray._reconstruct, np.ndarray, (0,), b"b",
                state=(1, shape, np.dtype(dtype), False, raw))


def nested_lists() -> list:
    a = [0] * 100
    b = [a] * 100
    c = [b] * 100
    return [c] * 100  # 10^8 references to one list of zeros, from ~850 bytes


def self_containing() -> bytes:
    params: dict = {}
    params["self"] = params
    return pickle.dumps({"params": params})


SHARED = np.zeros(3, np.float32)
BIG = b"\0" * 400_000
HOSTILE = {  # name -> (file contents, what the one line must say)
    "object_array": (released(reconstructed((2,), "O", b"A" * 16)),
                     "params/m/w: an array of dtype 'O8'"),
    "void_scalars": (pickle.dumps({"params": {"m": {
        f"v{i}": Call(multiarray.scalar, np.dtype("V500000000"), b"") for i in range(4)}}}),
        "params/m/v0: an array of dtype 'V500000000'"),
    "memo_lists": (released(nested_lists()), "params/m/w is a list"),
    "stride_0": (released(Call(np.ndarray, (2**42,), np.dtype("u1"), b"x", 0, (0,))),
                 "calls numpy.ndarray(...) directly"),
    "one_buffer_many_arrays": (pickle.dumps({"params": {"m": {
        f"w{i}": reconstructed((100_000,), "f4", BIG) for i in range(50)}}}),
        "the arrays declare 800,000 bytes so far, more than the file's"),
    "memo_index": (b"\x80\x04N" + b"r" + struct.pack("<I", 2**31) + b".",
                   "refused: memo index 2,147,483,648"),
    "bytes8_past_the_end": (b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"x.",
                            "expected 1099511627776 bytes in a bytes8"),
    "structured_dtype": (released(Call(np.dtype, [("a", "f4")])), "only plain dtypes"),
    "fortran_data_too_short": (released(reconstructed((4, 4), "f4", b"\0" * 60)),
                               "needs 64 bytes of data, the pickle gives 60 bytes"),
    "params_a_list": (pickle.dumps({"params": [np.zeros(2)]}), "params is a list"),
    "params_an_array": (pickle.dumps({"params": np.zeros(2)}), "found params as one array"),
    "a_module_of_arrays": (pickle.dumps({"params": {"m": np.zeros(2)}}),
                           "params/m is not {name: array}"),
    "ragged_list": (released([[1.0, 2.0], [3.0]]), "params/m/w is a list"),
    "string": (released("abc"), "params/m/w is a str ('abc')"),
    "string_array": (released(np.array(["ab"])), "params/m/w: an array of dtype 'U2'"),
    "complex_array": (released(np.array([1j])), "params/m/w: an array of dtype 'c16'"),
    "complex_number": (released(1j), "the pickle names builtins.complex"),
    "shared_array": (pickle.dumps({"params": {"m": {"w": SHARED, "b": SHARED}}}),
                     "params/m/b is the object already at params/m/w"),
    "self_containing_dict": (self_containing(), "params/self is the object already at params"),
    "code": (pickle.dumps({"params": {"m": {"w": Call(os.system, "true")}}}),
             "refused: the pickle names posix.system"),
}

CHILD = """
import json, resource, sys
from suite.weights.official import OfficialFormatError, read_pickle
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
outcome = {{}}
for path in sys.argv[1:]:
    try:
        read_pickle(path)
        outcome[path] = ["loaded", ""]
    except OfficialFormatError as e:
        outcome[path] = ["refused", str(e)]
    except BaseException as e:
        outcome[path] = [type(e).__name__, str(e)[:300]]
status = open("/proc/self/status").read()  # VmHWM: this program's peak (ru_maxrss counts
outcome["peak_mb"] = int(status.split("VmHWM:")[1].split()[0]) / 1024  # the parent's too)
print(json.dumps(outcome))
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    """Every hostile file read by ``read_pickle`` in one child under ``LIMIT``."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}
    for name, (data, _) in HOSTILE.items():
        paths[name] = folder / f"{name}.pystate"
        paths[name].write_bytes(data)
    done = subprocess.run([sys.executable, "-c", CHILD.format(limit=LIMIT),
                           *map(str, paths.values())], capture_output=True, text=True,
                          env=child_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]  # a crash (e.g. SIGSEGV) ends here
    outcome = json.loads(done.stdout)
    return {"peak_mb": outcome["peak_mb"],
            **{name: outcome[str(path)] for name, path in paths.items()}}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_checkpoint_is_refused_in_one_line(hostile, name):
    kind, message = hostile[name]
    assert kind == "refused", f"{name}: {kind}: {message}"
    assert "\n" not in message and "MemoryError" not in message
    assert HOSTILE[name][1] in message
    assert len(HOSTILE[name][0]) < 1000 or name == "one_buffer_many_arrays"  # tiny files


def test_reading_every_hostile_checkpoint_holds_a_few_hundred_mb_at_most(hostile):
    assert hostile["peak_mb"] < PEAK_MB


@pytest.mark.parametrize("name", ["object_array", "stride_0", "memo_lists", "params_a_list",
                                  "complex_array"])
def test_the_cli_refuses_a_hostile_checkpoint_with_exit_2_and_writes_nothing(
        tmp_path, capsys, name):
    path = tmp_path / "bad.pystate"
    path.write_bytes(HOSTILE[name][0])
    code = main(["import-official", str(path), "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and HOSTILE[name][1] in err[0]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ property-based reads

VALID_PARAMS = {"enc/~/linear": {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
                                 "b": np.ones(3, np.float32)},
                "enc/~/norm": {"scale": np.asfortranarray(np.eye(2)), "n": np.int32(7),
                               "on": np.array([True, False])}}
VALID = [pickle.dumps({"params": VALID_PARAMS, "state": {}}, protocol=p) for p in (2, 3, 4, 5)]
VALID.append(VALID[1].replace(b"numpy._core.", b"numpy.core."))  # as numpy 1 wrote it
PIECES = [  # opcodes and snippets a synthetic stream is drawn from
    b"}", b"]", b")", b"(", b"u", b"s", b"a", b"e", b"t", b"\x85", b"\x86", b"\x87", b"R",
    b"b", b"0", b"2", b"N", b"\x88", b"\x89", b"\x94", b"K\x00", b"K\x01", b"K\x03",
    b"J\xff\xff\xff\xff", b"\x8c\x06params", b"\x8c\x01m", b"\x8c\x01w", b"\x8c\x02f4",
    b"\x8c\x02O8", b"\x8c\x04V999", b"\x8c\x01<", b"C\x01b", b"C\x04\x00\x00\x80?",
    b"C\x08" + bytes(8), b"h\x00", b"h\x01", b"h\x02", b"h\x05", b"q\x00", b"q\x01",
    b"r\xff\xff\x00\x00", b"\x8e" + struct.pack("<Q", 2**33) + b"x",
    b"\x95" + struct.pack("<Q", 2**40), b"\x8a\x05" + bytes(4) + b"\x01",
    b"cnumpy\ndtype\n", b"cnumpy\nndarray\n", b"cnumpy._core.multiarray\n_reconstruct\n",
    b"cnumpy.core.multiarray\nscalar\n", b"cnumpy._core.numeric\n_frombuffer\n",
    b"ccollections\nOrderedDict\n", b"cbuiltins\neval\n",
    b"cnumpy\ndtype\n\x8c\x02f4\x89\x88\x87R(K\x03\x8c\x01<NNNJ\xff\xff\xff\xffJ\xff\xff"
    b"\xff\xffK\x00tb",  # dtype('f4') with its state
]


def check_read(data: bytes, path: Path) -> None:
    """``data`` gives numeric C-contiguous arrays in dicts of str, or one line."""
    path.write_bytes(data)
    try:
        params = read_pickle(path)
    except OfficialFormatError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path)), str(e)
        return
    for module, leaves in params.items():
        assert type(module) is str and type(leaves) is dict
        for name, array in leaves.items():
            assert type(name) is str and type(array) is np.ndarray
            assert array.dtype.kind in "biuf" and array.dtype.isnative, array.dtype
            assert array.flags.c_contiguous and array.flags.owndata


def fuzz(folder: Path, examples: int) -> None:
    """The two properties, run in a child under ``LIMIT`` (hypothesis is a test extra)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @st.composite
    def mutated(draw) -> bytes:
        data = bytearray(draw(st.sampled_from(VALID)))
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "byte", "cut", "drop", "splice"]))
            i = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "flip" and data:
                data[i] ^= 1 << draw(st.integers(0, 7))
            elif kind == "byte" and data:
                data[i] = draw(st.integers(0, 255))
            elif kind == "cut":
                del data[i:]
            elif kind == "drop":
                del data[i:i + draw(st.integers(1, 16))]
            else:
                other = draw(st.sampled_from(VALID))
                j = draw(st.integers(0, len(other)))
                data[i:i] = other[j:j + draw(st.integers(1, 64))]
        return bytes(data)

    synthetic = st.lists(st.sampled_from(PIECES), max_size=60).map(
        lambda ps: b"\x80\x04" + b"".join(ps) + b".")
    config = settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
    def run(strategy, path: Path) -> None:
        config(given(strategy)(lambda data: check_read(data, path)))()

    run(mutated(), folder / "mutated.pystate")
    run(synthetic, folder / "synthetic.pystate")


def test_mutated_and_synthetic_pickles_give_arrays_or_one_line(tmp_path):
    pytest.importorskip("hypothesis")
    for data in VALID[1:]:  # the bases themselves load (protocol 2 needs _codecs: refused)
        (tmp_path / "valid.pystate").write_bytes(data)
        params = read_pickle(tmp_path / "valid.pystate")
        assert params["enc/~/norm"]["scale"].tolist() == [[1, 0], [0, 1]]
    env = {**child_env(), "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis")}
    done = subprocess.run([sys.executable, __file__, str(tmp_path), "200"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert done.stdout.strip() == "mutated and synthetic pickles: ok"


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    fuzz(Path(sys.argv[1]), int(sys.argv[2]))
    print("mutated and synthetic pickles: ok")
