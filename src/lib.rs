//! pgward: a security-aware PostgreSQL proxy.
//!
//! Modules follow a connection's path: [`accept`] → [`startup`] (TLS, startup
//! message, authentication relay) → [`relay`] (client ⇄ server) → [`inspect`]
//! (parse, classify) → [`policy`] (decide) → and, later, tenant and audit.

pub mod config;
pub mod inspect;
