//! namesock: TCP connections named by who the peer is, not where it is.

pub use namesock_identity as identity;
pub mod api;
pub mod config;
pub mod control;
mod copy;
pub mod endpoint;
pub mod engine;
pub mod interpose;
pub mod logging;
pub mod path_manager;
pub mod record_cache;
pub mod relay;
pub mod session;
pub mod shared_lookup;
pub mod spare_paths;
pub mod synthetic;
pub mod ticket;
pub mod ticket_store;
pub mod timers;
pub mod wire;
pub use api::{TcpListener, TcpStream};
