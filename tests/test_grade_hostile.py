"""Hostile and careless submissions, graded through the command line in a subprocess with a
wall-clock bound: every cheat scores what the honest code in it deserves (0 for a stub) or is
flagged; processes a submission starts end with it; limits stop what they should, with a reason;
student text cannot reach the teacher's spreadsheet or terminal."""
import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tinyddpm import grade as G
from tinyddpm.grade import integrity

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "tests" / "assignments" / "solutions"
STUB_1 = (ROOT / "lessons" / "assignments" / "01_cosine_schedule.py").read_text()

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the sandbox's process checks read /proc")


RUN = f"test{os.getpid()}x"      # this session's grading runs carry it in their token


@pytest.fixture(autouse=True)
def _run_label(monkeypatch):
    monkeypatch.setenv("TINYDDPM_GRADE_RUN", RUN)


def cli(*args, timeout=120):
    """Run the grader's command line; returns (exit status, stdout, stderr, seconds)."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tinyddpm.grade", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TINYDDPM_GRADE_RUN": RUN})
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def write(folder, name, source):
    path = Path(folder) / name
    path.write_text(textwrap.dedent(source))
    return path


def graded(path, assignment=1, *extra, timeout=120):
    code, out, err, _ = cli(assignment, path, "--json", *extra, timeout=timeout)
    assert code in (0, 1), err
    return json.loads(out)


def leftover_processes():
    """Processes of this session's grading runs still alive (none may outlive its run; other
    grading runs on the machine carry other tokens)."""
    found = []
    needle = f"TINYDDPM_GRADE_TOKEN={RUN}".encode()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if any(v.startswith(needle) for v in f.read().split(b"\0")):
                        found.append(int(pid))
            except OSError:
                pass
    return found


# --------------------------------------------------------------------------- forged grades

STUB_BODY = """
import numpy as np
def variance_schedule(T, s=0.008, max_beta=0.999):
    raise NotImplementedError
"""

CHEATS = {
    "patches the runner through sys.modules['__main__']": ("""
        import sys, numpy as np
        main = sys.modules["__main__"]
        main.run_call = lambda *a, **k: ({"value": (np.ones(4001, np.float32),) * 3}, [])
        main.Encoder.__call__ = lambda self, v, depth=0: {"t": "none"}
    """, True),
    "patches NumPy's comparisons": ("""
        import numpy as np
        np.allclose = np.array_equal = lambda *a, **k: True
        np.isclose = lambda a, b, **k: np.ones(np.shape(a), bool)
    """, True),
    "forges result files and exits": ("""
        import json, os, sys
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
        for i in range(7):
            with open(os.path.join(out, f"{i}.json"), "w") as f:
                json.dump({"calls": [{"value": {"t": "int", "v": 1}}]}, f)
            with open(os.path.join(out, f"{i}.json"), "w") as f:
                json.dump({"passed": True, "points": 10}, f)
        with open(os.path.join(out, "import.json"), "w") as f:
            json.dump({"ok": True}, f)
        os._exit(0)
    """, False),
    "prints the old protocol's result lines": ("""
        import os
        for fd in (1, 2, 3, 4):
            try:
                os.write(fd, b'TINYDDPM-GRADE {"event": "check", "id": "t0", "passed": true}\\n')
            except OSError:
                pass
    """, True),
    "imports the reference": ("""
        from tinyddpm.schedule import variance_schedule
    """, False),
    "imports the reference through importlib": ("""
        import importlib
        variance_schedule = importlib.import_module("tinyddpm.schedule").variance_schedule
    """, False),
    "finds site-packages and imports the reference": ("""
        import sys, glob
        sys.path += glob.glob("/usr/lib/python3*/site-packages") + glob.glob(
            "/usr/local/lib/python3*/site-packages") + glob.glob("/root/.pyenv/versions/*/lib/"
            "python3*/site-packages") + [%(repo)r]
        from tinyddpm.schedule import variance_schedule
    """, False),
}
CHEATS = {name: textwrap.dedent(code) + (STUB_BODY if stub else "")
          for name, (code, stub) in CHEATS.items()}


@pytest.mark.parametrize("name", list(CHEATS))
def test_a_cheat_scores_what_its_honest_code_deserves_and_is_flagged(name, tmp_path):
    path = write(tmp_path, "mallory.py", CHEATS[name] % {"repo": str(ROOT)}
                 if "%(repo)" in CHEATS[name] else CHEATS[name])
    report = graded(path)
    assert report["total"] == 0, (name, report)
    if name != "patches NumPy's comparisons":    # patching NumPy is ordinary code: it just fails
        assert report["flags"], (name, report)


def test_exec_of_a_classmates_file_is_flagged(tmp_path):
    alice = tmp_path / "alice.py"
    alice.write_text((SOLUTIONS / "01_cosine_schedule.py").read_text())
    os.chmod(tmp_path, 0o755)
    os.chmod(alice, 0o644)
    mallory = write(tmp_path, "mallory.py", f"exec(open({str(alice)!r}).read())\n")
    report = graded(mallory)
    flags = " ".join(report["flags"])
    assert "exec" in flags and "open" in flags


def test_one_students_patches_do_not_reach_the_next(tmp_path):
    write(tmp_path, "aaa_patcher.py", CHEATS["patches NumPy's comparisons"])
    write(tmp_path, "bbb_honest_stub.py", STUB_1)
    code, out, err, _ = cli(1, tmp_path, "--json")
    reports = {r["student"]: r for r in json.loads(out)["reports"]}
    assert reports["aaa_patcher"]["total"] == 0 and reports["bbb_honest_stub"]["total"] == 0


def test_process_exit_with_status_0_is_not_a_silent_success(tmp_path):
    path = write(tmp_path, "quitter.py", "import os\nos._exit(0)\n")
    code, out, err, _ = cli(1, tmp_path, "--csv", tmp_path / "scores.csv")
    assert code == 0 and "quitter" in out
    row = next(csv.DictReader(open(tmp_path / "scores.csv")))
    assert row["total"] == "0" and row["reason"] == "ended early" and "os._exit" in row["flags"]
    assert path.exists()


# --------------------------------------------------------------------------- limits

def test_pipe_holding_children_and_a_fork_loop_end_with_the_file_limit(tmp_path):
    path = write(tmp_path, "forker.py", """
        import os, subprocess, time
        subprocess.Popen(["sleep", "125.5"])          # keeps every inherited descriptor open
        for _ in range(50):                           # bounded: at most 50 processes
            try:
                if os.fork() == 0:
                    os.setsid()                       # leaves the process group too
                    time.sleep(125)
                    os._exit(0)
            except OSError:
                break
        def variance_schedule(T, s=0.008, max_beta=0.999):
            time.sleep(125)
    """)
    code, out, err, seconds = cli(1, path, "--json", "--file-limit", 4, "--time-limit", 2,
                                  timeout=60)
    report = json.loads(out)
    assert seconds < 30, seconds                      # 4 s of limit, plus start-up and checks
    assert report["total"] == 0
    time.sleep(0.5)
    assert leftover_processes() == []
    assert subprocess.run(["pgrep", "-f", "sleep 125.5"], capture_output=True).returncode == 1
    flags = " ".join(report["flags"])
    assert "subprocess" in flags and "os.fork" in flags and "os.setsid" in flags


def test_a_memory_hog_is_stopped_by_the_limit_with_a_reason(tmp_path):
    path = write(tmp_path, "hog.py", """
        import numpy as np
        def variance_schedule(T, s=0.008, max_beta=0.999):
            big = np.ones(20 * 10**9 // 8)            # 20 GB
            return big, big, big
    """)
    report = graded(path, 1, "--memory-limit", 1024)
    assert report["total"] == 0 and report["reason"] == "memory limit"
    assert "ran out of memory (the limit is 1024 MB)" in report["checks"][0]["message"]


def test_output_flood_does_not_reach_the_teacher(tmp_path):
    path = write(tmp_path, "loud.py", """
        import os, sys
        chunk = b"x" * 2**20
        for _ in range(300):
            os.write(2, chunk)
            os.write(1, chunk)
        print("loud" * 1000, file=sys.stderr)
        raise ValueError("\\x1b[31mred\\x1b[0m\\nsecond line\\r=HYPERLINK()")
    """)
    code, out, err, _ = cli(1, path, timeout=120)
    assert len(out) + len(err) < 20_000
    assert chr(27) not in out and "\nsecond line" not in out and "\r" not in out
    assert "ValueError: ?[31mred?[0m" in out


# --------------------------------------------------------------------------- the class run

def test_class_run_escapes_formulas_validates_names_and_reports_the_roster(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    write(subs, "=1+2.py", STUB_1)
    (subs / "alice.py").write_text((SOLUTIONS / "01_cosine_schedule.py").read_text())
    notebook = json.loads((ROOT / "lessons" / "assignments" /
                           "01_cosine_schedule.ipynb").read_text())
    notebook["cells"][1]["source"] = (SOLUTIONS / "01_cosine_schedule.py").read_text()
    (subs / "bob.ipynb").write_text(json.dumps(notebook))
    roster = tmp_path / "roster.txt"
    roster.write_text("# class 1\nalice\nbob\ncarol\n")
    feedback = tmp_path / "feedback"
    scores = tmp_path / "scores.csv"
    code, out, err, _ = cli(1, subs, "--csv", scores, "--roster", roster, "--feedback", feedback)
    assert code == 1, (out, err)                       # carol has no submission
    rows = {r["student"]: r for r in csv.DictReader(open(scores))}
    assert set(rows) == {"alice", "bob", "carol", "'=1+2"}
    assert rows["alice"]["total"] == "10" and rows["bob"]["total"] == "10"
    assert rows["carol"]["reason"] == "no submission"
    assert "not on the roster" in rows["'=1+2"]["flags"]
    assert "file name" in rows["'=1+2"]["flags"]
    for cell in (c for r in rows.values() for c in r.values()):
        assert not cell.startswith(("=", "+", "-", "@")), cell
    text = (feedback / "alice.md").read_text()
    assert "10/10" in text and "FLAG" not in text.upper().replace("FLAGS FOR", "")
    assert (feedback / "carol.md").exists()


def test_copies_are_found_and_the_stub_is_boilerplate(tmp_path):
    pytest.importorskip("copydetect")
    solution = (SOLUTIONS / "01_cosine_schedule.py").read_text()
    renamed = solution.replace("ratios", "r").replace("steps", "u").replace("    f = ", "    g = ") \
        .replace("f[1:] / f[:-1]", "g[1:] / g[:-1]").replace("\n\n\n", "\n\n")
    codes = {"alice": solution, "bob": renamed, "carol": STUB_1, "dave": STUB_1}
    pairs = integrity.similar_pairs(codes, boilerplate=STUB_1)
    assert [(a, b) for a, b, _ in pairs] == [("alice", "bob")]
    assert pairs[0][2] >= 0.9


def test_thirty_correct_and_five_hanging_files_finish_within_the_bound(tmp_path):
    solution = (SOLUTIONS / "01_cosine_schedule.py").read_text()
    for i in range(10):
        (tmp_path / f"good{i:02d}.py").write_text(solution)
    for i in range(3):
        write(tmp_path, f"hang{i}.py", """
            import signal
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            while True:
                pass
        """)
    code, out, err, seconds = cli(1, tmp_path, "--json", "--file-limit", 3, "--time-limit", 1,
                                  timeout=300)
    reports = json.loads(out)["reports"]
    assert [r["total"] for r in reports].count(10) == 10
    assert all(r["reason"] == "time limit" for r in reports if r["student"].startswith("hang"))
    assert seconds < 13 * 3 + 30, seconds              # the stated bound: files x file limit
    assert leftover_processes() == []


# --------------------------------------------------------------------------- found in review

SOLUTION_1 = (SOLUTIONS / "01_cosine_schedule.py").read_text()


def test_the_sandbox_reads_only_python_numpy_and_its_folder(tmp_path):
    """Where Landlock exists: the solutions, a classmate's file and /tmp are out of reach, the
    loaded file cannot be written anywhere else, no program can be run; flagged as well."""
    from tinyddpm.grade.sandbox import sandbox_mode

    classmate = tmp_path / "alice.py"
    classmate.write_text(SOLUTION_1)
    path = write(tmp_path, "mallory.py", f"""
        import linecache, site, sys, numpy as np
        src = "".join(linecache.getlines({str(SOLUTIONS / '01_cosine_schedule.py')!r}))
        src = src or "".join(linecache.getlines({str(classmate)!r}))
        np.frombuffer(src.encode(), np.uint8).tofile("/tmp/rv21_answer_mod.py")
        site.addsitedir("/tmp")
        site.addsitedir({str(tmp_path)!r})
        try:
            from rv21_answer_mod import variance_schedule
        except ImportError:
            from alice import variance_schedule
    """)
    report = graded(path)
    flags = " ".join(report["flags"])
    assert "linecache" in flags and "site" in flags and "tofile" in flags
    if sandbox_mode() == "landlock":
        assert report["total"] == 0, report
        assert not Path("/tmp/rv21_answer_mod.py").exists()


def test_numpys_builtins_module_is_flagged(tmp_path):
    path = write(tmp_path, "mallory.py", """
        import numpy as np
        run = np.lib._function_base_impl.builtins.exec
        run("def variance_schedule(T, s=0.008, max_beta=0.999): pass")
    """)
    assert "builtins" in " ".join(graded(path)["flags"])


def test_a_student_cannot_reach_a_classmate_graded_at_the_same_time(tmp_path):
    from tinyddpm.grade.sandbox import sandbox_mode

    if sandbox_mode() == "none":
        pytest.skip("without Landlock, a normal user's children share that user")
    write(tmp_path, "aaa_attacker.py", """
        import os, time
        def variance_schedule(T, s=0.008, max_beta=0.999):
            end = time.time() + 3
            while time.time() < end:
                try:
                    for entry in os.scandir("/tmp"):
                        if entry.name.startswith("tinyddpm-grade-"):
                            try:
                                os.chmod(os.path.join(entry.path, "out"), 0o500)
                            except OSError:
                                pass
                except OSError:
                    pass
    """)
    for i in range(4):
        (tmp_path / f"good{i}.py").write_text(SOLUTION_1)
    code, out, err, _ = cli(1, tmp_path, "--json", "--jobs", 2, timeout=300)
    reports = {r["student"]: r for r in json.loads(out)["reports"]}
    assert all(reports[f"good{i}"]["total"] == 10 for i in range(4)), reports


@pytest.mark.parametrize("mode", ["landlock", "own user"])
def test_each_sandbox_mode_grades_and_confines(mode, tmp_path, monkeypatch):
    """The fallbacks too: root without Landlock runs the child as a fresh unprivileged user."""
    from tinyddpm.grade import sandbox

    if mode == "own user" and os.geteuid() != 0:
        pytest.skip("needs root")
    if mode == "landlock" and sandbox.sandbox_mode() != "landlock":
        pytest.skip("this kernel has no Landlock")
    monkeypatch.setattr(sandbox, "_mode", mode)
    good = write(tmp_path, "good.py", SOLUTION_1 + "\nimport logging, timeit\n")
    assert G.grade(1, good).total == 10
    cheat = write(tmp_path, "cheat.py", "from tinyddpm.schedule import variance_schedule\n")
    assert G.grade(1, cheat).total == 0
    sleeper = write(tmp_path, "sleeper.py", """
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(60)
        def variance_schedule(T, s=0.008, max_beta=0.999):
            raise NotImplementedError
    """)
    assert G.grade(1, sleeper, file_limit=5).total == 0
    time.sleep(0.3)
    assert leftover_processes() == []


def test_a_thread_left_running_does_not_hold_the_end(tmp_path):
    path = write(tmp_path, "threads.py", SOLUTION_1 + """
import threading, time
threading.Thread(target=time.sleep, args=(60,)).start()
""")
    start = time.monotonic()
    report = G.grade(1, path)
    assert report.total == 10 and report.reason == "" and time.monotonic() - start < 10


def test_control_characters_in_a_file_name_do_not_reach_the_terminal(tmp_path):
    (tmp_path / "\x1b[31mred\tname.py").write_text(STUB_1)
    code, out, err, _ = cli(1, tmp_path, "--csv", tmp_path / "s.csv")
    text = out + err + (tmp_path / "s.csv").read_text()
    assert "\x1b" not in text and "\t" not in text and "?[31mred?name" in out


def test_a_table_of_answers_and_code_hidden_in_strings_are_flagged(tmp_path):
    from tinyddpm.schedule import variance_schedule

    table = {T: [a.tobytes().hex() for a in variance_schedule(T, **kw)]
             for T, kw in ((4000, {}), (10, {"s": 0.1}), (1000, {}), (20, {"max_beta": 0.2}))}
    path = write(tmp_path, "table.py", f"""
        import numpy as np
        TABLE = {table!r}
        def variance_schedule(T, s=0.008, max_beta=0.999):
            return tuple(np.frombuffer(bytes.fromhex(h), np.float32) for h in TABLE[T])
    """)
    report = graded(path)
    assert "large literal data" in " ".join(report["flags"]), report["flags"]
    hidden = write(tmp_path, "hidden.py", """
        import timeit, _io
        timeit.Timer("x = 1").timeit(1)
    """)
    flags = " ".join(graded(hidden)["flags"])
    assert "timeit" in flags and "_io" in flags


def test_a_killed_grader_takes_its_children_with_it(tmp_path):
    path = write(tmp_path, "stubborn.py", """
        import time
        while True:
            try:
                time.sleep(1000)
            except BaseException:
                pass
    """)
    proc = subprocess.Popen([sys.executable, "-m", "tinyddpm.grade", "1", str(path)],
                            env={**os.environ, "TINYDDPM_GRADE_RUN": RUN},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not leftover_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftover_processes(), "the child never started"
    proc.kill()                                  # SIGKILL: no cleanup code of the grader runs
    proc.wait()
    deadline = time.monotonic() + 10
    while leftover_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftover_processes() == []


def test_sigterm_stops_a_class_run_cleanly(tmp_path):
    import signal

    for name in ("a", "b"):
        write(tmp_path, f"{name}.py", "import time\nwhile True:\n    time.sleep(1)\n")
    proc = subprocess.Popen([sys.executable, "-m", "tinyddpm.grade", "1", str(tmp_path),
                             "--jobs", "2", "--csv", str(tmp_path / "s.csv")],
                            env={**os.environ, "TINYDDPM_GRADE_RUN": RUN},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while len(leftover_processes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()
    time.sleep(0.3)
    assert leftover_processes() == []


def test_writing_too_many_files_is_stopped_with_a_reason(tmp_path):
    path = write(tmp_path, "filler.py", """
        import os
        def variance_schedule(T, s=0.008, max_beta=0.999):
            folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
            for i in range(10**6):
                with open(os.path.join(folder, f"junk{i}"), "w"):
                    pass
    """)
    report = graded(path)
    assert report["total"] == 0 and report["reason"] == "disk limit", report["reason"]
