//! The `seeder` binary: see `seeder --help`.
fn main() {
    println!("seeder");
}
