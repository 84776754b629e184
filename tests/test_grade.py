"""The autograder (tinyddpm.grade) on the assignment stubs, correct and wrong solutions, broken
student files and whole class folders; and that the solutions stay out of the package."""
import ast
import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import setuptools

from tinyddpm import grade as G

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "lessons" / "assignments"
SOLUTIONS = ROOT / "tests" / "assignments" / "solutions"
WRONG = ROOT / "tests" / "assignments" / "wrong"
KEYS = list(G.ASSIGNMENTS)


def grade(key, path, **kwargs):
    return G.grade(key, path, **kwargs)


def student(tmp_path, source, name="student.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def failed(report):
    return {c.id: c.message for c in report.checks if not c.passed}


# --------------------------------------------------------------------------- the files

def test_nine_assignments_each_with_stub_solution_and_wrong_file():
    assert len(KEYS) >= 9
    for key in KEYS:
        for folder in (STUBS, SOLUTIONS, WRONG):
            assert (folder / f"{key}.py").is_file(), folder / f"{key}.py"
        assert G.ASSIGNMENTS[key].max_points == 10


@pytest.mark.parametrize("key", KEYS)
def test_stubs_are_self_contained_numpy_files(key):
    tree = ast.parse((STUBS / f"{key}.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [node])
                } | {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
    imported.discard(None)
    assert imported <= {"numpy", "math"}, imported
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name in G.ASSIGNMENTS[key].functions:
        assert ast.get_docstring(functions[name]), name
    assert ast.get_docstring(tree)


# --------------------------------------------------------------------------- stubs, solutions

@pytest.mark.parametrize("key", KEYS)
def test_untouched_stub_scores_zero_and_says_not_implemented(key):
    report = grade(key, STUBS / f"{key}.py")
    assert report.total == 0 and report.max_total == 10 and not report.error
    for c in report.checks:     # (assignment 9's stub has not chosen its op yet)
        assert not c.passed and ("not implemented yet" in c.message
                                 or "OP is None: set it" in c.message), (c.id, c.message)


@pytest.mark.parametrize("key", KEYS)
def test_correct_solution_gets_full_score(key):
    report = grade(key, SOLUTIONS / f"{key}.py")
    assert report.total == report.max_total == 10, report.format()


# --------------------------------------------------------------------------- wrong solutions

# assignment: (total, {failing check: words its message must contain})
WRONG_EXPECTED = {
    "01_cosine_schedule": (7, {"shapes_dtypes": ["dtype", "expected float32, got float64"],
                               "max_beta": ["max_beta = 0.999", "got 1", "hint: clip"]}),
    "02_prepare_batch": (5, {"time_range": ["time contains 0", "1..T"],
                             "formula": ["X_noisy is wrong at element (", "[-1, 1]"]}),
    "03_conv_backward": (6, {"shapes_dtypes": ["dw", "expected float32, got float64"],
                             "dx": ["dx is wrong at element (0, 0, 1, 0)", "expected", "got",
                                    "accumulate with +="]}),
    "04_batchnorm_backward": (6, {"dx": ["element (0, 0, 0, 0)", "mean and variance as constants"]}),
    "05_ddpm_step": (7, {"loop_times": ["[12, 11,", "starts at t = T - 1"],
                         "loop_last_step": ["added noise", "z = 0"]}),
    "06_ddim_step": (5, {"timesteps": ["wrong at k=0", "start at t = 1"],
                         "clip": ["eps is not recomputed"]}),
    "07_autograd_backward": (6, {"node_used_twice": ["the gradient of each input is wrong",
                                                     "reversed(topological_order(root))"],
                                 "deep_graph": ["RecursionError", "your own stack"]}),
    "08_unbroadcast": (8, {"size_one_axes": ["not the axes where shape has 1", "keepdims=True"]}),
    "09_custom_op": (6, {"backward": ["multiply by grad"],
                         "large_inputs": ["np.logaddexp"]}),
}


@pytest.mark.parametrize("key", KEYS)
def test_wrong_solution_gets_partial_score_and_the_right_messages(key):
    report = grade(key, WRONG / f"{key}.py")
    total, expected = WRONG_EXPECTED[key]
    messages = failed(report)
    assert set(messages) == set(expected), report.format()
    assert report.total == total, report.format()
    for check, words in expected.items():
        for word in words:
            assert word in messages[check], (check, word, messages[check])


def test_wrong_shape_names_expected_and_got(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        def conv2d_backward(x, w, dy):
            return np.zeros_like(x), np.zeros(w.shape[:2] + w.shape[:1:-1], w.dtype)  # C_out, C_in
    """)
    messages = failed(grade(3, path))
    assert "dw has the wrong shape: expected (3, 2, 3, 4), got (3, 2, 4, 3)" in \
        messages["shapes_dtypes"]


def test_wrong_time_step_is_named(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        def variance_schedule(T, s=0.008, max_beta=0.999):
            t = np.arange(T + 1)
            f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
            alpha = np.append(1, np.clip(f[1:] / f[:-1], 1 - max_beta, 1)).astype(np.float32)
            alpha[5] = 0.5                                   # one wrong value, at t = 5
            return alpha, np.cumprod(alpha), 1 - alpha
    """)
    report = grade(1, path)
    assert "alpha_cumprod is wrong at t=5:" in failed(report)["alpha_cumprod"]
    assert report.checks[0].passed and 0 < report.total < 10


def test_nan_is_reported(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        def ddim_timesteps(T, steps):
            return 1 + np.arange(steps) * T // steps
        def ddim_step(x_t, eps, abar_t, abar_prev, clip=True):
            out = np.sqrt(abar_prev) * x_t
            out[0, 1, 2, 0] = np.nan
            return out.astype(np.float32)
    """)
    messages = failed(grade(6, path))
    assert "contains NaN" in messages["no_clip"] and "(0, 1, 2, 0)" in messages["no_clip"]
    assert "timesteps" not in messages


def test_known_mistake_gets_a_hint(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        def ddpm_step(x_t, eps, t, alpha, alpha_cumprod, beta, z):
            mean = (x_t - beta[t] / np.sqrt(1 - alpha_cumprod[t]) * eps) / np.sqrt(alpha[t])
            return (mean + beta[t] * z).astype(np.float32)              # beta, not sqrt(beta)
    """)
    messages = failed(grade(5, path))
    assert "scaled by sqrt(beta_t), not beta_t" in messages["step_value"]
    assert "no function `generate`" in messages["loop_times"]


def test_exception_in_student_function_names_the_line(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        def prepare_batch(X, alpha_cumprod, rng):
            return X + np.ones(3)
    """)
    message = failed(grade(2, path))["returns"]
    assert "raised ValueError" in message and "line 4: return X + np.ones(3)" in message


def test_student_file_that_raises_at_import(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        SCALE = np.load("my_local_file.npy")
    """)
    report = grade(1, path)
    assert report.total == 0
    assert "could not be imported" in report.error and "line 3" in report.error
    assert "FileNotFoundError" in report.error
    assert all("not run" in c.message for c in report.checks)


def test_syntax_error_at_import(tmp_path):
    report = grade(4, student(tmp_path, "def batchnorm_backward(dy, x, gamma)\n    pass\n"))
    assert report.total == 0 and "SyntaxError" in report.error and "line 1" in report.error


def test_infinite_loop_costs_only_its_checks(tmp_path, capsys):
    path = student(tmp_path, """
        import numpy as np
        print("student output is not shown")
        def ddim_timesteps(T, steps):
            while True:
                pass
        def ddim_step(x_t, eps, abar_t, abar_prev, clip=True):
            x0 = (x_t - np.sqrt(1 - abar_t) * eps) / np.sqrt(abar_t)
            if clip:
                x0 = np.clip(x0, -1, 1)
                eps = (x_t - np.sqrt(abar_t) * x0) / np.sqrt(1 - abar_t)
            return (np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps).astype(np.float32)
    """)
    report = grade(6, path, time_limit=0.3)
    assert report.total == 8 and report.reason == "time limit"
    assert "time limit" in failed(report)["timesteps"]
    assert "student output" not in capsys.readouterr().out


def test_a_process_exit_costs_the_checks_not_run(tmp_path):
    path = student(tmp_path, """
        import os
        def variance_schedule(T, s=0.008, max_beta=0.999):
            os._exit(3)
    """)
    report = G.grade(1, path)
    assert report.total == 0 and "ended early (exit code 3)" in report.error
    assert report.reason == "ended early" and report.graded
    assert report.checks[0].message.startswith("stopped here")
    assert report.checks[1].message.startswith("not run")
    assert any("os._exit" in f for f in report.flags)


def test_a_loop_the_alarm_cannot_interrupt_is_stopped_by_the_file_limit(tmp_path):
    path = student(tmp_path, """
        import signal
        def variance_schedule(T, s=0.008, max_beta=0.999):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            while True:
                pass
    """)
    report = G.grade(1, path, time_limit=0.2, file_limit=3)
    assert report.total == 0 and report.reason == "time limit" and "time limit" in report.error


def test_stub_reason_is_not_implemented_and_a_stub_notebook_grades_like_the_file(tmp_path):
    report = grade(2, STUBS / "02_prepare_batch.py")
    assert report.reason == "not implemented"
    notebook = STUBS / "02_prepare_batch.ipynb"
    assert grade(2, notebook).to_dict()["checks"] == report.to_dict()["checks"]


# --------------------------------------------------------------------------- command line

def test_cli_grades_one_file_as_json_in_a_subprocess():
    proc = subprocess.run([sys.executable, "-m", "tinyddpm.grade", "01",
                           str(WRONG / "01_cosine_schedule.py"), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["total"] == 7 and data["max_total"] == 10 and len(data["checks"]) == 7
    assert data["student"] == "01_cosine_schedule"


def test_cli_class_folder_writes_csv(tmp_path, capsys):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "alice.py").write_text((SOLUTIONS / "02_prepare_batch.py").read_text())
    (folder / "bob.py").write_text((WRONG / "02_prepare_batch.py").read_text())
    (folder / "carol.py").write_text((STUBS / "02_prepare_batch.py").read_text())
    (folder / "dave.py").write_text("raise RuntimeError('oops')\n")
    (folder / "notes.txt").write_text("not a student")
    out = tmp_path / "scores.csv"
    assert G.main(["prepare_batch", str(folder), "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "alice" in printed and "10/10" in printed and "scores.csv" in printed
    rows = list(csv.DictReader(out.open()))
    assert [r["student"] for r in rows] == ["alice", "bob", "carol", "dave"]
    assert [r["total"] for r in rows] == ["10", "5", "0", "0"]
    assert list(rows[0]) == ["student"] + [c.id for c in G.ASSIGNMENTS["02_prepare_batch"].checks] \
        + ["total", "out_of", "reason", "flags", "notes"]
    assert rows[1]["time_range"] == "0" and rows[1]["rng"] == "1" and rows[1]["out_of"] == "10"
    assert [r["reason"] for r in rows] == ["", "wrong results", "not implemented",
                                           "could not be imported"]
    assert "time_range: time contains 0" in rows[1]["notes"]          # untruncated, every check
    assert "RuntimeError: oops" in rows[3]["notes"]


def test_cli_one_file_text_report(capsys):
    assert G.main(["3", str(WRONG / "03_conv_backward.py")]) == 0
    out = capsys.readouterr().out
    assert "FAIL 0/3  dx" in out and "ok   3/3  dw" in out and "Total: 6/10" in out


def test_cli_list_and_help(capsys):
    assert G.main(["--list"]) == 0
    out = capsys.readouterr().out
    for a in G.ASSIGNMENTS.values():
        assert a.name in out
    with pytest.raises(SystemExit) as exit_:
        G.main(["--help"])
    assert exit_.value.code == 0 and "--csv" in capsys.readouterr().out


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert G.main(["no_such_thing", str(SOLUTIONS / "01_cosine_schedule.py")]) == 2
    err = capsys.readouterr().err
    assert "unknown assignment 'no_such_thing'" in err and "1 (cosine_schedule)" in err
    assert G.main(["1", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert G.main(["1", str(tmp_path)]) == 2                 # an empty folder
    assert "no .py or .ipynb files" in capsys.readouterr().err
    assert G.main(["1", str(SOLUTIONS / "01_cosine_schedule.py"), "--no-isolate"]) == 2
    assert "removed" in capsys.readouterr().err
    assert G.main(["1"]) == 2
    with pytest.raises(SystemExit) as exit_:
        G.main(["1", "x.py", "--time-limit", "soon"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("text", ["1", "01", "cosine_schedule", "01_cosine_schedule",
                                  "01_cosine_schedule.py", "cosine", "Cosine-Schedule"])
def test_assignment_by_number_or_name(text):
    assert G.find_assignment(text).key == "01_cosine_schedule"


# --------------------------------------------------------------------------- not shipped

def test_solutions_are_not_importable_from_the_package():
    for folder in (SOLUTIONS, WRONG):
        for path in folder.glob("*.py"):
            assert importlib.util.find_spec(f"tinyddpm.{path.stem}") is None
    for name in ("tinyddpm.solutions", "tinyddpm.assignments", "tinyddpm.lessons"):
        assert importlib.util.find_spec(name) is None
    packages = setuptools.find_packages(str(ROOT), include=["tinyddpm*"])
    assert packages and all(p.startswith("tinyddpm") for p in packages)
    assert not any("assign" in p or "solution" in p for p in packages)


def solution_blocks(key):
    """The marked answers of a solution source (### BEGIN SOLUTION ... ### END SOLUTION), after
    its header block."""
    blocks, run = [], None
    for line in (SOLUTIONS / f"{key}.py").read_text().splitlines():
        if line.strip() == "### BEGIN SOLUTION":
            run = []
        elif line.strip() == "### END SOLUTION":
            blocks.append("\n".join(run))
            run = None
        elif run is not None:
            run.append(line.split("#")[0].strip())
    return blocks[1:]                                   # the first block is the header


def test_no_package_file_contains_solution_code():
    package_text = "\n".join(line.split("#")[0].strip() for p in (ROOT / "tinyddpm").rglob("*.py")
                             for line in p.read_text().splitlines())
    for key in KEYS:
        blocks = solution_blocks(key)
        assert sum(block.count("\n") + 1 for block in blocks) >= 3, key
        for block in blocks:
            assert block not in package_text, (key, block)


# --------------------------------------------------------------------------- one source

@pytest.mark.parametrize("key", KEYS)
def test_student_files_are_made_from_the_solution_sources(key, tmp_path):
    """Stubs, notebooks and Classroom workflows are what `python -m tinyddpm.grade.assign`
    makes from the marked solutions: they cannot drift apart."""
    from tinyddpm.grade.assign import build

    build(str(SOLUTIONS), str(tmp_path))
    for rel in (f"{key}.py", f"{key}.ipynb", f"github-classroom/{key}.yml"):
        assert (tmp_path / rel).read_text() == (STUBS / rel).read_text(), rel


def test_unbalanced_solution_markers_are_named():
    from tinyddpm.grade.assign import make_stub

    with pytest.raises(ValueError, match="line 2: BEGIN SOLUTION is never closed"):
        make_stub("x = 1\n### BEGIN SOLUTION\ny = 2\n", "a.py")
    with pytest.raises(ValueError, match="line 1: END SOLUTION without BEGIN"):
        make_stub("### END SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "a.py")
    assert make_stub("a\n    ### BEGIN SOLUTION\n    b\n    ### END SOLUTION\n"
                     "    ### STUB raise NotImplementedError\n") == \
        "a\n    raise NotImplementedError\n"


def test_classroom_workflow_runs_each_check_through_the_grader():
    for key in KEYS:
        text = (STUBS / "github-classroom" / f"{key}.yml").read_text()
        a = G.ASSIGNMENTS[key]
        for c in a.checks:
            assert f"--check {c.id}\n" in text and f"max-score: {c.points:g}" in text
        assert sum(c.points for c in a.checks) == 10


def test_check_option_exits_by_that_check(capsys):
    wrong = str(WRONG / "01_cosine_schedule.py")
    assert G.main(["1", wrong, "--check", "t0"]) == 0
    assert G.main(["1", wrong, "--check", "max_beta"]) == 1
    out = capsys.readouterr().out
    assert "max_beta" in out and "alpha_cumprod" not in out
    assert G.main(["1", wrong, "--check", "nope"]) == 2


# --------------------------------------------------------------------------- fairness

def test_reclip_mistake_fails_alpha_cumprod_with_its_hint_and_is_charged_once(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        def variance_schedule(T, s=0.008, max_beta=0.999):
            t = np.arange(T + 1)
            f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
            alpha = np.append(1, np.maximum(f[1:] / f[:-1], 1 - max_beta)).astype(np.float32)
            return alpha, (f / f[0]).astype(np.float32), 1 - alpha     # alpha_bar not recomputed
    """)
    messages = failed(grade(1, path))
    assert set(messages) == {"alpha_cumprod"}, messages
    assert "at t=4000" in messages["alpha_cumprod"] and "recompute" in messages["alpha_cumprod"]


def test_schedule_taken_at_t_minus_1_is_charged_by_step_each_t_only(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        def ddpm_step(x_t, eps, t, alpha, alpha_cumprod, beta, z):
            mean = (x_t - beta[t] / np.sqrt(1 - alpha_cumprod[t - 1]) * eps) / np.sqrt(alpha[t])
            return (mean + np.sqrt(beta[t]) * z).astype(np.float32)
    """)
    messages = failed(grade(5, path))
    assert "step_value" not in messages and "step_noise" not in messages
    assert "alpha_bar is taken at t - 1" in messages["step_each_t"]


def test_batchnorm_statistics_over_axis_0_cost_the_dx_check_only(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        def batchnorm_backward(dy, x, gamma, eps=1e-3):
            mean, var = x.mean(axis=0), x.var(axis=0)            # N only, not N, H, W
            x_hat = (x - mean) / np.sqrt(var + eps)
            g = dy * gamma
            dx = (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0)) / np.sqrt(var + eps)
            return dx, (dy * x_hat).sum(axis=0), dy.sum(axis=0)
    """)
    messages = failed(grade(4, path))
    assert set(messages) == {"dx"}, messages
    assert "over axes (0,) only" in messages["dx"]


def test_conv_overwrite_mistake_is_charged_by_dx_only(tmp_path):
    path = student(tmp_path, """
        import numpy as np
        def conv2d_backward(x, w, dy):
            kh, kw = w.shape[:2]
            ho, wo = dy.shape[1:3]
            dx, dw = np.zeros_like(x), np.zeros_like(w)
            for i in range(kh):
                for j in range(kw):
                    dx[:, i:i + ho, j:j + wo, :] = dy @ w[i, j].T
                    dw[i, j] = np.einsum("nhwc,nhwk->ck", x[:, i:i + ho, j:j + wo, :], dy)
            return dx, dw
    """)
    messages = failed(grade(3, path))
    assert set(messages) == {"dx"}, messages
    assert "accumulate with +=" in messages["dx"]


def test_a_check_that_ignores_the_alarm_is_stopped_from_outside_soon_after_its_limit(tmp_path):
    import time

    path = student(tmp_path, """
        import signal
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        def variance_schedule(T, s=0.008, max_beta=0.999):
            while True:
                pass
    """)
    start = time.monotonic()
    report = G.grade(1, path, time_limit=1, file_limit=120)
    assert time.monotonic() - start < 20                     # 1 s + 2 s of grace + start-up
    assert report.total == 0 and report.reason == "time limit"
    assert "did not stop at the time limit's alarm" in report.error
    assert report.checks[0].message.startswith("stopped here")


def test_a_filled_in_notebook_runs_in_jupyter_and_grades_itself(tmp_path, monkeypatch):
    """The student's flow: the notebook's cells run in a kernel (the demo too), and its last cell
    grades the saved notebook."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import nbformat
    from nbclient import NotebookClient

    from tinyddpm.grade.assign import make_notebook

    key = "01_cosine_schedule"
    solution = (SOLUTIONS / f"{key}.py").read_text()          # runnable: markers are comments
    notebook = make_notebook((STUBS / f"{key}.py").read_text(), 1, f"{key}.py")
    notebook["cells"][1]["source"] = solution.split('\nif __name__ == "__main__":\n')[0]
    path = tmp_path / f"{key}.ipynb"
    path.write_text(json.dumps(notebook))
    nb = nbformat.read(str(path), as_version=4)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = ["".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs]
    assert any("shapes: (4001,)" in o for o in outputs)          # the demo ran
    assert any("Total: 10/10" in o for o in outputs), outputs    # the grader graded it


def test_a_notebook_with_ipython_habits_still_grades(tmp_path):
    solution = (SOLUTIONS / "01_cosine_schedule.py").read_text()
    cells = ["%matplotlib inline\nimport matplotlib.pyplot as plt\nimport numpy as np",
             solution, "variance_schedule?", "files = !ls", "display(variance_schedule(10))",
             "fig, ax = plt.subplots()\nax.plot(variance_schedule(10)[1])\nplt.show()",
             "get_ipython().run_line_magic('time', 'x = 1')", "import time\ntime.sleep(30)",
             "import scipy\nx = 1"]
    notebook = {"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": []}
                          for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "bob.ipynb"
    path.write_text(json.dumps(notebook))
    report = G.grade(1, path, time_limit=2)
    assert report.total == 10, report.format()
    warnings = " ".join(report.warnings)
    assert "cell 8 raised time limit" in warnings and "cell 9 raised ModuleNotFoundError" in warnings
    assert "matplotlib" not in warnings                 # a stand-in: its calls do nothing


def test_notebook_cells_that_each_take_a_while_are_progress_not_a_hang(tmp_path):
    solution = (SOLUTIONS / "01_cosine_schedule.py").read_text()
    cells = [solution] + ["import time\ntime.sleep(1.8)"] * 7      # 12.6 s in all
    notebook = {"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": []}
                          for c in cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "slow.ipynb"
    path.write_text(json.dumps(notebook))
    report = G.grade(1, path, time_limit=2)
    assert report.total == 10 and report.reason == "", report.format()


def test_a4_unbiased_variance_and_two_axes_are_each_charged_once(tmp_path):
    for axes, ddof in (("(0, 1)", 0), ("(0, 1, 2)", 1)):
        path = student(tmp_path, f"""
            import numpy as np
            def batchnorm_backward(dy, x, gamma, eps=1e-3):
                axes = {axes} if x.ndim == 4 else (0,)
                mean = x.mean(axis=axes, keepdims=True)
                std = np.sqrt(x.var(axis=axes, keepdims=True, ddof={ddof}) + eps)
                x_hat, g = (x - mean) / std, dy * gamma
                dx = (g - g.mean(axis=axes, keepdims=True)
                      - x_hat * (g * x_hat).mean(axis=axes, keepdims=True)) / std
                return dx, (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)
        """, name=f"s{ddof}.py")
        messages = failed(grade(4, path))
        assert set(messages) == {"dx"}, (axes, ddof, messages)
        assert ("ddof=1" if ddof else "over axes (0, 1) only") in messages["dx"]


def test_teacher_mistakes_get_an_error_line(tmp_path, capsys):
    solution = str(SOLUTIONS / "01_cosine_schedule.py")
    assert G.main(["1", solution, "--csv", str(tmp_path / "no" / "x.csv")]) == 2
    assert G.main(["1", solution, "--feedback", str(tmp_path / "no" / "fb")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "Traceback" not in err
    from tinyddpm.grade.assign import build
    with pytest.raises(ValueError, match="is the source folder"):
        build(str(SOLUTIONS), str(SOLUTIONS))
    with pytest.raises(ValueError, match="no solution files"):
        build(str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "07_x.py").write_text("def f():\n    return 1\n")
    with pytest.raises(ValueError, match="no ### BEGIN SOLUTION block"):
        build(str(tmp_path / "src"), str(tmp_path / "out"))


def test_class_folder_notes_odd_files_roster_near_misses_and_case_collisions(tmp_path, capsys):
    folder = tmp_path / "class"
    folder.mkdir()
    stub = (STUBS / "01_cosine_schedule.py").read_text()
    for name in ("Alice.py", "alice.py", "dave smith.py"):
        (folder / name).write_text(stub)
    os.mkfifo(folder / "fifo.py")
    (folder / "link.py").symlink_to(SOLUTIONS / "01_cosine_schedule.py")
    roster = tmp_path / "roster.txt"
    roster.write_text("Alice\nalice\nDave Smith\n")
    feedback = tmp_path / "fb"
    assert G.main(["1", str(folder), "--roster", str(roster), "--feedback", str(feedback)]) == 1
    out = capsys.readouterr().out
    assert "skipped fifo.py: not a regular file" in out and "skipped link.py: a symbolic link" in out
    assert "'Dave Smith' on the roster has no file, but 'dave smith'" in out
    assert sorted(p.name for p in feedback.iterdir()) == ["Alice.md", "Dave_Smith.md",
                                                          "alice-2.md", "dave_smith-2.md"]
    assert G.main(["1", str(folder / "fifo.py")]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_short_files_are_not_similar_by_necessity(tmp_path):
    pytest.importorskip("copydetect")
    from tinyddpm.grade import integrity

    codes = {k: f"import sys\nprint({i})\nsys.exit({i})\n" for i, k in enumerate("abcd")}
    assert integrity.similar_pairs(codes) == []


# ------------------------------------------------------- what is wrong everywhere is charged
def with_functions(key, tmp_path, **bodies):
    """The solution of ``key`` with the named functions' bodies replaced."""
    import re

    source = (SOLUTIONS / f"{key}.py").read_text()
    for name, body in bodies.items():
        match = re.search(rf"^def {name}\(.*?(?=^def |^if __name__|\Z)", source, re.S | re.M)
        signature = source[match.start():source.index("\n", match.start())]
        source = (source[:match.start()] + signature + "\n" + textwrap.indent(body, "    ")
                  + "\n\n\n" + source[match.end():])
    path = tmp_path / f"{key}.py"
    path.write_text(source)
    return path


@pytest.mark.parametrize("bodies", [
    {"topological_order": "return [root]", "backward": "pass"},
    {"backward": "root.grad = 1.0"},                     # a correct order, no _backward called
    {"topological_order": "return []"},
])
def test_a_backward_pass_that_computes_no_gradient_scores_little(bodies, tmp_path):
    report = grade("07_autograd_backward", with_functions("07_autograd_backward", tmp_path,
                                                          **bodies))
    assert report.total <= 2, report.format()
    assert "call each node's _backward" in failed(report)["root_grad"]
    assert not any(c.passed and c.message for c in report.checks), report.format()


def test_a_mistake_charged_elsewhere_is_marked_counted_never_ok(tmp_path):
    path = with_functions("08_unbroadcast", tmp_path, unbroadcast=(
        "extra = grad.ndim - len(shape)\nreturn grad.sum(axis=tuple(range(extra)))"))
    report = grade("08_unbroadcast", path)
    both = next(c for c in report.checks if c.id == "both")
    assert both.passed and "counted under size_one_axes" in both.message
    assert "ok*  3/3  both" in report.format() and report.total == 8


def test_assignment_9_gives_its_other_points_only_to_a_real_forward(tmp_path):
    zeros = with_functions("09_custom_op", tmp_path, forward="return np.zeros_like(x)",
                           backward="return np.zeros_like(x)")
    report = grade("09_custom_op", zeros)
    assert report.total == 1, report.format()       # the op's name only
    assert "not scored" in failed(report)["gradient_check"]
    wrong_backward = with_functions("09_custom_op", tmp_path,
                                    backward="return grad * np.exp(-np.logaddexp(0, x))")
    messages = failed(grade("09_custom_op", wrong_backward))
    assert set(messages) == {"backward", "gradient_check"}
    assert "a gradient check of your op would have caught it" in messages["gradient_check"]


@pytest.mark.parametrize("key", KEYS)
def test_a_correct_solution_is_ok_everywhere_never_counted_elsewhere(key):
    report = grade(key, SOLUTIONS / f"{key}.py")
    assert not [c.id for c in report.checks if c.message], report.format()
    assert not report.flags, report.flags


def test_an_order_wrong_only_on_some_graphs_is_charged_at_topological_order(tmp_path):
    path = with_functions("07_autograd_backward", tmp_path, topological_order=textwrap.dedent("""\
        order, seen, stack = [], set(), [root]          # pre-order, reversed: not topological
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                order.append(node)
                stack.extend(node._prev)
        return order[::-1]"""))
    report = grade("07_autograd_backward", path)
    assert "topological_order" in failed(report) and report.total == 8, report.format()


def test_a_changed_helper_and_a_raised_recursion_limit_are_flagged(tmp_path):
    source = (SOLUTIONS / "07_autograd_backward.py").read_text()
    edited = tmp_path / "edited.py"
    edited.write_text(source.replace("def run(", "def run(*extra, **more):\n    pass\n\n\n"
                                     "def _old_run(", 1))
    assert any("do not edit below" in f for f in grade("07_autograd_backward", edited).flags)
    raised = tmp_path / "raised.py"
    raised.write_text("import sys\nsys.setrecursionlimit(100000)\n" + source)
    assert any("setrecursionlimit" in f for f in grade("07_autograd_backward", raised).flags)
