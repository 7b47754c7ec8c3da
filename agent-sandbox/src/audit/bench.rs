//! Throughput of the log writer under a flood of denials, in records per second.
//!
//! `measure_*` checks what each configuration wrote (runs in every test pass, small);
//! `flood_throughput` prints the numbers (release build, ignored by default):
//! `cargo test --release -p agent-sandbox --lib audit::bench -- --ignored --nocapture`.
//! CPU time of this thread is reported beside wall time: on a shared 2-core machine the wall
//! clock mostly measures the neighbours.

use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

use sha2::Digest;

use super::*;

/// A cgroup-BPF connect denial as the kernel mapper builds it (376-byte line).
fn flood_denial(i: u64) -> Event {
    Event::Denial(Denial {
        layer: "cgroup-bpf".into(),
        rule: "network.deny: 127.0.0.0/8:* 127.0.0.2:80".into(),
        action: Action::Denied,
        pid: 4243,
        ppid: Some(4242),
        exe: Some("/usr/bin/python3".into()),
        object: Object::Net {
            proto: "tcp".into(),
            addr: format!("127.0.{}.{}", (i >> 8) & 0xff, i & 0xff),
            port: 80,
        },
    })
}

/// CPU time of the calling thread (benchmarks here and in `layers::ebpf::events`).
pub(crate) fn thread_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// One `append` (one write(2)) per record.
    Single,
    /// `append_batch` of this many records.
    Batch(usize),
}

struct Measured {
    wall: Duration,
    cpu: Duration,
}

/// Appends `n` denials (plus launch and exit) and checks the log; returns the times of the
/// appends alone (events are built before the clock starts).
fn measure(mode: Mode, n: u64, terminal: bool) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.jsonl");
    let mut log = AuditLog::create(&path, "0123456789abcdef").unwrap();
    if terminal {
        // A real descriptor: each printed line costs its write(2), as on stderr.
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        log.add_sink(Box::new(TerminalSink::new(Box::new(null), false)));
    }
    log.append(Event::Anomaly {
        detail: "start".into(),
    })
    .unwrap();
    let events: Vec<Event> = (0..n).map(flood_denial).collect();
    let (wall, cpu) = (Instant::now(), thread_cpu());
    match mode {
        Mode::Single => {
            for event in events {
                log.append(event).unwrap();
            }
        }
        Mode::Batch(size) => {
            let mut events = events.into_iter();
            loop {
                // As the supervisor drains the rings: a Vec per batch.
                let batch: Vec<Event> = events.by_ref().take(size).collect();
                if batch.is_empty() {
                    break;
                }
                let len = batch.len() as u64;
                assert_eq!(log.append_batch(batch).unwrap(), len);
            }
        }
    }
    let measured = Measured {
        wall: wall.elapsed(),
        cpu: thread_cpu().saturating_sub(cpu),
    };
    assert_eq!(log.denials(), n);
    let report = verify(&path).unwrap();
    assert_eq!(report.records, n + 1);
    assert_eq!(report.denials, n);
    measured
}

#[test]
fn measure_writes_complete_logs_in_every_mode() {
    for terminal in [false, true] {
        for mode in [
            Mode::Single,
            Mode::Batch(1),
            Mode::Batch(64),
            Mode::Batch(10_000),
        ] {
            measure(mode, 1_000, terminal);
        }
    }
}

#[test]
#[ignore = "benchmark: cargo test --release -p agent-sandbox --lib audit::bench -- --ignored --nocapture"]
fn flood_throughput() {
    let n = 200_000;
    println!(
        "{n} denial records, best of 3; records/s by CPU time of the writer thread (by wall time)"
    );
    for terminal in [false, true] {
        for mode in [
            Mode::Single,
            Mode::Batch(64),
            Mode::Batch(1024),
            Mode::Batch(16_384),
        ] {
            let runs: Vec<Measured> = (0..3).map(|_| measure(mode, n, terminal)).collect();
            let best_cpu = runs.iter().map(|m| m.cpu).min().unwrap();
            let best_wall = runs.iter().map(|m| m.wall).min().unwrap();
            let rate = |d: Duration| n as f64 / d.as_secs_f64();
            println!(
                "{:>14} {:<14} {:>10.0} /s cpu ({:>10.0} /s wall)",
                format!("{mode:?}"),
                if terminal { "+ terminal" } else { "" },
                rate(best_cpu),
                rate(best_wall),
            );
        }
    }
}

/// Where a record's time goes (CPU ns per record for each step of `append_batch`).
#[test]
#[ignore = "benchmark: cargo test --release -p agent-sandbox --lib audit::bench -- --ignored --nocapture"]
fn record_cost_breakdown() {
    let n = 300_000u64;
    let events: Vec<Event> = (0..n).map(flood_denial).collect();
    let time = |what: &str, f: &mut dyn FnMut()| {
        let c = thread_cpu();
        f();
        let d = thread_cpu() - c;
        println!("{what:>20}: {:>6.0} ns", d.as_nanos() as f64 / n as f64);
    };
    let mut buf = Vec::with_capacity(4096);
    time("serialise event", &mut || {
        for e in &events {
            buf.clear();
            serde_json::to_writer(&mut buf, e).unwrap();
        }
    });
    let line = buf.clone();
    time("sha256+hex", &mut || {
        let mut out = [0u8; 64];
        for _ in 0..n {
            hex::encode_to_slice(sha2::Sha256::digest(&line), &mut out).unwrap();
        }
    });
    let mut v = Vec::new();
    time("systemtime now", &mut || {
        for _ in 0..n {
            v.push(std::time::SystemTime::now());
        }
    });
    let mut evs = Some(events.clone());
    time("drop events", &mut || drop(evs.take()));
    time("clone events", &mut || {
        for e in &events {
            std::hint::black_box(e.clone());
        }
    });
}
