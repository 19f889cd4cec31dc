//! One scenario per IPAM operation, including the error cases, on the memory store.

mod common;

use common::*;
use ipam_core::AffinityState;
use ipam_core::Range;
use ipam_core::{
    AdminError, AffinityError, AllowedUse, AssignError, AssignIpArgs, AssignmentMode,
    AutoAssignArgs, Datastore, Family, HostReserved, IpamConfig, Key, Pool, ReleaseError,
    ReleaseRequest, StoreExt,
};
use ipam_core::{Ipam, ManualClock};
use ipam_store::MemoryStore;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[test]
fn node_fills_its_block_then_claims_the_next() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    let first = one(&ipam, "n1", "h0");
    let mut blocks = BTreeSet::new();
    for i in 1..100 {
        let a = one(&ipam, "n1", &format!("h{i}"));
        blocks.insert(a.block.to_string());
    }
    blocks.insert(first.block.to_string());
    assert_eq!(
        blocks.len(),
        2,
        "100 addresses fill one /26 and start a second"
    );
    let affs = ipam
        .store()
        .list_affinities(&Range::AffinitiesOf("n1".into()))
        .unwrap();
    assert_eq!(affs.len(), 2);
    assert!(affs
        .iter()
        .all(|a| a.value.state() == AffinityState::Confirmed));
    // A second node gets a block of its own.
    let other = one(&ipam, "n2", "x");
    assert!(!blocks.contains(&other.block.to_string()));
    assert_consistent(&ipam);
}

#[test]
fn returned_prefix_is_the_block_prefix() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    let a = one(&ipam, "n1", "h");
    assert_eq!(a.with_block_prefix().prefix(), 26);
    assert_eq!(a.with_block_prefix().ip(), a.ip);
}

#[test]
fn exhausted_pool_error_names_the_pools() {
    let (ipam, _) = setup(&[("small", "10.244.0.0/30", 30)]);
    for i in 0..4 {
        one(&ipam, "n1", &format!("h{i}"));
    }
    let e = ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "h9", 1))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Assigned 0 out of 1 requested IPv4 addresses; No IPs available in pools: [10.244.0.0/30]"
    );
    assert!(ipam
        .store()
        .get_handle(&Key::Handle("h9".into()))
        .unwrap()
        .is_none());
    assert_consistent(&ipam);
}

#[test]
fn strict_affinity_forbids_borrowing_and_open_affinity_borrows() {
    // Two /26 blocks, three nodes.
    let (ipam, _) = setup(&[("p", "10.244.0.0/25", 26)]);
    one(&ipam, "n1", "a");
    one(&ipam, "n2", "b");
    let borrowed = one(&ipam, "n3", "c");
    let owner = ipam
        .store()
        .get_block(&Key::Block(borrowed.block))
        .unwrap()
        .unwrap()
        .value
        .affinity
        .clone();
    assert!(
        matches!(owner.as_deref(), Some("n1" | "n2")),
        "borrowed from another node's block"
    );
    let u = ipam.utilisation().unwrap();
    assert_eq!(u.blocks.iter().map(|b| b.borrowed).sum::<u32>(), 1);

    ipam.set_config(IpamConfig {
        strict_affinity: true,
        ..Default::default()
    })
    .unwrap();
    let e = ipam
        .auto_assign(&AutoAssignArgs::v4("n3", "d", 1))
        .unwrap_err();
    match &e {
        AssignError::Exhausted { reason, pools, .. } => {
            assert!(reason.contains("strict affinity"), "{e}");
            assert_eq!(pools, &vec![net("10.244.0.0/25")]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_consistent(&ipam);
}

#[test]
fn block_limit_per_host() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 30)]);
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 2,
        ..Default::default()
    })
    .unwrap();
    for i in 0..8 {
        one(&ipam, "n1", &format!("h{i}"));
    }
    let e = ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "h8", 1))
        .unwrap_err();
    assert!(
        matches!(e, AssignError::Exhausted { assigned: 0, .. }),
        "{e}"
    );
    // The per-request cap is honoured too, and without strict affinity the node borrows.
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 30)]);
    for i in 0..2 {
        one(&ipam, "n2", &format!("o{i}"));
    }
    let mut args = AutoAssignArgs::v4("n1", "h", 5);
    args.max_blocks_per_host = 1;
    let got = ipam.auto_assign(&args).unwrap();
    let blocks: BTreeSet<_> = got.v4.ips.iter().map(|a| a.block).collect();
    assert_eq!(got.v4.ips.len(), 5);
    assert_eq!(
        blocks.len(),
        2,
        "one own block plus one address borrowed from n2's"
    );
    let u = ipam.utilisation().unwrap();
    assert_eq!(u.blocks.iter().map(|b| b.borrowed).sum::<u32>(), 1);
    assert_consistent(&ipam);
}

#[test]
fn default_cap_is_twenty_blocks() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 30)]);
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        ..Default::default()
    })
    .unwrap();
    let got = ipam
        .auto_assign(&AutoAssignArgs {
            allow_partial: true,
            ..AutoAssignArgs::v4("n1", "h", 100)
        })
        .unwrap();
    assert_eq!(got.v4.ips.len(), 80, "20 blocks of 4");
    assert!(got.v4.is_short());
}

#[test]
fn partial_fulfilment_is_reported_or_refused() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/30", 30)]);
    let e = ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "h", 6))
        .unwrap_err();
    assert!(
        matches!(
            e,
            AssignError::Exhausted {
                requested: 6,
                assigned: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        ipam.addresses_by_handle("h").unwrap().is_empty(),
        "refused request took nothing"
    );
    let got = ipam
        .auto_assign(&AutoAssignArgs {
            allow_partial: true,
            ..AutoAssignArgs::v4("n1", "h", 6)
        })
        .unwrap();
    assert_eq!(got.v4.ips.len(), 4);
    assert_eq!(got.v4.requested, 6);
    assert_consistent(&ipam);
}

#[test]
fn dual_stack_is_all_or_nothing() {
    let (ipam, _) = setup(&[("v4", "10.244.0.0/16", 26), ("v6", "fd00::/126", 126)]);
    let mut args = AutoAssignArgs::v4("n1", "h1", 1);
    args.num_v6 = 1;
    let got = ipam.auto_assign(&args).unwrap();
    assert_eq!(Family::of(got.v6.ips[0].ip), Family::V6);
    assert_eq!(got.v6.ips[0].block.prefix(), 126);
    for i in 2..5 {
        let mut a = AutoAssignArgs::v4("n1", &format!("h{i}"), 1);
        a.num_v6 = 1;
        ipam.auto_assign(&a).unwrap();
    }
    // The v6 pool (4 addresses) is full now: the v4 half must be given back.
    let before = ipam.utilisation().unwrap().pools[0].in_use;
    let mut a = AutoAssignArgs::v4("n1", "h5", 1);
    a.num_v6 = 1;
    let e = ipam.auto_assign(&a).unwrap_err();
    assert!(
        matches!(
            e,
            AssignError::Exhausted {
                family: Family::V6,
                ..
            }
        ),
        "{e}"
    );
    assert!(ipam.addresses_by_handle("h5").unwrap().is_empty());
    assert_eq!(ipam.utilisation().unwrap().pools[0].in_use, before);
    assert_consistent(&ipam);
}

#[test]
fn requested_pools_by_name_or_cidr_and_their_errors() {
    let (ipam, _) = setup(&[("a", "10.1.0.0/16", 26), ("b", "10.2.0.0/16", 26)]);
    ipam.update_pool("b", |p| p.assignment_mode = AssignmentMode::Manual)
        .unwrap();
    // Manual pools are skipped unless asked for.
    assert!(net("10.1.0.0/16").contains(one(&ipam, "n1", "h1").ip));
    let mut args = AutoAssignArgs::v4("n1", "h2", 1);
    args.v4_pools = vec!["b".into()];
    assert!(net("10.2.0.0/16").contains(ipam.auto_assign(&args).unwrap().v4.ips[0].ip));
    args.v4_pools = vec!["10.2.0.0/16".into()];
    args.handle_id = "h3".into();
    assert!(net("10.2.0.0/16").contains(ipam.auto_assign(&args).unwrap().v4.ips[0].ip));
    args.v4_pools = vec!["nope".into()];
    assert_eq!(
        ipam.auto_assign(&args).unwrap_err(),
        AssignError::UnknownPool("nope".into())
    );
    ipam.update_pool("a", |p| p.disabled = true).unwrap();
    args.v4_pools = vec!["a".into()];
    assert_eq!(
        ipam.auto_assign(&args).unwrap_err(),
        AssignError::PoolDisabled("a".into())
    );
    // With a disabled automatic pool and a manual one, nothing selects the node.
    assert!(matches!(
        ipam.auto_assign(&AutoAssignArgs::v4("n1", "h9", 1))
            .unwrap_err(),
        AssignError::NoPools { .. }
    ));
    // A v6 request naming a v4 pool.
    let mut a6 = AutoAssignArgs::v4("n1", "h6", 0);
    a6.num_v6 = 1;
    a6.v6_pools = vec!["b".into()];
    assert!(matches!(
        ipam.auto_assign(&a6).unwrap_err(),
        AssignError::PoolMismatch { .. }
    ));
}

#[test]
fn node_selectors_and_allowed_uses() {
    let (ipam, _) = setup(&[]);
    let mut zoned = Pool::new("zone-a", net("10.1.0.0/16")).unwrap().to_parts();
    zoned.node_selector = "zone == 'a' && !has(gpu)".parse().unwrap();
    ipam.create_pool(Pool::try_from(zoned).unwrap()).unwrap();
    let mut lb = Pool::new("lb", net("10.9.0.0/16")).unwrap().to_parts();
    lb.allowed_uses = vec![AllowedUse::LoadBalancer];
    ipam.create_pool(Pool::try_from(lb).unwrap()).unwrap();
    ipam.set_node("na", BTreeMap::from([("zone".into(), "a".into())]))
        .unwrap();
    ipam.set_node(
        "nb",
        BTreeMap::from([("zone".into(), "a".into()), ("gpu".into(), "1".into())]),
    )
    .unwrap();
    assert!(net("10.1.0.0/16").contains(one(&ipam, "na", "h1").ip));
    let e = ipam
        .auto_assign(&AutoAssignArgs::v4("nb", "h2", 1))
        .unwrap_err();
    assert!(matches!(e, AssignError::NoPools { .. }), "{e}");
    let mut args = AutoAssignArgs::v4("nb", "h3", 1);
    args.intended_use = AllowedUse::LoadBalancer;
    assert!(net("10.9.0.0/16").contains(ipam.auto_assign(&args).unwrap().v4.ips[0].ip));
}

#[test]
fn pool_no_longer_selecting_node_gives_back_empty_blocks() {
    let (ipam, _) = setup(&[("a", "10.1.0.0/16", 26), ("b", "10.2.0.0/16", 26)]);
    ipam.update_pool("b", |p| p.disabled = true).unwrap();
    let a = one(&ipam, "n1", "h1");
    ipam.release_by_handle("h1").unwrap();
    // Now pool a stops selecting n1; the empty block's affinity is released on the next call.
    ipam.update_pool("a", |p| p.node_selector = "has(never)".parse().unwrap())
        .unwrap();
    ipam.update_pool("b", |p| p.disabled = false).unwrap();
    let b = one(&ipam, "n1", "h2");
    assert!(net("10.2.0.0/16").contains(b.ip));
    assert!(ipam
        .store()
        .get_block(&Key::Block(a.block))
        .unwrap()
        .is_none());
    assert_consistent(&ipam);
}

#[test]
fn assign_specific_address() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    let args = AssignIpArgs {
        ip: ip("10.244.7.9"),
        handle_id: "static".into(),
        attrs: BTreeMap::from([("pod".into(), "db-0".into())]),
        node: "n1".into(),
        host_reserved: HostReserved::default(),
    };
    let a = ipam.assign_ip(&args).unwrap();
    assert_eq!(a.block, net("10.244.7.0/26"));
    let al = ipam.allocation(ip("10.244.7.9")).unwrap().unwrap();
    assert_eq!(al.handle_id, "static");
    assert_eq!(al.attrs.get("pod"), Some("db-0"));
    assert_eq!(al.attrs.get("node"), Some("n1"));
    assert_eq!(al.block_affinity.as_deref(), Some("n1"));
    assert_eq!(
        ipam.assign_ip(&args).unwrap_err(),
        AssignError::AlreadyAllocated(ip("10.244.7.9"))
    );
    let mut out = args.clone();
    out.ip = ip("10.9.0.1");
    assert_eq!(
        ipam.assign_ip(&out).unwrap_err(),
        AssignError::NotInPool(ip("10.9.0.1"))
    );
    // Auto-assign on n1 now uses the block it got.
    assert_eq!(one(&ipam, "n1", "h2").block, net("10.244.7.0/26"));
    // Strict affinity: another node may not take an address in n1's block.
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        ..Default::default()
    })
    .unwrap();
    let mut other = args.clone();
    other.node = "n2".into();
    other.ip = ip("10.244.7.30");
    assert!(matches!(
        ipam.assign_ip(&other).unwrap_err(),
        AssignError::AffinityConflict { .. }
    ));
    assert_consistent(&ipam);
}

#[test]
fn guarded_release_never_frees_a_reused_address() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/30", 30)]);
    let a = one(&ipam, "n1", "h1");
    // Wrong handle.
    let e = ipam
        .release_ip(&ReleaseRequest {
            ip: a.ip,
            handle_id: Some("other".into()),
            seq: None,
            block: None,
        })
        .unwrap_err();
    assert!(matches!(e, ReleaseError::WrongHandle { .. }), "{e}");
    ipam.release_ip(&ReleaseRequest {
        ip: a.ip,
        handle_id: Some("h1".into()),
        seq: Some(a.seq),
        block: None,
    })
    .unwrap();
    assert_eq!(
        ipam.release_ip(&ReleaseRequest::ip(a.ip)).unwrap_err(),
        ReleaseError::NotAllocated(a.ip)
    );
    // Fill the block so the address is re-used, then replay the stale release.
    let mut again = None;
    for i in 0..4 {
        let b = one(&ipam, "n1", &format!("r{i}"));
        if b.ip == a.ip {
            again = Some(b);
        }
    }
    let again = again.expect("the small block re-uses the address");
    assert_ne!(again.seq, a.seq);
    let e = ipam
        .release_ip(&ReleaseRequest {
            ip: a.ip,
            handle_id: None,
            seq: Some(a.seq),
            block: None,
        })
        .unwrap_err();
    assert!(matches!(e, ReleaseError::StaleSequence { .. }), "{e}");
    assert!(
        ipam.allocation(a.ip).unwrap().is_some(),
        "still held by the new owner"
    );
    assert_consistent(&ipam);
}

#[test]
fn release_by_handle_is_complete_and_idempotent() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    let got = ipam
        .auto_assign(&AutoAssignArgs::v4("n1", "pod", 70))
        .unwrap();
    assert_eq!(got.v4.ips.len(), 70);
    let held = ipam.addresses_by_handle("pod").unwrap();
    assert_eq!(held.len(), 70);
    let h = ipam
        .store()
        .get_handle(&Key::Handle("pod".into()))
        .unwrap()
        .unwrap();
    assert_eq!(h.value.blocks().len(), 2);
    assert_eq!(ipam.release_by_handle("pod").unwrap(), 70);
    assert_eq!(ipam.release_by_handle("pod").unwrap(), 0);
    assert_eq!(ipam.release_by_handle("never-existed").unwrap(), 0);
    assert!(ipam
        .store()
        .get_handle(&Key::Handle("pod".into()))
        .unwrap()
        .is_none());
    // Affine blocks stay with the node, empty.
    let u = ipam.utilisation().unwrap();
    assert_eq!(u.blocks.len(), 2);
    assert!(u.blocks.iter().all(|b| b.in_use == 0));
    assert_consistent(&ipam);
}

#[test]
fn freed_address_is_not_reused_at_once() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    let a = one(&ipam, "n1", "h1");
    ipam.release_by_handle("h1").unwrap();
    let b = one(&ipam, "n1", "h2");
    assert_ne!(a.ip, b.ip);
    // Only after every other free address in the block has been handed out.
    let mut reused_at = None;
    for i in 0..64 {
        if one(&ipam, "n1", &format!("f{i}")).ip == a.ip {
            reused_at = Some(i);
            break;
        }
    }
    assert_eq!(reused_at, Some(62), "62 other addresses go first");
}

#[test]
fn cooldown_holds_released_addresses() {
    let (ipam, clock) = setup(&[("p", "10.244.0.0/30", 30)]);
    ipam.set_config(IpamConfig {
        ip_cooldown_seconds: 30,
        ..Default::default()
    })
    .unwrap();
    let held: Vec<_> = (0..4).map(|i| one(&ipam, "n1", &format!("h{i}"))).collect();
    ipam.release_by_handle("h0").unwrap();
    let u = ipam.utilisation().unwrap();
    assert_eq!((u.pools[0].in_use, u.pools[0].cooling), (3, 1));
    assert!(ipam.auto_assign(&AutoAssignArgs::v4("n1", "x", 1)).is_err());
    clock.advance(29_000_000_000);
    assert!(ipam.auto_assign(&AutoAssignArgs::v4("n1", "x", 1)).is_err());
    clock.advance(1_000_000_000);
    assert_eq!(one(&ipam, "n1", "x").ip, held[0].ip);
    assert_consistent(&ipam);
}

#[test]
fn a_cooldown_set_elsewhere_holds_releases_within_the_kept_age() {
    // Two engines on one store; `a` keeps the cooldown its releases read.
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(T0));
    let a = Ipam::new(store.clone(), clock.clone());
    let b = Ipam::new(store.clone(), clock.clone());
    a.create_pool(Pool::with_block_size("p", net("10.244.0.0/24"), 26).unwrap())
        .unwrap();
    let cooling = |ipam: &Ipam<Arc<MemoryStore>>| ipam.utilisation().unwrap().pools[0].cooling;
    let cooldown = |secs| IpamConfig {
        ip_cooldown_seconds: secs,
        ..Default::default()
    };
    // `a` assigns `h` and releases it by handle; the addresses cooling after.
    let round = |h: &str| {
        one(&a, "n1", h);
        a.release_by_handle(h).unwrap();
        cooling(&a)
    };
    // Reads (and keeps) no cooldown.
    assert_eq!(round("h0"), 0);
    b.set_config(cooldown(30)).unwrap();
    // Seen once the kept copy is older than its bound.
    clock.advance(ipam_core::CARRY_AGE_NS + 1);
    assert_eq!(
        round("h1"),
        1,
        "the cooldown set elsewhere holds the release"
    );
    // A change through the engine itself is seen at once.
    a.set_config(cooldown(0)).unwrap();
    assert_eq!(
        round("h2"),
        1,
        "no cooldown for the release after the change"
    );
    a.set_config(cooldown(30)).unwrap();
    assert_eq!(
        round("h3"),
        2,
        "the cooldown set through the engine holds at once"
    );
    // A release of what handles hold (a CNI DEL's) keeps and refreshes the same copy.
    b.set_config(cooldown(0)).unwrap();
    clock.advance(ipam_core::CARRY_AGE_NS + 1);
    one(&a, "n1", "h4");
    assert_eq!(a.release_held(&["h4"], |_| true).unwrap().len(), 1);
    assert_eq!(
        cooling(&a),
        2,
        "no cooldown once the one set elsewhere is seen"
    );
    assert_consistent(&a);
}

#[test]
fn a_pool_whose_addresses_cool_is_deleted_once_they_have() {
    let (ipam, clock) = setup(&[("p", "10.244.0.0/24", 26)]);
    ipam.set_config(IpamConfig {
        ip_cooldown_seconds: 30,
        ..Default::default()
    })
    .unwrap();
    for i in 0..3 {
        one(&ipam, &format!("n{i}"), &format!("h{i}"));
    }
    // What `ipamctl pool delete --force` does: disable, release all, release affinities.
    ipam.update_pool("p", |p| p.disabled = true).unwrap();
    for i in 0..3 {
        ipam.release_by_handle(&format!("h{i}")).unwrap();
    }
    ipam.release_pool_affinities("p").unwrap();
    match ipam.delete_pool("p") {
        Err(AdminError::PoolCooling {
            cooling,
            seconds_left,
            ..
        }) => assert_eq!((cooling, seconds_left), (3, 30)),
        other => panic!("expected the cooling refusal, got {other:?}"),
    }
    clock.advance(30_000_000_000);
    ipam.delete_pool("p").unwrap();
    assert!(ipam.pools().unwrap().is_empty());
    assert!(ipam.store().list_blocks(&Range::Blocks).unwrap().is_empty());
    assert_consistent(&ipam);
}

#[test]
fn host_reserved_addresses_are_never_handed_out() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    let mut args = AutoAssignArgs::v4("win", "h", 60);
    args.host_reserved = HostReserved { first: 3, last: 1 };
    let got = ipam.auto_assign(&args).unwrap();
    let block = got.v4.ips[0].block;
    let ords: BTreeSet<u32> = got
        .v4
        .ips
        .iter()
        .map(|a| ipam_core::cidr::ordinal(&block, a.ip).unwrap())
        .collect();
    assert_eq!(ords, (3..63).collect());
    let u = ipam.utilisation().unwrap();
    assert_eq!((u.blocks[0].in_use, u.blocks[0].reserved), (60, 4));
    assert_eq!(u.pools[0].free(), 65536 - 64);
    // A block holding only reserved addresses counts as empty.
    ipam.release_by_handle("h").unwrap();
    assert!(ipam.release_affinity(block, "win", true).unwrap());
    assert!(ipam
        .store()
        .get_block(&Key::Block(block))
        .unwrap()
        .is_none());
    assert_consistent(&ipam);
}

#[test]
fn affinity_claim_and_release() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    let c = net("10.244.3.0/26");
    ipam.claim_affinity(c, "n1", HostReserved::default())
        .unwrap();
    ipam.claim_affinity(c, "n1", HostReserved::default())
        .unwrap();
    assert!(matches!(
        ipam.claim_affinity(c, "n2", HostReserved::default())
            .unwrap_err(),
        AffinityError::AffinityConflict { .. }
    ));
    assert_eq!(
        ipam.claim_affinity(net("10.244.3.0/27"), "n1", HostReserved::default())
            .unwrap_err(),
        AffinityError::NotABlock(net("10.244.3.0/27"))
    );
    // The claimed block is the node's first choice.
    assert_eq!(one(&ipam, "n1", "h").block, c);
    assert_eq!(
        ipam.release_affinity(c, "n1", true).unwrap_err(),
        AffinityError::BlockNotEmpty(c)
    );
    // Without require_empty the block keeps its address and loses its affinity.
    assert!(ipam.release_affinity(c, "n1", false).unwrap());
    let b = ipam
        .store()
        .get_block(&Key::Block(c))
        .unwrap()
        .unwrap()
        .value;
    assert_eq!((b.affinity.clone(), b.used_count()), (None, 1));
    assert!(!ipam.release_affinity(c, "n1", false).unwrap());
    // Once emptied, an unaffine block is deleted.
    ipam.release_by_handle("h").unwrap();
    assert!(ipam.store().get_block(&Key::Block(c)).unwrap().is_none());
    assert_consistent(&ipam);
}

#[test]
fn release_host_and_pool_affinities_and_remove_node() {
    let (ipam, _) = setup(&[("a", "10.1.0.0/16", 26), ("b", "10.2.0.0/16", 26)]);
    ipam.set_node("n1", BTreeMap::new()).unwrap();
    ipam.auto_assign(&AutoAssignArgs::v4("n1", "keep", 1))
        .unwrap();
    ipam.claim_affinity(net("10.1.9.0/26"), "n1", HostReserved::default())
        .unwrap();
    ipam.claim_affinity(net("10.2.9.0/26"), "n1", HostReserved::default())
        .unwrap();
    let r = ipam.release_pool_affinities("b").unwrap();
    assert_eq!((r.released, r.blocks_deleted), (1, 1));
    let r = ipam.release_host_affinities("n1", true).unwrap();
    assert_eq!(r.released, 1);
    assert_eq!(r.kept_non_empty.len(), 1);
    let r = ipam.remove_node("n1", false).unwrap();
    assert_eq!((r.released, r.blocks_deleted), (1, 0));
    assert!(ipam
        .store()
        .get_node(&Key::Node("n1".into()))
        .unwrap()
        .is_none());
    assert_eq!(ipam.addresses_by_handle("keep").unwrap().len(), 1);
    assert_consistent(&ipam);

    // remove_node with addresses frees them as well.
    one(&ipam, "n2", "p1");
    one(&ipam, "n2", "p2");
    let r = ipam.remove_node("n2", true).unwrap();
    assert_eq!((r.released, r.blocks_deleted), (1, 1));
    assert!(ipam.addresses_by_handle("p1").unwrap().is_empty());
    assert_consistent(&ipam);
}

#[test]
fn empty_block_of_another_node_is_reclaimed_after_grace() {
    let (ipam, clock) = setup(&[("p", "10.244.0.0/26", 26)]);
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        ..Default::default()
    })
    .unwrap();
    let a = one(&ipam, "n1", "h1");
    ipam.release_by_handle("h1").unwrap();
    clock.advance(30_000_000_000);
    assert!(
        ipam.auto_assign(&AutoAssignArgs::v4("n2", "h2", 1))
            .is_err(),
        "within grace"
    );
    clock.advance(31_000_000_000);
    let b = one(&ipam, "n2", "h2");
    assert_eq!(a.block, b.block);
    let blk = ipam
        .store()
        .get_block(&Key::Block(b.block))
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(blk.affinity.as_deref(), Some("n2"));
    assert!(ipam
        .store()
        .list_affinities(&Range::AffinitiesOf("n1".into()))
        .unwrap()
        .is_empty());
    assert_consistent(&ipam);
}

#[test]
fn configuration_rules_are_enforced() {
    let (ipam, _) = setup(&[]);
    assert!(matches!(
        ipam.set_config(IpamConfig {
            auto_allocate_blocks: false,
            ..Default::default()
        }),
        Err(AdminError::Config(_))
    ));
    assert!(matches!(
        ipam.set_config(IpamConfig {
            max_blocks_per_host: 3,
            ..Default::default()
        }),
        Err(AdminError::Config(_))
    ));
    assert_eq!(ipam.config().unwrap(), IpamConfig::default());
    let c = IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: false,
        max_blocks_per_host: 3,
        ip_cooldown_seconds: 5,
    };
    ipam.set_config(c).unwrap();
    assert_eq!(ipam.config().unwrap(), c);
}

#[test]
fn no_auto_allocation_uses_only_claimed_blocks() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 30)]);
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: false,
        ..Default::default()
    })
    .unwrap();
    assert!(ipam.auto_assign(&AutoAssignArgs::v4("n1", "h", 1)).is_err());
    ipam.claim_affinity(net("10.244.0.8/30"), "n1", HostReserved::default())
        .unwrap();
    assert_eq!(one(&ipam, "n1", "h").block, net("10.244.0.8/30"));
}

#[test]
fn pools_reject_overlap_duplicates_and_delete_only_when_unused() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    assert!(matches!(
        ipam.create_pool(Pool::new("q", net("10.244.128.0/17")).unwrap()),
        Err(AdminError::PoolExists(_))
    ));
    assert!(matches!(
        ipam.create_pool(Pool::new("p", net("10.9.0.0/16")).unwrap()),
        Err(AdminError::PoolExists(_))
    ));
    assert!(matches!(
        ipam.update_pool("p", |p| p.block_size = 24),
        Err(AdminError::InvalidArgument(_))
    ));
    one(&ipam, "n1", "h");
    assert!(matches!(
        ipam.delete_pool("p"),
        Err(AdminError::PoolInUse {
            blocks: 1,
            addresses: 1,
            ..
        })
    ));
    ipam.release_by_handle("h").unwrap();
    ipam.release_pool_affinities("p").unwrap();
    ipam.delete_pool("p").unwrap();
    assert!(ipam.pools().unwrap().is_empty());
    assert!(ipam
        .store()
        .list(&Range::IndexChunksOf(net("10.244.0.0/16")))
        .unwrap()
        .is_empty());
}

#[test]
fn invalid_selector_text_has_a_clear_error() {
    let e = "zone = 'a'".parse::<ipam_core::Selector>().unwrap_err();
    assert_eq!(e.pos, 5);
    assert!(e.to_string().contains("expected `==`"), "{e}");
}

#[test]
fn invalid_arguments_are_refused() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    assert!(matches!(
        ipam.auto_assign(&AutoAssignArgs::v4("n1", "bad handle", 1)),
        Err(AssignError::InvalidArgument(_))
    ));
    assert!(matches!(
        ipam.auto_assign(&AutoAssignArgs::v4("", "h", 1)),
        Err(AssignError::InvalidArgument(_))
    ));
}

#[test]
fn owner_attributes_over_the_bound_are_refused_and_nothing_is_written() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    // The node's block exists, so the batched path tries the request first.
    one(&ipam, "n1", "h0");
    let before = ipam.store().list(&Range::Blocks).unwrap();
    let mut args = AutoAssignArgs::v4("n1", "big", 1);
    args.attrs
        .insert("note".into(), "x".repeat(ipam_core::MAX_HOLDER_BYTES));
    let e = ipam.auto_assign(&args).unwrap_err();
    assert!(
        matches!(&e, AssignError::InvalidArgument(m) if m.contains("at most")),
        "{e}"
    );
    let ip_args = AssignIpArgs {
        ip: ip("10.244.7.9"),
        handle_id: "big".into(),
        attrs: args.attrs.clone(),
        node: "n1".into(),
        host_reserved: HostReserved::default(),
    };
    assert!(matches!(
        ipam.assign_ip(&ip_args),
        Err(AssignError::InvalidArgument(_))
    ));
    assert_eq!(ipam.store().list(&Range::Blocks).unwrap(), before);
    assert!(ipam
        .store()
        .get_handle(&Key::Handle("big".into()))
        .unwrap()
        .is_none());
    // Within the bound, the node's own attribute included, the request is served.
    args.attrs
        .insert("note".into(), "x".repeat(ipam_core::MAX_HOLDER_BYTES - 64));
    let got = ipam.auto_assign(&args).unwrap();
    let al = ipam.allocation(got.v4.ips[0].ip).unwrap().unwrap();
    assert_eq!(al.attrs.get("node"), Some("n1"));
    assert_eq!(
        al.attrs
            .get("note")
            .expect("the attribute is recorded")
            .len(),
        ipam_core::MAX_HOLDER_BYTES - 64
    );
    assert_consistent(&ipam);
}

#[test]
fn ipv6_blocks() {
    let (ipam, _) = setup(&[("v6", "fd00:10:244::/64", 122)]);
    let mut args = AutoAssignArgs::v4("n1", "h", 0);
    args.num_v6 = 3;
    let got = ipam.auto_assign(&args).unwrap();
    assert_eq!(got.v6.ips.len(), 3);
    assert!(got.v6.ips.iter().all(|a| a.block.prefix() == 122));
    assert_consistent(&ipam);
}

#[test]
fn claim_index_marks_full_pools_without_listing_blocks() {
    // 4 blocks of 4: after 4 nodes claim one each, the pool index says the chunk is full.
    let (ipam, _) = setup(&[("p", "10.244.0.0/28", 30)]);
    for n in 0..4 {
        one(&ipam, &format!("n{n}"), &format!("h{n}"));
    }
    let idx = ipam
        .store()
        .get_pool_index(&Key::PoolIndex(net("10.244.0.0/28")))
        .unwrap()
        .unwrap();
    assert_eq!(idx.value.full_chunks().len(), 1);
    assert_consistent(&ipam);
    // Freeing a block (no affinity, empty) clears the full mark.
    ipam.release_host_affinities("n0", false).unwrap();
    ipam.release_by_handle("h0").unwrap();
    let idx = ipam
        .store()
        .get_pool_index(&Key::PoolIndex(net("10.244.0.0/28")))
        .unwrap()
        .unwrap();
    assert!(idx.value.full_chunks().is_empty());
    assert_consistent(&ipam);
}

#[test]
fn large_pools_claim_spread_blocks() {
    let (ipam, _) = setup(&[("big", "10.0.0.0/8", 26)]);
    let blocks: BTreeSet<_> = (0..50)
        .map(|n| one(&ipam, &format!("node-{n}"), &format!("h{n}")).block)
        .collect();
    assert_eq!(blocks.len(), 50);
    assert_consistent(&ipam);
}

#[test]
fn only_if_unheld_refuses_a_handle_that_holds_addresses_and_writes_nothing() {
    let (ipam, _) = setup(&[("p", "10.244.0.0/16", 26)]);
    let mut args = AutoAssignArgs::v4("n1", "net.c1", 1);
    args.only_if_unheld = true;
    let first = ipam.auto_assign(&args).unwrap();
    assert_eq!(first.v4.ips.len(), 1, "an absent handle is assigned to");
    let before = ipam.utilisation().unwrap().pools[0].in_use;
    let again = ipam.auto_assign(&args).unwrap_err();
    assert!(
        matches!(&again, ipam_core::AssignError::HandleHolds(h) if h == "net.c1"),
        "{again}"
    );
    assert_eq!(ipam.utilisation().unwrap().pools[0].in_use, before);
    assert_eq!(ipam.addresses_by_handle("net.c1").unwrap().len(), 1);
    // Without the flag the same handle gets a second address (another interface).
    args.only_if_unheld = false;
    ipam.auto_assign(&args).unwrap();
    assert_eq!(ipam.addresses_by_handle("net.c1").unwrap().len(), 2);
    assert_consistent(&ipam);
}
