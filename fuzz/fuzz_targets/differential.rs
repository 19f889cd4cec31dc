//! Differential fuzzing of the allocator: arbitrary operation sequences applied to the engine
//! (through a store that loses compare-and-swaps, refuses commits, applies commits but loses
//! the answer, and fails reads, at rates the input sets) and to a reference model (handle ->
//! addresses). After every step: the same addresses per handle and no address
//! twice. Every store invariant (`audit`) is checked after a step in which the store injected a fault
//! (where a half-done change would show), after every eighth step and after the last one: the
//! full audit is the most expensive part of an input, and auditing every step made the target
//! run at a fifth of the speed.
#![no_main]

use arbitrary::Arbitrary;
use ipam_core::{
    audit, AssignError, AssignIpArgs, AutoAssignArgs, HostReserved, Ipam, IpamConfig, IpamOptions,
    ManualClock, Pool, ReleaseRequest,
};
use ipam_store::{FaultyStore, MemoryStore};
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Arbitrary, Debug)]
enum Op {
    Auto {
        node: u8,
        handle: u8,
        v4: u8,
        v6: bool,
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
        guard: bool,
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
    Strict(bool),
    Faults {
        conflicts: u8,
        outages: u8,
    },
    MoreFaults {
        lost: u8,
        reads: u8,
    },
    /// A CNI DEL's release: all the handle holds, or only its lowest address.
    ReleaseHeld {
        handle: u8,
        all: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u64,
    cooldown: bool,
    ops: Vec<Op>,
}

const MAX_OPS: usize = 64;

type Model = BTreeMap<String, BTreeMap<IpAddr, u64>>;

fn adopt(truth: &Ipam<&MemoryStore>, model: &mut Model, h: &str) {
    // After a failed call the handle's state is whatever the store says (a CNI DEL would clean
    // it up); take the store's truth for that handle.
    let allocs = truth
        .allocations_of_handle(h)
        .expect("the inner store never fails");
    if allocs.is_empty() {
        model.remove(h);
    } else {
        model.insert(
            h.to_string(),
            allocs.into_iter().map(|a| (a.ip, a.seq)).collect(),
        );
    }
}

fuzz_target!(|input: Input| {
    let store = Arc::new(FaultyStore::new(MemoryStore::new(), input.seed));
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let ipam = Ipam::with_options(
        store.clone(),
        clock.clone(),
        IpamOptions {
            seed: input.seed,
            ..Default::default()
        },
    );
    ipam.create_pool(
        Pool::with_block_size("v4", "10.244.0.0/27".parse().expect("a valid literal"), 29)
            .expect("a valid fixture"),
    )
    .expect("create_pool succeeds");
    ipam.create_pool(
        Pool::with_block_size("v6", "fd00::/123".parse().expect("a valid literal"), 126)
            .expect("a valid fixture"),
    )
    .expect("create_pool succeeds");
    if input.cooldown {
        ipam.set_config(IpamConfig {
            ip_cooldown_seconds: 30,
            ..Default::default()
        })
        .expect("set_config succeeds");
    }
    // Reads the store behind the faults, for the model's checks.
    let truth = Ipam::new(store.inner(), clock.clone());
    let mut model: Model = BTreeMap::new();
    // Longer inputs are cut rather than skipped, so every execution exercises the engine.
    let ops = &input.ops[..input.ops.len().min(MAX_OPS)];
    let last = ops.len().saturating_sub(1);
    for (step, op) in ops.iter().enumerate() {
        let before = store.injected();
        match *op {
            Op::Auto {
                node,
                handle,
                v4,
                v6,
            } => {
                let h = format!("h{}", handle % 12);
                let mut args =
                    AutoAssignArgs::v4(&format!("n{}", node % 4), &h, usize::from(v4 % 4));
                args.num_v6 = usize::from(v6);
                match ipam.auto_assign(&args) {
                    Ok(r) => {
                        let e = model.entry(h).or_default();
                        for a in r.v4.ips.iter().chain(&r.v6.ips) {
                            assert!(e.insert(a.ip, a.seq).is_none(), "handed out twice");
                        }
                    }
                    Err(AssignError::Exhausted { .. } | AssignError::NoPools { .. }) => {}
                    Err(e) if e.is_transient() => adopt(&truth, &mut model, &h),
                    Err(e) => panic!("auto assign: {e}"),
                }
            }
            Op::Specific {
                node,
                handle,
                offset,
            } => {
                let ip: IpAddr = format!("10.244.0.{}", offset % 32)
                    .parse()
                    .expect("a valid literal");
                let h = format!("h{}", handle % 12);
                let held = model.values().any(|m| m.contains_key(&ip));
                let r = ipam.assign_ip(&AssignIpArgs {
                    ip,
                    handle_id: h.clone(),
                    attrs: BTreeMap::new(),
                    node: format!("n{}", node % 4),
                    host_reserved: HostReserved::default(),
                });
                match r {
                    Ok(a) => {
                        assert!(!held, "{ip} assigned while held");
                        model.entry(h).or_default().insert(ip, a.seq);
                    }
                    Err(AssignError::AlreadyAllocated(_)) => assert!(held, "{ip} refused but free"),
                    Err(AssignError::AffinityConflict { .. } | AssignError::Block(_)) => {}
                    Err(e) if e.is_transient() => adopt(&truth, &mut model, &h),
                    Err(e) => panic!("assign ip: {e}"),
                }
            }
            Op::ReleaseHandle { handle } => {
                let h = format!("h{}", handle % 12);
                match ipam.release_by_handle(&h) {
                    Ok(n) => assert_eq!(n, model.remove(&h).map(|m| m.len()).unwrap_or(0)),
                    Err(e) if e.is_transient() => adopt(&truth, &mut model, &h),
                    Err(e) => panic!("release by handle: {e}"),
                }
            }
            Op::ReleaseOne { handle, guard } => {
                let h = format!("h{}", handle % 12);
                let Some((&ip, &seq)) = model.get(&h).and_then(|m| m.iter().next()) else {
                    continue;
                };
                let req = ReleaseRequest {
                    ip,
                    handle_id: Some(h.clone()),
                    seq: guard.then_some(seq),
                    block: None,
                };
                match ipam.release_ip(&req) {
                    Ok(()) => {
                        let m = model.get_mut(&h).expect("get_mut succeeds");
                        m.remove(&ip);
                        if m.is_empty() {
                            model.remove(&h);
                        }
                    }
                    Err(e) if e.is_transient() => adopt(&truth, &mut model, &h),
                    Err(e) => panic!("release ip: {e}"),
                }
            }
            Op::ReleaseHeld { handle, all } => {
                let h = format!("h{}", handle % 12);
                let Some(first) = model.get(&h).and_then(|m| m.keys().next().copied()) else {
                    continue;
                };
                match ipam.release_held(&[&h], move |a| all || a.ip == first) {
                    Ok(mut got) => {
                        got.sort();
                        let m = model.get_mut(&h).expect("get_mut succeeds");
                        let want: Vec<_> = if all {
                            m.keys().copied().collect()
                        } else {
                            vec![first]
                        };
                        assert_eq!(got, want, "release held of {h}");
                        for ip in want {
                            m.remove(&ip);
                        }
                        if m.is_empty() {
                            model.remove(&h);
                        }
                    }
                    Err(e) if e.is_transient() => adopt(&truth, &mut model, &h),
                    Err(e) => panic!("release held: {e}"),
                }
            }
            Op::ReleaseAffinities { node } => {
                let r = ipam.release_host_affinities(&format!("n{}", node % 4), false);
                assert!(r.is_ok() || r.unwrap_err().is_transient());
            }
            Op::RemoveNode { node } => {
                let r = ipam.remove_node(&format!("n{}", node % 4), false);
                assert!(r.is_ok() || r.unwrap_err().is_transient());
            }
            Op::Tick { secs } => clock.advance(u64::from(secs) * 1_000_000_000),
            Op::Strict(on) => {
                let c = truth.config().expect("the configuration reads");
                let r = ipam.set_config(IpamConfig {
                    strict_affinity: on,
                    ..c
                });
                assert!(r.is_ok() || r.unwrap_err().is_transient());
            }
            Op::Faults { conflicts, outages } => {
                store.set_rates(u32::from(conflicts) * 2, u32::from(outages % 64));
            }
            Op::MoreFaults { lost, reads } => {
                store.set_lost_and_read_rates(u32::from(lost % 64), u32::from(reads % 64));
            }
        }
        if store.injected() != before || step % 8 == 7 || step == last {
            let problems = audit(store.inner()).expect("audit succeeds");
            assert!(problems.is_empty(), "step {step}: {problems:#?}");
        }
        let mut seen = BTreeSet::new();
        for (h, m) in &model {
            let got: BTreeSet<IpAddr> = truth
                .addresses_by_handle(h)
                .expect("addresses_by_handle succeeds")
                .into_iter()
                .collect();
            let want: BTreeSet<IpAddr> = m.keys().copied().collect();
            assert_eq!(got, want, "handle {h}");
            for ip in want {
                assert!(seen.insert(ip), "{ip} in two handles");
            }
        }
    }
});
