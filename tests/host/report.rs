//! CI reports from a real run, read back with real parsers: JUnit (an XML parser), SARIF
//! 2.1.0 (its required structure), Markdown; the GitHub Actions summary, annotations and
//! step output; `--fail-on-denial`'s exit status. Root and unprivileged.

use std::time::Duration;

use agentbox_tests::{RunAs, Scenario};

#[test]
fn reports_name_every_guarantee_and_denied_rule_and_fail_on_denial_exits_121() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let secret = s.plant_in_home(".ssh/id_rsa", "PRIVATE\n");
        let out = s.root().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let (junit, sarif, md) = (out.join("j.xml"), out.join("r.sarif"), out.join("s.md"));
        let (summary, output) = (out.join("summary.md"), out.join("output"));
        let mut s = s;
        s.env.push(("GITHUB_ACTIONS".into(), "true".into()));
        s.env.push((
            "GITHUB_STEP_SUMMARY".into(),
            summary.to_str().unwrap().into(),
        ));
        s.env
            .push(("GITHUB_OUTPUT".into(), output.to_str().unwrap().into()));
        let (child, log) = s.spawn(
            &[
                "-q",
                "--report",
                &format!("junit:{}", junit.display()),
                "--report",
                &format!("sarif:{}", sarif.display()),
                "--report",
                &format!("markdown:{}", md.display()),
                "--fail-on-denial",
            ],
            &[
                "sh",
                "-c",
                &format!("cat {} ; mount -t tmpfs x /mnt; true", secret.display()),
            ],
        );
        let r = s.finish(child, &log, Duration::from_secs(60));
        assert_eq!(r.code(), Some(121), "{run_as:?}: {}", r.dump());
        assert!(r.stderr.contains("--fail-on-denial"), "{}", r.dump());

        // JUnit: well-formed; every guarantee of the launch record; the seccomp rule failed.
        let text = std::fs::read_to_string(&junit).unwrap();
        let doc = roxmltree::Document::parse(&text).expect("JUnit parses as XML");
        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        let launch = r.record("launch").unwrap();
        let guarantees = launch["guarantees"].as_array().unwrap();
        let guarantee_cases = cases
            .iter()
            .filter(|c| c.attribute("classname") == Some("agentbox.guarantee"))
            .count();
        assert_eq!(guarantee_cases, guarantees.len(), "{text}");
        let mount = cases
            .iter()
            .find(|c| c.attribute("name") == Some("syscalls.deny-groups: mount"))
            .unwrap_or_else(|| panic!("{run_as:?}: no case for the mount denial: {text}"));
        assert!(
            mount.children().any(|n| n.has_tag_name("failure")),
            "{text}"
        );

        // SARIF 2.1.0: version, driver, rules, results naming a rule of the driver.
        let sarif: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sarif).unwrap()).unwrap();
        assert_eq!(sarif["version"], "2.1.0");
        let run = &sarif["runs"][0];
        assert_eq!(run["tool"]["driver"]["name"], "agentbox");
        let rules: Vec<&str> = run["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        let results = run["results"].as_array().unwrap();
        assert!(!results.is_empty());
        for res in results {
            assert!(rules.contains(&res["ruleId"].as_str().unwrap()), "{res}");
            assert!(res["message"]["text"].is_string(), "{res}");
            assert!(["error", "warning"].contains(&res["level"].as_str().unwrap()));
        }
        assert!(
            rules.contains(&"seccomp/syscalls-deny-groups-mount"),
            "{rules:?}"
        );

        // Markdown, the job summary, the annotation and the step output.
        let md = std::fs::read_to_string(&md).unwrap();
        assert!(
            md.contains("| seccomp | syscalls.deny-groups: mount |"),
            "{md}"
        );
        assert_eq!(std::fs::read_to_string(&summary).unwrap(), md);
        assert!(
            r.stdout.contains("::error title=agentbox seccomp denial::"),
            "{}",
            r.dump()
        );
        let step = std::fs::read_to_string(&output).unwrap();
        assert_eq!(step.trim(), format!("agentbox-log={}", log.display()));
    }
}

/// `--report ocsf:FILE`: every line an OCSF 1.1.0 event of a class agentbox emits, with the
/// attributes that class requires (tests/ocsf/required-1.1.0.json), type_uid consistent.
#[test]
fn ocsf_events_carry_what_their_class_requires() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../ocsf/required-1.1.0.json")).unwrap();
    let s = Scenario::new(RunAs::Current);
    let secret = s.plant_in_home(".aws/credentials", "KEY\n");
    let file = s.root().join("events.ocsf.jsonl");
    let r = s.run(
        &["-q", "--report", &format!("ocsf:{}", file.display())],
        &[
            "sh",
            "-c",
            &format!("cat {}; mount -t tmpfs x /mnt; true", secret.display()),
        ],
    );
    assert_eq!(r.code(), Some(0), "{}", r.dump());
    let text = std::fs::read_to_string(&file).unwrap();
    let get =
        |v: &serde_json::Value, path: &str| path.split('.').fold(v.clone(), |v, k| v[k].clone());
    let mut classes = std::collections::BTreeSet::new();
    for line in text.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).expect("one JSON object per line");
        for attr in schema["base"].as_array().unwrap() {
            assert!(
                !get(&event, attr.as_str().unwrap()).is_null(),
                "{attr} missing: {line}"
            );
        }
        let class = event["class_uid"].as_u64().unwrap();
        let spec = &schema["classes"][class.to_string()];
        assert!(
            spec.is_object(),
            "class {class} is not one agentbox documents: {line}"
        );
        assert_eq!(event["category_uid"], spec["category_uid"], "{line}");
        for attr in spec["required"].as_array().unwrap() {
            assert!(
                !get(&event, attr.as_str().unwrap()).is_null(),
                "{attr} missing: {line}"
            );
        }
        let activity = event["activity_id"].as_u64().unwrap();
        assert!(
            spec["activity_ids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == activity),
            "{line}"
        );
        assert_eq!(
            event["type_uid"].as_u64().unwrap(),
            class * 100 + activity,
            "{line}"
        );
        for (key, allowed) in schema["enums"].as_object().unwrap() {
            if let Some(v) = event.get(key) {
                assert!(allowed.as_array().unwrap().contains(v), "{key}={v}: {line}");
            }
        }
        classes.insert(class);
    }
    assert!(
        classes.contains(&2004),
        "the mount denial is a Detection Finding: {text}"
    );
    if agentbox_tests::ebpf_tier("ocsf") {
        assert!(classes.contains(&1001), "the file denial: {text}");
        assert!(classes.contains(&1007), "the process records: {text}");
    }
}

/// `--log-format ocsf` streams the same OCSF events live, next to the log, as the report made
/// from the finished log: a SIEM agent tailing the file sees each denial as it happens.
#[test]
fn log_format_ocsf_streams_the_reports_events_live() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let report = s.root().join("after.ocsf.jsonl");
        let r = s.run(
            &[
                "-q",
                "--log-format",
                "ocsf",
                "--report",
                &format!("ocsf:{}", report.display()),
            ],
            &["sh", "-c", "unshare -U true 2>/dev/null; echo ran-marker"],
        );
        assert_eq!(r.code(), Some(0), "{run_as:?}: {}", r.dump());
        assert!(r.stdout.contains("ran-marker"));
        let log = r.log.clone().expect("a log");
        let live_path = log.with_file_name(format!(
            "{}.ocsf.jsonl",
            log.file_stem().unwrap().to_string_lossy()
        ));
        let live = std::fs::read_to_string(&live_path)
            .unwrap_or_else(|e| panic!("{run_as:?}: {}: {e}", live_path.display()));
        let after = std::fs::read_to_string(&report).unwrap();
        assert_eq!(live, after, "{run_as:?}: live stream and report differ");
        let denial = live
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["class_uid"] == 2004)
            .unwrap_or_else(|| panic!("{run_as:?}: no Detection Finding in {live}"));
        assert!(denial.to_string().contains("unshare"), "{denial}");
    }
}
