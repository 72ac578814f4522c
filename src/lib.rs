//! pgward: a security-aware PostgreSQL proxy.
//!
//! Modules follow a connection's path: [`accept`] → [`startup`] (TLS, startup
//! message, authentication relay) → [`relay`] (client ⇄ server) → [`inspect`]
//! (parse, classify) → [`policy`] (decide). [`protocol`] holds the wire
//! format, [`config`] the policy.yaml model.

pub mod accept;
pub mod admin;
pub mod audit;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod context;
pub mod inspect;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod protocol;
pub mod relay;
pub mod reload;
pub mod startup;
pub mod tenant;
pub mod upstream;
