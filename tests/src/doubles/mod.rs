//! Doubles of the discovery sources that cannot run on a test machine (Marathon, Consul), each written from
//! the documented wire formats in `shared/reference/discovery.md`, and the small HTTP server they share.
//! etcd is not doubled: the tests run the real one ([`crate::etcd`]).

pub mod consul;
pub mod http;
pub mod marathon;
