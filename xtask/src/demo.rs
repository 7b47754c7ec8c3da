//! `cargo xtask demo`: examples/agent.py under the built-in `default` profile, in a throwaway
//! HOME and workspace, so nothing the demo does can touch the user's real files.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{build_agentbox, root, setup, Res};

/// What the fake secrets contain; the demo checks they are unchanged afterwards.
const FAKE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nagentbox-demo-not-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n";
const FAKE_BASHRC: &str = "# the demo's own ~/.bashrc\n";

pub(crate) fn demo() -> Res<()> {
    setup::setup()?;
    let agentbox = build_agentbox()?;
    let dir = Scratch::new()?;
    let home = dir.0.join("home");
    let workspace = dir.0.join("workspace");
    let tmp = dir.0.join("tmp");
    for d in [&home.join(".ssh"), &workspace, &tmp] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    write(&home.join(".ssh/id_rsa"), FAKE_KEY)?;
    write(&home.join(".bashrc"), FAKE_BASHRC)?;
    let agent = workspace.join("agent.py");
    fs::copy(root().join("examples/agent.py"), &agent)
        .map_err(|e| format!("copying examples/agent.py: {e}"))?;
    // A loopback listener the agent will try to reach: the attempt must fail even though
    // something answers there.
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let log = dir.0.join("audit.jsonl");

    println!("\n== agentbox demo: examples/agent.py under the built-in `default` profile");
    println!(
        "   HOME={}  (throwaway, with a planted ~/.ssh/id_rsa)",
        home.display()
    );
    println!("   workspace={}\n", workspace.display());
    let mut run = Command::new(&agentbox);
    run.args(["run", "--profile", "default", "--log"])
        .arg(&log)
        // Debian's interpreter: a pyenv or conda python lives under HOME, outside the profile's
        // exec trees (which is the point of the profile).
        .args(["--", "/usr/bin/python3", "agent.py"])
        .current_dir(&workspace)
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .env("DEMO_PORT", port.to_string())
        .env("DEMO_API_TOKEN", "secret-that-must-not-reach-the-agent");
    let status = run.status().map_err(|e| format!("running agentbox: {e}"))?;
    drop(listener);

    println!("\n== the audit log ({})", log.display());
    let verified = Command::new(&agentbox)
        .args(["audit", "verify"])
        .arg(&log)
        .status()
        .map_err(|e| format!("agentbox audit verify: {e}"))?;

    let key_intact = fs::read_to_string(home.join(".ssh/id_rsa")).ok().as_deref() == Some(FAKE_KEY);
    let bashrc_intact =
        fs::read_to_string(home.join(".bashrc")).ok().as_deref() == Some(FAKE_BASHRC);
    let profile_absent = !home.join(".profile").exists();
    println!("\n== afterwards");
    println!("   ~/.ssh/id_rsa unchanged: {key_intact}");
    println!("   ~/.bashrc unchanged:     {bashrc_intact}");
    println!("   ~/.profile not created:  {profile_absent}");
    println!("   agent exit status:       {status} (0 = every misbehaviour was denied)");
    if status.success() && verified.success() && key_intact && bashrc_intact && profile_absent {
        println!("\ndemo: every attempt was denied and the log verifies.");
        Ok(())
    } else {
        Err("demo: something was not denied or the log did not verify (see above)".into())
    }
}

fn write(path: &Path, text: &str) -> Res<()> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A temporary directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Res<Self> {
        let path = std::env::temp_dir().join(format!("agentbox-demo-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
