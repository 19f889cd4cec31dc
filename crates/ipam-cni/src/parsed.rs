//! The configurations a node service has parsed, kept by their bytes.
//!
//! A node's runtime sends the same network configuration with every call, and turning its JSON
//! into a [`PluginConfig`] is most of a request's own work in the service (about 40,000
//! instructions of JSON and validation per request, docs/benchmarks.md). A configuration is
//! the same function of its bytes and the command every time (nothing else is read: the node
//! name file is read where the name is used), so a request whose bytes and command match a
//! kept one takes a copy of it instead. Only configurations that parsed are kept; a bad one
//! is refused the same way every time. At most [`KEPT`]; the least recently used goes first.

use crate::config::PluginConfig;
use crate::env::Command;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// Configurations kept: a node serves a handful of networks.
pub const KEPT: usize = 8;

/// A kept configuration: the command and bytes it was parsed for, and what they gave.
type Kept = (Command, Box<[u8]>, PluginConfig);

/// The kept configurations, most recently used first.
#[derive(Default)]
pub struct Parsed {
    recent: Mutex<VecDeque<Kept>>,
}

impl Parsed {
    /// A copy of the configuration parsed from `bytes` for `command`, if kept.
    pub fn get(&self, command: Command, bytes: &[u8]) -> Option<PluginConfig> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let i = recent
            .iter()
            .position(|(c, b, _)| *c == command && **b == *bytes)?;
        if i > 0 {
            let hit = recent.remove(i)?;
            recent.push_front(hit);
        }
        recent.front().map(|(_, _, config)| config.clone())
    }

    /// Keeps `config`, parsed from `bytes` for `command`.
    pub fn put(&self, command: Command, bytes: &[u8], config: &PluginConfig) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent
            .iter()
            .any(|(c, b, _)| *c == command && **b == *bytes)
        {
            return;
        }
        if recent.len() >= KEPT {
            recent.pop_back();
        }
        recent.push_front((command, bytes.into(), config.clone()));
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> PluginConfig {
        let json = format!(r#"{{"cniVersion":"1.0.0","name":"{name}","ipam":{{}}}}"#);
        PluginConfig::parse(json.as_bytes(), Command::Add).expect("a valid literal")
    }

    #[test]
    fn kept_by_bytes_and_command_least_recently_used_out() {
        let p = Parsed::default();
        p.put(Command::Add, b"a", &config("a"));
        assert_eq!(p.get(Command::Add, b"a"), Some(config("a")));
        assert_eq!(
            p.get(Command::Del, b"a"),
            None,
            "another command parses on its own"
        );
        assert_eq!(
            p.get(Command::Add, b"a "),
            None,
            "other bytes parse on their own"
        );
        for i in 0..KEPT - 1 {
            p.put(Command::Add, format!("n{i}").as_bytes(), &config("n"));
        }
        assert_eq!(p.len(), KEPT);
        // "a" is the oldest; used now, so the next one in pushes out "n0" instead.
        assert!(p.get(Command::Add, b"a").is_some());
        p.put(Command::Add, b"new", &config("new"));
        assert_eq!(p.len(), KEPT);
        assert!(p.get(Command::Add, b"a").is_some());
        assert!(p.get(Command::Add, b"n0").is_none());
        assert!(p.get(Command::Add, b"n1").is_some());
    }
}
