//! Helpers shared by the benchmarks in `benches/` and the bench binaries in `src/bin/`.

use std::collections::BTreeMap;
use std::time::Duration;

/// The CNI environment of a call for container `cid` (interface eth0, a bench namespace).
pub fn cni_env(command: &str, cid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("CNI_COMMAND".to_string(), command.to_string()),
        ("CNI_CONTAINERID".to_string(), cid.to_string()),
        ("CNI_NETNS".to_string(), "/var/run/netns/bench".to_string()),
        ("CNI_IFNAME".to_string(), "eth0".to_string()),
    ])
}

/// A well-mixed 64-bit value from `text` and `salt` (FNV-1a, then a finaliser): stable ids
/// for fixtures that must look random.
pub fn mix(text: &str, salt: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// CPU time (user + system, all threads) of process `pid`, from `/proc/PID/stat` in clock ticks
/// of 10 ms (the fixed user-space tick on Linux).
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The etcd servers on this machine (processes named `etcd`), whose CPU a phase is charged.
pub fn etcd_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "etcd")
        })
        .collect()
}

/// The contract's floor on the memory store (the `floor/*` criterion cases and the
/// `floor_loop` example): what an auto-assign and a release cannot do without, with no engine
/// logic. A block of 64 addresses with some pods already in it, kept between operations as a
/// lane keeps it; each operation builds what it writes, changes the kept block, copies it for
/// the store (the store keeps the old version until the commit) over the block the last commit
/// handed back (`Datastore::commit_reusing`, as the engine does), and commits both records
/// under the kept revisions.
pub struct Floor {
    store: ipam_store::MemoryStore,
    kept: Option<ipam_core::Versioned<ipam_core::Block>>,
    spare: ipam_core::Spare,
    handle_rev: ipam_core::Revision,
}

/// The holder of pod `h` on node n1, as the benches build it.
pub fn holder(h: &str) -> std::sync::Arc<ipam_core::AllocAttrs> {
    std::sync::Arc::new(ipam_core::AllocAttrs::new(h, [("node", "n1")]).expect("a valid holder"))
}

/// The block 10.244.0.0/26 affine to n1, with `pods` addresses already held.
pub fn block_with(pods: usize) -> ipam_core::Block {
    let mut b = ipam_core::Block::new(
        "10.244.0.0/26".parse().expect("a valid literal"),
        Some("n1".into()),
        ipam_core::HostReserved::default(),
        1,
    )
    .expect("a valid block");
    for i in 0..pods {
        b.allocate(1, &holder(&format!("pod{i}")));
    }
    b
}

impl Floor {
    /// The floor over [`block_with`]`(pods)`, stored.
    pub fn new(pods: usize) -> Self {
        use ipam_core::{Datastore, Record, Versioned, Write};
        let store = ipam_store::MemoryStore::new();
        let b = block_with(pods);
        let revision = store
            .commit(vec![Write::Create(Record::Block(b.clone()))])
            .expect("the first write");
        Floor {
            store,
            kept: Some(Versioned { value: b, revision }),
            spare: ipam_core::Spare::default(),
            handle_rev: ipam_core::Revision(0),
        }
    }

    /// One address for handle "bench-pod": holder built, block changed, handle created.
    pub fn assign(&mut self) {
        let attrs = holder("bench-pod");
        let mut h = ipam_core::Handle::new("bench-pod");
        let cidr = self.kept.as_ref().map(|k| k.value.cidr).expect("kept");
        h.add(cidr, 1);
        let handle = ipam_core::Write::Create(ipam_core::Record::Handle(h));
        self.handle_rev = self.step(
            |b| {
                std::hint::black_box(b.allocate(1, &attrs));
            },
            handle,
        );
    }

    /// Its release: the block's addresses of "bench-pod" freed, the handle deleted.
    pub fn release(&mut self) {
        let delete = ipam_core::Write::Delete {
            key: ipam_core::Key::Handle("bench-pod".into()),
            expected: self.handle_rev,
        };
        self.step(
            |b| {
                for o in b.ordinals_of("bench-pod") {
                    b.release(o, 2, 0);
                }
                b.touch();
            },
            delete,
        );
    }

    /// The kept block changed by `change`, copied for the store into the spare, committed with `handle`
    /// under the kept revision, and kept as committed; the commit's revision.
    fn step(
        &mut self,
        change: impl FnOnce(&mut ipam_core::Block),
        handle: ipam_core::Write,
    ) -> ipam_core::Revision {
        use ipam_core::{Datastore, Record, Versioned, Write};
        let Versioned {
            value: mut b,
            revision: read,
        } = self.kept.take().expect("kept between operations");
        change(&mut b);
        let mut writes = self.spare.writes();
        writes.push(Write::Update {
            record: Record::Block(self.spare.copy_of(&b)),
            expected: read,
        });
        writes.push(handle);
        let revision = self
            .store
            .commit_reusing(writes, &mut self.spare)
            .expect("the store takes a write the contract allows");
        self.kept = Some(Versioned { value: b, revision });
        revision
    }
}
