//! The cluster-wide IPAM configuration and its validation rules.

use serde::{Deserialize, Serialize};

/// The built-in cap on blocks per node when `max_blocks_per_host` is 0.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;
/// Largest allowed cooldown.
pub const MAX_COOLDOWN_SECONDS: u32 = 1200;

/// Cluster-wide settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// Never borrow from blocks affine to other nodes.
    pub strict_affinity: bool,
    /// Claim new blocks when the node's blocks are full.
    pub auto_allocate_blocks: bool,
    /// Blocks a node may claim; 0 means the built-in cap of 20.
    pub max_blocks_per_host: u32,
    /// Seconds a released address stays unusable (0..=1200).
    pub ip_cooldown_seconds: u32,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            ip_cooldown_seconds: 0,
        }
    }
}

/// A configuration that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Without strict affinity a node must be able to claim blocks.
    #[error("auto_allocate_blocks=false requires strict_affinity=true")]
    NoAutoAllocateWithoutStrict,
    /// A per-host block limit only makes sense with strict affinity.
    #[error("max_blocks_per_host={0} requires strict_affinity=true")]
    MaxBlocksWithoutStrict(u32),
    /// Cooldown out of range.
    #[error("ip_cooldown_seconds={0} is out of range 0..=1200")]
    Cooldown(u32),
}

impl IpamConfig {
    /// Checks the rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.strict_affinity && !self.auto_allocate_blocks {
            return Err(ConfigError::NoAutoAllocateWithoutStrict);
        }
        if self.max_blocks_per_host > 0 && !self.strict_affinity {
            return Err(ConfigError::MaxBlocksWithoutStrict(
                self.max_blocks_per_host,
            ));
        }
        if self.ip_cooldown_seconds > MAX_COOLDOWN_SECONDS {
            return Err(ConfigError::Cooldown(self.ip_cooldown_seconds));
        }
        Ok(())
    }

    /// The effective per-node block limit.
    pub fn block_limit(&self) -> u32 {
        if self.max_blocks_per_host == 0 {
            DEFAULT_MAX_BLOCKS_PER_HOST
        } else {
            self.max_blocks_per_host
        }
    }

    /// Cooldown in nanoseconds.
    pub fn cooldown_ns(&self) -> u64 {
        u64::from(self.ip_cooldown_seconds) * 1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(IpamConfig::default().validate().is_ok());
        let c = IpamConfig {
            auto_allocate_blocks: false,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::NoAutoAllocateWithoutStrict));
        let c = IpamConfig {
            max_blocks_per_host: 4,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::MaxBlocksWithoutStrict(4)));
        let c = IpamConfig {
            strict_affinity: true,
            max_blocks_per_host: 4,
            auto_allocate_blocks: false,
            ip_cooldown_seconds: 1200,
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.block_limit(), 4);
        assert_eq!(IpamConfig::default().block_limit(), 20);
        let c = IpamConfig {
            ip_cooldown_seconds: 1201,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Cooldown(1201)));
    }
}
