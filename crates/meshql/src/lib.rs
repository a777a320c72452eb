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
mod catalog;
pub mod check;
pub mod demo;
mod error;
pub mod governance;
mod iceberg;
mod iceberg_io;
mod iceberg_scan;
mod principal;
mod session;
mod storage;
mod system;
mod types;

pub use catalog::CATALOG_NAME;
pub use error::{Error, Result};
pub use meshql_manifest as manifest;
pub use principal::Principal;
pub use session::{Mesh, ProductAccess, Query, QueryOptions, Session};

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

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    governance::functions::hmac_sha256(key, msg)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
