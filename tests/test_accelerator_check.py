"""`bench --accelerator`: every part runs in its own process and becomes one row of
OUT/accelerator.{md,csv}; a part that fails, crashes or hangs is a row with its reason,
never the end of the check. On the CPU the parts run at tiny sizes and the table says
that it is no performance figure; on a GPU it names the device and prints the goals."""

import csv

import pytest

from suite.benchmarks.accelerator import INJECT_ENV, Row, goals, write
from suite.benchmarks.accelerator_parts import PARTS
from suite.cli import main


def read_rows(folder):
    with open(folder / "accelerator.csv") as f:
        return {row["part"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_the_cpu_check_runs_every_part_at_tiny_sizes(tmp_path, capsys):
    assert main(["bench", "--accelerator", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "accelerator.md").read_text()
    assert md.strip() in capsys.readouterr().out
    assert "**CPU, tiny sizes: not a performance figure.**" in md
    assert "- device: 1 x cpu (cpu)" in md
    rows = read_rows(tmp_path)
    assert list(rows) == list(PARTS)
    assert {part: row["status"] for part, row in rows.items()} == dict.fromkeys(PARTS, "ok")
    assert {row["sizes"] for row in rows.values()} == {"tiny"}
    assert not (tmp_path / "accelerator_logs").exists()
    assert rows["devices"]["backend"] == "cpu"
    assert rows["digits"]["steps"] == "4"
    assert (rows["demo_grid"]["runs"], rows["demo_grid"]["completed"],
            rows["demo_grid"]["workers"]) == ("2", "2", "2")
    for precision in ("float32", "bfloat16"):
        row = rows[f"imagenet_{precision}"]
        assert (row["first_batch"], row["largest_batch"]) == ("2", "2")  # capped at 2
        assert row["precision"] == precision
        assert float(row["first_flops_analytic"]) > 0 and float(row["first_flops_xla"]) > 0
        assert row["first_measured_peak_bytes"] == ""  # a CPU has no allocator statistics
    assert rows["fashion_mnist"]["data"].startswith(("synthetic 28x28x1 inputs",
                                                     "Fashion-MNIST IDX files"))


def test_a_failing_a_crashing_and_a_hanging_part_each_become_a_row(tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_ENV, "digits=fail,fashion_mnist=crash,demo_grid=hang")
    code = main(["bench", "--accelerator", "fashion_mnist,digits,demo_grid", "--out",
                 str(tmp_path), "--part-timeout", "demo_grid=2"])
    assert code == 1
    rows = read_rows(tmp_path)
    assert list(rows) == ["digits", "demo_grid", "fashion_mnist"]  # the check's order
    assert (rows["digits"]["status"], rows["digits"]["reason"]) == (
        "failed", f"injected failure (${INJECT_ENV})")
    assert (rows["demo_grid"]["status"], rows["demo_grid"]["reason"]) == (
        "timed out", "after 2 s")
    assert (rows["fashion_mnist"]["status"], rows["fashion_mnist"]["reason"]) == (
        "failed", f"exit status 3: injected crash (${INJECT_ENV})")
    md = (tmp_path / "accelerator.md").read_text()
    assert "| timed out after 2 s" in md
    assert f"| failed: injected failure (${INJECT_ENV})" in md
    logs = tmp_path / "accelerator_logs"  # what each part that did not pass printed
    assert sorted(p.name for p in logs.iterdir()) == ["demo_grid.log", "digits.log",
                                                      "fashion_mnist.log"]
    assert "injected crash" in (logs / "fashion_mnist.log").read_text()


@pytest.mark.parametrize("args,needle", [
    (["--accelerator", "gpu"], "unknown part(s) gpu"),
    (["--accelerator", "--part-timeout", "digits=soon"], "--part-timeout 'digits=soon'"),
    (["--accelerator", "--part-timeout", "tpu=10"], "--part-timeout 'tpu=10'"),
])
def test_unknown_parts_and_bad_limits_exit_2_in_one_line(tmp_path, capsys, args, needle):
    assert main(["bench", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "accelerator.md").exists()


H100 = {"backend": "gpu", "device_kind": "NVIDIA H100 80GB HBM3", "device_count": 1,
        "platform_version": "cuda 12080", "driver": "580.65.06", "memory_bytes": 60 * 2**30,
        "versions": "jax 0.10.2, jax-cuda13-plugin 0.10.2"}


def test_on_a_gpu_the_table_names_the_device_and_prints_the_goals(tmp_path):
    bf16 = {"first_batch": 16, "first_step_ms": 95.0, "first_mfu": 0.35,
            "largest_batch": 64, "largest_step_ms": 350.0}
    rows = [Row("devices", "ok", "", 12.0, 60, dict(H100)),
            Row("imagenet_bfloat16", "ok", "", 80.0, 110, bf16)]
    md = write(rows, tmp_path, device=H100, host="AMD EPYC 9654, 16 cores", tiny=False,
               command="perceiver-suite bench --accelerator", wall=92.0)
    assert "not a performance figure" not in md
    assert ("- device: 1 x NVIDIA H100 80GB HBM3 (gpu, cuda 12080, driver 580.65.06), "
            "60.0 GiB each") in md
    assert "- host: AMD EPYC 9654, 16 cores" in md
    assert ("goals (an H100): step <= 110 ms at batch 16: yes; MFU >= 40%: no; batch 64 "
            "fits: yes") in md
    row = read_rows(tmp_path)["imagenet_bfloat16"]
    assert (row["goal_step_met"], row["goal_mfu_met"], row["goal_batch64_met"]) == (
        "True", "False", "True")


def test_the_goals_say_which_device_measured_them_and_what_is_missing():
    text, met = goals({"first_step_ms": 120.0, "first_mfu": 0.45, "largest_batch": 64},
                      "NVIDIA H200")
    assert text == ("goals (an H100): step <= 110 ms at batch 16: no; MFU >= 40%: yes; "
                    "batch 64 fits: no (measured on NVIDIA H200)")  # 64 predicted, not run
    assert met == {"goal_step_met": False, "goal_mfu_met": True, "goal_batch64_met": False}
    text, met = goals({}, "NVIDIA H100 PCIe")
    assert text.endswith("at batch 16: n/a; MFU >= 40%: n/a; batch 64 fits: n/a")
    assert set(met.values()) == {None}
