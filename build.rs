//! Rebuilds when a migration is added or changed: `sqlx::migrate!` embeds `migrations/` at
//! compile time, and cargo cannot see a new file there by itself, so an incremental build
//! would otherwise run the old set.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
