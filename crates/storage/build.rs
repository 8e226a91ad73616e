//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds
//! the files at build time, and Cargo does not see them otherwise.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
