//! namesock-cli: the `namesock` command's crate. Its library holds the network-namespace test
//! bed (hosts that move, lose links and packets), the scenarios built on it and the demo; the
//! `namesock testbed` and `namesock demo` commands, the end-to-end tests and the benchmarks use
//! it. Kept out of the `namesock` library so that `libnamesock.so` links none of it.

pub mod testbed;
