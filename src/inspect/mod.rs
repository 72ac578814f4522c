//! Statement inspection: parse SQL with PostgreSQL's own grammar (pg_query) and
//! describe what each statement touches.

pub mod model;

pub use model::*;
