//! The meshql catalog as code: `mesh.yaml` and the domains' ODCS v3.1 data
//! contracts, parsed and validated with the file, line and column of every
//! problem. This crate knows nothing of query execution.
//!
//! ```no_run
//! use meshql_manifest::Catalog;
//!
//! // Strict: any problem in any file fails, listing all of them.
//! let catalog = Catalog::load_strict("catalog")?;
//! for contract in &catalog.contracts {
//!     println!("{} owned by {:?}", contract.qualified_name(), contract.owner());
//! }
//! # Ok::<(), meshql_manifest::Error>(())
//! ```

mod check;
mod decode;
mod load;
mod model;
mod policy;
mod problem;
mod yaml;

pub use decode::{closest_names, edit_distance};
pub use load::{Catalog, RESERVED_DOMAINS, is_identifier};
pub use model::*;
pub use policy::{
    Access, ColumnAction, ColumnRule, Expression, Pattern, PolicySettings, Rule, User, Users,
};
pub use problem::{Error, Problem, Result};
pub use yaml::Pos;

#[cfg(test)]
mod tests;

/// `HOST:PORT` split into its parts, for worker addresses: a host name or
/// an IP address (IPv6 in brackets) and a port number.
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && !host.contains(['/', ' '])).then_some((host, port))
}
