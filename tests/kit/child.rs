//! otpd as a child process of its binary, so that a harness can SIGKILL it, restart it, or
//! measure its CPU and memory as an operator would see them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The release or debug `otpd` beside an example's binary (`target/<profile>/otpd`).
pub fn beside_examples() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("otpd")
}

/// `otpd run` with `env` (`OTPD__` variables without the prefix, later ones winning); killed
/// when its handle is dropped. The caller chooses what becomes of its output.
pub fn command(exe: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("run").stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(format!("OTPD__{k}"), v);
    }
    cmd
}

/// Spawns `cmd`, with a hint to build the binary if it is missing.
pub fn spawn(mut cmd: Command, exe: &Path) -> Child {
    cmd.spawn()
        .unwrap_or_else(|e| panic!("run {}: {e} (build it first)", exe.display()))
}

/// SIGTERM, as systemd stops it, then waits up to `patience` before a SIGKILL.
pub async fn stop(child: &mut Child, patience: Duration) {
    // No id: it has already exited.
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(patience, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}
