"""Sizes far past any model fail in one line before anything is built, in a process that
may not use more than 2 GiB: a typo's ``num_blocks=10**12`` once built a Python list that
long (from the command line, or from a Hugging Face ``config.json``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CAP = 2 << 30  # bytes of address space the command may take


CAPPED = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, ({0}, {0})); "
          "sys.argv[0] = 'perceiver-suite'; runpy.run_module('suite', run_name='__main__')")


def suite_command(*argv: str) -> subprocess.CompletedProcess:
    """``perceiver-suite ARGV`` in a process capped to ``CAP`` bytes (set in the child, as
    forking this multithreaded process to set it would risk a deadlock)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", CAPPED.format(CAP), *argv],
                          capture_output=True, text=True, env=env, timeout=300)


def hf_port(folder: Path, config: dict) -> Path:
    """A Hugging Face folder whose config.json is ``config`` (no tensors: it is read first)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    header = b"{}"
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    return folder


def test_describe_with_a_trillion_blocks_is_one_line_in_little_memory():
    done = suite_command("describe", "--preset", "digits", "model.num_blocks=1000000000000")
    assert (done.returncode, done.stderr) == (
        2, "perceiver-suite: error: model.num_blocks=1000000000000 is over the limit of 4,096 "
        "(sizes are bounded so that a typo fails before anything is built)\n")


@pytest.mark.parametrize(("config", "said"), [
    ({"num_blocks": 10**12}, "num_blocks=1000000000000 is over the suite's limit of 4,096"),
    ({"image_size": 10**8}, "image_size=100000000 is over the suite's limit of 46,340"),
])
def test_import_of_a_port_with_absurd_sizes_is_one_line_and_writes_nothing(
        tmp_path, config, said):
    port = hf_port(tmp_path / "port", config)
    done = suite_command("import-official", str(port), "--workdir", str(tmp_path / "run"))
    assert (done.returncode, done.stderr) == (
        2, f"perceiver-suite: error: {port / 'config.json'}: {said}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["port"]
