//! Rebuilds when a migration is added: `sqlx::migrate!` embeds the migrations directory,
//! and Cargo does not otherwise notice a new file there.
fn main() {
    println!("cargo:rerun-if-changed=notebooks-sql/migrations");
}
