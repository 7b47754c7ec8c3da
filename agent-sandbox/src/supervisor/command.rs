//! The agent's command line and environment, built in the parent before fork so that the child
//! only passes ready pointers to execve.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where execvp looks when PATH is unset (glibc's default, minus the cwd).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Everything execve needs, with NULL-terminated pointer arrays into owned strings.
pub(crate) struct ExecSpec {
    pub path: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl ExecSpec {
    pub(super) fn new(
        command: &[String],
        env: Vec<(OsString, OsString)>,
    ) -> anyhow::Result<ExecSpec> {
        let program = command.first().context("no command given")?;
        let env_path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        let path = resolve(program, env_path.as_deref());
        let path = CString::new(path.into_os_string().into_vec())
            .context("command contains a NUL byte")?;
        let argv = command
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .context("argument contains a NUL byte")?;
        let envp = env
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                CString::new(kv)
            })
            .collect::<Result<Vec<_>, _>>()
            .context("environment contains a NUL byte")?;
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        Ok(ExecSpec {
            path,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
        })
    }

    /// Child side: execve; returns only on failure, with errno.
    pub(super) fn exec(&self) -> i32 {
        // SAFETY: every pointer refers to a NUL-terminated string owned by `self`, and both
        // arrays end with NULL; `self` outlives the call (which only returns on failure).
        unsafe {
            libc::execve(
                self.path.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            )
        };
        super::proto::errno()
    }
}

/// execvp's search, done in the parent: a name with a slash is used as is; otherwise the first
/// PATH entry holding an executable regular file wins. When nothing matches, the bare name is
/// returned so that execve itself reports ENOENT (or EACCES for a non-executable match).
fn resolve(program: &str, path_var: Option<&OsStr>) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let search = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut first_non_exec = None;
    for dir in std::env::split_paths(search) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return candidate,
            Ok(m) if m.is_file() => {
                first_non_exec.get_or_insert(candidate);
            }
            _ => {}
        }
    }
    first_non_exec.unwrap_or_else(|| Path::new(program).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_through_path() {
        assert_eq!(
            resolve("sh", Some(OsStr::new("/nonexistent:/bin"))),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            resolve("no-such-cmd-xyz", Some(OsStr::new("/bin"))),
            PathBuf::from("no-such-cmd-xyz")
        );
        assert_eq!(resolve("./x", None), PathBuf::from("./x"));
    }
}
