//! The AF_XDP packet path of zcproxy's QUIC data plane.
//!
//! - [`insn`]: an eBPF instruction encoder and assembler, so the XDP program is built from
//!   Rust at run time (no clang, no bpf-linker, no object files).
//! - [`bpf`]: the bpf(2) commands: maps, program load with the verifier's log, test runs,
//!   BPF links, object info.
//! - [`program`]: the redirect program (UDP to the proxy's addresses and port → the RX
//!   queue's AF_XDP socket; everything else → the kernel) and its loader.
//! - [`maps`]: its XSKMAP and per-CPU verdict counters.
//! - [`mod@attach`]: attaching through a BPF link (native, else generic), detached on drop
//!   and by the kernel when the process dies.
//! - [`netlink`]: which XDP program an interface has.
//! - [`umem`], [`ring`], [`socket`]: the AF_XDP side: a shard's UMEM (huge pages where
//!   available), its four rings with batched, allocation-free operations, and the XSK
//!   socket bound to one queue (zero-copy where the driver can, else copy). Our own, not
//!   a crate's: see af-xdp/README.md for why.

pub mod attach;
pub mod bpf;
pub mod error;
pub mod insn;
pub mod maps;
pub mod netlink;
pub mod program;
pub mod ring;
mod setup;
pub mod socket;
pub mod umem;

pub use attach::{attach, AttachMode, Interface, XdpLink, XdpMode};
pub use error::{Error, Result};
pub use maps::{Reason, Verdicts, XskMap};
pub use program::{Filter, RedirectProgram};
pub use ring::{Batch, CompletionRing, Desc, FillRing, RingStats, RxRing, TxRing};
pub use socket::{BoundMode, Counters, Rings, Statistics, XskConfig, XskMode, XskSocket};
pub use umem::{FramePool, HugePages, Umem, UmemConfig};
