//! Streams: for each configured camera a runtime with its hub (the fan-out of access units),
//! health, state-store record and viewers, and the supervisor that pulls the camera while the
//! stream is active and watched.
//!
//! - [`hub`]: per-stream fan-out of `Arc<AccessUnit>` with the cached GOP.
//! - [`audio`]: per-stream fan-out of audio frames, and what the camera's audio is.
//! - [`ingest`]: plays a camera source's sessions one after another, with backoff and health.
//! - [`pull`]: on-demand pull (start ingest while watched, linger, stop).
//! - [`cluster_pull`]: one camera connection per cluster (the pull lease; relays from its
//!   holder's restream).
//! - [`runtime`]: [`StreamRuntime`], one stream at run time, and [`EndWatch`], when a viewer's
//!   session is over.
//! - [`registry`]: [`Streams`], all of them, following the state store.
//! - [`viewers`]: viewer places and limits.

pub(crate) mod audio;
pub(crate) mod cluster_pull;
pub(crate) mod hub;
pub(crate) mod ingest;
mod pull;
pub(crate) mod registry;
pub(crate) mod runtime;
pub(crate) mod viewers;

pub(crate) use registry::Streams;
pub(crate) use runtime::{ConsumerGuard, EndWatch, StreamRuntime};
pub(crate) use viewers::ViewerKind;
