//! Rebuilds when a migration is added (`sqlx::migrate!` embeds the migrations directory,
//! and Cargo does not otherwise notice a new file there), and embeds the commit the
//! binaries are built from (model cards record it).
fn main() {
    println!("cargo:rerun-if-changed=notebooks-sql/migrations");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NUDGE_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
