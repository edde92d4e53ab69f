"""The REPL sandbox: timeouts, memory, processes, environment, files, network, isolation.

Each test runs model-style code in a real sandboxed worker. Tests that need an
OS feature skip (with the reason) only where the feature is really absent:
e.g. dropping to ``nobody`` needs root, file isolation needs bubblewrap (which
``make test`` installs). The shared ``sandbox`` fixture runs every probe twice:
under bubblewrap and with the in-process layers alone (``isolation="none"``).
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from memory_agent.errors import ConfigError, SandboxError
from memory_agent.rlm import RecursiveRetriever, isolation
from memory_agent.rlm.sandbox import Sandbox, SandboxConfig

IS_ROOT = os.geteuid() == 0


def _bwrap_reason() -> str:
    sb = Sandbox("c", config=SandboxConfig(isolation="none"), on_llm=lambda items: [])
    found = isolation.probe(sb._python, sb._uid, sb._gid)
    return "" if found.ok else found.reason


NO_BWRAP = _bwrap_reason()
needs_bwrap = pytest.mark.skipif(bool(NO_BWRAP), reason=f"file isolation unavailable: {NO_BWRAP}")


def echo_llm(items):
    return [{"ok": True, "text": "echo:" + it["prompt"]} for it in items]


@pytest.fixture(params=["auto", "none"], ids=["bubblewrap", "in-process"])
def sandbox(request):
    if request.param == "auto" and NO_BWRAP:
        pytest.skip(f"file isolation unavailable: {NO_BWRAP}")
    sb = Sandbox("the context", config=SandboxConfig(cell_timeout=1.5, memory_mb=256, isolation=request.param),
                 on_llm=echo_llm, repl_limits={"max_subcall_chars": 6000})
    sb.start()
    yield sb
    sb.close()


def test_protections_are_reported(sandbox):
    p = sandbox.protections
    for key in ("separate_process", "isolated_interpreter", "rlimits", "dropped_privileges",
                "network_namespace", "process_limit_binds", "audit_hook_blocks", "environment_keys"):
        assert key in p
    assert p["isolated_interpreter"] is True
    assert {"RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE"} <= set(p["rlimits"])
    if IS_ROOT:
        assert p["dropped_privileges"] is True and p["uid"] != 0


def test_infinite_loop_is_stopped_and_the_session_goes_on(sandbox):
    sandbox.run_cell("keep = 41")
    t0 = time.monotonic()
    res = sandbox.run_cell("while True: pass")
    assert time.monotonic() - t0 < 1.5 + 3.0
    assert "TimeoutError" in res.error
    assert sandbox.run_cell("keep + 1").stdout.strip() == "42"  # soft stop: variables kept


def test_loop_that_swallows_the_timeout_is_killed_and_restarted(sandbox):
    sandbox.run_cell("keep = 1")
    # model code that disables the in-worker alarm: only the host watchdog can stop it
    code = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"
    t0 = time.monotonic()
    res = sandbox.run_cell(code)
    assert time.monotonic() - t0 < 1.5 + 5.0
    assert res.restarted and "killed" in res.error and "variables from earlier cells are lost" in res.error
    assert sandbox.run_cell("print(len(context))").stdout.strip() == "11"  # context re-sent
    assert "NameError" in sandbox.run_cell("keep").error


def test_worker_death_is_reported_and_the_session_goes_on(sandbox):
    res = sandbox.run_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert res.restarted and "SIGKILL" in res.error
    assert sandbox.run_cell("print('alive')").stdout.strip() == "alive"


def test_memory_bomb_hits_the_memory_limit(sandbox):
    res = sandbox.run_cell("hog = []\nwhile True:\n    hog.append(bytearray(20_000_000))")
    assert "MemoryError" in res.error or "memory" in res.error.lower()
    assert sandbox.run_cell("del hog\nprint('ok')").stdout.strip() == "ok"


def test_process_creation_is_refused(sandbox):
    # bounded: at most 50 attempts, stop at the first success, reap what was made
    code = """
import os, subprocess
made, errors = [], set()
for _ in range(50):
    try:
        pid = os.fork()
    except OSError as exc:
        errors.add(type(exc).__name__)
        break
    if pid == 0:
        os._exit(0)
    made.append(pid)
    break
for pid in made:
    os.waitpid(pid, 0)
try:
    subprocess.run(['/bin/true'])
    errors.add('subprocess-ok')
except OSError as exc:
    errors.add('sub-' + type(exc).__name__)
print(len(made), sorted(errors))
"""
    out = sandbox.run_cell(code).stdout.strip()
    assert out.startswith("0 "), out
    assert "subprocess-ok" not in out


def test_environment_holds_no_host_secret(monkeypatch):
    monkeypatch.setenv("SECRET_TEST_KEY", "hunter2-secret")
    with Sandbox("c", config=SandboxConfig(), on_llm=echo_llm) as sb:
        out = sb.run_cell("import os\nprint(os.environ.get('SECRET_TEST_KEY'), 'hunter2' in repr(dict(os.environ)))")
    assert out.stdout.strip() == "None False"


@pytest.mark.skipif(not IS_ROOT, reason="needs root to create a root-owned file and drop to nobody")
def test_reading_a_private_file_outside_fails(sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.chmod(secret, 0o600)
    res = sandbox.run_cell(f"print(open({str(secret)!r}).read())")
    # PermissionError with the in-process layers; FileNotFoundError under bubblewrap (not even visible)
    assert res.error and ("PermissionError" in res.error or "FileNotFoundError" in res.error)
    assert "top secret" not in res.stdout


def test_writing_outside_the_work_folder_fails(sandbox, tmp_path):
    if not IS_ROOT:
        pytest.skip("needs root: the worker runs as the caller otherwise")
    code = f"""
import os
results = []
for path in [{str(tmp_path / 'out.txt')!r}, '/tmp/rlm-escape-test.txt', '/var/tmp/rlm-escape-test.txt']:
    try:
        open(path, 'w').write('x')
        results.append('WROTE ' + path)
    except OSError as exc:
        results.append(type(exc).__name__)
open('inside.txt', 'w').write('fine')
results.append(open('inside.txt').read())
print(results)
"""
    res = sandbox.run_cell(code)
    assert "WROTE" not in res.stdout, res.stdout
    assert res.stdout.strip().endswith("'fine']")
    assert not (tmp_path / "out.txt").exists()
    assert not os.path.exists("/tmp/rlm-escape-test.txt")


def test_network_is_unreachable(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        # refused at socket() by seccomp, or at connect() by the empty network namespace
        code = (f"import socket\ntry:\n    s = socket.socket()\n    s.settimeout(2)\n"
                f"    s.connect(('127.0.0.1', {port}))\n"
                "    print('CONNECTED')\nexcept OSError as exc:\n    print('refused', type(exc).__name__)")
        out = sandbox.run_cell(code).stdout
        assert "CONNECTED" not in out and "refused" in out
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_parallel_retrievals_do_not_mix_and_host_is_untouched(capsys):
    class Root:
        def __init__(self, tag):
            self.tag = tag

        def generate(self, batch, **kw):
            return [f"```repl\nimport time\nfor i in range(5):\n    print('{self.tag}', context[:5], i)\n"
                    f"    time.sleep(0.01)\n```\nFINAL({self.tag})"]

    cwd = os.getcwd()
    results = {}

    def work(tag):
        results[tag] = RecursiveRetriever(Root(tag), strategy="code").run("q", f"ctx-{tag}-padding")

    threads = [threading.Thread(target=work, args=(t,)) for t in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for tag in ("A", "B"):
        out = next(e for e in results[tag].trajectory if e["type"] == "cell")["stdout"]
        lines = out.strip().splitlines()
        assert len(lines) == 5 and all(line.startswith(f"{tag} ctx-{tag}") for line in lines)
        assert results[tag].answer == tag
    assert os.getcwd() == cwd
    assert capsys.readouterr().out == ""  # nothing printed on the host's stdout


def test_work_folder_is_private_and_removed():
    sb = Sandbox("c", config=SandboxConfig(), on_llm=echo_llm)
    sb.start()
    workdir = sb._workdir
    mode = os.stat(workdir).st_mode & 0o777
    out = sb.run_cell("import os\nprint(os.getcwd())").stdout.strip()
    codedir = sb._codedir
    sb.close()
    assert mode == 0o700 and out == workdir
    assert not os.path.exists(workdir)
    assert codedir is None or not os.path.exists(codedir)


def test_limits_are_frozen():
    import dataclasses

    from memory_agent.rlm import RLMLimits

    with pytest.raises(dataclasses.FrozenInstanceError):
        RLMLimits().max_subcalls = 10**9


# --------------------------------------------------------------------------- file isolation (issue 14)


@pytest.fixture
def isolated():
    sb = Sandbox("the context", config=SandboxConfig(cell_timeout=3.0, memory_mb=256, isolation="bubblewrap",
                                                     work_mb=8), on_llm=echo_llm)
    sb.start()
    yield sb
    sb.close()


def _attempt(sandbox, expr: str) -> str:
    """Run ``expr`` in the sandbox; 'OK:<value>' or the exception's class name."""
    code = f"try:\n    print('OK:' + repr({expr}))\nexcept Exception as exc:\n    print(type(exc).__name__)"
    return sandbox.run_cell(code).stdout.strip()


@needs_bwrap
def test_a_store_in_an_open_folder_is_neither_readable_nor_listable(isolated, tmp_path, embedder):
    from memory_store import MemoryStore

    folder = tmp_path / "store"
    with MemoryStore(folder, embedder=embedder) as store:
        store.add("alice's secret: the safe code is 4417", user_id="alice")
    # the old, loose layout the issue found: a world-readable folder and files
    for path in [tmp_path, folder, *folder.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    db = next(p for p in folder.iterdir() if p.suffix in (".db", ".sqlite", ".sqlite3"))
    assert _attempt(isolated, f"open({str(db)!r}, 'rb').read(100)") in ("FileNotFoundError", "PermissionError")
    assert _attempt(isolated, f"__import__('os').listdir({str(folder)!r})") in ("FileNotFoundError",
                                                                              "PermissionError")
    assert "4417" not in isolated.run_cell(f"print(open({str(db)!r}, 'rb').read())").stdout


@needs_bwrap
def test_no_process_of_the_host_is_reachable_through_proc(isolated):
    for pid in (os.getpid(), "self", 1):
        assert _attempt(isolated, f"open('/proc/{pid}/environ', 'rb').read()") == "FileNotFoundError"
    parent = isolated.run_cell("import os\nprint(os.getppid())").stdout.strip()
    assert _attempt(isolated, f"open('/proc/{parent}/environ', 'rb').read()") == "FileNotFoundError"


@needs_bwrap
def test_tmp_shows_only_the_sandbox_own_folder(isolated, tmp_path):
    assert len(os.listdir("/tmp")) > 1  # the host's /tmp has other entries (pytest's own, at least)
    listing = isolated.run_cell("import os\nprint(os.listdir('/tmp'))").stdout.strip()
    assert listing == repr([os.path.basename(isolated._workdir)])
    assert _attempt(isolated, "open('/tmp/escape.txt', 'w')") == "OSError"  # read-only tmpfs


@needs_bwrap
def test_only_the_interpreter_is_visible(isolated):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in (repo, "/root", "/home", "/etc", "/var", "/work", "/proc", os.path.expanduser("~")):
        assert _attempt(isolated, f"__import__('os').listdir({path!r})") in ("FileNotFoundError",
                                                                         "PermissionError"), path
    assert isolated.protections["filesystem_isolation"].startswith("bubblewrap")
    assert set(isolated.protections["visible_root"]) <= {"bin", "dev", "lib", "lib32", "lib64", "libx32",
                                                         "rlm", "sbin", "tmp", "usr"}
    assert _attempt(isolated, "__import__('json').dumps([1])") == "OK:'[1]'"  # the stdlib still works


@needs_bwrap
def test_the_work_folder_is_bounded_in_total(isolated):
    code = """
import os
written = 0
try:
    for i in range(6):  # 6 x 2 MiB files against an 8 MiB folder; each file is under RLIMIT_FSIZE
        with open(f'f{i}', 'wb') as fh:
            fh.write(b'x' * (2 << 20))
        written += 1
    print('ALL', written)
except OSError as exc:
    print('STOPPED', written, exc.errno)
"""
    out = isolated.run_cell(code).stdout.strip()
    assert out.startswith("STOPPED") and out.endswith(" 28"), out  # ENOSPC


@needs_bwrap
def test_seccomp_refuses_exec_ptrace_and_namespaces(isolated):
    assert isolated.protections["seccomp"] is True
    assert _attempt(isolated, "__import__('os').execv('/usr/bin/true', ['true'])") == "PermissionError"
    code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(libc.unshare(0x10000000), ctypes.get_errno(), libc.ptrace(16, 1, 0, 0), ctypes.get_errno())")
    assert isolated.run_cell(code).stdout.split() == ["-1", "1", "-1", "1"]  # EPERM, EPERM


def test_required_isolation_refuses_to_run_without_it(monkeypatch):
    monkeypatch.setattr(isolation, "probe", lambda *a: isolation.Probe(False, None, reason="bwrap is missing"))
    with pytest.raises(SandboxError, match="bwrap is missing"):
        Sandbox("c", config=SandboxConfig(isolation="bubblewrap"), on_llm=echo_llm)


def test_missing_isolation_falls_back_loudly_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(isolation, "probe", lambda *a: isolation.Probe(False, None, reason="bwrap is gone (test)"))
    with caplog.at_level("WARNING"), Sandbox("c", config=SandboxConfig(), on_llm=echo_llm) as sb:
        assert sb.run_cell("print(1 + 1)").stdout.strip() == "2"
    assert any("WITHOUT file isolation" in r.getMessage() for r in caplog.records)
    assert sb.protections["filesystem_isolation"] is False
    assert sb.protections["errors"]["filesystem_isolation"] == "bwrap is gone (test)"


def test_unknown_isolation_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="isolation"):
        SandboxConfig(isolation="docker")


@needs_bwrap
def test_only_the_work_folder_is_writable(isolated):
    for path in ("/x", "/dev/x", "/dev/shm/x", "/usr/x", "/rlm/worker.py"):
        assert _attempt(isolated, f"open({path!r}, 'w')") in ("OSError", "PermissionError", "FileNotFoundError"), path
    assert isolated.protections["readonly_root"] is True
    assert _attempt(isolated, "open('mine.txt', 'w').write('ok')") == "OK:2"
    assert _attempt(isolated, "len(open('/dev/urandom', 'rb').read(4))") == "OK:4"
