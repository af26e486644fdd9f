//! Two things cargo cannot see by itself:
//! - `sqlx::migrate!` embeds `migrations/` at compile time, so a new or changed migration must
//!   rebuild, or an incremental build would run the old set;
//! - `otpd_build_info` names the commit it was built from: `OTPD_COMMIT` when the build sets
//!   it (a Docker build has no `.git`), else `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=OTPD_COMMIT");
    // A new commit moves HEAD or the branch it names. Only files that exist are named: cargo
    // reruns the script on every build for a missing one (a worktree's `.git` is a file).
    let mut watched = vec![".git/HEAD".to_string(), ".git/packed-refs".to_string()];
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(branch) = head.trim().strip_prefix("ref: ")
    {
        watched.push(format!(".git/{branch}"));
    }
    for path in watched.iter().filter(|p| std::path::Path::new(p).is_file()) {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = std::env::var("OTPD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=OTPD_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}
