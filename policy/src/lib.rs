//! The policy model shared by the data plane and the control plane.
//!
//! Everything here is pure: no sockets, no clocks, no threads. The data plane compiles a
//! [`PolicyDoc`] into a [`CompiledPolicy`] once per revision and asks it, per destination
//! address, whether a request may proceed.

pub mod acl;
pub mod address;
pub mod compiled;
pub mod error;
pub mod event;
pub mod model;
pub mod password;

pub use acl::{Action, HostPattern, PortRange, Protocol, Rule};
pub use compiled::{CompiledPolicy, Decision, DenyReason, Request, UserId};
pub use error::PolicyError;
pub use event::{ApplyError, Change, PolicyEvent, EVENT_VERSION, SUBJECT};
pub use model::{PolicyDoc, User};
