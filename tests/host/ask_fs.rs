//! `--ask fs`: a read of a file no tree allows is held until the approver decides; on
//! approval the supervisor opens the file and the agent's open() returns that descriptor.
//! Root and unprivileged.

use std::time::Duration;

use agentbox_tests::{approval_socket_dir as socket_dir, approver, Attempt, RunAs, Scenario};

const EACCES: Attempt = Attempt::Err(libc::EACCES);

fn ask_args(approver: &str) -> Vec<&str> {
    vec![
        "-q",
        "--ask",
        "fs",
        "--approver",
        approver,
        "--ask-timeout",
        "20",
    ]
}

/// `label ok` and `label-content TEXT` for a read of `path`.
fn read(label: &str, path: &std::path::Path) -> String {
    format!(
        "def go():\n\
         \x20   with open({path:?}) as f:\n\
         \x20       print('{label}-content', f.read(), flush=True)\n\
         attempt('{label}', go)\n",
        path = path.display().to_string()
    )
}

#[test]
fn ask_fs_opens_what_was_approved_for_the_agent_once_deny_and_lease() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        // HOME is outside every tree of the default profile.
        let notes = s.plant_in_home("data/notes.txt", "approved-notes");
        let other = s.plant_in_home("data/other.txt", "other-notes");
        let key = s.plant_in_home(".ssh/id_ed25519", "SECRET-KEY");
        let own = s.plant_in_workspace("own.txt", "workspace-file");
        let path = socket_dir(&s).join("fs.sock");
        let answers = vec![
            serde_json::json!({"decision": "allow", "scope": "once"}),
            serde_json::json!({"decision": "deny"}),
            serde_json::json!({"decision": "allow", "scope": "sandbox"}),
        ];
        let client = approver(path.clone(), answers, Duration::ZERO);
        let socket = format!("socket:{}", path.display());
        let body = [
            read("first", &notes),
            read("second", &notes),
            read("third", &other),
            read("leased", &other),
            read("secret", &key),
            read("own", &own),
            format!(
                "attempt('listing', lambda: print('listing-content', sorted(os.listdir({:?})), \
                 flush=True))\n",
                notes.parent().unwrap().display().to_string()
            ),
        ]
        .concat();
        let r = s.run_probe(&ask_args(&socket), &body);
        let asked = client.join().expect("approver thread");
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        assert_eq!(r.attempt("first"), Attempt::Ok, "{}", r.dump());
        assert!(
            r.stdout.contains("first-content approved-notes"),
            "{}",
            r.dump()
        );
        assert_eq!(r.attempt("second"), EACCES, "once means once: {}", r.dump());
        assert_eq!(r.attempt("third"), Attempt::Ok, "{}", r.dump());
        assert_eq!(r.attempt("leased"), Attempt::Ok, "{}", r.dump());
        assert!(
            r.stdout.contains("leased-content other-notes"),
            "{}",
            r.dump()
        );
        // A deny glob is never put to anyone; the workspace needs no approval.
        assert_eq!(r.attempt("secret"), EACCES, "{}", r.dump());
        assert!(!r.stdout.contains("SECRET-KEY"), "{}", r.dump());
        assert_eq!(r.attempt("own"), Attempt::Ok, "{}", r.dump());
        // The directory listing is a read too: the fourth answer (none left) refuses it.
        assert_eq!(r.attempt("listing"), EACCES, "{}", r.dump());
        let destinations: Vec<&str> = asked
            .iter()
            .map(|a| a["destination"].as_str().unwrap())
            .collect();
        let read_of = |p: &std::path::Path| format!("read {}", p.display());
        assert_eq!(
            destinations,
            [
                read_of(&notes),
                read_of(&notes),
                read_of(&other),
                read_of(notes.parent().unwrap())
            ],
            "{asked:?}"
        );
        assert!(asked.iter().all(|a| a["kind"] == "fs"), "{asked:?}");
        assert!(
            asked[0]["exe"]
                .as_str()
                .unwrap()
                .starts_with("/usr/bin/python3"),
            "{asked:?}"
        );
        // In the chain: four requests, two grants, two refusals naming what would allow it.
        let stage = |name: &str| {
            r.records_of("approval")
                .into_iter()
                .filter(|a| a["stage"] == name)
                .count()
        };
        assert_eq!(stage("requested"), 4, "{}", r.dump());
        assert_eq!(stage("granted"), 2, "{}", r.dump());
        let refused = r.denials_of("approval");
        assert_eq!(refused.len(), 2, "{}", r.dump());
        for d in &refused {
            let rule = d["rule"].as_str().unwrap();
            assert!(
                rule.starts_with("filesystem.unknown = \"ask\"") && rule.contains("--allow-read"),
                "{rule}"
            );
            assert_eq!(d["object"]["access"], "read", "{d}");
        }
        assert_eq!(
            refused[0]["object"]["path"],
            notes.display().to_string(),
            "{}",
            r.dump()
        );
    }
}

/// What was approved is what the agent reads: a thread rewriting the path in the agent's
/// memory after the request, or a symlink replaced meanwhile, changes nothing.
#[test]
fn ask_fs_opens_what_was_approved_whatever_the_agent_rewrites() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        // Two paths of the same length.
        let asked_for = s.plant_in_home("data/aaaa.txt", "approved-file");
        let swapped = s.plant_in_home("data/bbbb.txt", "swapped-in-file");
        let link = s.workspace.join("link");
        std::os::unix::fs::symlink(&asked_for, &link).unwrap();
        s.fix_ownership();
        let path = socket_dir(&s).join("race.sock");
        let allow = serde_json::json!({"decision": "allow", "scope": "once"});
        // The approver answers after a second: the swapping thread has run meanwhile.
        let client = approver(
            path.clone(),
            vec![allow.clone(), allow],
            Duration::from_secs(1),
        );
        let socket = format!("socket:{}", path.display());
        let r = s.run_probe(
            &ask_args(&socket),
            &format!(
                "import ctypes\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 buf = ctypes.create_string_buffer({a:?}.encode())\n\
                 def swap():\n\
                 \x20   time.sleep(0.3)\n\
                 \x20   buf.value = {b:?}.encode()\n\
                 t = threading.Thread(target=swap)\n\
                 t.start()\n\
                 fd = libc.open(buf, os.O_RDONLY)\n\
                 t.join()\n\
                 print('swapped_path', buf.value.decode(), flush=True)\n\
                 print('raced', os.read(fd, 100).decode() if fd >= 0 else 'err', flush=True)\n\
                 def relink():\n\
                 \x20   time.sleep(0.3)\n\
                 \x20   os.symlink({b:?}, 'link.new')\n\
                 \x20   os.rename('link.new', 'link')\n\
                 t = threading.Thread(target=relink)\n\
                 t.start()\n\
                 with open('link') as f:\n\
                 \x20   print('relinked', f.read(), flush=True)\n\
                 t.join()\n\
                 print('link_now', os.readlink('link'), flush=True)\n",
                a = asked_for.display().to_string(),
                b = swapped.display().to_string(),
            ),
        );
        let asked = client.join().expect("approver thread");
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        // The buffer and the link really named the other file by the time of the answer.
        let now = swapped.display().to_string();
        assert!(
            r.stdout.contains(&format!("swapped_path {now}")),
            "{}",
            r.dump()
        );
        assert!(
            r.stdout.contains(&format!("link_now {now}")),
            "{}",
            r.dump()
        );
        assert!(r.stdout.contains("raced approved-file"), "{}", r.dump());
        assert!(r.stdout.contains("relinked approved-file"), "{}", r.dump());
        assert!(!r.stdout.contains("swapped-in-file"), "{}", r.dump());
        assert_eq!(asked.len(), 2, "{asked:?}");
        for a in &asked {
            assert_eq!(
                a["destination"],
                format!("read {}", asked_for.display()),
                "{asked:?}"
            );
        }
    }
}

/// A policy file decides reads unattended: `read DIR/**` covers every file below DIR (and
/// `*` would not cross `/`); a read it does not name is refused, and the refusal says so.
#[test]
fn ask_fs_policy_file_allows_a_tree_of_reads_and_nothing_beside_it() {
    for run_as in RunAs::all() {
        let s = Scenario::new(run_as);
        let deep = s.plant_in_home("data/sub/deep.csv", "deep-rows");
        let top = s.plant_in_home("data/top.csv", "top-rows");
        let beside = s.plant_in_home("other/notes.txt", "other-notes");
        let data = top.parent().unwrap().display().to_string();
        let rules = socket_dir(&s).join("reads.toml");
        std::fs::write(
            &rules,
            format!(
                "[[rule]]\ndestination = \"read {data}/**\"\nkind = \"fs\"\n\
                 decision = \"allow\"\n"
            ),
        )
        .unwrap();
        let approver = format!("rules:{}", rules.display());
        let body = [
            read("deep", &deep),
            read("top", &top),
            read("beside", &beside),
        ]
        .concat();
        let r = s.run_probe(&ask_args(&approver), &body);
        assert_eq!(r.code(), Some(0), "{}", r.dump());
        assert!(r.stdout.contains("deep-content deep-rows"), "{}", r.dump());
        assert!(r.stdout.contains("top-content top-rows"), "{}", r.dump());
        assert_eq!(r.attempt("beside"), EACCES, "{}", r.dump());
        assert!(!r.stdout.contains("other-notes"), "{}", r.dump());
        let refused = r.denials_of("approval");
        assert!(
            refused.len() == 1
                && refused[0]["object"]["path"] == beside.display().to_string()
                && refused[0]["rule"]
                    .as_str()
                    .unwrap()
                    .contains("no decision (rules "),
            "{}",
            r.dump()
        );
        let granted = r
            .records_of("approval")
            .into_iter()
            .filter(|a| a["stage"] == "granted")
            .count();
        assert_eq!(granted, 2, "{}", r.dump());
    }
}
