//! End-to-end tests live in `tests/`; this library holds the benchmark suite (`make bench`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bench;
