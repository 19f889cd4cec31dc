//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`, parsed into a validated [`CniEnv`].

use crate::error::CniError;
use std::collections::BTreeMap;

/// A CNI verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Allocate.
    Add,
    /// Release.
    Del,
    /// Verify.
    Check,
    /// Report versions.
    Version,
    /// Release what no valid attachment owns.
    Gc,
    /// Report readiness.
    Status,
}

impl Command {
    /// The `rscni_types` command, for version checks.
    pub fn as_rscni(self) -> rscni_types::types::Cmd {
        use rscni_types::types::Cmd;
        match self {
            Command::Add => Cmd::Add,
            Command::Del => Cmd::Del,
            Command::Check => Cmd::Check,
            Command::Version => Cmd::Version,
            Command::Gc => Cmd::Gc,
            Command::Status => Cmd::Status,
        }
    }
}

/// `CNI_ARGS`: `K=V;K=V`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// Every pair, in order of appearance (last one wins).
    pub pairs: BTreeMap<String, String>,
}

/// Keys this plugin understands in `CNI_ARGS`.
const KNOWN_ARGS: &[&str] = &[
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "IP",
];

impl CniArgs {
    /// Parses `CNI_ARGS`. Unknown keys are an error unless `IgnoreUnknown` is true (`1` or
    /// `true`), as the reference implementation does.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = BTreeMap::new();
        for part in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(CniError::Env(format!(
                    "CNI_ARGS pair {part:?} is not KEY=VALUE"
                )));
            };
            pairs.insert(k.to_string(), v.to_string());
        }
        let ignore = pairs
            .get("IgnoreUnknown")
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        if !ignore {
            if let Some(k) = pairs.keys().find(|k| !KNOWN_ARGS.contains(&k.as_str())) {
                return Err(CniError::Env(format!(
                    "unknown CNI_ARGS key {k:?} (set IgnoreUnknown=1 to allow it)"
                )));
            }
        }
        Ok(CniArgs { pairs })
    }

    /// A value.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The validated environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniEnv {
    /// The verb.
    pub command: Command,
    /// `CNI_CONTAINERID` (required for ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (required for ADD and CHECK).
    pub netns: String,
    /// `CNI_IFNAME` (required for ADD, DEL, CHECK).
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: CniArgs,
}

/// Longest container id accepted (runtimes use 64 hexadecimal characters); with the network
/// name's limit it keeps every handle id within the core's 512 bytes.
pub const MAX_CONTAINER_ID: usize = 256;
/// Longest `CNI_ARGS` accepted.
pub const MAX_CNI_ARGS: usize = 64 << 10;

/// A value for an error message: quoted, and cut to its first 64 characters when longer.
pub fn shown(v: &str) -> String {
    match v.char_indices().nth(64) {
        Some((i, _)) => format!("{:?}...", &v[..i]),
        None => format!("{v:?}"),
    }
}

/// The kernel's and libcni's rule for interface names: 1-15 bytes, not `.` or `..`, no `/`,
/// `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 15 {
        return Err(format!(
            "is {} bytes; interface names have at most 15",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("is not a valid interface name".into());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("must not contain '/', ':' or whitespace".into());
    }
    Ok(())
}

fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl CniEnv {
    /// Reads the CNI variables from a map (the process environment, or one forwarded to the
    /// node service).
    pub fn from_map(env: &BTreeMap<String, String>) -> Result<CniEnv, CniError> {
        let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("").to_string();
        let command = match get("CNI_COMMAND").as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "" => return Err(CniError::missing_env(&["CNI_COMMAND"])),
            other => {
                return Err(CniError::Env(format!(
                "unknown CNI_COMMAND {other:?}: expected ADD, DEL, CHECK, VERSION, GC or STATUS"
            )))
            }
        };
        let e = CniEnv {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: CniArgs::default(),
        };
        let required: &[(&str, &str)] = match command {
            Command::Add | Command::Check => &[
                ("CNI_CONTAINERID", &e.container_id),
                ("CNI_NETNS", &e.netns),
                ("CNI_IFNAME", &e.ifname),
            ],
            Command::Del => &[
                ("CNI_CONTAINERID", &e.container_id),
                ("CNI_IFNAME", &e.ifname),
            ],
            _ => &[],
        };
        let missing: Vec<&str> = required
            .iter()
            .filter(|(_, v)| v.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if !missing.is_empty() {
            return Err(CniError::missing_env(&missing));
        }
        if !e.container_id.is_empty() {
            if e.container_id.len() > MAX_CONTAINER_ID {
                return Err(CniError::Env(format!(
                    "CNI_CONTAINERID {} is {} bytes; at most {MAX_CONTAINER_ID} are accepted",
                    shown(&e.container_id),
                    e.container_id.len()
                )));
            }
            if !valid_container_id(&e.container_id) {
                return Err(CniError::Env(format!(
                        "CNI_CONTAINERID {} must start with a letter or digit and hold only [A-Za-z0-9_.-]",
                        shown(&e.container_id)
                    )));
            }
        }
        if !e.ifname.is_empty() {
            if let Err(why) = validate_ifname(&e.ifname) {
                return Err(CniError::Env(format!(
                    "CNI_IFNAME {}: {why}",
                    shown(&e.ifname)
                )));
            }
        }
        let cni_args = get("CNI_ARGS");
        if cni_args.len() > MAX_CNI_ARGS {
            return Err(CniError::Env(format!(
                "CNI_ARGS is {} bytes; at most {MAX_CNI_ARGS} are accepted",
                cni_args.len()
            )));
        }
        let args = CniArgs::parse(&cni_args)?;
        Ok(CniEnv { args, ..e })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn required_variables_per_command() {
        let e =
            CniEnv::from_map(&env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(
            e.details().contains("CNI_CONTAINERID, CNI_NETNS"),
            "{}",
            e.details()
        );
        let e = CniEnv::from_map(&env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1")]))
            .unwrap_err();
        assert_eq!(
            e.details(),
            "required environment variables missing: CNI_IFNAME"
        );
        assert!(CniEnv::from_map(&env(&[("CNI_COMMAND", "GC")])).is_ok());
        assert_eq!(CniEnv::from_map(&env(&[])).unwrap_err().code(), 4);
        let e = CniEnv::from_map(&env(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert!(e.details().contains("FROB"));
        let e = CniEnv::from_map(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert_eq!(e.code(), 4);
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "eth\t0",
            "abcdefghijklmnop",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
        for good in ["eth0", "net1", "abcdefghijklmno", "a.b", "a-b_c"] {
            assert!(validate_ifname(good).is_ok(), "{good:?}");
        }
        let long = "e".repeat(100_000);
        let e = CniEnv::from_map(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", &long),
        ]))
        .unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.details().len() < 200, "{}", e.details().len());
    }

    #[test]
    fn over_long_container_ids_are_invalid_environment() {
        let long = "a".repeat(123_000);
        let e = CniEnv::from_map(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", &long),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.details().len() < 200, "{}", e.details());
        let ok = "a".repeat(MAX_CONTAINER_ID);
        assert!(CniEnv::from_map(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", &ok),
            ("CNI_IFNAME", "eth0"),
        ]))
        .is_ok());
    }

    #[test]
    fn cni_args() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;FOO=bar")
            .expect("a valid literal");
        assert_eq!(a.get("K8S_POD_NAME"), Some("p"));
        assert_eq!(a.get("FOO"), Some("bar"));
        assert!(CniArgs::parse("FOO=bar").is_err());
        assert!(CniArgs::parse("IgnoreUnknown=true;FOO=bar").is_ok());
        assert!(CniArgs::parse("K8S_POD_NAME").is_err());
        assert_eq!(
            CniArgs::parse("").expect("a valid literal"),
            CniArgs::default()
        );
        assert_eq!(
            CniArgs::parse("IP=10.0.0.1")
                .expect("a valid literal")
                .get("IP"),
            Some("10.0.0.1")
        );
    }
}
