//! `calico-ipamd` reaches an etcd that requires TLS client certificates, with the same three
//! files the plugin's `etcd_ca_cert_file`, `etcd_cert_file` and `etcd_key_file` name. The test
//! makes its own CA and certificates (openssl) and its own etcd on free loopback ports. With
//! etcd's auth on (users named by their certificate, set up with `etcdctl`), a client that may
//! only read still opens the store. Needs `etcd`, `etcdctl` and `openssl` on PATH; skips
//! without them unless `IPAM_ETCD_REQUIRED` is set.
#![cfg(feature = "etcd")]

mod common;

use ipam_cni::protocol::{self, Request};
use ipam_test_support::{etcd_or_skip, have};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(dir: &Path, script: &str) {
    let st = Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, a server certificate for 127.0.0.1 and client certificates (CN client, root and
/// reader: with etcd's auth on, the CN is the user), all signed by the CA.
fn certificates(dir: &Path) {
    sh(
        dir,
        r#"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 \
  -subj /CN=test-ca -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign
for who in server client root reader; do
  openssl req -newkey rsa:2048 -nodes -keyout $who-key.pem -out $who.csr -subj /CN=$who
done
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' > ext
for who in server client root reader; do
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile ext -out $who.pem
done
"#,
    );
}

/// An etcd on free loopback ports that requires client certificates signed by `dir`'s CA.
fn tls_etcd(dir: &Path) -> (Killed, String) {
    let (client, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{client}");
    let etcd = Killed(
        Command::new("etcd")
            .current_dir(dir)
            .args(["--data-dir", "etcd-data", "--name", "tls"])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("tls=http://127.0.0.1:{peer}"),
            ])
            .args(["--cert-file", "server.pem", "--key-file", "server-key.pem"])
            .args(["--client-cert-auth", "--trusted-ca-file", "ca.pem"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (etcd, url)
}

#[test]
fn the_service_reaches_a_tls_etcd_with_the_plugins_tls_keys() {
    if !etcd_or_skip(have("etcd") && have("openssl"), "etcd and openssl") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    certificates(dir);
    let (_etcd, url) = tls_etcd(dir);
    let file = |f: &str| dir.join(f).display().to_string();
    let socket = dir.join("ipamd.sock");
    let mut service = Command::new(env!("CARGO_BIN_EXE_calico-ipamd"));
    service
        .arg("--socket")
        .arg(&socket)
        .args(["--etcd-endpoints", &url, "--lock-timeout-seconds", "20"])
        .args(["--etcd-ca-cert-file", &file("ca.pem")])
        .args(["--etcd-cert-file", &file("client.pem")])
        .args(["--etcd-key-file", &file("client-key.pem")])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut svc = Killed(service.spawn().unwrap());
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Ok(Some(st)) = svc.0.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            let _ = svc.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("calico-ipamd exited ({st}): {err}");
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no service");
        std::thread::sleep(Duration::from_millis(50));
    }
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "tls", "type": "calico",
        "ipam": {"type": "calico-ipam", "nodename": "n1", "ipv4_pools": ["10.244.0.0/16"]}});
    let req = Request::cni(
        BTreeMap::from([
            ("CNI_COMMAND".into(), "ADD".into()),
            ("CNI_CONTAINERID".into(), "tls-pod".into()),
            ("CNI_NETNS".into(), "/var/run/netns/x".into()),
            ("CNI_IFNAME".into(), "eth0".into()),
        ]),
        conf.to_string(),
        None,
    );
    let r = protocol::call(&socket, &req, Duration::from_secs(60)).unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(common::first_address(&v).starts_with("10.244."), "{v}");
}

#[test]
fn credentials_that_may_only_read_open_an_unmarked_prefix_as_plain() {
    use ipam_core::{Datastore, RecordLayout, StoreError, Write};
    use ipam_store::etcd::{EtcdOptions, EtcdStore};
    if !etcd_or_skip(
        have("etcd") && have("etcdctl") && have("openssl"),
        "etcd, etcdctl and openssl",
    ) {
        return;
    }
    let d = tempfile::tempdir().expect("a temporary directory");
    let dir = d.path();
    certificates(dir);
    let (_etcd, url) = tls_etcd(dir);
    // Users by certificate name: root, and a reader of the prefix only.
    let ctl = format!("etcdctl --endpoints {url} --cacert ca.pem --cert root.pem --key root-key.pem --dial-timeout 10s");
    let t = Instant::now();
    while !Command::new("sh")
        .args(["-c", &format!("{ctl} endpoint health")])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "etcd did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sh(
        dir,
        &format!(
            "{ctl} user add root:root-pw
{ctl} user grant-role root root
{ctl} role add reader
{ctl} role grant-permission reader read /ro-test/ --prefix=true
{ctl} user add reader:reader-pw
{ctl} user grant-role reader reader
{ctl} auth enable"
        ),
    );
    let file = |f: &str| Some(dir.join(f).display().to_string());
    let connect = |who: &str| {
        EtcdStore::connect(EtcdOptions {
            endpoints: vec![url.clone()],
            prefix: "/ro-test/".into(),
            ca_cert_file: file("ca.pem"),
            cert_file: file(&format!("{who}.pem")),
            key_file: file(&format!("{who}-key.pem")),
            retry_budget: Duration::from_secs(10),
            ..Default::default()
        })
    };
    // No mark yet, and none the reader may write: it reads the prefix as plain.
    let reader = connect("reader").expect("a reader connects");
    let st = reader.layout().expect("scanned").expect("etcd has layouts");
    assert_eq!(
        (st.layout, st.plain + st.compressed),
        (Some(RecordLayout::Plain), 0)
    );
    let node = ipam_core::Record::Node(ipam_core::Node::new("n1").expect("a valid name"));
    let e = reader
        .commit(vec![Write::Create(node.clone())])
        .expect_err("the reader may not write");
    assert!(matches!(e, StoreError::Rejected(_)), "{e}");
    // The first node that may write marks the (empty) prefix compressed.
    let root = connect("root").expect("root connects");
    root.commit(vec![Write::Create(node)]).expect("root writes");
    let st = reader.layout().expect("scanned").expect("etcd has layouts");
    assert_eq!((st.layout, st.plain), (Some(RecordLayout::Compressed), 1));
}
