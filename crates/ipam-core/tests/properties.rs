//! Property tests: random operation sequences, with compare-and-swaps lost at random, checked
//! after every step against a reference model and the store invariants (`audit`).
//!
//! The model is deliberately naive: a map from handle to the set of addresses it holds. The
//! engine must agree with it exactly: the same addresses per handle, no address twice, and
//! free + used + reserved + cooling = block size in every block.

mod common;

use common::*;
use ipam_core::Range;
use ipam_core::{
    audit, AssignError, AssignIpArgs, AutoAssignArgs, HostReserved, Ipam, IpamConfig, IpamOptions,
    ManualClock, Pool, ReleaseError, ReleaseRequest, StoreExt,
};
use ipam_store::{FaultyStore, MemoryStore};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    Auto {
        node: u8,
        handle: u8,
        v4: u8,
        v6: u8,
    },
    Specific {
        node: u8,
        handle: u8,
        offset: u8,
    },
    ReleaseHandle {
        handle: u8,
    },
    ReleaseOne {
        handle: u8,
        guard_seq: bool,
    },
    ReleaseAffinities {
        node: u8,
    },
    RemoveNode {
        node: u8,
    },
    Tick {
        secs: u8,
    },
    Strict {
        on: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u8, 0..12u8, 0..4u8, 0..2u8).prop_map(|(node, handle, v4, v6)| Op::Auto { node, handle, v4, v6 }),
        1 => (0..4u8, 0..12u8, any::<u8>()).prop_map(|(node, handle, offset)| Op::Specific { node, handle, offset }),
        3 => (0..12u8).prop_map(|handle| Op::ReleaseHandle { handle }),
        2 => (0..12u8, any::<bool>()).prop_map(|(handle, guard_seq)| Op::ReleaseOne { handle, guard_seq }),
        1 => (0..4u8).prop_map(|node| Op::ReleaseAffinities { node }),
        1 => (0..4u8).prop_map(|node| Op::RemoveNode { node }),
        1 => (0..90u8).prop_map(|secs| Op::Tick { secs }),
        1 => any::<bool>().prop_map(|on| Op::Strict { on }),
    ]
}

struct Harness {
    ipam: Ipam<Arc<FaultyStore<MemoryStore>>>,
    store: Arc<FaultyStore<MemoryStore>>,
    clock: Arc<ManualClock>,
    model: BTreeMap<String, BTreeMap<IpAddr, u64>>,
}

impl Harness {
    fn new(seed: u64, conflict_per_mille: u32, cooldown: u32) -> Harness {
        let store = Arc::new(FaultyStore::new(MemoryStore::new(), seed));
        let clock = Arc::new(ManualClock::new(T0));
        let ipam = Ipam::with_options(
            store.clone(),
            clock.clone(),
            IpamOptions {
                max_retries: 100,
                seed,
                ..Default::default()
            },
        );
        // Small pools so blocks fill, borrowing happens and pools run out.
        ipam.create_pool(Pool::with_block_size("v4", net("10.244.0.0/27"), 29).unwrap())
            .unwrap();
        ipam.create_pool(Pool::with_block_size("v6", net("fd00::/123"), 126).unwrap())
            .unwrap();
        ipam.set_config(IpamConfig {
            ip_cooldown_seconds: cooldown,
            ..Default::default()
        })
        .unwrap();
        store.set_rates(conflict_per_mille, 0);
        Harness {
            ipam,
            store,
            clock,
            model: BTreeMap::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Auto {
                node,
                handle,
                v4,
                v6,
            } => {
                let h = format!("h{handle}");
                let mut args = AutoAssignArgs::v4(&format!("n{node}"), &h, usize::from(v4));
                args.num_v6 = usize::from(v6);
                match self.ipam.auto_assign(&args) {
                    Ok(r) => {
                        assert_eq!(r.v4.ips.len(), usize::from(v4));
                        assert_eq!(r.v6.ips.len(), usize::from(v6));
                        let e = self.model.entry(h).or_default();
                        for a in r.v4.ips.iter().chain(&r.v6.ips) {
                            assert!(e.insert(a.ip, a.seq).is_none(), "handed out twice");
                        }
                    }
                    Err(AssignError::Exhausted { .. }) => {}
                    Err(e) => panic!("auto assign: {e}"),
                }
            }
            Op::Specific {
                node,
                handle,
                offset,
            } => {
                let ip: IpAddr = format!("10.244.0.{}", offset % 32).parse().unwrap();
                let h = format!("h{handle}");
                let held = self.model.values().any(|m| m.contains_key(&ip));
                let r = self.ipam.assign_ip(&AssignIpArgs {
                    ip,
                    handle_id: h.clone(),
                    attrs: BTreeMap::new(),
                    node: format!("n{node}"),
                    host_reserved: HostReserved::default(),
                });
                match r {
                    Ok(a) => {
                        assert!(!held, "{ip} assigned while held");
                        self.model.entry(h).or_default().insert(ip, a.seq);
                    }
                    Err(AssignError::AlreadyAllocated(_)) => assert!(held),
                    Err(AssignError::AffinityConflict { .. } | AssignError::Block(_)) => {}
                    Err(e) => panic!("assign ip: {e}"),
                }
            }
            Op::ReleaseHandle { handle } => {
                let h = format!("h{handle}");
                let n = self.ipam.release_by_handle(&h).unwrap();
                let expect = self.model.remove(&h).map(|m| m.len()).unwrap_or(0);
                assert_eq!(n, expect);
            }
            Op::ReleaseOne { handle, guard_seq } => {
                let h = format!("h{handle}");
                let Some((&ip, &seq)) = self.model.get(&h).and_then(|m| m.iter().next()) else {
                    return;
                };
                // A stale sequence number must be refused and change nothing.
                let stale = ReleaseRequest {
                    ip,
                    handle_id: Some(h.clone()),
                    seq: Some(seq.wrapping_sub(1)),
                    block: None,
                };
                assert!(matches!(
                    self.ipam.release_ip(&stale),
                    Err(ReleaseError::StaleSequence { .. })
                ));
                let req = ReleaseRequest {
                    ip,
                    handle_id: Some(h.clone()),
                    seq: guard_seq.then_some(seq),
                    // A name that is not the address's block (a /32 of it): never makes
                    // the address look free.
                    block: guard_seq.then(|| {
                        ipnetwork::IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).unwrap()
                    }),
                };
                self.ipam.release_ip(&req).unwrap();
                let m = self.model.get_mut(&h).unwrap();
                m.remove(&ip);
                if m.is_empty() {
                    self.model.remove(&h);
                }
            }
            Op::ReleaseAffinities { node } => {
                self.ipam
                    .release_host_affinities(&format!("n{node}"), false)
                    .unwrap();
            }
            Op::RemoveNode { node } => {
                self.ipam.remove_node(&format!("n{node}"), false).unwrap();
            }
            Op::Tick { secs } => self.clock.advance(u64::from(secs) * 1_000_000_000),
            Op::Strict { on } => {
                let c = self.ipam.config().unwrap();
                self.ipam
                    .set_config(IpamConfig {
                        strict_affinity: on,
                        ..c
                    })
                    .unwrap();
            }
        }
    }

    fn check(&self) {
        let problems = audit(self.store.inner()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        let mut all = BTreeSet::new();
        for (h, m) in &self.model {
            let got: BTreeSet<IpAddr> = self
                .ipam
                .addresses_by_handle(h)
                .unwrap()
                .into_iter()
                .collect();
            let want: BTreeSet<IpAddr> = m.keys().copied().collect();
            assert_eq!(got, want, "handle {h}");
            for ip in want {
                assert!(all.insert(ip), "{ip} in two handles");
            }
        }
        let blocks = self.store.inner().list_blocks(&Range::Blocks).unwrap();
        let mut used = 0u64;
        for b in &blocks {
            let b = &b.value;
            assert_eq!(
                b.free_count() + b.used_count() + b.reserved_count() + b.cooling_count(),
                b.size()
            );
            used += u64::from(b.used_count());
        }
        assert_eq!(used, all.len() as u64, "stored addresses equal the model's");
        for h in self.store.inner().list_handles(&Range::Handles).unwrap() {
            assert!(
                self.model.contains_key(h.value.id()),
                "handle {} not in model",
                h.value.id()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES raises this for long local runs.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_model(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new(seed, 0, 0);
        for op in &ops {
            h.apply(op);
            h.check();
        }
    }

    #[test]
    fn engine_matches_model_when_compare_and_swaps_lose(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        // 30% of commits lose their race: every operation must retry to the same result.
        let mut h = Harness::new(seed, 300, 0);
        for op in &ops {
            h.apply(op);
            h.check();
        }
    }

    #[test]
    fn engine_matches_model_with_cooldown(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new(seed, 100, 60);
        for op in &ops {
            h.apply(op);
            h.check();
        }
    }
}
