//! The contract's floor of `assign_release_loop` as a bare loop: per round, what
//! `floor/{assign,release}` in the criterion suite time ([`ipam_benches::Floor`]), with no
//! engine. Run both under callgrind and the difference of their instructions per round is
//! what the engine adds.
//!
//! Run: `cargo build --release -p ipam-benches --example floor_loop`, then
//! `valgrind --tool=callgrind ./target/release/examples/floor_loop [N [FILL]]` (N rounds,
//! FILL pods in the block beforehand: 32 unless given).

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let mut floor = ipam_benches::Floor::new(arg(2, 32));
    for _ in 0..arg(1, 1_000_000) {
        floor.assign();
        floor.release();
    }
}
