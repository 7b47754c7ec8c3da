//! Arbitrary bytes as an audit log: `audit::verify` must report Ok or the first bad line,
//! never panic, hang or allocate without bound.
#![no_main]

use agent_sandbox::audit;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().expect("tempdir");
}

fuzz_target!(|data: &[u8]| {
    DIR.with(|dir| {
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, data).expect("write input");
        match audit::verify(&path) {
            Ok(report) => {
                // What verify accepted, it accepts again anchored at its own head.
                assert!(audit::verify_with_head(&path, &report.head).is_ok());
                assert!(report.records > 0);
            }
            Err(e) => {
                let _ = e.to_string();
                let _ = e.line();
            }
        }
    });
});
