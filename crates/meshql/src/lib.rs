//! meshql: governed, federated SQL over domain data products.
//!
//! A mesh is a directory of data contracts (`catalog/<domain>/<product>.yaml`)
//! and a `mesh.yaml` that says where their data lives. [`Mesh::open`] reads
//! it without touching storage; [`Mesh::session`] gives a [`Session`] that
//! runs SQL as a [`Principal`]; products are named `domain.product`.
//!
//! ```no_run
//! # async fn run() -> meshql::Result<()> {
//! use meshql::{Mesh, Principal};
//!
//! let mesh = Mesh::open("catalog")?;
//! let session = mesh.session(Principal::new("analyst").with_role("analyst"));
//! let batches = session
//!     .sql("SELECT region, count(*) FROM sales.orders GROUP BY region")
//!     .await?
//!     .collect()
//!     .await
//!     .map_err(meshql::Error::Execution)?;
//! println!("{}", arrow::util::pretty::pretty_format_batches(&batches).unwrap());
//! # Ok(())
//! # }
//! ```

pub mod audit;
pub mod check;
pub mod cluster;
pub mod demo;
mod error;
pub mod governance;

mod discovery;
mod mesh;
mod principal;
mod session;
mod storage;
mod types;

pub use audit::ProductAccess;
pub use discovery::{SearchHit, search_sql};
/// Name of the catalog that holds the mesh's domains.
pub const CATALOG_NAME: &str = "mesh";
pub use error::{Error, Result};
pub use mesh::Mesh;
pub use meshql_manifest as manifest;
pub use principal::Principal;
pub use session::{PathChange, Query, QueryOptions, Replanned, Session, search_path_change};

/// Whether `sql` is a small statement: within the limits, with few
/// operators, so planning it is quick and shallow on any thread. A server
/// may plan such statements where it answers calls, and others on threads
/// of their own.
pub fn is_small_statement(sql: &str) -> bool {
    use session::limits;
    matches!(limits::check_statement(sql), Ok(limits::Depth::Shallow))
}

/// Arrow type of a contract column type.
pub fn arrow_type(t: manifest::ColumnType) -> arrow::datatypes::DataType {
    types::arrow_type(t)
}

/// An argon2id hash of `password` in PHC format, for `users.yaml`.
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .map_err(|e| Error::PermissionDenied(format!("cannot hash the password: {e}")))
}

/// `n` bytes from the operating system's secure random source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut out = vec![0u8; n];
    OsRng.fill_bytes(&mut out);
    out
}

/// A random identifier: 16 hex digits (64 bits) from the secure source.
pub fn random_id() -> String {
    random_bytes(8).iter().map(|b| format!("{b:02x}")).collect()
}
