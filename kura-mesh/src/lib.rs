//! Per-account replication mesh for Kura cache nodes — **not implemented yet**.
//!
//! This crate will own the peer protocol (server handler and client) served on
//! the mTLS peer listener, the durable bounded per-peer outbox fed by the
//! `kura-store` change feed, the bandwidth limiter, catch-up and O(difference)
//! repair over the store's digest summaries, and DNS discovery with membership
//! hysteresis. Peers authenticate each other with `kura-ca` configs.
//!
//! It exports nothing today: depending on it gives you no functionality. See
//! `docs/architecture.md` in the repository for the design it will follow.
