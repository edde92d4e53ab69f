"""File isolation for the REPL worker: the bubblewrap command line and its one-time probe.

What: :func:`bwrap_command` wraps the worker's ``python -I -S -B worker.py``
in bubblewrap (the Debian ``bubblewrap`` package, the sandbox Flatpak uses)
so that model-written code sees a minimal filesystem:

* ``/usr`` (and the ``/bin``, ``/lib``, ``/lib64``, ``/sbin`` links into it)
  and the interpreter's own prefix, read-only: the interpreter and its
  standard library;
* a copy of the three stdlib-only worker files, read-only, at ``/rlm``;
* ``/tmp`` as an empty read-only tmpfs holding only the sandbox's own work folder, itself
  a size-limited tmpfs (so disk use is bounded in total, not only per file);
* a minimal ``/dev``; **no** ``/proc`` (no other process's environment,
  command line or memory), no ``/etc``, ``/home``, ``/root``, ``/var``, no
  repository and no memory store.

All namespaces are new (user, pid, network, ipc, uts, cgroup); the worker runs
with no capabilities and dies with its parent. On a root host bubblewrap is
started as the unprivileged sandbox user (``Popen(user=)``, which is safe in a
threaded host, unlike ``preexec_fn``), so the worker is that user outside the
namespace too.

Why a separate tool: mount tricks inside the worker can hide the world-writable
folders but not every world-readable file of the host; bubblewrap builds the
root from nothing, and it is small, audited and packaged. Where it is missing
or cannot start (no unprivileged user namespaces), :func:`probe` says why and
the sandbox falls back, loudly, to its in-process layers.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

__all__ = ["WORKER_FILES", "CODE_MOUNT", "Probe", "probe", "bwrap_command", "copy_worker_files"]

WORKER_FILES = ("worker.py", "protocol.py", "strategies.py")
CODE_MOUNT = "/rlm"
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_PROBE_TIMEOUT = 20.0


class Probe:
    """Whether bubblewrap works here: ``ok``, the binary, its version, or why not."""

    def __init__(self, ok: bool, binary: str | None, version: str = "", reason: str = ""):
        self.ok, self.binary, self.version, self.reason = ok, binary, version, reason

    def __repr__(self) -> str:
        return f"Probe(ok={self.ok}, binary={self.binary!r}, version={self.version!r}, reason={self.reason!r})"


def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _interpreter_mount(python: str) -> list[str]:
    """The interpreter's prefix (``<prefix>/bin/python``), when it is not under /usr already."""
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    if prefix in ("", "/") or prefix == "/usr" or prefix.startswith("/usr/"):
        return []
    return ["--ro-bind", prefix, prefix]


def bwrap_command(binary: str, python: str, workdir: str, codedir: str, work_mb: int) -> list[str]:
    """The full argv: bubblewrap, its mounts, then ``python -I -S -B /rlm/worker.py``."""
    return [
        binary, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--disable-userns", "--clearenv",
        *_system_mounts(), *_interpreter_mount(python),
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        # the work folder keeps its host path (the worker is told it), but it is a
        # fresh tmpfs of bounded size: nothing of it reaches the host's disk
        "--size", str(int(work_mb) * 1024 * 1024), "--perms", "0700", "--tmpfs", workdir,
        "--remount-ro", "/tmp",  # the tmpfs itself, not the work folder mounted on it
        "--ro-bind", codedir, CODE_MOUNT,
        # bubblewrap's own root and /dev are writable tmpfs of the sandbox user, unbounded and
        # outside RLIMIT_AS: read-only, so the work folder is the only place to write
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--chdir", workdir,
        python, "-I", "-S", "-B", os.path.join(CODE_MOUNT, "worker.py"),
    ]


def copy_worker_files(source_dir: str, codedir: str) -> None:
    """Copy the worker's files into ``codedir`` (0755 folder, 0644 files) for the read-only mount.

    A copy, not a bind of the package folder: the package may live where the
    sandbox user cannot read (e.g. under /root), and the folder holds more
    than the worker needs.
    """
    os.chmod(codedir, 0o755)
    for name in WORKER_FILES:
        target = os.path.join(codedir, name)
        shutil.copyfile(os.path.join(source_dir, name), target)
        os.chmod(target, 0o644)


@functools.lru_cache(maxsize=8)
def probe(python: str, uid: int | None, gid: int | None) -> Probe:
    """Start bubblewrap once with the real mounts and a trivial program; cached per process."""
    binary = shutil.which("bwrap")
    if binary is None:
        return Probe(False, None, reason="bubblewrap (bwrap) is not installed; on Debian: apt-get install bubblewrap")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rlm-probe-") as base:
        workdir, codedir = os.path.join(base, "work"), os.path.join(base, "code")
        os.mkdir(workdir, 0o700)
        os.mkdir(codedir)
        os.chmod(base, 0o755)
        if uid is not None:
            os.chown(workdir, uid, gid)
        with open(os.path.join(codedir, "worker.py"), "w") as fh:
            fh.write("import os\nprint(os.getcwd())\n")
        os.chmod(codedir, 0o755)
        argv = bwrap_command(binary, python, workdir, codedir, work_mb=1)
        try:
            done = subprocess.run(argv, capture_output=True, env={}, cwd=workdir, timeout=_PROBE_TIMEOUT,
                                  user=uid, group=gid, extra_groups=[] if uid is not None else None)
        except (OSError, subprocess.SubprocessError) as exc:
            return Probe(False, binary, reason=f"bubblewrap could not start: {exc}")
    if done.returncode != 0 or done.stdout.decode(errors="replace").strip() != workdir:
        err = done.stderr.decode(errors="replace").strip()[-300:]
        return Probe(False, binary, reason=f"bubblewrap failed here (exit {done.returncode}): {err}")
    version = subprocess.run([binary, "--version"], capture_output=True, env={}).stdout.decode().strip()
    return Probe(True, binary, version=version)
