//! Shared state, behind two traits:
//! - [`StateStore`]: per-stream start/stop state, what must be the same on every replica:
//!   whether a stream is active, its default fps/quality, and a `generation` bumped by every
//!   write so replicas can order events; and each stream's zones and lines once edited over
//!   the API (written compare-and-set on a version).
//! - [`ClusterStore`]: what replicas coordinate through: WHEP session owners, detection
//!   leases, and the relay of detection messages from the lease holder to the others.
//!
//! [`MemoryStore`] is the single-process default (it grants every lease
//! and relays nothing); [`RedisStore`] shares both across replicas.

mod memory;
mod redis;
mod store;

pub use memory::MemoryStore;
pub(crate) use redis::{HEARTBEAT_TTL, REPLICA_PATTERN};
pub use redis::{RedisStore, ReplicaInfo};
pub use store::{Action, ClusterStore, Geometry, StartParams, StateEvent, StateStore, StreamRecord, apply};
