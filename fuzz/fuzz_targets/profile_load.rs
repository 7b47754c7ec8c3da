//! Arbitrary bytes as a profile file: `profile::load` must return Ok or a located error,
//! never panic, hang or allocate without bound.
#![no_main]

use std::path::PathBuf;

use agent_sandbox::profile::{self, LoadOptions};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().expect("tempdir");
}

fuzz_target!(|data: &[u8]| {
    DIR.with(|dir| {
        // `load` takes a file (that is what users give it); one file, rewritten per input.
        let path = dir.path().join("fuzz.toml");
        std::fs::write(&path, data).expect("write input");
        let opts = LoadOptions {
            home: PathBuf::from("/nonexistent/home"),
            workspace: PathBuf::from("/nonexistent/workspace"),
            tmpdir: PathBuf::from("/nonexistent/tmp"),
            user: "fuzz".into(),
        };
        if let Ok(policy) = profile::load(path.to_str().expect("utf-8 temp path"), &opts) {
            // A policy that loads renders back to a profile (`agentbox profile show`).
            let _ = profile::to_toml(&policy, None, &[]);
        }
    });
});
