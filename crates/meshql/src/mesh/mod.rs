//! The mesh and its products: opening a mesh directory (contracts,
//! policies, users, storage) into [`Mesh`], and each product as a DataFusion
//! table ([`catalog`]).
//!
//! Opening touches no storage. The mesh uses storage (where products' data
//! is) and governance (policies are validated as the mesh opens, and the
//! catalog serves products wrapped in their policies); sessions, discovery
//! and check are built on it, never the other way round.

pub(crate) mod catalog;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use meshql_manifest::{Catalog, Contract, Problem};

use crate::error::{Error, Result};
use crate::governance::{ProductPolicy, decide};
use crate::principal::Principal;
use crate::storage::iceberg::{CatalogHandle, IcebergSource};
use catalog::ProductTable;

/// The demo mesh's documented pseudonym secret: anyone who reads the README
/// can compute its pseudonyms, so only a mesh of demo secrets may use it.
const DEMO_PSEUDONYM_SECRET: &str = "demo-pseudonym-secret-change-me";

/// An opened mesh: the validated catalog and the products behind it.
/// Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Mesh {
    pub(crate) inner: Arc<MeshInner>,
}

pub(crate) struct MeshInner {
    pub(crate) catalog: Catalog,
    /// Every product, by domain and name, raw.
    pub(crate) products: BTreeMap<(String, String), Arc<ProductTable>>,
    pub(crate) runtime: Arc<RuntimeEnv>,
    /// The key of `hash_pseudonym`.
    pub(crate) secret: Option<Vec<u8>>,
    /// The Iceberg catalogs contracts name, connected on first use.
    pub(crate) catalogs: Vec<Arc<CatalogHandle>>,
    /// The workers queries are spread over, if any.
    pub(crate) cluster: std::sync::RwLock<Option<Arc<crate::cluster::Cluster>>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("name", &self.inner.catalog.mesh.name)
            .field("products", &self.inner.catalog.contracts.len())
            .finish()
    }
}

impl Mesh {
    /// Opens a mesh leniently: contracts with problems are left out and
    /// reported by [`Mesh::problems`]; everything else is usable.
    pub fn open(dir: impl AsRef<Path>) -> Result<Mesh> {
        Self::from_catalog(Catalog::load(dir)?)
    }

    /// Opens a mesh strictly: any problem in any file, including a policy
    /// expression that does not type-check, is an error that lists them all.
    pub fn open_strict(dir: impl AsRef<Path>) -> Result<Mesh> {
        let mesh = Self::from_catalog(Catalog::load(dir)?)?;
        if mesh.problems().is_empty() {
            Ok(mesh)
        } else {
            Err(meshql_manifest::Error::Invalid(mesh.problems().to_vec()).into())
        }
    }

    /// Builds the mesh from an already loaded catalog. No storage is touched.
    /// Policy expressions that do not type-check are added to
    /// [`Mesh::problems`]; queries on the products they govern fail.
    pub fn from_catalog(mut catalog: Catalog) -> Result<Mesh> {
        let runtime = Arc::new(RuntimeEnv::default());
        let buckets = crate::storage::register_stores(&runtime, &catalog.mesh.storage)?;
        let policy_problems = crate::governance::validate(&catalog);
        catalog.problems.extend(policy_problems);
        let mut products = BTreeMap::new();
        let catalogs: std::collections::HashMap<_, _> = catalog
            .mesh
            .catalogs
            .values()
            .map(|c| {
                let storage = c.storage.as_ref().and_then(|s| catalog.mesh.storage.get(s));
                (
                    c.name.clone(),
                    Arc::new(CatalogHandle::new(c.clone(), storage, Arc::clone(&buckets))),
                )
            })
            .collect();
        for contract in &catalog.contracts {
            let Some(server) = contract.servers.first() else {
                continue;
            };
            let table = if server.is_iceberg() {
                let Some(source) =
                    IcebergSource::new(server, &catalog.mesh.storage, &catalogs, &buckets)
                else {
                    continue;
                };
                ProductTable::iceberg(Arc::new(contract.clone()), source)
            } else {
                let Some(storage) = catalog.mesh.storage.get(&server.server) else {
                    continue;
                };
                ProductTable::new(Arc::new(contract.clone()), storage, server)
            };
            products.insert(
                (contract.domain.clone(), contract.product.name.clone()),
                Arc::new(table),
            );
        }
        let secret = std::env::var("MESHQL_PSEUDONYM_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| catalog.mesh.governance.pseudonym_secret.clone());
        if secret.as_deref() == Some(DEMO_PSEUDONYM_SECRET) && !catalog.users.demo_secrets {
            return Err(Error::PermissionDenied(format!(
                "{}: the pseudonym secret is the demo mesh's documented one, and users.yaml is not marked `demoSecrets: true`; set governance.pseudonymSecret (or MESHQL_PSEUDONYM_SECRET) to a secret of this mesh's own",
                catalog.mesh.file.display()
            )));
        }
        let secret = secret.map(String::into_bytes);
        let catalogs = catalogs.into_values().collect();
        Ok(Mesh {
            inner: Arc::new(MeshInner {
                catalog,
                products,
                runtime,
                secret,
                catalogs,
                cluster: std::sync::RwLock::new(None),
            }),
        })
    }

    /// Connects the mesh's Iceberg catalogs now rather than on first use.
    /// A connection's background work stays on the runtime that made it: a
    /// server connects them on the runtime that serves calls, so that they
    /// answer however busy the query runtimes are. A catalog that cannot be
    /// reached is tried again by the first query that needs it.
    /// Spreads the queries of sessions made from now on over `cluster`'s
    /// workers (`None`: every query runs in-process).
    pub fn set_cluster(&self, cluster: Option<crate::cluster::Cluster>) {
        if let Ok(mut c) = self.inner.cluster.write() {
            *c = cluster.map(Arc::new);
        }
    }

    /// The cluster queries are spread over, if any.
    pub fn cluster(&self) -> Option<Arc<crate::cluster::Cluster>> {
        self.inner.cluster.read().ok().and_then(|c| c.clone())
    }

    pub async fn connect_catalogs(&self) {
        for catalog in &self.inner.catalogs {
            // Its error is the first query's to report.
            let _ = catalog.connect().await;
        }
    }

    /// The principal `name` as `users.yaml` defines it.
    pub fn principal(&self, name: &str) -> Result<Principal> {
        let users = &self.inner.catalog.users;
        match users.get(name) {
            Some(u) => Ok(Principal {
                user: u.name.clone(),
                roles: u.roles.clone(),
                groups: u.groups.clone(),
                attributes: u.attributes.clone(),
            }),
            None => {
                let names: Vec<&str> = users.users.iter().map(|u| u.name.as_str()).collect();
                let mut msg = format!("unknown user `{name}`");
                if names.is_empty() {
                    msg.push_str(": the mesh has no users.yaml");
                } else {
                    msg.push_str(&format!(" (users.yaml defines {})", names.join(", ")));
                }
                Err(Error::PermissionDenied(msg))
            }
        }
    }

    /// The principal `name` if `password` is theirs. Every failure reads the
    /// same, so it tells nothing about which part was wrong.
    pub fn authenticate(&self, name: &str, password: &str) -> Result<Principal> {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let denied = || Error::PermissionDenied("invalid user name or password".into());
        let user = self.inner.catalog.users.get(name).ok_or_else(denied)?;
        let hash = user.password_hash.as_deref().ok_or_else(denied)?;
        let parsed = PasswordHash::new(hash).map_err(|_| denied())?;
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .map_err(|_| denied())?;
        self.principal(name)
    }

    /// The SCRAM-SHA-256 verifier `users.yaml` holds for `name`, if any:
    /// what a PostgreSQL client's password login is checked against.
    pub fn scram_verifier(&self, name: &str) -> Option<&str> {
        self.inner
            .catalog
            .users
            .get(name)
            .and_then(|u| u.scram_sha256.as_deref())
    }

    /// What `principal` sees of `domain.product`, and which rule decided.
    pub fn explain_policy(&self, principal: &Principal, product: &str) -> Option<ProductPolicy> {
        let (domain, name) = product.split_once('.')?;
        let table = self
            .inner
            .products
            .get(&(domain.to_string(), name.to_string()))?;
        Some(decide(
            &self.inner.catalog.rules,
            principal,
            &table.contract,
        ))
    }

    /// When a product's data last changed (see [`Session::last_updated`]);
    /// `None` when it cannot be told.
    pub(crate) async fn last_updated_ms(&self, contract: &Contract) -> Option<i64> {
        let table = self
            .inner
            .products
            .get(&(contract.domain.clone(), contract.product.name.clone()))?;
        table
            .last_updated_ms(&self.inner.runtime)
            .await
            .ok()
            .flatten()
    }

    /// The mesh's catalog: `mesh.yaml` and the contracts that loaded.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Problems of contracts that were left out when opened leniently.
    pub fn problems(&self) -> &[Problem] {
        &self.inner.catalog.problems
    }

    /// The contract of `domain.product`.
    pub fn contract(&self, domain: &str, product: &str) -> Option<&Contract> {
        self.inner.catalog.contract(domain, product)
    }

    /// Every product's `domain.product` name, sorted.
    pub fn product_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .catalog
            .contracts
            .iter()
            .map(Contract::qualified_name)
            .collect();
        names.sort();
        names
    }
}
