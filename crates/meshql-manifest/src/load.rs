//! Loading a mesh directory: `mesh.yaml` and `<domain>/<product>.yaml`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::decode::{Ctx, Fields, check_header};
use crate::model::*;
use crate::policy::{PolicySettings, Rule, Users};
use crate::problem::{Error, Problem, Result};
use crate::yaml::{self, Node, Pos, Value};

/// Domains meshql keeps for itself.
pub const RESERVED_DOMAINS: &[&str] = &["meshql", "information_schema", "pg_catalog"];

/// A loaded mesh: its configuration, the contracts that validated, and the
/// problems of those that did not.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub dir: PathBuf,
    pub mesh: MeshConfig,
    pub contracts: Vec<Contract>,
    /// Problems in contracts that were skipped, and policy references that
    /// do not resolve (lenient loading).
    pub problems: Vec<Problem>,
    /// Local principals from `users.yaml` (empty when there is none).
    pub users: Users,
    /// Policy rules in evaluation order: `policies.yaml`, then
    /// `policies/*.yaml` by file name, then Trino's `rules.json`.
    pub rules: Vec<Rule>,
    /// What the policies say about personal data: which tags are sensitive
    /// like `classification: pii`, and which roles may read it unmasked.
    pub policy_settings: PolicySettings,
}

impl Catalog {
    /// Loads leniently: a contract with problems is left out and its problems
    /// kept in [`Catalog::problems`]; problems in `mesh.yaml` are fatal.
    pub fn load(dir: impl AsRef<Path>) -> Result<Catalog> {
        let dir = dir.as_ref();
        let mesh_file = dir.join("mesh.yaml");
        let text = read(&mesh_file)?;
        let mut ctx = Ctx::new(&mesh_file);
        let mesh = parse_into(&mut ctx, &text, |ctx, node| decode_mesh(ctx, node, dir));
        if !ctx.problems.is_empty() {
            return Err(Error::Invalid(ctx.problems));
        }
        let Some(mesh) = mesh else {
            return Err(Error::Invalid(ctx.problems));
        };

        let mut files = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut domain_dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir() && !is_hidden(p) && p.file_name().is_some_and(|n| n != "policies")
            })
            .collect();
        domain_dirs.sort();
        for d in domain_dirs {
            files.extend(yaml_files(&d)?);
        }

        let mut contracts: Vec<Contract> = Vec::with_capacity(files.len());
        let mut problems = Vec::new();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for (file, (contract, mut found)) in files.iter().zip(decode_contracts(&files, &mesh)) {
            if let Some(c) = &contract {
                let key = c.qualified_name();
                if let Some(first) = seen.get(&key) {
                    found.push(Problem {
                        file: file.clone(),
                        pos: c.product.pos,
                        message: format!(
                            "duplicate product `{key}`: already defined in {}",
                            first.display()
                        ),
                    });
                }
            }
            if found.is_empty() {
                if let Some(c) = contract {
                    seen.insert(c.qualified_name(), file.clone());
                    contracts.push(c);
                }
            } else {
                problems.extend(found);
            }
        }
        // Governance files are all-or-nothing even when loading leniently:
        // leaving out a broken rule could open what it was meant to close.
        let (users, rules, personal_data, fatal) = load_governance(dir)?;
        if !fatal.is_empty() {
            return Err(Error::Invalid(fatal));
        }
        let mut catalog = Catalog {
            dir: dir.to_path_buf(),
            mesh,
            contracts,
            problems,
            users,
            rules,
            policy_settings: personal_data,
        };
        let unresolved = crate::check::check_references(&catalog);
        catalog.problems.extend(unresolved);
        Ok(catalog)
    }

    /// Every role a principal can hold: the local users' and those
    /// `mesh.yaml` declares for single sign-on.
    pub fn known_roles(&self) -> std::collections::BTreeSet<&str> {
        let mut roles: std::collections::BTreeSet<&str> = self
            .users
            .users
            .iter()
            .flat_map(|u| u.roles.iter().map(String::as_str))
            .collect();
        roles.extend(self.mesh.governance.roles.iter().map(String::as_str));
        roles
    }

    /// Loads strictly: any problem anywhere is an error listing all of them.
    pub fn load_strict(dir: impl AsRef<Path>) -> Result<Catalog> {
        let catalog = Self::load(dir)?;
        if catalog.problems.is_empty() {
            Ok(catalog)
        } else {
            Err(Error::Invalid(catalog.problems))
        }
    }

    /// The domains with at least one product, sorted.
    pub fn domains(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self.contracts.iter().map(|c| c.domain.as_str()).collect();
        d.sort_unstable();
        d.dedup();
        d
    }

    pub fn contract(&self, domain: &str, product: &str) -> Option<&Contract> {
        self.contracts
            .iter()
            .find(|c| c.domain == domain && c.product.name == product)
    }
}

/// Reads and decodes the contract files, each with its problems, in the
/// files' order. A large mesh is read on as many threads as there are
/// cores: a 10,000-contract mesh is 10,000 files to parse.
fn decode_contracts(files: &[PathBuf], mesh: &MeshConfig) -> Vec<(Option<Contract>, Vec<Problem>)> {
    let decode_one = |file: &PathBuf| -> (Option<Contract>, Vec<Problem>) {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                let problem = Problem {
                    file: file.clone(),
                    pos: Pos { line: 1, col: 1 },
                    message: format!("cannot read the contract: {e}"),
                };
                return (None, vec![problem]);
            }
        };
        let mut ctx = Ctx::new(file);
        let contract = parse_into(&mut ctx, &text, |ctx, node| {
            decode_contract(ctx, node, mesh)
        });
        if let Some(c) = &contract {
            check_location(&mut ctx, c);
        }
        (contract, ctx.problems)
    };
    // Threads pay off from a few hundred files on.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len() / 256 + 1);
    if threads <= 1 {
        return files.iter().map(decode_one).collect();
    }
    let decode_one = &decode_one;
    std::thread::scope(|scope| {
        let parts: Vec<_> = files
            .chunks(files.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().map(decode_one).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| {
                part.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Reads and decodes one file, adding its problems to `problems`.
fn decode_file<T>(
    file: &Path,
    problems: &mut Vec<Problem>,
    decode: impl FnOnce(&mut Ctx<'_>, &Node) -> Option<T>,
) -> Result<Option<T>> {
    let text = read(file)?;
    let mut ctx = Ctx::new(file);
    let value = parse_into(&mut ctx, &text, decode);
    problems.extend(ctx.problems);
    Ok(value)
}

type Governance = (Users, Vec<Rule>, PolicySettings, Vec<Problem>);

fn load_governance(dir: &Path) -> Result<Governance> {
    let mut problems = Vec::new();
    let users_file = dir.join("users.yaml");
    let users = if users_file.is_file() {
        decode_file(&users_file, &mut problems, |ctx, node| {
            crate::policy::decode_users(ctx, node, &users_file)
        })?
        .unwrap_or_default()
    } else {
        Users::default()
    };
    // Evaluation order: policies.yaml, policies/*.yaml by name, rules.json.
    let mut files = Vec::new();
    if dir.join("policies.yaml").is_file() {
        files.push(dir.join("policies.yaml"));
    }
    let policy_dir = dir.join("policies");
    if policy_dir.is_dir() {
        files.extend(yaml_files(&policy_dir)?);
    }
    let mut rules = Vec::new();
    let mut personal = PolicySettings::default();
    for file in files {
        let decoded = decode_file(&file, &mut problems, |ctx, node| {
            Some(crate::policy::decode_policies(ctx, node))
        })?;
        if let Some((r, p)) = decoded {
            rules.extend(r);
            personal.merge(p);
        }
    }
    let trino = dir.join("rules.json");
    if trino.is_file() {
        let decoded = decode_file(&trino, &mut problems, |ctx, node| {
            Some(crate::policy::decode_trino(ctx, node))
        })?;
        rules.extend(decoded.unwrap_or_default());
    }
    Ok((users, rules, personal, problems))
}

/// The YAML files directly in `dir`, sorted by name.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !is_hidden(p)
                && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.starts_with('_'))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_into<T>(
    ctx: &mut Ctx<'_>,
    text: &str,
    decode: impl FnOnce(&mut Ctx<'_>, &Node) -> Option<T>,
) -> Option<T> {
    match yaml::parse(text) {
        Ok(node) => decode(ctx, &node),
        Err(e) => {
            ctx.err(e.pos, e.message);
            None
        }
    }
}

/// Whether `name` is a SQL identifier that needs no quoting.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

fn check_identifier(ctx: &mut Ctx<'_>, pos: Pos, what: &str, name: &str) -> bool {
    if is_identifier(name) {
        return true;
    }
    let suggestion: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    ctx.err(
        pos,
        format!(
            "{what} `{name}` is not a valid SQL identifier: use lower-case letters, digits and underscores, starting with a letter or underscore (e.g. `{suggestion}`)"
        ),
    );
    false
}

/// The file must sit at `<domain>/<product>.yaml` so that the catalog's
/// layout and its SQL names agree.
fn check_location(ctx: &mut Ctx<'_>, c: &Contract) {
    let dir = c
        .file
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let stem = c.file.file_stem().and_then(|n| n.to_str()).unwrap_or("");
    if dir != c.domain {
        ctx.err(
            Pos { line: 1, col: 1 },
            format!(
                "contract for domain `{}` is in directory `{dir}`: move it to `{}/{}.yaml`",
                c.domain, c.domain, c.product.name
            ),
        );
    } else if stem != c.product.name {
        ctx.err(
            c.product.pos,
            format!(
                "product `{}` is defined in `{stem}.yaml`: name the file `{}.yaml`",
                c.product.name, c.product.name
            ),
        );
    }
}

const MESH_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "name",
    "description",
    "storage",
    "catalogs",
    "demo",
    "governance",
    "server",
    "cluster",
    "audit",
    "check",
];
const SERVE_KEYS: &[&str] = &[
    "addr",
    "http",
    "pg",
    "tokenTtlSeconds",
    "maxConcurrentQueries",
    "maxQueriesPerUser",
    "queueTimeoutSeconds",
    "queryMemoryMb",
    "queryTimeoutSeconds",
    "maxResultRows",
    "jwt",
];
const CATALOG_KEYS: &[&str] = &[
    "type",
    "uri",
    "catalogName",
    "storage",
    "warehouse",
    "prefix",
    "credential",
    "token",
    "oauth2ServerUri",
    "scope",
];
const STORAGE_KEYS: &[&str] = &[
    "type",
    "root",
    "bucket",
    "prefix",
    "endpoint",
    "region",
    "pathStyle",
    "allowHttp",
    "accessKeyId",
    "secretAccessKey",
    "sessionToken",
    "connectTimeoutSeconds",
    "maxRetries",
];

fn decode_mesh(ctx: &mut Ctx<'_>, node: &Node, dir: &Path) -> Option<MeshConfig> {
    let f = ctx.fields(node, "mesh.yaml", MESH_KEYS)?;
    check_header(ctx, &f, "Mesh");
    let name = f.req_string(ctx, "name").map(|(n, _)| n);
    let description = f.opt_string(ctx, "description");
    let mut storage = BTreeMap::new();
    if let Some(node) = f.get("storage") {
        if let Value::Map(entries) = &node.value {
            for (k, v) in entries {
                let Some(sname) = ctx.string(k, "a storage name") else {
                    continue;
                };
                check_identifier(ctx, k.pos, "storage name", &sname);
                if let Some(kind) = decode_storage(ctx, v, &sname, dir) {
                    storage.insert(
                        sname.clone(),
                        Storage {
                            name: sname,
                            pos: k.pos,
                            kind,
                        },
                    );
                }
            }
        } else {
            ctx.err(
                node.pos,
                format!(
                    "`storage` must be a mapping of storage names, found {}",
                    node.kind()
                ),
            );
        }
    }
    let mut catalogs = BTreeMap::new();
    if let Some(node) = f.get("catalogs") {
        if let Value::Map(entries) = &node.value {
            for (k, v) in entries {
                let Some(cname) = ctx.string(k, "a catalog name") else {
                    continue;
                };
                check_identifier(ctx, k.pos, "catalog name", &cname);
                if storage.contains_key(&cname) {
                    ctx.err(
                        k.pos,
                        format!("catalog `{cname}` has the name of a storage: contracts' `server` must name one or the other"),
                    );
                }
                if let Some(c) = decode_catalog(ctx, v, &cname, k.pos, dir, &storage) {
                    catalogs.insert(cname, c);
                }
            }
        } else {
            ctx.err(
                node.pos,
                format!(
                    "`catalogs` must be a mapping of catalog names, found {}",
                    node.kind()
                ),
            );
        }
    }
    let demo = f.get("demo").and_then(|n| {
        let d = ctx.fields(n, "`demo`", &["storage", "scale"])?;
        let (st, pos) = d.req_string(ctx, "storage")?;
        if !storage.contains_key(&st) {
            ctx.err(
                pos,
                format!("`demo.storage` names undefined storage `{st}`"),
            );
        }
        let scale = match d.get("scale") {
            Some(n) => match ctx.integer(n, "`demo.scale`") {
                Some(s) if (1..=10_000).contains(&s) => s as u32,
                Some(_) => {
                    ctx.err(n.pos, "`demo.scale` must be between 1 and 10000");
                    1
                }
                None => 1,
            },
            None => 1,
        };
        Some(DemoConfig { storage: st, scale })
    });
    let governance = f
        .get("governance")
        .and_then(|n| {
            let g = ctx.fields(n, "`governance`", &["pseudonymSecret", "roles"])?;
            Some(GovernanceConfig {
                pseudonym_secret: g.opt_string(ctx, "pseudonymSecret"),
                roles: g
                    .get("roles")
                    .map(|n| ctx.string_list(n, "`governance.roles`"))
                    .unwrap_or_default(),
            })
        })
        .unwrap_or_default();
    let server = f
        .get("server")
        .and_then(|n| decode_serve(ctx, n, dir))
        .unwrap_or_default();
    let cluster = f
        .get("cluster")
        .and_then(|n| decode_cluster(ctx, n))
        .unwrap_or_default();
    let audit = f.get("audit").and_then(|n| {
        let a = ctx.fields(n, "`audit`", &["path"])?;
        let (path, _) = a.req_string(ctx, "path")?;
        Some(resolve(dir, &path))
    });
    let check_results = f.get("check").and_then(|n| {
        let c = ctx.fields(n, "`check`", &["results"])?;
        let (path, _) = c.req_string(ctx, "results")?;
        Some(resolve(dir, &path))
    });
    Some(MeshConfig {
        check_results,
        file: ctx.file.to_path_buf(),
        governance,
        server,
        cluster,
        audit,
        name: name?,
        description,
        storage,
        catalogs,
        demo,
    })
}

fn decode_catalog(
    ctx: &mut Ctx<'_>,
    node: &Node,
    name: &str,
    pos: Pos,
    dir: &Path,
    storage: &BTreeMap<String, Storage>,
) -> Option<IcebergCatalog> {
    let what = format!("catalog `{name}`");
    let f = ctx.fields(node, &what, CATALOG_KEYS)?;
    let (kind, kpos) = f.req_string(ctx, "type")?;
    let (uri, upos) = f.req_string(ctx, "uri")?;
    let only = |ctx: &mut Ctx<'_>, allowed: &[&str]| {
        for key in CATALOG_KEYS {
            if !allowed.contains(key)
                && let Some(n) = f.get(key)
            {
                ctx.err(
                    n.pos,
                    format!("`{key}` does not apply to a catalog of type `{kind}`"),
                );
            }
        }
    };
    let st = f.get("storage").and_then(|n| {
        let s = ctx.string(n, "`storage`")?;
        if !storage.contains_key(&s) {
            let names: Vec<&str> = storage.keys().map(String::as_str).collect();
            let hint = match crate::decode::closest(&s, names.iter().copied()) {
                Some(c) => format!(" (did you mean `{c}`?)"),
                None => String::new(),
            };
            ctx.err(
                n.pos,
                format!("{what} names storage `{s}`, which mesh.yaml does not define{hint}"),
            );
        }
        Some(s)
    });
    let kind = match kind.as_str() {
        "sql" => {
            only(ctx, &["type", "uri", "catalogName", "storage", "warehouse"]);
            let uri = if let Some(path) = uri.strip_prefix("sqlite:") {
                // `sqlite:PATH`, `sqlite://PATH` and `sqlite:///ABS`: a
                // relative path is relative to the catalog directory.
                let path = path.trim_start_matches("//");
                let (path, query) = match path.split_once('?') {
                    Some((p, q)) => (p, format!("?{q}")),
                    None => (path, String::new()),
                };
                if path.is_empty() || path == ":memory:" {
                    ctx.err(
                        upos,
                        format!("{what}: `uri` must name a SQLite file, found `{uri}`"),
                    );
                }
                let file = resolve(dir, path);
                let file = std::path::absolute(&file).unwrap_or(file);
                format!("sqlite://{}{query}", file.display())
            } else if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
                uri
            } else {
                ctx.err(
                    upos,
                    format!(
                        "{what}: `uri` must be `sqlite:PATH` or `postgres://...`, found `{uri}`"
                    ),
                );
                return None;
            };
            if st.is_none() {
                ctx.err(
                    pos,
                    format!("{what} needs `storage`: the storage its tables' files live in"),
                );
            }
            IcebergCatalogKind::Sql { uri }
        }
        "rest" => {
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                ctx.err(
                    upos,
                    format!("{what}: `uri` must be an http:// or https:// URL, found `{uri}`"),
                );
            }
            let credential = f.opt_string(ctx, "credential");
            let token = f.opt_string(ctx, "token");
            if credential.is_some() && token.is_some() {
                ctx.err(
                    pos,
                    format!("{what}: give `credential` or `token`, not both"),
                );
            }
            IcebergCatalogKind::Rest {
                uri,
                prefix: f.opt_string(ctx, "prefix"),
                credential,
                token,
                oauth2_server_uri: f.opt_string(ctx, "oauth2ServerUri"),
                scope: f.opt_string(ctx, "scope"),
            }
        }
        other => {
            ctx.err(
                kpos,
                format!("{what}: unknown catalog type `{other}` (meshql reads `sql` and `rest` Iceberg catalogs)"),
            );
            return None;
        }
    };
    Some(IcebergCatalog {
        name: name.to_string(),
        pos,
        catalog_name: f
            .opt_string(ctx, "catalogName")
            .unwrap_or_else(|| name.to_string()),
        kind,
        storage: st,
        warehouse: f
            .opt_string(ctx, "warehouse")
            .map(|w| w.trim_matches('/').to_string()),
    })
}

fn resolve(dir: &Path, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() { p } else { dir.join(p) }
}

fn decode_cluster(ctx: &mut Ctx<'_>, node: &Node) -> Option<ClusterConfig> {
    let f = ctx.fields(node, "`cluster`", &["workers", "distributeAboveBytes"])?;
    let workers = f
        .get("workers")
        .map(|n| {
            let list = ctx.string_list(n, "`cluster.workers`");
            for w in &list {
                if crate::split_host_port(w).is_none() {
                    ctx.err(n.pos, format!("`cluster.workers`: `{w}` is not HOST:PORT"));
                }
            }
            list
        })
        .unwrap_or_default();
    let distribute_above_bytes = f.get("distributeAboveBytes").and_then(|n| {
        match ctx.integer(n, "`cluster.distributeAboveBytes`")? {
            v if v >= 0 => Some(v as u64),
            _ => {
                ctx.err(n.pos, "`cluster.distributeAboveBytes` must be 0 or more");
                None
            }
        }
    });
    Some(ClusterConfig {
        workers,
        distribute_above_bytes,
    })
}

fn decode_serve(ctx: &mut Ctx<'_>, node: &Node, dir: &Path) -> Option<ServerConfig> {
    let f = ctx.fields(node, "`server`", SERVE_KEYS)?;
    let positive = |ctx: &mut Ctx<'_>, key: &str| -> Option<u64> {
        let n = f.get(key)?;
        match ctx.integer(n, &format!("`server.{key}`"))? {
            v if v > 0 => Some(v as u64),
            _ => {
                ctx.err(n.pos, format!("`server.{key}` must be a positive number"));
                None
            }
        }
    };
    let addr = f.opt_string(ctx, "addr");
    if let (Some(a), Some(n)) = (&addr, f.get("addr"))
        && a.parse::<std::net::SocketAddr>().is_err()
    {
        ctx.err(
            n.pos,
            format!("`server.addr` must be HOST:PORT with an IP address, found `{a}`"),
        );
    }
    let http = f.opt_string(ctx, "http");
    if let (Some(a), Some(n)) = (&http, f.get("http"))
        && a.parse::<std::net::SocketAddr>().is_err()
    {
        ctx.err(
            n.pos,
            format!("`server.http` must be HOST:PORT with an IP address, found `{a}`"),
        );
    }
    let pg = f.opt_string(ctx, "pg");
    if let (Some(a), Some(n)) = (&pg, f.get("pg"))
        && a.parse::<std::net::SocketAddr>().is_err()
    {
        ctx.err(
            n.pos,
            format!("`server.pg` must be HOST:PORT with an IP address, found `{a}`"),
        );
    }
    let jwt = f.get("jwt").and_then(|n| {
        let j = ctx.fields(
            n,
            "`server.jwt`",
            &[
                "hs256Secret",
                "publicKeyFile",
                "audience",
                "issuer",
                "rolesClaim",
            ],
        )?;
        let hs256_secret = j.opt_string(ctx, "hs256Secret");
        let public_key_file = j.opt_string(ctx, "publicKeyFile").map(|p| resolve(dir, &p));
        if hs256_secret.is_none() == public_key_file.is_none() {
            ctx.err(
                n.pos,
                "`server.jwt` needs exactly one of `hs256Secret` and `publicKeyFile`",
            );
        }
        Some(JwtConfig {
            hs256_secret,
            public_key_file,
            audience: j.opt_string(ctx, "audience"),
            issuer: j.opt_string(ctx, "issuer"),
            roles_claim: j
                .opt_string(ctx, "rolesClaim")
                .unwrap_or_else(|| "roles".into()),
        })
    });
    Some(ServerConfig {
        addr,
        http,
        pg,
        token_ttl_seconds: positive(ctx, "tokenTtlSeconds"),
        max_concurrent_queries: positive(ctx, "maxConcurrentQueries").map(|v| v as usize),
        max_queries_per_user: positive(ctx, "maxQueriesPerUser").map(|v| v as usize),
        queue_timeout_seconds: positive(ctx, "queueTimeoutSeconds"),
        query_memory_mb: positive(ctx, "queryMemoryMb").map(|v| v as usize),
        query_timeout_seconds: positive(ctx, "queryTimeoutSeconds"),
        max_result_rows: positive(ctx, "maxResultRows"),
        jwt,
    })
}

fn decode_storage(ctx: &mut Ctx<'_>, node: &Node, name: &str, dir: &Path) -> Option<StorageKind> {
    let what = format!("storage `{name}`");
    let f = ctx.fields(node, &what, STORAGE_KEYS)?;
    let (kind, kpos) = f.req_string(ctx, "type")?;
    let only = |ctx: &mut Ctx<'_>, f: &Fields<'_>, allowed: &[&str]| {
        for key in STORAGE_KEYS {
            if !allowed.contains(key)
                && let Some(n) = f.get(key)
            {
                ctx.err(
                    n.pos,
                    format!("`{key}` does not apply to a storage of type `{kind}`"),
                );
            }
        }
    };
    match kind.as_str() {
        "local" => {
            only(ctx, &f, &["type", "root"]);
            let (root, _) = f.req_string(ctx, "root")?;
            let root = PathBuf::from(root);
            let root = if root.is_absolute() {
                root
            } else {
                dir.join(root)
            };
            Some(StorageKind::Local { root })
        }
        "s3" => {
            let (bucket, bpos) = f.req_string(ctx, "bucket")?;
            if bucket.is_empty() || bucket.contains('/') {
                ctx.err(
                    bpos,
                    format!("`bucket` must be a bucket name without `/`, found `{bucket}`"),
                );
            }
            let u64_of = |ctx: &mut Ctx<'_>, key: &str, default: u64| match f.get(key) {
                Some(n) => match ctx.integer(n, &format!("`{key}`")) {
                    Some(v) if v >= 0 => v as u64,
                    Some(_) => {
                        ctx.err(n.pos, format!("`{key}` must not be negative"));
                        default
                    }
                    None => default,
                },
                None => default,
            };
            let connect_timeout_secs = u64_of(ctx, "connectTimeoutSeconds", 5);
            let max_retries = u64_of(ctx, "maxRetries", 2) as usize;
            let endpoint = f.opt_string(ctx, "endpoint");
            let allow_http = f.opt_bool(ctx, "allowHttp").unwrap_or_else(|| {
                endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://"))
            });
            Some(StorageKind::S3(S3Storage {
                bucket,
                prefix: f
                    .opt_string(ctx, "prefix")
                    .unwrap_or_default()
                    .trim_matches('/')
                    .to_string(),
                endpoint,
                region: f.opt_string(ctx, "region"),
                path_style: f.opt_bool(ctx, "pathStyle").unwrap_or(false),
                allow_http,
                access_key_id: f.opt_string(ctx, "accessKeyId"),
                secret_access_key: f.opt_string(ctx, "secretAccessKey"),
                session_token: f.opt_string(ctx, "sessionToken"),
                connect_timeout_secs,
                max_retries,
            }))
        }
        other => {
            ctx.err(
                kpos,
                format!("unknown storage type `{other}`: expected `local` or `s3`"),
            );
            None
        }
    }
}

const CONTRACT_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "id",
    "name",
    "version",
    "status",
    "domain",
    "dataProduct",
    "tenant",
    "description",
    "team",
    "schema",
    "servers",
    "slaProperties",
    "slaDefaultElement",
    "quality",
    "support",
    "price",
    "roles",
    "tags",
    "customProperties",
    "authoritativeDefinitions",
    "contractCreatedTs",
];
const SCHEMA_KEYS: &[&str] = &[
    "id",
    "name",
    "physicalName",
    "physicalType",
    "logicalType",
    "businessName",
    "description",
    "dataGranularityDescription",
    "properties",
    "quality",
    "tags",
    "customProperties",
    "authoritativeDefinitions",
];
const PROPERTY_KEYS: &[&str] = &[
    "id",
    "name",
    "physicalName",
    "physicalType",
    "logicalType",
    "logicalTypeOptions",
    "businessName",
    "description",
    "required",
    "unique",
    "primaryKey",
    "primaryKeyPosition",
    "partitioned",
    "partitionKeyPosition",
    "classification",
    "tags",
    "criticalDataElement",
    "examples",
    "quality",
    "encryptedName",
    "transformSourceObjects",
    "transformLogic",
    "transformDescription",
    "items",
    "properties",
    "customProperties",
    "authoritativeDefinitions",
];
const SERVER_KEYS: &[&str] = &[
    "id",
    "server",
    "type",
    "description",
    "environment",
    "format",
    "location",
    "path",
    "delimiter",
    "endpointUrl",
    "region",
    "schema",
    "table",
    "roles",
    "customProperties",
];
const SLA_KEYS: &[&str] = &[
    "id",
    "property",
    "value",
    "valueExt",
    "unit",
    "element",
    "driver",
    "description",
    "scheduler",
    "schedule",
];
const QUALITY_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "type",
    "rule",
    "query",
    "dimension",
    "method",
    "severity",
    "businessImpact",
    "metric",
    "arguments",
    "mustBe",
    "mustNotBe",
    "mustBeGreaterThan",
    "mustBeGreaterOrEqualTo",
    "mustBeLessThan",
    "mustBeLessOrEqualTo",
    "mustBeGreaterThanOrEqualTo",
    "mustBeLessThanOrEqualTo",
    "mustBeBetween",
    "mustNotBeBetween",
    "unit",
    "engine",
    "implementation",
    "schedule",
    "scheduler",
    "tags",
    "customProperties",
    "authoritativeDefinitions",
];
const TEAM_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "members",
    "tags",
    "customProperties",
    "authoritativeDefinitions",
];
const MEMBER_KEYS: &[&str] = &[
    "id",
    "username",
    "name",
    "role",
    "description",
    "dateIn",
    "dateOut",
    "replacedByUsername",
    "tags",
    "customProperties",
    "authoritativeDefinitions",
];
const STATUSES: &[&str] = &["proposed", "draft", "active", "deprecated", "retired"];
const CLASSIFICATIONS_HINT: &str = "e.g. public, internal, confidential, restricted, pii";

fn decode_contract(ctx: &mut Ctx<'_>, node: &Node, mesh: &MeshConfig) -> Option<Contract> {
    let f = ctx.fields(node, "the contract", CONTRACT_KEYS)?;
    let api_version = f.req_string(ctx, "apiVersion").map(|(v, pos)| {
        if !v.starts_with("v3.") {
            ctx.err(
                pos,
                format!(
                    "unsupported apiVersion `{v}`: meshql reads ODCS v3.x contracts (e.g. `v3.1.0`)"
                ),
            );
        }
        v
    });
    if let Some((kind, pos)) = f.req_string(ctx, "kind")
        && kind != "DataContract"
    {
        ctx.err(pos, format!("kind must be `DataContract`, found `{kind}`"));
    }
    let id = f.req_string(ctx, "id").map(|(v, _)| v);
    let name = f.req_string(ctx, "name").map(|(v, _)| v);
    let version = f.req(ctx, "version").and_then(|n| ctx.text(n, "`version`"));
    let status = f.req_string(ctx, "status").map(|(v, pos)| {
        if !STATUSES.contains(&v.as_str()) {
            ctx.err(
                pos,
                format!(
                    "unknown status `{v}`: expected one of {}",
                    STATUSES.join(", ")
                ),
            );
        }
        v
    });
    let domain = f.req_string(ctx, "domain").and_then(|(d, pos)| {
        if !check_identifier(ctx, pos, "domain", &d) {
            return None;
        }
        if RESERVED_DOMAINS.contains(&d.as_str()) {
            ctx.err(
                pos,
                format!("domain `{d}` is reserved for meshql's system tables"),
            );
            return None;
        }
        Some(d)
    });
    let data_product = f.opt_string(ctx, "dataProduct");
    let description = f
        .get("description")
        .and_then(|n| decode_description(ctx, n));
    let team = f.get("team").and_then(|n| decode_team(ctx, n));
    let tags = f
        .get("tags")
        .map(|n| ctx.string_list(n, "`tags`"))
        .unwrap_or_default();
    let custom_properties = f
        .get("customProperties")
        .map(|n| decode_custom_properties(ctx, n))
        .unwrap_or_default();

    let mut schema_quality = Vec::new();
    let product = f.req(ctx, "schema").and_then(|n| {
        let items = ctx.list(n, "`schema`")?;
        match items {
            [] => {
                ctx.err(n.pos, "`schema` must describe the product's table");
                None
            }
            [one] => decode_schema(ctx, one, &mut schema_quality),
            [first, second, ..] => {
                decode_schema(ctx, first, &mut schema_quality);
                ctx.err(second.pos, "meshql publishes one table per contract: split the other schema objects into contracts of their own");
                None
            }
        }
    });
    let servers = f.req(ctx, "servers").and_then(|n| {
        let items = ctx.list(n, "`servers`")?;
        if items.is_empty() {
            ctx.err(n.pos, "`servers` must say where the product's data lives");
        }
        Some(
            items
                .iter()
                .filter_map(|s| decode_server(ctx, s, mesh))
                .collect::<Vec<_>>(),
        )
    });
    let sla = f
        .get("slaProperties")
        .and_then(|n| ctx.list(n, "`slaProperties`"))
        .map(|items| items.iter().filter_map(|s| decode_sla(ctx, s)).collect())
        .unwrap_or_default();
    let mut quality = f
        .get("quality")
        .map(|n| decode_quality_list(ctx, n, None))
        .unwrap_or_default();
    quality.append(&mut schema_quality);

    Some(Contract {
        file: ctx.file.to_path_buf(),
        api_version: api_version?,
        id: id?,
        name: name?,
        version: version?,
        status: status?,
        domain: domain?,
        data_product,
        description,
        team,
        product: product?,
        servers: servers?,
        sla,
        quality,
        tags,
        custom_properties,
    })
}

fn decode_description(ctx: &mut Ctx<'_>, node: &Node) -> Option<String> {
    if let Value::Scalar(..) = node.value {
        return ctx.string(node, "`description`");
    }
    let f = ctx.fields(
        node,
        "`description`",
        &[
            "purpose",
            "usage",
            "limitations",
            "authoritativeDefinitions",
            "customProperties",
        ],
    )?;
    f.opt_string(ctx, "purpose")
        .or_else(|| f.opt_string(ctx, "usage"))
}

fn decode_team(ctx: &mut Ctx<'_>, node: &Node) -> Option<Team> {
    let decode_members = |ctx: &mut Ctx<'_>, n: &Node| -> Vec<TeamMember> {
        let Some(items) = ctx.list(n, "team members") else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|m| {
                let f = ctx.fields(m, "a team member", MEMBER_KEYS)?;
                let (username, _) = f.req_string(ctx, "username")?;
                Some(TeamMember {
                    username,
                    role: f.opt_string(ctx, "role"),
                })
            })
            .collect()
    };
    match &node.value {
        // ODCS v3.0 wrote the team as a list of members.
        Value::Seq(_) => Some(Team {
            name: None,
            members: decode_members(ctx, node),
        }),
        _ => {
            let f = ctx.fields(node, "`team`", TEAM_KEYS)?;
            Some(Team {
                name: f.opt_string(ctx, "name"),
                members: f
                    .get("members")
                    .map(|n| decode_members(ctx, n))
                    .unwrap_or_default(),
            })
        }
    }
}

fn decode_custom_properties(ctx: &mut Ctx<'_>, node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(items) = ctx.list(node, "`customProperties`") else {
        return out;
    };
    for item in items {
        let Some(f) = ctx.fields(
            item,
            "a custom property",
            &["id", "property", "value", "description"],
        ) else {
            continue;
        };
        let property = f.req_string(ctx, "property");
        let value = f.req(ctx, "value").and_then(|n| ctx.text(n, "`value`"));
        if let (Some((p, _)), Some(v)) = (property, value) {
            out.insert(p, v);
        }
    }
    out
}

fn decode_schema(ctx: &mut Ctx<'_>, node: &Node, quality: &mut Vec<Quality>) -> Option<Product> {
    let f = ctx.fields(node, "a schema object", SCHEMA_KEYS)?;
    if let Some(n) = f.get("quality") {
        quality.extend(decode_quality_list(ctx, n, None));
    }
    let name = f
        .req_string(ctx, "name")
        .filter(|(n, pos)| check_identifier(ctx, *pos, "product name", n));
    let description = f.opt_string(ctx, "description");
    let columns = f.req(ctx, "properties").and_then(|n| {
        let items = ctx.list(n, "`properties`")?;
        if items.is_empty() {
            ctx.err(n.pos, "a product needs at least one column in `properties`");
        }
        let mut cols: Vec<Column> = Vec::new();
        let mut ok = true;
        for item in items {
            match decode_column(ctx, item, quality) {
                Some(c) => {
                    if cols.iter().any(|o| o.name == c.name) {
                        ctx.err(c.pos, format!("column `{}` is declared twice", c.name));
                        ok = false;
                    }
                    cols.push(c);
                }
                None => ok = false,
            }
        }
        ok.then_some(cols)
    });
    let (name, pos) = name?;
    Some(Product {
        name,
        pos,
        description,
        columns: columns?,
    })
}

fn decode_column(ctx: &mut Ctx<'_>, node: &Node, quality: &mut Vec<Quality>) -> Option<Column> {
    let f = ctx.fields(node, "a column", PROPERTY_KEYS)?;
    let name = f
        .req_string(ctx, "name")
        .filter(|(n, pos)| check_identifier(ctx, *pos, "column name", n));
    let logical = f
        .get("logicalType")
        .and_then(|n| ctx.string(n, "`logicalType`").map(|s| (s, n.pos)));
    let physical = f
        .get("physicalType")
        .and_then(|n| ctx.string(n, "`physicalType`").map(|s| (s, n.pos)));
    let data_type = match (&logical, &physical) {
        (_, Some((p, ppos))) => match ColumnType::parse_physical(p) {
            Ok(t) => {
                if let Some((l, lpos)) = &logical {
                    match ColumnType::from_logical(l) {
                        Err(e) => {
                            ctx.err(*lpos, e);
                            None
                        }
                        Ok(_) if !t.fits_logical(l) => {
                            ctx.err(
                                *ppos,
                                format!("physicalType `{p}` does not fit logicalType `{l}`"),
                            );
                            None
                        }
                        Ok(_) => Some(t),
                    }
                } else {
                    Some(t)
                }
            }
            Err(e) => {
                ctx.err(*ppos, e);
                None
            }
        },
        (Some((l, lpos)), None) => match ColumnType::from_logical(l) {
            Ok(t) => Some(t),
            Err(e) => {
                ctx.err(*lpos, e);
                None
            }
        },
        (None, None) => {
            ctx.err(f.pos, "a column needs a `logicalType` or a `physicalType`");
            None
        }
    };
    let classification = f.opt_string(ctx, "classification");
    if let Some(c) = &classification
        && c.trim().is_empty()
    {
        ctx.err(
            f.pos,
            format!("`classification` must not be empty ({CLASSIFICATIONS_HINT})"),
        );
    }
    let primary_key = f.opt_bool(ctx, "primaryKey").unwrap_or(false);
    let required = f.opt_bool(ctx, "required").unwrap_or(false) || primary_key;
    let unique = f.opt_bool(ctx, "unique").unwrap_or(false) || primary_key;
    let tags = f
        .get("tags")
        .map(|n| ctx.string_list(n, "`tags`"))
        .unwrap_or_default();
    if let (Some(n), Some((column, _))) = (f.get("quality"), &name) {
        quality.extend(decode_quality_list(ctx, n, Some(column)));
    }
    if let Some(n) = f.get("customProperties") {
        decode_custom_properties(ctx, n);
    }
    let description = f.opt_string(ctx, "description");
    let (name, pos) = name?;
    Some(Column {
        name,
        pos,
        data_type: data_type?,
        logical_type: logical.map(|(l, _)| l),
        physical_type: physical.map(|(p, _)| p),
        required,
        primary_key,
        unique,
        classification,
        tags,
        description,
    })
}

fn decode_server(ctx: &mut Ctx<'_>, node: &Node, mesh: &MeshConfig) -> Option<Server> {
    let f = ctx.fields(node, "a server", SERVER_KEYS)?;
    let (server, spos) = f.req_string(ctx, "server")?;
    let (kind, tpos) = f.req_string(ctx, "type")?;
    if kind == "iceberg" {
        return decode_iceberg_server(ctx, &f, mesh, server, spos);
    }
    let storage = mesh.storage.get(&server);
    if storage.is_none() {
        let names: Vec<&str> = mesh.storage.keys().map(String::as_str).collect();
        let hint = match crate::decode::closest(&server, names.iter().copied()) {
            Some(c) => format!(" (did you mean `{c}`?)"),
            None if names.is_empty() => " (mesh.yaml defines no storage)".to_string(),
            None => format!(" (defined: {})", names.join(", ")),
        };
        let catalog = if mesh.catalogs.contains_key(&server) {
            " (it is an Iceberg catalog: use `type: iceberg` with `schema` and `table`)"
        } else {
            ""
        };
        ctx.err(
            spos,
            format!(
                "server `{server}` names a storage that mesh.yaml does not define{}",
                if catalog.is_empty() {
                    hint
                } else {
                    catalog.to_string()
                }
            ),
        );
    }
    if let Some(st) = storage {
        let expected = match st.kind {
            StorageKind::Local { .. } => "local",
            StorageKind::S3(_) => "s3",
        };
        if kind != expected {
            ctx.err(
                tpos,
                format!(
                    "server type `{kind}` does not match storage `{server}`, which is `{expected}` (or `iceberg` for an Iceberg table's metadata file)"
                ),
            );
        }
    }
    for key in ["schema", "table"] {
        if let Some(n) = f.get(key) {
            ctx.err(
                n.pos,
                format!("`{key}` applies to `type: iceberg` servers only"),
            );
        }
    }
    let format = match f.get("format") {
        Some(n) => ctx.string(n, "`format`").filter(|fmt| {
            if fmt != "parquet" {
                ctx.err(
                    n.pos,
                    format!("unsupported format `{fmt}`: meshql reads `parquet` files, and Iceberg tables with `type: iceberg`"),
                );
                false
            } else {
                true
            }
        }),
        None => Some("parquet".to_string()),
    };
    let path = relative_path(ctx, &f);
    if let Some(n) = f.get("location") {
        ctx.err(n.pos, "meshql locates data through a named storage: use `server: <storage>` and `path` instead of `location`");
    }
    let environment = f.opt_string(ctx, "environment");
    storage?;
    Some(Server {
        server,
        pos: spos,
        kind,
        format: format?,
        path: path?,
        environment,
        iceberg: None,
    })
}

/// `path` of a server: relative to its storage, never escaping it.
fn relative_path(ctx: &mut Ctx<'_>, f: &Fields<'_>) -> Option<String> {
    f.req_string(ctx, "path").map(|(p, ppos)| {
        if p.split('/').any(|seg| seg == "..") || p.starts_with('/') || p.contains("://") {
            ctx.err(
                ppos,
                format!("`path` must be relative to the storage, found `{p}`"),
            );
        }
        p
    })
}

/// `type: iceberg`: a table in a catalog (`server` names the catalog,
/// `schema` the namespace, `table` the table), or a table by its metadata
/// file (`server` names a storage, `path` the `metadata.json`).
fn decode_iceberg_server(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    mesh: &MeshConfig,
    server: String,
    spos: Pos,
) -> Option<Server> {
    if let Some(n) = f.get("format")
        && let Some(fmt) = ctx.string(n, "`format`")
        && fmt != "parquet"
        && fmt != "iceberg"
    {
        ctx.err(
            n.pos,
            format!("unsupported format `{fmt}` for an Iceberg table, whose files are Parquet"),
        );
    }
    let environment = f.opt_string(ctx, "environment");
    if mesh.catalogs.contains_key(&server) {
        if let Some(n) = f.get("path") {
            ctx.err(
                n.pos,
                format!("`path` does not apply to a table in catalog `{server}`: name it with `schema` and `table`"),
            );
        }
        let namespace = f.req_string(ctx, "schema").map(|(ns, npos)| {
            let parts: Vec<String> = ns.split('.').map(str::to_string).collect();
            if parts.iter().any(String::is_empty) {
                ctx.err(
                    npos,
                    format!("`schema` must be an Iceberg namespace such as `sales` or `lake.sales`, found `{ns}`"),
                );
            }
            parts
        });
        let table = f.req_string(ctx, "table").map(|(t, _)| t);
        return Some(Server {
            server,
            pos: spos,
            kind: "iceberg".into(),
            format: "iceberg".into(),
            path: String::new(),
            environment,
            iceberg: Some(IcebergTableRef {
                namespace: namespace?,
                table: table?,
            }),
        });
    }
    if !mesh.storage.contains_key(&server) {
        let names = mesh
            .catalogs
            .keys()
            .chain(mesh.storage.keys())
            .map(String::as_str);
        let hint = match crate::decode::closest(&server, names) {
            Some(c) => format!(" (did you mean `{c}`?)"),
            None => String::new(),
        };
        ctx.err(
            spos,
            format!("server `{server}` names neither an Iceberg catalog nor a storage of mesh.yaml{hint}"),
        );
        return None;
    }
    for key in ["schema", "table"] {
        if let Some(n) = f.get(key) {
            ctx.err(
                n.pos,
                format!("`{key}` applies to a table in a catalog; `{server}` is a storage, so give the table's metadata file as `path`"),
            );
        }
    }
    let path = relative_path(ctx, f)?;
    if !path.ends_with(".metadata.json") {
        ctx.err(
            spos,
            format!("an Iceberg table on storage `{server}` is named by its metadata file: `path` must end in `.metadata.json`, found `{path}`"),
        );
    }
    Some(Server {
        server,
        pos: spos,
        kind: "iceberg".into(),
        format: "iceberg".into(),
        path,
        environment,
        iceberg: None,
    })
}

fn decode_sla(ctx: &mut Ctx<'_>, node: &Node) -> Option<SlaProperty> {
    let f = ctx.fields(node, "an SLA property", SLA_KEYS)?;
    let property = f.req_string(ctx, "property").map(|(p, _)| p);
    let value = f.req(ctx, "value").and_then(|n| ctx.text(n, "`value`"));
    let sla = SlaProperty {
        property: property?,
        pos: f.pos,
        value: value?,
        unit: f.opt_string(ctx, "unit"),
        element: f.opt_string(ctx, "element"),
    };
    if sla.is_freshness()
        && let Err(e) = sla.max_age()
    {
        ctx.err(f.pos, e);
    }
    Some(sla)
}

fn decode_quality_list(ctx: &mut Ctx<'_>, node: &Node, column: Option<&str>) -> Vec<Quality> {
    let Some(items) = ctx.list(node, "`quality`") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| decode_quality(ctx, item, column))
        .collect()
}

/// The library metrics meshql runs, and whether each needs a column.
const METRICS: &[(&str, bool)] = &[
    ("nullValues", true),
    ("missingValues", true),
    ("invalidValues", true),
    ("duplicateValues", false),
    ("rowCount", false),
];

fn decode_quality(ctx: &mut Ctx<'_>, item: &Node, column: Option<&str>) -> Option<Quality> {
    let f = ctx.fields(item, "a quality rule", QUALITY_KEYS)?;
    let mut expect = None;
    let mut operators = 0;
    for key in [
        "mustBe",
        "mustNotBe",
        "mustBeGreaterThan",
        "mustBeGreaterOrEqualTo",
        "mustBeGreaterThanOrEqualTo",
        "mustBeLessThan",
        "mustBeLessOrEqualTo",
        "mustBeLessThanOrEqualTo",
    ] {
        let Some(n) = f.get(key) else { continue };
        operators += 1;
        let Some(x) = ctx.number(n, &format!("`{key}`")) else {
            continue;
        };
        expect = Some(match key {
            "mustBe" => Expectation::Be(x),
            "mustNotBe" => Expectation::NotBe(x),
            "mustBeGreaterThan" => Expectation::GreaterThan(x),
            "mustBeGreaterOrEqualTo" | "mustBeGreaterThanOrEqualTo" => {
                Expectation::GreaterOrEqualTo(x)
            }
            "mustBeLessThan" => Expectation::LessThan(x),
            _ => Expectation::LessOrEqualTo(x),
        });
    }
    for key in ["mustBeBetween", "mustNotBeBetween"] {
        let Some(n) = f.get(key) else { continue };
        operators += 1;
        let bounds: Vec<f64> = ctx
            .list(n, &format!("`{key}`"))
            .unwrap_or_default()
            .iter()
            .filter_map(|b| ctx.number(b, &format!("each bound of `{key}`")))
            .collect();
        match bounds.as_slice() {
            [a, b] if a <= b => {
                expect = Some(if key == "mustBeBetween" {
                    Expectation::Between(*a, *b)
                } else {
                    Expectation::NotBetween(*a, *b)
                });
            }
            _ => ctx.err(
                n.pos,
                format!("`{key}` takes two numbers, the lower bound first: [low, high]"),
            ),
        }
    }
    if operators > 1 {
        ctx.err(
            f.pos,
            "a quality rule takes one operator (mustBe, mustBeLessThan, mustBeBetween, ...)",
        );
    }
    let kind = f
        .opt_string(ctx, "type")
        .unwrap_or_else(|| "library".into());
    if !["text", "library", "sql", "custom"].contains(&kind.as_str()) {
        ctx.err(
            f.pos,
            format!("unknown quality type `{kind}`: expected text, library, sql or custom"),
        );
    }
    let query = f.opt_string(ctx, "query");
    if kind == "sql" && query.is_none() {
        ctx.err(f.pos, "a quality rule of type `sql` needs a `query`");
    }
    let metric = match (f.get("metric"), f.get("rule")) {
        (Some(_), Some(_)) => {
            ctx.err(
                f.pos,
                "a quality rule names its metric once: `metric` (ODCS 3.1) or `rule` (ODCS 3.0)",
            );
            None
        }
        (Some(n), None) | (None, Some(n)) => {
            ctx.string(n, "the quality metric").map(|m| (m, n.pos))
        }
        (None, None) => None,
    };
    if kind == "library" {
        match &metric {
            None => ctx.err(
                f.pos,
                "a `library` quality rule needs a `metric`: nullValues, missingValues, invalidValues, duplicateValues or rowCount",
            ),
            Some((m, pos)) => match METRICS.iter().find(|(name, _)| name == m) {
                None => {
                    let hint = match crate::decode::closest(m, METRICS.iter().map(|(n, _)| *n)) {
                        Some(c) => format!(" (did you mean `{c}`?)"),
                        None => String::new(),
                    };
                    ctx.err(
                        *pos,
                        format!(
                            "unknown quality metric `{m}`{hint}: meshql runs nullValues, missingValues, invalidValues, duplicateValues and rowCount"
                        ),
                    );
                }
                Some((_, true)) if column.is_none() => ctx.err(
                    *pos,
                    format!("`{m}` checks one column: put the rule in that column's `quality`"),
                ),
                Some(_) => {}
            },
        }
    }
    if matches!(kind.as_str(), "library" | "sql") && operators == 0 {
        ctx.err(
            f.pos,
            "the rule says nothing the result must be: add an operator (mustBe, mustBeLessThan, mustBeBetween, ...)",
        );
    }
    let mut valid_values = Vec::new();
    let mut pattern = None;
    let mut missing_values = Vec::new();
    let mut properties = Vec::new();
    if let Some(n) = f.get("arguments")
        && let Some(args) = ctx.fields(
            n,
            "quality `arguments`",
            &["validValues", "pattern", "missingValues", "properties"],
        )
    {
        if let Some(v) = args.get("validValues") {
            valid_values = ctx
                .list(v, "`validValues`")
                .unwrap_or_default()
                .iter()
                .filter_map(|x| ctx.text(x, "each valid value"))
                .collect();
        }
        if let Some(p) = args.get("pattern") {
            pattern = ctx.string(p, "`pattern`");
            if let Some(text) = &pattern
                && let Err(e) = regex::Regex::new(text)
            {
                ctx.err(
                    p.pos,
                    format!("`pattern` is not a valid regular expression: {e}"),
                );
            }
        }
        if let Some(v) = args.get("missingValues") {
            missing_values = ctx
                .list(v, "`missingValues`")
                .unwrap_or_default()
                .iter()
                .filter(|x| !x.is_null())
                .filter_map(|x| ctx.text(x, "each missing value"))
                .collect();
        }
        if let Some(v) = args.get("properties") {
            properties = ctx.string_list(v, "`properties`");
        }
    }
    if let Some((m, pos)) = &metric
        && m == "invalidValues"
        && valid_values.is_empty()
        && pattern.is_none()
    {
        ctx.err(
            *pos,
            "`invalidValues` needs `arguments.validValues` or `arguments.pattern`",
        );
    }
    let unit = f.opt_string(ctx, "unit");
    if let Some(u) = &unit
        && !["rows", "percent"].contains(&u.as_str())
    {
        ctx.err(
            f.pos,
            format!("quality `unit` is rows or percent, not `{u}`"),
        );
    }
    Some(Quality {
        name: f.opt_string(ctx, "name"),
        pos: f.pos,
        kind,
        description: f.opt_string(ctx, "description"),
        metric: metric.map(|(m, _)| m),
        query,
        column: column.map(str::to_string),
        valid_values,
        pattern,
        missing_values,
        properties,
        expect,
        unit,
        dimension: f.opt_string(ctx, "dimension"),
        severity: f.opt_string(ctx, "severity"),
    })
}
