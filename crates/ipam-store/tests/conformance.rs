//! The conformance suite on every store of this crate.

use ipam_store::{conformance, Combining, FaultyStore, MemoryStore, SledOptions, SledStore};

#[test]
fn memory_store_conforms() {
    conformance::run_all(MemoryStore::new);
}

#[test]
fn faulty_store_without_faults_conforms() {
    conformance::run_all(|| FaultyStore::new(MemoryStore::new(), 1));
}

#[test]
fn combining_store_conforms() {
    conformance::run_all(|| Combining::new(MemoryStore::new()));
}

#[test]
fn sled_store_conforms() {
    let dirs: std::cell::RefCell<Vec<tempfile::TempDir>> = Default::default();
    conformance::run_all(|| {
        let d = tempfile::tempdir().unwrap();
        let s = SledStore::open(d.path().join("store"), &SledOptions::default()).unwrap();
        dirs.borrow_mut().push(d);
        s
    });
}
