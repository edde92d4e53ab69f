"""The host side of the REPL sandbox: one worker process, its watchdog and restarts.

What: :class:`Sandbox` starts ``worker.py`` under a bare ``python -I -S -B``
with an empty environment, a fresh temporary folder (mode 700, owned by the
unprivileged user, removed afterwards) and its own session/process group;
wraps it in bubblewrap where that works (``isolation.py``: the code sees no
host file but the interpreter); asks it to apply the in-process protections
(see ``worker.py``); sends the context over the pipe; then runs code cells,
serving the worker's ``llm`` RPCs through a callback.

Why this shape: everything the model writes runs in the child, so the host's
``sys.stdout``, working directory and memory are never touched, and every
limit that matters (timeouts, budgets) is decided here, where model code
cannot reach. A cell that runs too long or kills its interpreter ends with a
clear message and a *fresh* worker (``context`` re-sent, variables lost), so
the session goes on. No ``preexec_fn``: it is unsafe in a threaded host (two
retrievals may run in parallel threads), so the worker applies its own limits
before it reads any model code.
"""

from __future__ import annotations

import logging
import os
import pwd
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from memory_agent.errors import ConfigError, SandboxError
from memory_agent.rlm import isolation, protocol

__all__ = ["SandboxConfig", "CellResult", "Sandbox", "pick_interpreter", "WORKER_PATH", "ISOLATION_MODES"]

WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
ISOLATION_MODES = ("auto", "bubblewrap", "none")
_START_TIMEOUT = 30.0
_GRACE = 2.0  # the worker's own SIGALRM fires first; the kill is the backstop
log = logging.getLogger(__name__)
_warned: set[str] = set()


@dataclass(frozen=True)
class SandboxConfig:
    """OS limits of one worker. Frozen: nothing running in the REPL can change them."""

    cell_timeout: float = 20.0
    memory_mb: int = 512
    cpu_seconds: int = 300
    max_open_files: int = 64
    max_file_mb: int = 16
    user: str = "nobody"
    network_namespace: bool = True
    mount_namespace: bool = True
    max_restarts: int = 5
    # "auto": bubblewrap where it works, else a loud warning and the in-process
    # layers only; "bubblewrap": refuse to run without it; "none": never use it
    isolation: str = "auto"
    work_mb: int = 64  # total size of the work folder under bubblewrap (a tmpfs)
    seccomp: bool = True

    def __post_init__(self):
        if self.isolation not in ISOLATION_MODES:
            raise ConfigError(f"sandbox isolation must be one of {', '.join(ISOLATION_MODES)}; "
                              f"got {self.isolation!r}")


@dataclass
class CellResult:
    stdout: str = ""
    error: str | None = None
    final: str | None = None
    final_kind: str | None = None
    restarted: bool = False
    seconds: float = 0.0


def _world_usable(path: str) -> bool:
    """Every folder on the real path is world-searchable and the file world-executable."""
    real = os.path.realpath(path)
    try:
        if not os.stat(real).st_mode & stat.S_IXOTH:
            return False
        d = os.path.dirname(real)
        while True:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
            if d == "/":
                return True
            d = os.path.dirname(d)
    except OSError:
        return False


def pick_interpreter(drop_to_user: bool) -> str:
    """The Python to run the worker with: ours, unless the dropped user could not run it.

    (Here the project interpreter lives under ``/root`` (mode 700); running it as
    ``nobody`` silently picks up another ``libpython`` and cannot import its
    stdlib, so the system interpreter is used instead. The worker is stdlib-only.)
    """
    ours = [sys.executable, getattr(sys, "_base_executable", sys.executable)]
    if not drop_to_user:
        return ours[0]
    prefixes = [os.path.join(sys.base_prefix, "lib")]
    if all(_world_usable(p) for p in ours[1:] + prefixes):
        return ours[1]
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""):
        if cand and os.path.exists(cand) and _world_usable(cand):
            return cand
    raise SandboxError("no Python interpreter usable by the unprivileged sandbox user")


class Sandbox:
    """One sandboxed REPL. ``on_llm(items) -> results`` serves ``llm``/``llm_batch`` RPCs."""

    def __init__(self, context, *, config: SandboxConfig, on_llm: Callable[[list[dict]], list[dict]],
                 repl_limits: dict | None = None):
        self.context = context
        self.config = config
        self.on_llm = on_llm
        self.repl_limits = dict(repl_limits or {})
        self.restarts = 0
        self.protections: dict = {}
        self._proc: subprocess.Popen | None = None
        self._workdir: str | None = None
        self._lines: queue.Queue = queue.Queue()
        self._stderr_tail = b""
        self._next_id = 0
        self._uid = self._gid = None
        self._root = os.geteuid() == 0
        if self._root:
            try:
                pw = pwd.getpwnam(config.user)
                self._uid, self._gid = pw.pw_uid, pw.pw_gid
            except KeyError:
                pass
        self._python = pick_interpreter(self._uid is not None)
        self._bwrap, self._isolation_error = self._choose_isolation()
        self._codedir: str | None = None

    def _choose_isolation(self) -> tuple[isolation.Probe | None, str | None]:
        if self.config.isolation == "none":
            return None, "turned off (isolation='none')"
        found = isolation.probe(self._python, self._uid, self._gid)
        if found.ok:
            return found, None
        if self.config.isolation == "bubblewrap":
            raise SandboxError(f"file isolation was required but is unavailable: {found.reason}")
        if found.reason not in _warned:
            _warned.add(found.reason)
            log.warning("RLM sandbox WITHOUT file isolation: model-written code can read every "
                        "world-readable file of this machine. %s", found.reason)
        return None, found.reason

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self._spawn()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.poll() is None and proc.stdin is not None:
                    proc.stdin.write(protocol.encode({"type": "shutdown"}))
                    proc.stdin.flush()
                    proc.wait(timeout=1.0)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
            self._kill(proc)
        for folder in (self._workdir, self._codedir):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        self._workdir = self._codedir = None

    def _kill(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the worker and anything it started
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass

    def _command(self) -> list[str]:
        if self._bwrap is None:
            return [self._python, "-I", "-S", "-B", WORKER_PATH]
        if self._codedir is None:
            self._codedir = tempfile.mkdtemp(prefix="rlm-code-")
            isolation.copy_worker_files(os.path.dirname(WORKER_PATH), self._codedir)
        return isolation.bwrap_command(self._bwrap.binary, self._python, self._workdir, self._codedir,
                                       self.config.work_mb)

    def _setup_message(self) -> dict:
        cfg, outer = self.config, self._bwrap is not None
        return {"type": "setup", "workdir": self._workdir,
                # under bubblewrap the worker already is the sandbox user, in its own namespaces
                "uid": None if outer else self._uid, "gid": None if outer else self._gid,
                "memory_mb": cfg.memory_mb, "cpu_seconds": cfg.cpu_seconds,
                "max_open_files": cfg.max_open_files, "max_file_mb": cfg.max_file_mb,
                "netns": cfg.network_namespace and not outer, "mountns": cfg.mount_namespace and not outer,
                "isolation": "bubblewrap" if outer else None, "seccomp": cfg.seccomp}

    def _spawn(self) -> None:
        self._workdir = tempfile.mkdtemp(prefix="rlm-")
        os.chmod(self._workdir, 0o700)
        if self._uid is not None:
            os.chown(self._workdir, self._uid, self._gid)
        cfg = self.config
        self._lines = queue.Queue()
        # bubblewrap itself runs as the sandbox user (no preexec_fn: Popen's user= is thread-safe)
        as_user = {"user": self._uid, "group": self._gid, "extra_groups": []} \
            if self._bwrap is not None and self._uid is not None else {}
        try:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={}, cwd=self._workdir, start_new_session=True, close_fds=True, **as_user,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the REPL worker: {exc}") from exc
        threading.Thread(target=self._read_stdout, args=(self._proc, self._lines), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self._proc,), daemon=True).start()
        try:
            self._send(self._setup_message())
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise SandboxError(f"the REPL worker died at start-up: {exc}") from exc
        ready = self._wait_for("ready", _START_TIMEOUT)
        self.protections = dict(ready["protections"])
        self.protections.update({
            "separate_process": True, "interpreter": self._python, "fresh_private_tmpdir": True,
            "watchdog_kills_process_group": True, "cell_timeout_s": cfg.cell_timeout,
            "memory_limit_mb": cfg.memory_mb,
            "filesystem_isolation": self._bwrap.version if self._bwrap is not None else False,
        })
        if self._bwrap is not None:
            self.protections["work_folder_limit_mb"] = cfg.work_mb
        else:
            self.protections["errors"]["filesystem_isolation"] = self._isolation_error
        init = protocol.encode({"type": "init", "context": self.context, "limits": self.repl_limits})
        if len(init) > protocol.MAX_MESSAGE_BYTES:
            raise SandboxError(f"context of {len(init):,} bytes is too large for the REPL "
                               f"(limit {protocol.MAX_MESSAGE_BYTES:,})")
        try:
            self._proc.stdin.write(init)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise SandboxError(f"the REPL worker died while receiving the context: {exc}") from exc
        self._wait_for("inited", _START_TIMEOUT)

    def _restart(self) -> None:
        if self._proc is not None:
            self._kill(self._proc)
            self._proc = None
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self.restarts += 1
        if self.restarts > self.config.max_restarts:
            raise SandboxError(f"the REPL worker died {self.restarts} times; giving up")
        self._spawn()

    # ------------------------------------------------------------------ pipes

    @staticmethod
    def _read_stdout(proc: subprocess.Popen, lines: queue.Queue) -> None:
        try:
            while True:
                line = proc.stdout.readline(protocol.MAX_MESSAGE_BYTES + 1)
                if not line:
                    break
                lines.put(line)
        except (OSError, ValueError):
            pass
        lines.put(None)

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        try:
            for chunk in iter(lambda: proc.stderr.read(4096), b""):
                self._stderr_tail = (self._stderr_tail + chunk)[-4096:]
        except (OSError, ValueError):
            pass

    def _send(self, msg: dict) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise BrokenPipeError("no worker")
        self._proc.stdin.write(protocol.encode(msg))
        self._proc.stdin.flush()

    def _wait_for(self, kind: str, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
            msg = protocol.decode(line or b"")
        except (queue.Empty, protocol.ProtocolError) as exc:
            tail = self._stderr_tail.decode("utf-8", "replace")[-1500:]
            raise SandboxError(f"the REPL worker failed to start ({exc!r}); stderr: {tail}") from None
        if msg["type"] != kind:
            raise SandboxError(f"the REPL worker sent {msg['type']!r} while starting")
        return msg

    def _death_reason(self) -> str:
        proc = self._proc
        code = proc.wait(timeout=5.0) if proc is not None else None
        if code is not None and self._bwrap is not None and code > 128:
            code = 128 - code  # bubblewrap reports a child killed by signal N as 128 + N
        if code is not None and code < 0:
            sig = -code
            if sig == signal.SIGXCPU:
                return f"it used up its CPU-time limit ({self.config.cpu_seconds} s)"
            if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
                return (f"it crashed with signal {signal.Signals(sig).name} "
                        f"(often the memory limit of {self.config.memory_mb} MiB)")
            return f"it was killed by signal {signal.Signals(sig).name}"
        if code is not None and code != 0 and b"MemoryError" in self._stderr_tail:
            return f"it ran out of memory (limit {self.config.memory_mb} MiB)"
        return f"it exited with code {code}"

    # ------------------------------------------------------------------ requests

    def _request(self, msg: dict, terminal: str, timeout: float | None) -> tuple[dict | None, str | None]:
        """Send ``msg``; serve llm RPCs until the ``terminal`` reply. (reply, None) or (None, failure)."""
        self._next_id += 1
        msg = dict(msg, id=self._next_id)
        try:
            self._send(msg)
        except (BrokenPipeError, OSError, ValueError):
            return None, f"the REPL worker had died ({self._death_reason()})"
        deadline = None if timeout is None else time.monotonic() + timeout + _GRACE
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                line = self._lines.get(timeout=wait)
            except queue.Empty:
                return None, (f"TimeoutError: the cell ran longer than {timeout:.1f} s and was killed")
            if line is None:
                return None, f"the REPL worker died: {self._death_reason()}"
            try:
                reply = protocol.decode(line)
            except protocol.ProtocolError as exc:
                return None, f"the REPL worker broke the protocol ({exc})"
            if reply["type"] == "llm":
                started = time.monotonic()
                items = reply.get("items")
                if not isinstance(items, list):
                    return None, "the REPL worker sent a malformed llm request"
                results = self.on_llm(items)
                if deadline is not None:  # time spent in sub-calls is not the cell's time
                    deadline += time.monotonic() - started
                try:
                    self._send({"type": "llm_result", "id": reply.get("id"), "results": results})
                except (BrokenPipeError, OSError, ValueError):
                    return None, f"the REPL worker died: {self._death_reason()}"
                continue
            if reply["type"] == terminal and reply.get("id") == msg["id"]:
                return reply, None
            return None, f"the REPL worker sent an unexpected {reply['type']!r} message"

    def run_cell(self, code: str, timeout: float | None = None) -> CellResult:
        """Run one code cell; on timeout/death the worker is replaced and the error says so."""
        if self._proc is None:
            raise SandboxError("sandbox is not started")
        timeout = self.config.cell_timeout if timeout is None else timeout
        started = time.monotonic()
        reply, failure = self._request({"type": "exec", "code": code, "timeout": timeout}, "result", timeout)
        if failure is not None:
            self._restart()
            return CellResult(
                error=(f"{failure}. A fresh REPL was started: variables from earlier cells are lost; "
                       "`context` and the helpers are loaded again."),
                restarted=True, seconds=time.monotonic() - started)
        return CellResult(
            stdout=str(reply.get("stdout") or ""), error=reply.get("error"),
            final=None if reply.get("final") is None else str(reply["final"]),
            final_kind=reply.get("final_kind"), seconds=time.monotonic() - started)

    def get_var(self, name: str) -> tuple[bool, str]:
        """Value of a REPL variable as text, for a prose ``FINAL_VAR(name)``."""
        reply, failure = self._request({"type": "get_var", "name": name}, "var", self.config.cell_timeout)
        if failure is not None:
            self._restart()
            return False, failure
        if reply.get("ok"):
            return True, str(reply.get("value"))
        return False, str(reply.get("error"))
