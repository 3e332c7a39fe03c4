//! `[quic] packet_io` and `[quic.af_xdp]`: what carries the QUIC plane's packets.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The packet-IO backend under every shard's QUIC endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PacketIoKind {
    /// The kernel's UDP socket (GSO/GRO).
    #[default]
    Socket,
    /// AF_XDP sockets on an interface's queues, fed by an XDP program.
    AfXdp,
}

/// Whether AF_XDP sockets bind in zero-copy mode: `"auto"` (zero-copy where the driver has
/// it, else copy), `true` (zero-copy or fail) or `false` (copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    #[default]
    Auto,
    On,
    Off,
}

impl Serialize for ZeroCopy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ZeroCopy::Auto => s.serialize_str("auto"),
            ZeroCopy::On => s.serialize_bool(true),
            ZeroCopy::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for ZeroCopy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Flag(true) => Ok(ZeroCopy::On),
            Raw::Flag(false) => Ok(ZeroCopy::Off),
            Raw::Word(w) if w == "auto" => Ok(ZeroCopy::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "zero_copy = {w:?}: expected \"auto\", true or false"
            ))),
        }
    }
}

/// What to do when the configured backend cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PacketIoFallback {
    /// Refuse to start, saying why.
    #[default]
    None,
    /// Serve QUIC on the kernel's UDP socket instead, saying so in the log and metrics.
    Socket,
}

/// `[quic.af_xdp]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AfXdp {
    /// The interface whose queues the shards read; the proxy's `listen` address is on it.
    pub interface: String,
    /// The queue each shard binds, in shard order; empty: shard N on queue N.
    pub queues: Vec<u32>,
    pub zero_copy: ZeroCopy,
    /// Bytes of one UMEM frame: 2048 or 4096 (a frame holds one packet).
    pub frame_size: u32,
    /// Frames of each shard's UMEM (half for receiving, half for sending); a power of two.
    pub frames: u32,
    /// Microseconds a read may busy-poll the queue (SO_BUSY_POLL; 0: off).
    pub busy_poll: u32,
    pub fallback: PacketIoFallback,
}

impl Default for AfXdp {
    fn default() -> Self {
        AfXdp {
            interface: String::new(),
            queues: Vec::new(),
            zero_copy: ZeroCopy::Auto,
            frame_size: 4096,
            frames: 8192,
            busy_poll: 0,
            fallback: PacketIoFallback::None,
        }
    }
}

impl AfXdp {
    /// The queue shard `shard` binds.
    pub fn queue(&self, shard: usize) -> u32 {
        self.queues.get(shard).copied().unwrap_or(shard as u32)
    }

    /// Checks what can be checked without the interface; `cores` shards will bind.
    pub fn validate(&self, cores: usize) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(format!("quic.af_xdp: {why}")));
        if self.interface.trim().is_empty() {
            return invalid("interface is required with quic.packet_io = \"af_xdp\"".into());
        }
        if ![2048, 4096].contains(&self.frame_size) {
            return invalid(format!(
                "frame_size {} must be 2048 or 4096",
                self.frame_size
            ));
        }
        if !self.frames.is_power_of_two() || !(64..=1 << 20).contains(&self.frames) {
            return invalid(format!(
                "frames {} must be a power of two from 64 to 1048576",
                self.frames
            ));
        }
        if !self.queues.is_empty() && self.queues.len() != cores {
            return invalid(format!(
                "queues names {} queue(s) for {cores} core(s): one per core, in core order",
                self.queues.len()
            ));
        }
        let mut seen = self.queues.clone();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return invalid("queues: a queue can feed one core only".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AfXdp, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn zero_copy_takes_auto_or_a_flag() {
        assert_eq!(
            parse("zero_copy = \"auto\"").unwrap().zero_copy,
            ZeroCopy::Auto
        );
        assert_eq!(parse("zero_copy = true").unwrap().zero_copy, ZeroCopy::On);
        assert_eq!(parse("zero_copy = false").unwrap().zero_copy, ZeroCopy::Off);
        assert!(parse("zero_copy = \"yes\"").is_err());
    }

    #[test]
    fn settings_that_cannot_run_are_refused_with_the_reason() {
        let ok = AfXdp {
            interface: "eth1".into(),
            ..AfXdp::default()
        };
        assert!(ok.validate(2).is_ok());
        assert_eq!(ok.queue(1), 1);
        let refused = |a: AfXdp| a.validate(2).unwrap_err().to_string();
        assert!(refused(AfXdp::default()).contains("interface is required"));
        assert!(refused(AfXdp {
            frame_size: 3000,
            ..ok.clone()
        })
        .contains("frame_size"));
        assert!(refused(AfXdp {
            frames: 1000,
            ..ok.clone()
        })
        .contains("power of two"));
        assert!(refused(AfXdp {
            queues: vec![3],
            ..ok.clone()
        })
        .contains("one per core"));
        assert!(refused(AfXdp {
            queues: vec![3, 3],
            ..ok.clone()
        })
        .contains("one core only"));
        let mapped = AfXdp {
            queues: vec![4, 6],
            ..ok
        };
        assert_eq!((mapped.queue(0), mapped.queue(1)), (4, 6));
    }
}
