//! `verify`: check that a log is exactly what `AuditLog` wrote, line by line.
//!
//! The chain proves the order and content of every line except the last one relative to the
//! lines after it; the last line and truncation are only detectable against an anchored head
//! (`VerifyReport::head`, compared by `agentbox audit verify --head`).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::event::{Event, Record, SCHEMA_VERSION};
use super::{line_hash, GENESIS_PREV};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub sandbox: String,
    /// Denial records (every action, including audit-only).
    pub denials: u64,
    /// Events reported lost by `Loss` records.
    pub lost: u64,
    /// Hex SHA-256 of the last line: the chain head.
    pub head: String,
    /// The last record is `Exit`. False: the run is still going, the supervisor died, or the
    /// log was truncated at a line boundary.
    pub complete: bool,
    /// Inconsistencies that do not break the chain (an `Exit` whose denial count differs).
    pub warnings: Vec<String>,
}

/// What is wrong, and where. Line numbers are 1-based, as editors and `sed -n Np` count.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("empty log: no records")]
    Empty,
    #[error("line {line}: torn last line (no trailing newline): the writer died mid-write or the file was cut")]
    TornLastLine { line: u64 },
    #[error("line {line}: bad JSON: {msg}")]
    BadJson { line: u64, msg: String },
    #[error("line {line}: unsupported schema version {found} (this agentbox reads version {SCHEMA_VERSION})")]
    Version { line: u64, found: String },
    #[error("line {line}: not a valid record: {msg}")]
    BadRecord { line: u64, msg: String },
    #[error("line {line}: bad timestamp {ts:?}")]
    BadTimestamp { line: u64, ts: String },
    #[error("line {line}: seq gap: expected seq {expected}, found {found} (lines removed, inserted or reordered)")]
    SeqGap {
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error("{}", broken_chain(*line))]
    BrokenChain { line: u64 },
    #[error("line {line}: sandbox {found:?} differs from {expected:?} on line 1 (logs mixed)")]
    SandboxMismatch {
        line: u64,
        expected: String,
        found: String,
    },
    #[error("chain head {found} differs from the expected {expected} (the log was truncated or its last line changed)")]
    HeadMismatch { expected: String, found: String },
}

fn broken_chain(line: u64) -> String {
    if line == 1 {
        "broken chain at line 1: prev is not the genesis value (64 zeros): lines were removed from the start".to_string()
    } else {
        format!(
            "broken chain at line {line}: prev does not match the hash of line {} (line {} was modified, or lines were removed or reordered)",
            line - 1,
            line - 1
        )
    }
}

impl VerifyError {
    /// The 1-based line the error is about, when it is about one.
    pub fn line(&self) -> Option<u64> {
        match self {
            VerifyError::TornLastLine { line }
            | VerifyError::BadJson { line, .. }
            | VerifyError::Version { line, .. }
            | VerifyError::BadRecord { line, .. }
            | VerifyError::BadTimestamp { line, .. }
            | VerifyError::SeqGap { line, .. }
            | VerifyError::BrokenChain { line }
            | VerifyError::SandboxMismatch { line, .. } => Some(*line),
            VerifyError::Io { .. } | VerifyError::Empty | VerifyError::HeadMismatch { .. } => None,
        }
    }
}

/// Verifies a whole log: JSON, schema version, seq from 0 without gaps, the prev-hash chain, a
/// single sandbox id, and a newline after the last line.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    let io_err = |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut reader = BufReader::new(file);
    let mut verifier = Verifier::default();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io_err)? == 0 {
            break;
        }
        let line_no = verifier.records + 1;
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err(VerifyError::TornLastLine { line: line_no });
        };
        verifier.line(line_no, line)?;
    }
    verifier.finish()
}

/// Like `verify`, and the chain head must equal `expected_head` (anchored elsewhere).
pub fn verify_with_head(path: &Path, expected_head: &str) -> Result<VerifyReport, VerifyError> {
    let report = verify(path)?;
    if !report.head.eq_ignore_ascii_case(expected_head.trim()) {
        return Err(VerifyError::HeadMismatch {
            expected: expected_head.trim().to_string(),
            found: report.head,
        });
    }
    Ok(report)
}

#[derive(Default)]
struct Verifier {
    records: u64,
    sandbox: Option<String>,
    prev: Option<String>,
    denials: u64,
    lost: u64,
    last_was_exit: bool,
    warnings: Vec<String>,
}

impl Verifier {
    fn line(&mut self, line_no: u64, line: &[u8]) -> Result<(), VerifyError> {
        // Two steps, so a newer schema is named as such rather than as a parse error.
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| VerifyError::BadJson {
                line: line_no,
                msg: e.to_string(),
            })?;
        match value.get("v") {
            Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
            found => {
                let found = found.map_or("(missing)".to_string(), |v| v.to_string());
                return Err(VerifyError::Version {
                    line: line_no,
                    found,
                });
            }
        }
        let rec: Record = serde_json::from_value(value).map_err(|e| VerifyError::BadRecord {
            line: line_no,
            msg: e.to_string(),
        })?;

        if humantime::parse_rfc3339(&rec.ts).is_err() {
            return Err(VerifyError::BadTimestamp {
                line: line_no,
                ts: rec.ts,
            });
        }
        if rec.seq != self.records {
            return Err(VerifyError::SeqGap {
                line: line_no,
                expected: self.records,
                found: rec.seq,
            });
        }
        let expected_prev = self.prev.as_deref().unwrap_or(GENESIS_PREV);
        if rec.prev != expected_prev {
            return Err(VerifyError::BrokenChain { line: line_no });
        }
        match &self.sandbox {
            None => self.sandbox = Some(rec.sandbox.clone()),
            Some(s) if *s != rec.sandbox => {
                return Err(VerifyError::SandboxMismatch {
                    line: line_no,
                    expected: s.clone(),
                    found: rec.sandbox,
                })
            }
            Some(_) => {}
        }

        match &rec.event {
            Event::Denial(_) => self.denials += 1,
            Event::Loss { count, .. } => self.lost += count,
            Event::Exit { denials, .. } if *denials != self.denials => self.warnings.push(format!(
                "line {line_no}: exit record says {denials} denials, the log holds {}",
                self.denials
            )),
            _ => {}
        }
        self.last_was_exit = matches!(rec.event, Event::Exit { .. });
        self.prev = Some(line_hash(line));
        self.records += 1;
        Ok(())
    }

    fn finish(self) -> Result<VerifyReport, VerifyError> {
        let (Some(sandbox), Some(head)) = (self.sandbox, self.prev) else {
            return Err(VerifyError::Empty);
        };
        Ok(VerifyReport {
            records: self.records,
            sandbox,
            denials: self.denials,
            lost: self.lost,
            head,
            complete: self.last_was_exit,
            warnings: self.warnings,
        })
    }
}
