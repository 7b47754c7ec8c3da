//! The systemd tier of `cargo xtask vm-test`: after the VM and escape tiers, the guest's /init
//! hands PID 1 to systemd (the host's Debian build, copied in with its libraries), which runs
//! one oneshot unit: it generates a unit with `agentbox systemd unit`, starts it (READY=1
//! through Type=notify), finds the agent's denial in `journalctl -o json` with its fields,
//! stops it and checks that no process, cgroup or temporary directory is left.
//!
//! Only the units this needs are written (minimal targets, journald and its socket), so the
//! boot does not depend on udev, D-Bus or the host's unit set.

use crate::cpio::Archive;
use crate::Res;
use std::path::Path;

/// systemd binaries copied from the host (Debian 12's systemd), with their libraries.
const BINARIES: &[&str] = &[
    "/lib/systemd/systemd",
    "/lib/systemd/systemd-journald",
    "/lib/systemd/systemd-shutdown",
    "/bin/systemctl",
    "/bin/journalctl",
    "/bin/systemd-notify",
];

/// Where /init records the VM and escape tiers' exit code for the systemd tier's report.
pub(crate) const CODE_FILE: &str = "/etc/agentbox-vm-code";
/// The target systemd starts (`systemd --unit=`).
pub(crate) const TARGET: &str = "agentbox-vmtest.target";
const SCRIPT: &str = "/bin/agentbox-systemd-tier";

/// Whether the host has what the tier copies (`cargo xtask setup` installs systemd).
pub(crate) fn available() -> bool {
    BINARIES.iter().all(|b| Path::new(b).is_file())
}

/// Adds systemd, its units and the tier's script to the initramfs. `libraries` lists a
/// binary's shared libraries (vm.rs's ldd).
pub(crate) fn add(
    archive: &mut Archive,
    libraries: impl Fn(&Path) -> Res<Vec<std::path::PathBuf>>,
    exit_marker: &str,
) -> Res<()> {
    for dir in [
        "/lib/systemd",
        "/etc/systemd",
        "/etc/systemd/system",
        "/var",
        "/var/lib",
        "/var/tmp",
        "/var/log",
        "/usr/lib",
        "/usr/lib/systemd",
        "/usr/lib/systemd/system",
    ] {
        archive.dir(dir);
    }
    for binary in BINARIES {
        let path = Path::new(binary);
        archive.file(binary, path, 0o755);
        for library in libraries(path)? {
            archive.file(&library.to_string_lossy(), &library, 0o755);
        }
    }
    archive.bytes(
        "/etc/machine-id",
        "0123456789abcdef0123456789abcdef\n",
        0o444,
    );
    archive.bytes(
        "/etc/os-release",
        "ID=debian\nNAME=\"agentbox VM tier\"\nPRETTY_NAME=\"agentbox VM tier\"\n",
        0o644,
    );
    // Something the default profile denies, for the service's agent to try.
    archive.bytes("/etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640);
    for (name, text) in UNITS {
        archive.bytes(&format!("/usr/lib/systemd/system/{name}"), *text, 0o644);
    }
    archive.bytes(SCRIPT, script(exit_marker), 0o755);
    Ok(())
}

const UNITS: &[(&str, &str)] = &[
    (
        "sysinit.target",
        "[Unit]\nDescription=System Initialization\nDefaultDependencies=no\n",
    ),
    (
        "basic.target",
        "[Unit]\nDescription=Basic System\nDefaultDependencies=no\nAfter=sysinit.target\n",
    ),
    (
        "sockets.target",
        "[Unit]\nDescription=Sockets\nDefaultDependencies=no\n",
    ),
    (
        "slices.target",
        "[Unit]\nDescription=Slices\nDefaultDependencies=no\n",
    ),
    (
        "shutdown.target",
        "[Unit]\nDescription=Shutdown\nDefaultDependencies=no\n",
    ),
    (
        "network-online.target",
        "[Unit]\nDescription=Network is Online\nDefaultDependencies=no\n",
    ),
    (
        "multi-user.target",
        "[Unit]\nDescription=Multi-User System\nRequires=basic.target\nAfter=basic.target\n",
    ),
    (
        "system.slice",
        "[Unit]\nDescription=System Slice\nDefaultDependencies=no\nBefore=slices.target\n",
    ),
    (
        "systemd-journald.socket",
        "[Unit]\nDescription=Journal Socket\nDefaultDependencies=no\nBefore=sockets.target\n\
         [Socket]\nListenDatagram=/run/systemd/journal/socket\n\
         ListenStream=/run/systemd/journal/stdout\nPassCredentials=yes\nPassSecurity=yes\n\
         ReceiveBuffer=8M\nService=systemd-journald.service\nSocketMode=0666\n",
    ),
    (
        "systemd-journald.service",
        "[Unit]\nDescription=Journal Service\nDefaultDependencies=no\n\
         Requires=systemd-journald.socket\nAfter=systemd-journald.socket\n\
         [Service]\nType=notify\nSockets=systemd-journald.socket\n\
         ExecStart=/lib/systemd/systemd-journald\nRestart=always\n",
    ),
    (
        "agentbox-vmtest.target",
        "[Unit]\nDescription=agentbox systemd tier\nRequires=agentbox-vmtest.service\n\
         After=agentbox-vmtest.service\n",
    ),
    (
        "agentbox-vmtest.service",
        "[Unit]\nDescription=agentbox systemd tier\nDefaultDependencies=no\n\
         Requires=systemd-journald.socket\nAfter=systemd-journald.socket systemd-journald.service\n\
         Wants=systemd-journald.service\n\
         [Service]\nType=oneshot\nExecStart=/bin/sh /bin/agentbox-systemd-tier\n\
         StandardOutput=tty\nStandardError=tty\nTTYPath=/dev/console\n\
         Environment=PATH=/bin:/usr/bin\n",
    ),
];

/// The tier itself: every check prints `systemd-tier: ok|FAIL what`, the last line is the
/// exit marker with the worse of this tier's and the earlier tiers' results.
fn script(exit_marker: &str) -> String {
    format!(
        r#"#!/bin/sh
code=0
check() {{
    if eval "$2"; then echo "systemd-tier: ok   $1"; else echo "systemd-tier: FAIL $1"; code=1; fi
}}
denial=6f06499807564ffcadde7894a967db50
# --best-effort: 6.1's one gap (ioctl on device files, Landlock ABI 5; tests/vm/run_lsm.rs).
/bin/agentbox systemd unit --name demo --profile default --best-effort -- \
    /bin/sh -c 'cat /etc/shadow; echo agent-started; exec sleep 300' \
    > /etc/systemd/system/demo.service
check "unit generated" '[ -s /etc/systemd/system/demo.service ]'
systemctl daemon-reload
check "systemctl start returns once agentbox says READY=1" 'timeout 120 systemctl start demo.service'
check "the service is active" '[ "$(systemctl is-active demo.service)" = active ]'
i=0
while [ $i -lt 30 ]; do
    journalctl -u demo.service -o json --no-pager > /tmp/journal.json 2>/dev/null
    grep -q "$denial" /tmp/journal.json && grep -q agent-started /tmp/journal.json && break
    sleep 1; i=$((i + 1))
done
grep "$denial" /tmp/journal.json | head -1 > /tmp/denial.json
check "the denial is a journal entry with its MESSAGE_ID" '[ -s /tmp/denial.json ]'
check "... with AGENTBOX_LAYER and AGENTBOX_RULE" 'grep -q "\"AGENTBOX_LAYER\"" /tmp/denial.json && grep -q "\"AGENTBOX_RULE\"" /tmp/denial.json'
check "... naming the file (AGENTBOX_OBJECT)" 'grep -q "\"AGENTBOX_OBJECT\":\"[^\"]*/etc/shadow\"" /tmp/denial.json'
check "... at warning priority" 'grep -q "\"PRIORITY\":\"4\"" /tmp/denial.json'
check "the agent's own output is in the journal" 'grep -q agent-started /tmp/journal.json'
sandbox=$(grep -o '"AGENTBOX_SANDBOX":"[0-9a-f]*"' /tmp/denial.json | cut -d'"' -f4)
check "the sandbox cgroup exists while it runs" '[ -n "$sandbox" ] && [ -d /sys/fs/cgroup/agentbox/$sandbox ]'
check "systemctl stop" 'timeout 60 systemctl stop demo.service'
check "no process left" '[ "$(systemctl show -p MainPID --value demo.service)" = 0 ] && ! ps | grep -v grep | grep -q "sleep 300"'
check "no sandbox cgroup left" '[ ! -d /sys/fs/cgroup/agentbox/$sandbox ]'
check "no service cgroup left" '[ ! -d /sys/fs/cgroup/system.slice/demo.service ]'
check "no TMPDIR left" '[ -z "$(ls -d /tmp/agentbox-* /tmp/systemd-private-* 2>/dev/null)" ]'
check "the exit is in the journal" 'journalctl -u demo.service -o json --no-pager | grep -q ff0dd51c9e5d48f09b3671270bf2d8d4'
# An agent that speaks sd_notify: with --sd-notify agent its READY=1 is the one systemd
# waits for, and its STATUS= arrives through agentbox (NotifyAccess=main).
/bin/agentbox systemd unit --name notifier --profile default --best-effort --sd-notify agent -- \
    /bin/sh -c 'sleep 3; systemd-notify --ready --status=warmed-up; exec sleep 300' \
    > /etc/systemd/system/notifier.service
systemctl daemon-reload
t0=$(date +%s)
check "an agent's own READY=1 completes systemctl start" 'timeout 120 systemctl start notifier.service'
t1=$(date +%s)
check "... only once the agent said it (3 s in)" '[ $((t1 - t0)) -ge 3 ]'
check "... and its STATUS= reached systemd" '[ "$(systemctl show -p StatusText --value notifier.service)" = warmed-up ]'
check "notifier stops" 'timeout 60 systemctl stop notifier.service'
if [ $code -ne 0 ]; then
    cat /tmp/denial.json
    journalctl -u demo.service --no-pager -o cat | head -40
    # What agentbox sees inside the same unit settings.
    sed -e 's|^ExecStart=.*|ExecStart=/bin/agentbox doctor|' -e 's|^Type=notify|Type=oneshot|' \
        -e '/^Restart=/d' /etc/systemd/system/demo.service > /etc/systemd/system/doctor.service
    systemctl daemon-reload; systemctl start doctor.service
    journalctl -u doctor.service --no-pager -o cat | head -80
fi
earlier=$(cat {CODE_FILE} 2>/dev/null || echo 1)
[ "$earlier" -ne 0 ] && code=$earlier
echo "{exit_marker} $code"
sync
poweroff -f
"#
    )
}
