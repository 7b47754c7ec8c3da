//! Workload tier: what coding agents run all day, each run bare first (so a failure here is
//! agentbox's, not the machine's), then under the built-in profile a user would pick, as root
//! and as nobody, with no flags. Every workload prints a marker its run must show.

use std::process::Command;

use agentbox_tests::{RunAs, Scenario, NOBODY};

/// Runs `script` with sh in the scenario's workspace without agentbox, as its user.
fn bare(s: &Scenario, script: &str) -> String {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script])
        .current_dir(&s.workspace)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &s.home)
        .env("TMPDIR", &s.tmp);
    if s.run_as == RunAs::Nobody {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let out = cmd.output().expect("run the workload bare");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the workload fails even without agentbox: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The workload bare, then under `profile`: both must succeed and print `marker`.
fn works(profile: &str, setup: impl Fn(&Scenario), script: &str, marker: &str) {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        setup(&s);
        s.fix_ownership();
        assert!(
            bare(&s, script).contains(marker),
            "{run_as:?}: bare run lacks {marker}"
        );
        // A fresh tree for the sandboxed run: nothing left over from the bare one.
        let s = Scenario::new(run_as);
        setup(&s);
        s.fix_ownership();
        let r = s.run(&["-q", "--profile", profile], &["/bin/sh", "-c", script]);
        assert_eq!(
            r.code(),
            Some(0),
            "{run_as:?} under {profile}: {}",
            r.dump()
        );
        assert!(
            r.stdout.contains(marker),
            "{run_as:?} under {profile}: no {marker}: {}",
            r.dump()
        );
    }
}

#[test]
fn workload_cc_and_make_build_and_run_in_the_workspace() {
    works(
        "default",
        |s| {
            s.plant_in_workspace(
                "hello.c",
                "#include <stdio.h>\nint main(void){puts(\"built-and-ran\");return 0;}\n",
            );
            s.plant_in_workspace(
                "Makefile",
                "hello: hello.c\n\tcc -o hello hello.c\ntest: hello\n\t./hello\n",
            );
        },
        "make -s test",
        "built-and-ran",
    );
}

#[test]
fn workload_python_multiprocessing_under_the_python_profile() {
    works(
        "python",
        |_| {},
        "/usr/bin/python3 -c \"import multiprocessing as mp\n\
         if __name__ == '__main__':\n\
         \x20   with mp.Pool(2) as p: print('pool', sum(p.map(abs, [-1, -2, 3])))\n\
         \x20   q = mp.Queue(); q.put('queue-ok'); print(q.get())\"",
        "queue-ok",
    );
}

#[test]
fn workload_pkill_of_its_own_background_job() {
    works(
        "default",
        |_| {},
        // The job's name is built at run time and the pattern has `[x]`: the shell's own
        // command line matches neither.
        "n=x7; /usr/bin/python3 -c 'import time; time.sleep(300)' agentbox-bg-$n & \
         sleep 0.3; pkill -f 'agentbox-bg-[x]7' && echo pkill-found-its-job; wait; true",
        "pkill-found-its-job",
    );
}

#[test]
fn workload_git_init_commit_branch_merge() {
    works(
        "default",
        |_| {},
        "set -e; export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@x.invalid \
         GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@x.invalid; git init -q -b main .; \
         echo 1 > f; git add f; git commit -qm one; git checkout -qb topic; echo 2 > f; \
         git commit -qam two; git checkout -q main; git merge -q topic; git stash list; \
         git log --oneline | wc -l | grep -q 2 && echo git-history-ok",
        "git-history-ok",
    );
}

#[test]
fn workload_file_watcher_sees_changes_in_the_workspace() {
    works(
        "default",
        |_| {},
        "/usr/bin/python3 -c \"import ctypes, os, select\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         fd = libc.inotify_init1(0)\n\
         assert libc.inotify_add_watch(fd, b'.', 0x100) > 0, os.strerror(ctypes.get_errno())\n\
         open('new.txt', 'w').write('x')\n\
         r, _, _ = select.select([fd], [], [], 5)\n\
         assert r and b'new.txt' in os.read(fd, 4096)\n\
         print('watch-saw-event')\"",
        "watch-saw-event",
    );
}

#[test]
fn workload_venv_and_pip_install_of_a_local_package() {
    works(
        "python",
        |s| {
            // setup.py, not pyproject.toml: Debian's venv has setuptools but no `wheel`,
            // and the test has no index to fetch it from.
            s.plant_in_workspace(
                "pkg/setup.py",
                "from setuptools import setup\n\
                 setup(name='abpkg', version='0.1', packages=['abpkg'])\n",
            );
            s.plant_in_workspace("pkg/abpkg/__init__.py", "MARK = 'pip-installed-it'\n");
        },
        "/usr/bin/python3 -m venv .venv && \
         .venv/bin/pip install -q --no-index --no-build-isolation ./pkg && \
         .venv/bin/python -c 'import abpkg; print(abpkg.MARK)'",
        "pip-installed-it",
    );
}

#[test]
fn workload_npm_install_of_a_local_package_and_npm_test() {
    works(
        "node",
        |s| {
            s.plant_in_workspace(
                "dep/package.json",
                "{\"name\": \"abdep\", \"version\": \"1.0.0\", \"bin\": {\"abdep\": \"cli.js\"}}\n",
            );
            s.plant_in_workspace(
                "dep/cli.js",
                "#!/usr/bin/env node\nconsole.log('npm-bin-ran');\n",
            );
            s.plant_in_workspace(
                "app/package.json",
                "{\"name\": \"app\", \"version\": \"1.0.0\", \
                 \"scripts\": {\"test\": \"abdep\"}, \
                 \"dependencies\": {\"abdep\": \"file:../dep\"}}\n",
            );
        },
        "cd app && npm install --offline --no-audit --no-fund -q && npm test --silent",
        "npm-bin-ran",
    );
}

#[test]
fn workload_python_unittest_discovers_and_runs_the_workspace_tests() {
    works(
        "python",
        |s| {
            s.plant_in_workspace("calc.py", "def add(a, b):\n    return a + b\n");
            s.plant_in_workspace(
                "tests/test_calc.py",
                "import unittest\nimport calc\n\n\
                 class T(unittest.TestCase):\n    def test_add(self):\n        \
                 self.assertEqual(calc.add(2, 3), 5)\n",
            );
            s.plant_in_workspace("tests/__init__.py", "");
        },
        "/usr/bin/python3 -m unittest discover -s tests -t . 2>&1 && echo unittest-passed",
        "unittest-passed",
    );
}

/// A dev server and its client: the server binds the port `--allow-bind`-free profiles give
/// no inbound for, so the profile line that allows it is part of the workload.
#[test]
fn workload_http_server_with_a_client_on_loopback() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        s.plant_in_workspace("index.html", "served-by-http-server\n");
        s.fix_ownership();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = format!(
            "/usr/bin/python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 & srv=$!; \
             for i in $(seq 50); do \
             /usr/bin/python3 -c \"import urllib.request as u; \
             print(u.urlopen('http://127.0.0.1:{port}/index.html').read().decode())\" \
             2>/dev/null && break; sleep 0.1; done; kill $srv"
        );
        assert!(
            bare(&s, &script).contains("served-by-http-server"),
            "{run_as:?}: bare"
        );
        let s = Scenario::new(run_as);
        s.plant_in_workspace("index.html", "served-by-http-server\n");
        s.fix_ownership();
        let r = s.run(
            &[
                "-q",
                "--profile",
                "python",
                "--allow-bind",
                &port.to_string(),
                "--allow-net",
                &format!("127.0.0.1:{port}"),
            ],
            &["/bin/sh", "-c", &script],
        );
        assert!(
            r.stdout.contains("served-by-http-server"),
            "{run_as:?}: {}",
            r.dump()
        );
    }
}

/// An offline cargo build and run under the rust profile. The machine's only Rust toolchain
/// is root's (/root/.rustup, mode 0700), so this runs as root only: the toolchain is taken
/// from its install directory and CARGO_HOME is the scenario's own, as a fresh user's is.
#[test]
fn workload_offline_cargo_build_and_run_under_the_rust_profile() {
    if !agentbox_tests::is_root() {
        eprintln!("skipped: the only Rust toolchain here is root's");
        return;
    }
    let toolchain =
        std::path::Path::new("/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin");
    if !toolchain.join("cargo").exists() {
        eprintln!("skipped: no stable toolchain in /root/.rustup");
        return;
    }
    let mut s = Scenario::new(RunAs::Current);
    s.plant_in_workspace(
        "hello/Cargo.toml",
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    s.plant_in_workspace(
        "hello/src/main.rs",
        "fn main() { println!(\"cargo-built-and-ran\"); }\n",
    );
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", toolchain.display());
    let cargo_home = s.home.join(".cargo");
    s.env.push(("PATH".into(), path.into()));
    s.env
        .push(("CARGO_HOME".into(), cargo_home.to_str().unwrap().into()));
    s.env.push(("RUSTUP_HOME".into(), "/root/.rustup".into()));
    let script = "cd hello && cargo build --offline -q && ./target/debug/hello";
    let r = s.run(
        &[
            "-q",
            "--profile",
            "rust",
            "--allow-exec",
            "/root/.rustup",
            "--allow-read",
            "/root/.rustup",
        ],
        &["/bin/sh", "-c", script],
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    assert!(r.stdout.contains("cargo-built-and-ran"), "{}", r.dump());
}

/// What `pip wheel` would have built, assembled with the standard library (no `wheel`
/// package and no index on the test machines): a pure-Python wheel with a hashed RECORD.
const MAKE_WHEEL: &str = r#"import base64, hashlib, zipfile
files = {
    "abwheel/__init__.py": b"MARK = 'wheel-installed-it'\n",
    "abwheel-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: abwheel\nVersion: 1.0\n",
    "abwheel-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: agentbox-test\n"
    b"Root-Is-Purelib: true\nTag: py3-none-any\n",
}

def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

record = "".join(f"{name},{digest(data)},{len(data)}\n" for name, data in files.items())
record += "abwheel-1.0.dist-info/RECORD,,\n"
with zipfile.ZipFile("dist/abwheel-1.0-py3-none-any.whl", "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
    z.writestr("abwheel-1.0.dist-info/RECORD", record)
"#;

#[test]
fn workload_venv_and_pip_install_of_a_local_wheel() {
    works(
        "python",
        |s| {
            s.plant_in_workspace("mkwheel.py", MAKE_WHEEL);
        },
        "mkdir -p dist && /usr/bin/python3 mkwheel.py && /usr/bin/python3 -m venv .venv && \
         .venv/bin/pip install -q --no-index ./dist/abwheel-1.0-py3-none-any.whl && \
         .venv/bin/python -c 'import abwheel; print(abwheel.MARK)'",
        "wheel-installed-it",
    );
}
