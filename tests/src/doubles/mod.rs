//! Doubles of the discovery sources that cannot run on a test machine (Marathon, Consul), each written from
//! the documented wire formats in `shared/reference/discovery.md`, and the small HTTP server they share.
//! etcd runs for real ([`crate::etcd`]); its double only answers the malformed JSON a real etcd cannot.

pub mod consul;
pub mod etcd;
pub mod http;
pub mod marathon;
