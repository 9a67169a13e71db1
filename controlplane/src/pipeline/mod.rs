//! From catalogs to the current snapshot, in the order a change goes through it:
//!
//! - [`intake`]: the one channel sources' catalogs and the API's override edits come in by, in order; the
//!   loop that coalesces bursts, waits for every source before the first snapshot, and answers changes
//!   with the version that carries them.
//! - [`merge`]: every source's latest catalog merged into one; which source's settings win.
//! - [`overrides`]: the operator's runtime word on backends (ready/drain/maint, weight) and blue/green
//!   switches, applied after the merge.
//! - [`compiler`]: catalog + group size + defaults → a deterministic, validated `ringway_shared::Snapshot`.
//! - [`versions`]: versions that keep increasing across restarts.
//! - [`publisher`]: holds the inputs and the current snapshot, skips unchanged content, encodes each
//!   snapshot once for every session.
//!
//! The pipeline imports the model only: sources reach it through the intake's channel, and the snapshot
//! server and the API call it.

pub mod compiler;
pub mod intake;
pub mod merge;
pub mod overrides;
pub mod publisher;
pub mod versions;
