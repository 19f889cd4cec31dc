//! The sled store's own guarantees: persistence, exclusivity, permissions, format versions,
//! corruption handling, group commit, and surviving SIGKILL mid-storm.

use ipam_core::{audit, AssignError, AutoAssignArgs, Datastore, Key, ManualClock, Pool};
use ipam_core::{Record, Revision, StoreError, Write};
use ipam_store::sled::keys;
use ipam_store::{Observed, OpenError, SledOptions, SledStore, SystemClock};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// How long a test waits for sled to let go of a store it just closed.
const RAW_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir, &SledOptions::default()).unwrap()
}

fn ipam(store: SledStore) -> Observed<SledStore> {
    Observed::new(store, Arc::new(ManualClock::new(1_700_000_000_000_000_000)))
}

#[test]
fn allocations_survive_reopen() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("store");
    let ips: Vec<IpAddr> = {
        let ipam = ipam(open(&dir));
        ipam.create_pool(Pool::new("p", "10.244.0.0/16".parse().unwrap()).unwrap())
            .unwrap();
        (0..10)
            .map(|i| {
                ipam.auto_assign(&AutoAssignArgs::v4("n1", &format!("h{i}"), 1))
                    .unwrap()
                    .v4
                    .ips[0]
                    .ip
            })
            .collect()
    };
    let ipam = ipam(open(&dir));
    for (i, ip) in ips.iter().enumerate() {
        assert_eq!(
            ipam.addresses_by_handle(&format!("h{i}")).unwrap(),
            vec![*ip]
        );
    }
    assert!(audit(ipam.store()).unwrap().is_empty());
}

#[test]
fn second_open_waits_then_reports_busy_with_the_holder() {
    let d = tempfile::tempdir().unwrap();
    let _held = open(d.path());
    let opts = SledOptions {
        lock_timeout: Duration::from_millis(150),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let Err(e) = SledStore::open(d.path(), &opts) else {
        panic!("opened twice")
    };
    assert!(start.elapsed() >= Duration::from_millis(150));
    match &e {
        OpenError::Busy { holder, .. } => assert_eq!(*holder, Some(std::process::id())),
        other => panic!("{other}"),
    }
    assert!(
        e.to_string()
            .contains(&format!("process {}", std::process::id())),
        "{e}"
    );
}

#[test]
fn released_lock_lets_the_next_open_in() {
    let d = tempfile::tempdir().unwrap();
    let first = open(d.path());
    let dir = d.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        SledStore::open(
            &dir,
            &SledOptions {
                lock_timeout: Duration::from_secs(10),
                ..Default::default()
            },
        )
        .map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(first);
    waiter.join().unwrap().unwrap();
}

#[test]
fn directory_and_files_are_private() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("store");
    let _s = open(&dir);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut files = 0;
    let mut stack = vec![dir.clone()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                files += 1;
            }
        }
    }
    assert!(files >= 2, "lock file and sled files");
}

#[test]
fn a_format_1_store_is_upgraded_at_open_and_its_records_read() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("store");
    // A format 1 store: its mark, and a crowded block written plain, as format 1 wrote it.
    let block = ipam_store::conformance::crowded_block();
    {
        let raw = ipam_store::sled::open_raw(&dir, RAW_WAIT).unwrap();
        raw.insert(keys::FORMAT_KEY, &1u32.to_be_bytes()).unwrap();
        raw.insert(
            keys::encode(&block.key()),
            ipam_store::sled::codec::encode_plain(&block, Revision(1)).unwrap(),
        )
        .unwrap();
        raw.flush().unwrap();
    }
    let s = open(&dir);
    assert_eq!(s.get(&block.key()).unwrap().unwrap().value, block);
    // Written again, it is stored compressed.
    let Record::Block(mut b) = block.clone() else {
        unreachable!()
    };
    b.seq += 1;
    s.commit(vec![Write::Update {
        record: Record::Block(b.clone()),
        expected: Revision(1),
    }])
    .unwrap();
    drop(s);
    let raw = ipam_store::sled::open_raw(&dir, RAW_WAIT).unwrap();
    let mark = raw.get(keys::FORMAT_KEY).unwrap().unwrap();
    assert_eq!(mark.as_ref(), &2u32.to_be_bytes());
    let value = raw.get(keys::encode(&block.key())).unwrap().unwrap();
    assert_eq!(value[0], ipam_store::sled::codec::COMPRESSED);
    let back = ipam_store::sled::codec::decode(&keys::encode(&block.key()), &value).unwrap();
    assert_eq!(back.value, Record::Block(b));
}

#[test]
fn newer_and_unknown_formats_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("store");
    drop(open(&dir));
    {
        let raw = ipam_store::sled::open_raw(&dir, RAW_WAIT).unwrap();
        raw.insert(keys::FORMAT_KEY, &3u32.to_be_bytes()).unwrap();
        raw.flush().unwrap();
    }
    let Err(e) = SledStore::open(&dir, &SledOptions::default()) else {
        panic!("opened a newer format")
    };
    assert!(
        matches!(
            e,
            OpenError::TooNew {
                found: 3,
                supported: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("newer release"));

    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    {
        let raw = ipam_store::sled::open_raw(&other, RAW_WAIT).unwrap();
        raw.insert(b"something", b"else").unwrap();
        raw.flush().unwrap();
    }
    let Err(e) = SledStore::open(&other, &SledOptions::default()) else {
        panic!("opened a foreign database")
    };
    assert!(matches!(e, OpenError::Unknown { .. }), "{e}");
}

#[test]
fn garbage_record_is_a_typed_error_naming_it_and_others_keep_working() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("store");
    let victim = {
        let ipam = ipam(open(&dir));
        ipam.create_pool(Pool::new("p", "10.244.0.0/16".parse().unwrap()).unwrap())
            .unwrap();
        ipam.auto_assign(&AutoAssignArgs::v4("n2", "other", 1))
            .unwrap();
        ipam.auto_assign(&AutoAssignArgs::v4("n1", "victim", 1))
            .unwrap()
            .v4
            .ips[0]
            .block
    };
    for garbage in [
        &b"\x01\x00\x00\x00\x00\x00\x00\x00\x05\xff\xff\xff"[..],
        b"",
        b"\x07junk",
    ] {
        {
            let raw = ipam_store::sled::open_raw(&dir, RAW_WAIT).unwrap();
            raw.insert(keys::encode(&Key::Block(victim)), garbage)
                .unwrap();
            raw.flush().unwrap();
        }
        let ipam = ipam(open(&dir));
        match ipam.store().get(&Key::Block(victim)) {
            Err(StoreError::Corrupt { key, reason }) => {
                assert_eq!(key, format!("block {victim}"), "{reason}");
            }
            other => panic!("expected corrupt, got {other:?}"),
        }
        let e = ipam
            .auto_assign(&AutoAssignArgs::v4("n1", "new", 1))
            .unwrap_err();
        assert!(
            matches!(e, AssignError::Store(StoreError::Corrupt { .. })),
            "{e}"
        );
        assert!(e.to_string().contains(&victim.to_string()), "{e}");
        // Another node's block is untouched and keeps serving.
        let got = ipam
            .auto_assign(&AutoAssignArgs::v4("n2", "more", 1))
            .unwrap();
        assert_ne!(got.v4.ips[0].block, victim);
        ipam.release_by_handle("more").unwrap();
        let bad = ipam.store().corrupt_records().unwrap();
        assert_eq!(bad.len(), 1, "{bad:?}");
        let problems = audit(ipam.store()).unwrap();
        assert!(
            problems.iter().any(|p| matches!(p, ipam_core::Problem::Corrupt { key, .. } if *key == format!("block {victim}"))),
            "{problems:?}"
        );
    }
}

#[test]
fn concurrent_commits_share_flushes() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(open(d.path()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let mut h = ipam_core::Handle::new(&format!("t{t}-{i}"));
                    h.add("10.0.0.0/26".parse().unwrap(), 1);
                    s.commit(vec![Write::Create(ipam_core::Record::Handle(h))])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (commits, flushes) = s.commit_stats();
    assert_eq!(commits, 400);
    assert!(
        flushes < commits,
        "group commit: {flushes} flushes for {commits} commits"
    );
}

/// Kills an allocation storm at random moments, reopens, and checks that every acknowledged
/// operation is there and the invariants hold. `IPAM_CRASH_ITERATIONS` sets the count.
#[test]
fn survives_sigkill_during_an_allocation_storm() {
    let iterations: u32 = std::env::var("IPAM_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("store");
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut held: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut total_acked = 0usize;
    for it in 0..iterations {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ipam-sled-storm"))
            .arg(&dir)
            .arg(it.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(40 + rng % 200));
        // SAFETY-free: kill(2) through libc on our own child.
        let rc = unsafe_free_kill(child.id());
        assert_eq!(rc, 0);
        let mut stdout = child.stdout.take().unwrap();
        child.wait().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
        // Complete lines are acknowledged operations; the text after the last newline is an
        // acknowledgement cut by the kill. The operation in flight at the kill may or may not
        // have applied: after "A s<seed>-<i>" that is the release of s<seed>-<i-8>.
        let mut lines: Vec<&str> = text.split('\n').collect();
        lines.pop();
        let mut maybe_released = None;
        for line in &lines {
            let mut w = line.split(' ');
            match (w.next(), w.next(), w.next()) {
                (Some("A"), Some(h), Some(ip)) => {
                    held.insert(h.to_string(), ip.parse().unwrap());
                    total_acked += 1;
                    let i: u64 = h.rsplit('-').next().unwrap().parse().unwrap();
                    maybe_released = i.checked_sub(8).map(|j| format!("s{it}-{j}"));
                }
                (Some("R"), Some(h), None) => {
                    held.remove(h);
                    maybe_released = None;
                }
                _ => panic!("storm error: {line}"),
            }
        }
        let ipam = Observed::new(open(&dir), Arc::new(SystemClock));
        let problems = audit(ipam.store()).unwrap();
        assert!(problems.is_empty(), "after kill {it}: {problems:#?}");
        let mut seen = BTreeSet::new();
        if let Some(h) = maybe_released {
            if ipam.addresses_by_handle(&h).unwrap().is_empty() {
                held.remove(&h);
            }
        }
        for (h, ip) in &held {
            assert_eq!(
                ipam.addresses_by_handle(h).unwrap(),
                vec![*ip],
                "acknowledged allocation {h} lost after kill {it}"
            );
            assert!(seen.insert(*ip), "{ip} held twice");
        }
        assert!(ipam.store().corrupt_records().unwrap().is_empty());
    }
    assert!(
        total_acked > iterations as usize,
        "the storm made progress ({total_acked})"
    );
    eprintln!("crash test: {iterations} kills, {total_acked} acknowledged allocations checked");
}

fn unsafe_free_kill(pid: u32) -> i32 {
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map(|s| if s.success() { 0 } else { 1 })
        .unwrap_or(1)
}
