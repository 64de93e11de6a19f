//! Runnable examples for the Kura crates; see `examples/`.
