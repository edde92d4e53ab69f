"""The sandboxed REPL process of the recursive retriever (runs as ``python -I -S -B worker.py``).

What: a tiny JSON-lines server (see ``protocol.py``). It applies the OS
protections it is asked for, *then* receives the context and runs model-written
code cells in one persistent namespace. ``llm()``/``llm_batch()`` inside the
REPL are RPCs to the host, which owns every budget.

Why a separate interpreter: the model's code can do anything a Python process
can do, so the only trustworthy boundary is the process and the kernel
(user id, namespaces, rlimits), not a restricted ``__builtins__``. This file
must stay stdlib-only (it runs on a bare interpreter, possibly the system one,
with no virtual environment) and never imports ``memory_agent``.

Order of start-up (all before any model code runs):
  1. keep private copies of the protocol pipes; point fds 0/1 at /dev/null and
     stderr so model code printing at the C level cannot corrupt the protocol
  2. load ``protocol.py`` and ``strategies.py`` from this folder (by path)
  3. under bubblewrap (``isolation.py``): check the namespaces it made; without
     it: network namespace (``unshare(CLONE_NEWNET)``) and a mount namespace
     with the world-writable folders re-mounted read-only; ``chdir`` to the
     work folder
  4. rlimits (address space, CPU, open files, file size, core=0)
  5. drop to the unprivileged user (unless bubblewrap started us as it), then
     ``RLIMIT_NPROC=0`` and no_new_privs
  6. a seccomp deny-list (libseccomp via ctypes): ptrace, mount, namespaces,
     BPF, io_uring, exec, sockets and other calls a REPL never needs
  7. a socket/process audit hook only as a *fallback* where 3/5 failed
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import errno
import importlib.util
import io
import os
import resource
import signal
import sys
import traceback

__all__ = ["main"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_READ = 23
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000
# Kernel interfaces a text-processing REPL never needs and that widen the attack
# surface (debugging other processes, namespaces and mounts, keyrings, BPF,
# io_uring, modules) plus exec and sockets: after start-up nothing is executed
# and the REPL talks to the host only over its inherited pipes.
_SECCOMP_DENY = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "mount", "umount2", "pivot_root",
    "chroot", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "open_by_handle_at",
    "name_to_handle_at", "personality", "acct", "swapon", "swapoff", "reboot", "execve",
    "execveat", "socket", "socketpair", "pidfd_open", "pidfd_getfd", "process_madvise",
)
_WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")
_STDOUT_CAP = 200_000


def _load(name):
    spec = importlib.util.spec_from_file_location("_rlm_" + name, os.path.join(_HERE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- protections


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _unshare(libc, flags):
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _mount(libc, src, target, fstype, flags):
    enc = (lambda s: s.encode() if s is not None else None)
    if libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err) + " (mount " + str(target) + ")")


def _namespaces(setup, libc, root, prot):
    """Network and mount namespaces made here (the fallback when bubblewrap did not wrap us)."""
    prot["network_namespace"] = False
    if setup.get("netns", True):
        try:
            _unshare(libc, _CLONE_NEWNET if root else (_CLONE_NEWUSER | _CLONE_NEWNET))
            prot["network_namespace"] = True
        except OSError as exc:
            prot["errors"]["network_namespace"] = str(exc)

    prot["readonly_shared_tmp"] = False
    if setup.get("mountns", True) and root:
        workdir = setup["workdir"]
        try:
            _unshare(libc, _CLONE_NEWNS)
            _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
            for d in _WORLD_WRITABLE:
                if os.path.isdir(d) and not os.path.islink(d):
                    _mount(libc, d, d, None, _MS_BIND | _MS_REC)
                    _mount(libc, None, d, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
            # the work folder usually lives under /tmp: give it back its own writable mount
            _mount(libc, workdir, workdir, None, _MS_BIND)
            # a bind mount copies the (now read-only) flags of its source: make it writable again
            _mount(libc, None, workdir, None, _MS_BIND | _MS_REMOUNT | _MS_NOSUID | _MS_NODEV)
            prot["readonly_shared_tmp"] = True
        except OSError as exc:
            prot["errors"]["readonly_shared_tmp"] = str(exc)


def _outer_isolation(prot):
    """Under bubblewrap: check (not assume) what it promised."""
    import socket

    names = sorted(name for _, name in socket.if_nameindex())
    prot["network_namespace"] = names in ([], ["lo"])
    if not prot["network_namespace"]:
        prot["errors"]["network_namespace"] = "interfaces visible: %s" % names
    # the host's shared tmp folders are not visible at all; /tmp, /dev and the root are read-only
    prot["readonly_shared_tmp"] = not os.access("/tmp", os.W_OK) and not os.path.exists("/var/tmp")
    prot["readonly_root"] = not any(os.access(d, os.W_OK) for d in ("/", "/dev", "/dev/shm") if os.path.isdir(d))
    prot["visible_root"] = sorted(os.listdir("/"))


def _rlimits(setup, prot):
    rl = {}
    mem = int(setup["memory_mb"]) * 1024 * 1024
    cpu = int(setup["cpu_seconds"])
    wanted = {
        "RLIMIT_AS": (mem, mem),
        "RLIMIT_CPU": (cpu, cpu + 5),
        "RLIMIT_NOFILE": (int(setup["max_open_files"]),) * 2,
        "RLIMIT_FSIZE": (int(setup["max_file_mb"]) * 1024 * 1024,) * 2,
        "RLIMIT_CORE": (0, 0),
    }
    for name, value in wanted.items():
        try:
            resource.setrlimit(getattr(resource, name), value)
            rl[name] = value[0]
        except (ValueError, OSError) as exc:
            prot["errors"][name] = str(exc)
    # writing past RLIMIT_FSIZE should be an OSError in the REPL, not a dead worker
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return rl


def _drop_privileges(setup, root, rl, prot):
    prot["dropped_privileges"] = False
    uid, gid = setup.get("uid"), setup.get("gid")
    if root and uid is not None:
        try:
            os.setgroups([])
            os.setgid(int(gid))
            os.setuid(int(uid))
            prot["dropped_privileges"] = os.getuid() != 0 and os.geteuid() != 0
        except OSError as exc:
            prot["errors"]["dropped_privileges"] = str(exc)
    elif setup.get("isolation"):
        # bubblewrap was started as the sandbox user and dropped every capability
        prot["dropped_privileges"] = os.geteuid() != 0 or _no_capabilities()
    try:
        # set after the uid change: the limit counts the *user's* processes,
        # and it does not bind root (CAP_SYS_RESOURCE), hence the report below
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        rl["RLIMIT_NPROC"] = 0
    except (ValueError, OSError) as exc:
        prot["errors"]["RLIMIT_NPROC"] = str(exc)
    prot["process_limit_binds"] = "RLIMIT_NPROC" in rl and (os.geteuid() != 0 or _no_capabilities())


def _no_capabilities():
    try:
        with open("/proc/self/status") as fh:
            caps = [line.split()[1] for line in fh if line.startswith("CapEff:")]
    except OSError:
        # no /proc under bubblewrap: ask the kernel for one capability that would matter
        return _libc().prctl(_PR_CAPBSET_READ, 21, 0, 0, 0) == 0  # CAP_SYS_ADMIN not in the bounding set
    return bool(caps) and int(caps[0], 16) == 0


def _seccomp(prot):
    """A deny-list seccomp filter through libseccomp (the maintained C library), via ctypes."""
    prot["seccomp"] = False
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        prot["errors"]["seccomp"] = "libseccomp is not available: %s" % exc
        return
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        prot["errors"]["seccomp"] = "seccomp_init failed"
        return
    denied = []
    try:
        for name in _SECCOMP_DENY:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr >= 0 and lib.seccomp_rule_add(ctx, _SCMP_ACT_ERRNO | errno.EPERM, nr, 0) == 0:
                denied.append(name)
        rc = lib.seccomp_load(ctx)
    finally:
        lib.seccomp_release(ctx)
    if rc != 0:
        prot["errors"]["seccomp"] = "seccomp_load failed: %s" % os.strerror(-rc)
        return
    prot["seccomp"] = True
    prot["seccomp_denied"] = denied


def _audit_fallback(prot):
    """An in-process audit hook, only for what the OS layers could not stop."""
    blocked = []
    if not prot["network_namespace"]:
        blocked += ["socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"]
    if not prot["process_limit_binds"]:
        blocked += ["os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn",
                    "os.spawn", "subprocess.Popen", "pty.spawn"]
    if blocked:
        blocked_set = frozenset(blocked)

        def _hook(event, args, _blocked=blocked_set):
            if event in _blocked:
                raise PermissionError("blocked by the sandbox: " + event)

        sys.addaudithook(_hook)
    prot["audit_hook_blocks"] = blocked


def _apply_protections(setup):
    """Apply what the host asked for; return an honest report of what is in force."""
    prot = {"errors": {}}
    libc = _libc()
    root = os.geteuid() == 0
    if setup.get("isolation"):
        _outer_isolation(prot)
    else:
        _namespaces(setup, libc, root, prot)
    os.chdir(setup["workdir"])
    rl = _rlimits(setup, prot)
    _drop_privileges(setup, root, rl, prot)
    prot["rlimits"] = rl
    prot["no_new_privs"] = False
    try:
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        prot["no_new_privs"] = libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    except (AttributeError, OSError) as exc:
        prot["errors"]["no_new_privs"] = str(exc)
    if setup.get("seccomp", True):
        _seccomp(prot)
    else:
        prot["seccomp"] = False
    _audit_fallback(prot)
    prot["uid"] = os.getuid()
    # Python itself may add LC_CTYPE (PEP 538 locale coercion); nothing of the host's is passed
    prot["environment_keys"] = sorted(os.environ)
    prot["isolated_interpreter"] = bool(sys.flags.isolated)
    prot["python"] = sys.version.split()[0]
    return prot


# --------------------------------------------------------------------------- REPL


class _Final(BaseException):
    """Raised by FINAL/FINAL_VAR to stop the cell (not an Exception: plain ``except Exception`` won't eat it)."""


class _CappedWriter(io.TextIOBase):
    """stdout/stderr of a cell: keeps the first ``cap`` characters, counts the rest."""

    def __init__(self, cap):
        self.parts, self.size, self.dropped, self.cap = [], 0, 0, cap

    def write(self, s):
        s = str(s)
        room = self.cap - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def getvalue(self):
        text = "".join(self.parts)
        if self.dropped:
            text += "\n... [%d more characters of output dropped]" % self.dropped
        return text


def _format_error(exc):
    """Traceback of the model's code only: frames of this file are noise to the model."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__][-6:]
    text = "".join(traceback.format_list(frames))
    head = "Traceback (most recent call last):\n" if frames else ""
    return head + text + "".join(traceback.format_exception_only(type(exc), exc))


class _Repl:
    def __init__(self, rx, tx, proto, strategies):
        self.rx, self.tx, self.proto, self.strat = rx, tx, proto, strategies
        self.final = None
        self.final_kind = None
        self.next_id = 0
        self.timeout = None

        class SubCallError(Exception):
            """A sub-call failed (backend error, bad reply)."""

        class SubCallTooLarge(SubCallError):
            """The sub-call's prompt + context_slice exceeds the host's per-call size limit."""

        class BudgetExceeded(SubCallError):
            """A host-side budget (calls, tokens, time) is used up."""

        self.errors = {"SubCallError": SubCallError, "SubCallTooLarge": SubCallTooLarge,
                       "BudgetExceeded": BudgetExceeded}
        self.ns = {"__name__": "__repl__", "__builtins__": builtins}

    # -- RPC -------------------------------------------------------------

    def send(self, msg):
        self.tx.write(self.proto.encode(msg))
        self.tx.flush()

    def recv(self):
        return self.proto.decode(self.rx.readline(self.proto.MAX_MESSAGE_BYTES + 1), self.proto.HOST_TYPES)

    def _rpc(self, items):
        # the per-cell timer must not tick while the host works on our behalf
        remaining = signal.setitimer(signal.ITIMER_REAL, 0)[0]
        try:
            self.next_id += 1
            self.send({"type": "llm", "id": self.next_id, "items": items})
            msg = self.recv()
            if msg["type"] != "llm_result" or msg.get("id") != self.next_id:
                raise RuntimeError("sandbox protocol: unexpected reply to llm request")
            return msg["results"]
        finally:
            if remaining > 0:
                signal.setitimer(signal.ITIMER_REAL, remaining)

    def _to_error(self, res):
        cls = self.errors.get(res.get("error"), self.errors["SubCallError"])
        return cls(res.get("message", "sub-call failed"))

    def _item(self, prompt, context_slice, recursive, max_new_tokens):
        if not isinstance(prompt, str):
            raise TypeError("llm(): prompt must be a str, got %s" % type(prompt).__name__)
        if context_slice is not None and not isinstance(context_slice, str):
            context_slice = self.strat.flatten(context_slice)
        return {"prompt": prompt, "slice": context_slice, "recursive": bool(recursive),
                "max_new_tokens": max_new_tokens}

    def llm(self, prompt, context_slice=None, recursive=False, max_new_tokens=None):
        """One sub-call; raises SubCallTooLarge / BudgetExceeded / SubCallError."""
        res = self._rpc([self._item(prompt, context_slice, recursive, max_new_tokens)])[0]
        if not res.get("ok"):
            raise self._to_error(res)
        return res["text"]

    def llm_batch(self, prompts, recursive=False, max_new_tokens=None):
        """Many sub-calls at once; order kept; a failed item is an exception *object*."""
        items = []
        for p in prompts:
            if isinstance(p, (tuple, list)) and len(p) == 2:
                items.append(self._item(p[0], p[1], recursive, max_new_tokens))
            else:
                items.append(self._item(p, None, recursive, max_new_tokens))
        if not items:
            return []
        return [r["text"] if r.get("ok") else self._to_error(r) for r in self._rpc(items)]

    def FINAL(self, value):
        self.final, self.final_kind = str(value), "FINAL"
        raise _Final()

    def FINAL_VAR(self, name):
        if not isinstance(name, str):
            # lenient: FINAL_VAR(answer) with the value itself
            self.final, self.final_kind = str(name), "FINAL_VAR"
            raise _Final()
        if name not in self.ns:
            raise NameError("FINAL_VAR: no variable named %r in the REPL" % name)
        self.final, self.final_kind = str(self.ns[name]), "FINAL_VAR"
        raise _Final()

    # -- cells -----------------------------------------------------------

    def init(self, msg):
        context = msg["context"]
        env = self.strat.Env(context, msg.get("limits", {}), self.llm, self.llm_batch,
                             self.errors["SubCallError"])
        self.ns.update({
            "context": context, "context_text": env.context_text, "llm": self.llm,
            "llm_batch": self.llm_batch, "FINAL": self.FINAL, "FINAL_VAR": self.FINAL_VAR,
        })
        self.ns.update(self.errors)
        self.ns.update(self.strat.helpers(env))

    def _on_alarm(self, signum, frame):
        raise TimeoutError("cell exceeded its %.1f s time limit (stopped; variables kept)" % self.timeout)

    def run_cell(self, code, timeout):
        out = _CappedWriter(_STDOUT_CAP)
        saved = sys.stdout, sys.stderr
        self.final = self.final_kind = None
        self.timeout = timeout
        error = None
        sys.stdout = sys.stderr = out
        try:
            tree = ast.parse(code, "<cell>", "exec")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            signal.signal(signal.SIGALRM, self._on_alarm)
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            exec(compile(tree, "<cell>", "exec"), self.ns)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), self.ns)
                if value is not None:
                    print(repr(value))
        except _Final:
            pass
        except BaseException as exc:  # the sandbox boundary: everything goes back to the model
            signal.setitimer(signal.ITIMER_REAL, 0)
            error = _format_error(exc)
            if isinstance(exc, MemoryError):
                error += "(the REPL's memory limit was reached; free large variables with del)\n"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            sys.stdout, sys.stderr = saved
        return {"stdout": out.getvalue(), "error": error, "final": self.final, "final_kind": self.final_kind}

    def serve(self):
        while True:
            msg = self.recv()
            kind = msg["type"]
            if kind == "shutdown":
                return
            if kind == "init":
                self.init(msg)
                self.send({"type": "inited"})
            elif kind == "exec":
                res = self.run_cell(msg["code"], msg.get("timeout"))
                res.update({"type": "result", "id": msg.get("id")})
                self.send(res)
            elif kind == "get_var":
                name = msg.get("name")
                if isinstance(name, str) and name in self.ns:
                    self.send({"type": "var", "id": msg.get("id"), "ok": True, "value": str(self.ns[name])})
                else:
                    self.send({"type": "var", "id": msg.get("id"), "ok": False,
                               "error": "no variable named %r in the REPL" % (name,)})


def main():
    rx = os.fdopen(os.dup(0), "rb")
    tx = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    proto = _load("protocol")
    strategies = _load("strategies")
    setup = proto.decode(rx.readline(proto.MAX_MESSAGE_BYTES + 1), proto.HOST_TYPES)
    prot = _apply_protections(setup)
    repl = _Repl(rx, tx, proto, strategies)
    repl.send({"type": "ready", "protections": prot})
    repl.serve()


if __name__ == "__main__":
    main()
