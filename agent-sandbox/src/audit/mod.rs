//! Audit: one `Event` type, sources push, sinks consume. Sinks never know about layers.
//!
//! `AuditLog` is the single writer of a run's log (JSON Lines, hash-chained, see
//! docs/events.md); after each line is in the file it hands the record to its `Sink`s
//! (`TerminalSink` for live stderr lines). `verify` checks a finished or running log.

pub mod event;
pub mod journal;
pub mod learn;
mod log;
pub mod report;
mod terminal;
mod verify;

use std::io;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub use event::{
    Action, ApprovalEvent, Denial, Event, GuaranteeState, Object, ProcessEvent, ProcessKind,
    Record, SCHEMA_VERSION,
};
pub use journal::JournalSink;
pub use log::AuditLog;
pub use terminal::{allow_hint, denial_line, describe, sanitize, TerminalSink};
pub use verify::{verify, verify_with_head, VerifyError, VerifyReport};

/// `prev` of the first record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Consumes records after `AuditLog` has written them. `line` is the exact JSON line (no
/// newline) as it is in the log, for sinks that forward it verbatim.
pub trait Sink {
    fn record(&mut self, rec: &Record, line: &str) -> io::Result<()>;

    /// A clause for the run's summary line (`12,345 denials not shown live`), if any.
    fn summary_note(&self) -> Option<String> {
        None
    }
}

/// Hex SHA-256 of one log line's bytes, without its newline: the next record's `prev`.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// Hex SHA-256 of the policy's serde_json serialisation (struct field order, `BTreeMap`s:
/// the same policy always gives the same bytes).
pub fn policy_hash(policy: &crate::policy::Policy) -> String {
    // Serialising plain data with string keys cannot fail; hash the error text rather than
    // panic if it ever does, so the value still differs from any real policy's hash.
    let bytes =
        serde_json::to_vec(policy).unwrap_or_else(|e| format!("unserialisable: {e}").into_bytes());
    hex::encode(Sha256::digest(bytes))
}

/// A new sandbox id: 16 hex chars from time, pid, a counter and 16 bytes of /dev/urandom.
///
/// It only has to be unique (it names a run in logs), not secret, so if /dev/urandom is
/// unreadable time + pid + counter still separate runs. Hand-written: no rand crate needed.
pub fn new_sandbox_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let mut random = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(&mut random).is_ok() {
            h.update(random);
        }
    }
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
pub(crate) mod bench;
#[cfg(test)]
mod tests;
