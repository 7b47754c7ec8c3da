//! The workspace scope: approvals a person gave "for this workspace", kept outside it, in
//! `~/.local/state/agentbox/approvals/<hash of the workspace path>.toml`, so later runs in
//! the same workspace that ask (`--ask net`) start with them, `agentbox profile show` lists
//! them, and the agent, which cannot write there, cannot add its own. Keyed by destination,
//! never by program name; each with an optional expiry. Delete an entry to revoke it.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// One workspace's approvals file.
#[derive(Debug, Clone)]
pub struct WorkspaceApprovals {
    path: PathBuf,
    workspace: PathBuf,
}

/// One lasting approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approved {
    /// `tcp 192.0.2.7:443`, as leases key it.
    pub destination: String,
    /// Who decided, when (Unix seconds), and until when (None: no expiry).
    pub by: String,
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    workspace: PathBuf,
    #[serde(default)]
    approved: Vec<Approved>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-12-02T20:15:00Z`.
pub fn show_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

impl WorkspaceApprovals {
    /// The file for `workspace` (made absolute and resolved, so `.` and a symlinked path
    /// name the same workspace) under `home`.
    pub fn for_workspace(home: &Path, workspace: &Path) -> WorkspaceApprovals {
        let workspace = std::fs::canonicalize(workspace).unwrap_or_else(|_| workspace.into());
        let digest = sha2::Sha256::digest(workspace.as_os_str().as_encoded_bytes());
        let name = format!("{}.toml", hex::encode(&digest[..8]));
        WorkspaceApprovals {
            path: home.join(".local/state/agentbox/approvals").join(name),
            workspace,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// The approvals not yet expired. No file: none. A file another user could write, or
    /// one for another workspace (a hash collision, a copied file), is refused.
    pub fn load(&self) -> anyhow::Result<Vec<Approved>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let meta = std::fs::metadata(&self.path)?;
        if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
            bail!(
                "{}: not used: it must belong to you and be writable only by you (another \
                 user could add approvals)",
                self.path.display()
            );
        }
        let file: FileText =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))?;
        if file.workspace != self.workspace {
            bail!(
                "{}: holds approvals for {}, not {}",
                self.path.display(),
                file.workspace.display(),
                self.workspace.display()
            );
        }
        let now = unix_now();
        Ok(file
            .approved
            .into_iter()
            .filter(|a| a.until.is_none_or(|u| u > now))
            .collect())
    }

    /// Adds (or renews) one approval: the file is rewritten whole, through a temporary file
    /// and a rename, so a run that stops midway leaves the old file or the new one.
    pub(crate) fn add(&self, approved: Approved) -> anyhow::Result<()> {
        let dir = self.path.parent().expect("a file under a directory");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let mut all: Vec<Approved> = self
            .load()?
            .into_iter()
            .filter(|a| a.destination != approved.destination)
            .collect();
        all.push(approved);
        let tmp = self
            .path
            .with_extension(format!("toml.{}", std::process::id()));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        out.write_all(self.render(&all).as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        Ok(())
    }

    /// The file's text: a header, then the entries (times in Unix seconds; `agentbox
    /// profile show` prints them as dates).
    fn render(&self, all: &[Approved]) -> String {
        let file = FileText {
            workspace: self.workspace.clone(),
            approved: all.to_vec(),
        };
        format!(
            "# agentbox: connections approved \"for this workspace\" during runs with --ask.\n\
             # Later runs here that ask start with them; delete an entry to revoke it.\n{}",
            toml::to_string(&file).expect("approvals serialise")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvals_are_kept_per_workspace_renewed_and_expired() {
        let home = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let store = WorkspaceApprovals::for_workspace(home.path(), ws.path());
        assert!(store.load().unwrap().is_empty());
        let now = unix_now();
        let entry = |dest: &str, until: Option<u64>| Approved {
            destination: dest.into(),
            by: "terminal \"quoted\"".into(),
            at: now,
            until,
        };
        store.add(entry("tcp 192.0.2.7:443", None)).unwrap();
        store
            .add(entry("tcp 192.0.2.8:443", Some(now - 1)))
            .unwrap();
        store
            .add(entry("tcp 192.0.2.7:443", Some(now + 60)))
            .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded, vec![entry("tcp 192.0.2.7:443", Some(now + 60))]);
        let mode = std::fs::metadata(store.path()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another workspace has a file of its own.
        let elsewhere = WorkspaceApprovals::for_workspace(home.path(), other.path());
        assert_ne!(elsewhere.path(), store.path());
        assert!(elsewhere.load().unwrap().is_empty());
        // A file copied to another workspace's name is refused.
        std::fs::create_dir_all(elsewhere.path().parent().unwrap()).unwrap();
        std::fs::copy(store.path(), elsewhere.path()).unwrap();
        let e = elsewhere.load().unwrap_err().to_string();
        assert!(e.contains("holds approvals for"), "{e}");
        // One others could write is refused.
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o622)).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("writable only by you"), "{e}");
    }
}
