//! The model: what should be load balanced, as plain data every stage shares.

pub mod catalog;
