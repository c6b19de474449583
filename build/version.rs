//! Build script shared by the binaries' crates: sets `FERROLB_VERSION` to
//! `<crate version> (commit <hash>)` for `--version`. The commit is `FERROLB_COMMIT` when set
//! (image builds from a source tree without .git), else `git rev-parse HEAD`, else "unknown".

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Watches `path` if it exists: cargo reruns a build script on every build for a missing one.
fn watch(path: PathBuf) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=FERROLB_COMMIT");
    let commit = match std::env::var("FERROLB_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself, and the branch file it points to.
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                let dir = PathBuf::from(dir);
                watch(dir.join("HEAD"));
                if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    let common = git(&["rev-parse", "--git-common-dir"])
                        .map(PathBuf::from)
                        .unwrap_or_else(|| dir.clone());
                    let common = if common.is_absolute() {
                        common
                    } else {
                        std::env::current_dir().unwrap_or_default().join(common)
                    };
                    watch(common.join(&reference));
                    watch(common.join("packed-refs"));
                }
            }
            git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=FERROLB_COMMIT={commit}");
    println!("cargo:rustc-env=FERROLB_VERSION={version} (commit {commit})");
}
