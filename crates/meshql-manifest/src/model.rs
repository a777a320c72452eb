//! The catalog-as-code model: `mesh.yaml` and ODCS v3.1 data contracts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::yaml::Pos;

/// `mesh.yaml`: the mesh's name, its storage and the demo data settings.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MeshConfig {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub storage: BTreeMap<String, Storage>,
    /// Iceberg catalogs that contracts' `servers[]` name.
    pub catalogs: BTreeMap<String, IcebergCatalog>,
    pub demo: Option<DemoConfig>,
    pub governance: GovernanceConfig,
    /// Settings of `meshql serve`; flags override them.
    pub server: ServerConfig,
    /// Worker processes that queries are spread over (`cluster:`).
    pub cluster: ClusterConfig,
    /// The append-only JSON-lines audit log, if statements are audited.
    pub audit: Option<PathBuf>,
    /// Where `meshql check` keeps the last results of its data checks,
    /// which `meshql.quality` shows.
    pub check_results: Option<PathBuf>,
}

/// Where a coordinator's workers are (`cluster:` in `mesh.yaml`); the
/// `--workers` and `--distribute-above` flags and `MESHQL_WORKERS`
/// override it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ClusterConfig {
    /// `HOST:PORT` of each worker.
    pub workers: Vec<String>,
    /// Queries whose scans read fewer bytes than this run in-process.
    pub distribute_above_bytes: Option<u64>,
}

/// Settings of the Flight SQL server (`server:` in `mesh.yaml`).
#[derive(Clone, Default, Serialize, serde::Deserialize)]
pub struct ServerConfig {
    /// `HOST:PORT` to listen on.
    pub addr: Option<String>,
    /// `HOST:PORT` of the web catalog; none unless set.
    pub http: Option<String>,
    /// `HOST:PORT` of the PostgreSQL wire protocol; none unless set.
    pub pg: Option<String>,
    /// How long a bearer token from a password login lasts.
    pub token_ttl_seconds: Option<u64>,
    /// Queries that run at once; more wait in a queue.
    pub max_concurrent_queries: Option<usize>,
    /// Of those, how many one principal may hold at once, so that one user
    /// cannot take every slot while others wait.
    pub max_queries_per_user: Option<usize>,
    /// How long a query waits in the queue before it is refused.
    pub queue_timeout_seconds: Option<u64>,
    /// Memory one query may use, in MiB.
    pub query_memory_mb: Option<usize>,
    /// How long one query may run.
    pub query_timeout_seconds: Option<u64>,
    /// Rows one result may have; a larger result fails rather than being cut.
    pub max_result_rows: Option<u64>,
    /// Single sign-on: JWT bearer tokens from an identity provider.
    pub jwt: Option<JwtConfig>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("http", &self.http)
            .field("pg", &self.pg)
            .field("max_concurrent_queries", &self.max_concurrent_queries)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("public_key_file", &self.public_key_file)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("roles_claim", &self.roles_claim)
            .finish_non_exhaustive()
    }
}

/// How JWT bearer tokens are checked and mapped to a principal.
#[derive(Clone, Default, Serialize, serde::Deserialize)]
pub struct JwtConfig {
    /// The HS256 shared secret.
    #[serde(skip)]
    pub hs256_secret: Option<String>,
    /// A PEM public key (RS256 or ES256).
    pub public_key_file: Option<PathBuf>,
    /// The audience tokens must name, if any.
    pub audience: Option<String>,
    /// The issuer tokens must name, if any.
    pub issuer: Option<String>,
    /// The claim holding the principal's roles (default `roles`).
    pub roles_claim: String,
}

/// Mesh-wide governance settings.
#[derive(Clone, Default, Serialize, serde::Deserialize)]
pub struct GovernanceConfig {
    /// The key of `hash_pseudonym`; `MESHQL_PSEUDONYM_SECRET` overrides it.
    #[serde(skip)]
    pub pseudonym_secret: Option<String>,
    /// Roles that principals from outside `users.yaml` (single sign-on) hold.
    pub roles: Vec<String>,
}

impl fmt::Debug for GovernanceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernanceConfig")
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// Where the demo generator writes its data, and at what scale.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DemoConfig {
    pub storage: String,
    pub scale: u32,
}

/// An Iceberg catalog (`catalogs:` in `mesh.yaml`): where a table's current
/// metadata is found. The table files themselves are read from `storage`.
#[derive(Clone, Serialize, serde::Deserialize)]
pub struct IcebergCatalog {
    /// The key in `mesh.yaml`, which contracts name.
    pub name: String,
    pub pos: Pos,
    /// The catalog's own name (the SQL catalog's `catalog_name` column);
    /// defaults to `name`.
    pub catalog_name: String,
    pub kind: IcebergCatalogKind,
    /// The storage the table files live in, which supplies the S3 endpoint
    /// and credentials (or the local root).
    pub storage: Option<String>,
    /// The warehouse: for `sql`, a path inside `storage` where new tables go;
    /// for `rest`, the warehouse name sent to the server.
    pub warehouse: Option<String>,
}

#[derive(Clone, Serialize, serde::Deserialize)]
pub enum IcebergCatalogKind {
    /// The SQL catalog PyIceberg and iceberg-rust share: `sqlite:PATH`
    /// (relative to the catalog directory) or `postgres://...`.
    Sql { uri: String },
    /// An Iceberg REST catalog.
    Rest {
        uri: String,
        prefix: Option<String>,
        /// OAuth2 client credentials, `CLIENT_ID:CLIENT_SECRET`.
        #[serde(skip)]
        credential: Option<String>,
        /// A bearer token.
        #[serde(skip)]
        token: Option<String>,
        oauth2_server_uri: Option<String>,
        scope: Option<String>,
    },
}

impl fmt::Debug for IcebergCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            IcebergCatalogKind::Sql { .. } => "sql",
            IcebergCatalogKind::Rest { .. } => "rest",
        };
        f.debug_struct("IcebergCatalog")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("storage", &self.storage)
            .field("warehouse", &self.warehouse)
            .finish_non_exhaustive()
    }
}

/// An Iceberg table in a catalog: namespace (one or more levels) and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IcebergTableRef {
    pub namespace: Vec<String>,
    pub table: String,
}

/// A named storage location that contracts' `servers[]` refer to.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Storage {
    pub name: String,
    pub pos: Pos,
    pub kind: StorageKind,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub enum StorageKind {
    /// A directory on the local file system (absolute, or relative to the
    /// catalog directory when loaded).
    Local { root: PathBuf },
    /// An S3-compatible bucket.
    S3(S3Storage),
}

#[derive(Clone, Serialize, serde::Deserialize)]
pub struct S3Storage {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub allow_http: bool,
    pub access_key_id: Option<String>,
    #[serde(skip)]
    pub secret_access_key: Option<String>,
    #[serde(skip)]
    pub session_token: Option<String>,
    /// Seconds to wait for a connection before the product is reported unreachable.
    pub connect_timeout_secs: u64,
    pub max_retries: usize,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials never appear in logs or error messages.
        f.debug_struct("S3Storage")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

/// An ODCS v3.1 data contract describing one data product.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Contract {
    pub file: PathBuf,
    pub api_version: String,
    pub id: String,
    /// The contract's human name.
    pub name: String,
    pub version: String,
    pub status: String,
    /// The owning domain: the SQL schema.
    pub domain: String,
    pub data_product: Option<String>,
    pub description: Option<String>,
    pub team: Option<Team>,
    /// The product: the SQL table.
    pub product: Product,
    pub servers: Vec<Server>,
    pub sla: Vec<SlaProperty>,
    pub quality: Vec<Quality>,
    pub tags: Vec<String>,
    pub custom_properties: BTreeMap<String, String>,
}

impl Contract {
    /// `domain.product`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.domain, self.product.name)
    }

    /// The owning team's name, if the contract names one.
    pub fn owner(&self) -> Option<&str> {
        self.team.as_ref().and_then(|t| t.name.as_deref())
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Team {
    pub name: Option<String>,
    pub members: Vec<TeamMember>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TeamMember {
    pub username: String,
    pub role: Option<String>,
}

/// The contract's schema object: one table.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Product {
    pub name: String,
    pub pos: Pos,
    pub description: Option<String>,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    pub pos: Pos,
    pub data_type: ColumnType,
    pub logical_type: Option<String>,
    pub physical_type: Option<String>,
    pub required: bool,
    pub primary_key: bool,
    pub unique: bool,
    pub classification: Option<String>,
    pub tags: Vec<String>,
    pub description: Option<String>,
}

/// The column types meshql maps to Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum ColumnType {
    Boolean,
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    String,
    Binary,
    Date,
    Time,
    /// Timestamp without time zone, microseconds.
    Timestamp,
    /// Timestamp in UTC, microseconds.
    TimestampTz,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Boolean => write!(f, "boolean"),
            ColumnType::Int8 => write!(f, "tinyint"),
            ColumnType::Int16 => write!(f, "smallint"),
            ColumnType::Int32 => write!(f, "int"),
            ColumnType::Int64 => write!(f, "bigint"),
            ColumnType::Float32 => write!(f, "real"),
            ColumnType::Float64 => write!(f, "double"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::String => write!(f, "varchar"),
            ColumnType::Binary => write!(f, "varbinary"),
            ColumnType::Date => write!(f, "date"),
            ColumnType::Time => write!(f, "time"),
            ColumnType::Timestamp => write!(f, "timestamp"),
            ColumnType::TimestampTz => write!(f, "timestamp with time zone"),
        }
    }
}

impl ColumnType {
    /// Parses an ODCS `physicalType` such as `bigint`, `decimal(12,2)` or
    /// `timestamp with time zone`.
    pub fn parse_physical(text: &str) -> Result<ColumnType, String> {
        let t = text.trim().to_ascii_lowercase();
        let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
        let base = t.split('(').next().unwrap_or("").trim();
        let args: Vec<&str> = t
            .find('(')
            .and_then(|i| t[i + 1..].strip_suffix(')'))
            .map(|a| a.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let ty = match base {
            "boolean" | "bool" => ColumnType::Boolean,
            "tinyint" | "int8" | "byte" => ColumnType::Int8,
            "smallint" | "int16" | "short" => ColumnType::Int16,
            "int" | "integer" | "int32" => ColumnType::Int32,
            "bigint" | "int64" | "long" => ColumnType::Int64,
            "real" | "float" | "float32" => ColumnType::Float32,
            "double" | "double precision" | "float64" => ColumnType::Float64,
            "decimal" | "numeric" => {
                let (p, s) = match args.as_slice() {
                    [p] => (p.parse::<u8>().ok(), Some(0)),
                    [p, s] => (p.parse::<u8>().ok(), s.parse::<i8>().ok()),
                    _ => (None, None),
                };
                match (p, s) {
                    (Some(p), Some(s)) if (1..=38).contains(&p) && s >= 0 && (s as u8) <= p => {
                        return Ok(ColumnType::Decimal {
                            precision: p,
                            scale: s,
                        });
                    }
                    _ => {
                        return Err(format!(
                            "`{text}` is not a valid decimal: write decimal(precision, scale) with 1 <= precision <= 38 and 0 <= scale <= precision"
                        ));
                    }
                }
            }
            "varchar" | "string" | "text" | "char" | "character varying" | "utf8" => {
                ColumnType::String
            }
            "binary" | "varbinary" | "bytes" | "blob" | "bytea" => ColumnType::Binary,
            "date" => ColumnType::Date,
            "time" => ColumnType::Time,
            "timestamp" | "timestamp_ntz" | "timestamp without time zone" | "datetime" => {
                ColumnType::Timestamp
            }
            "timestamptz" | "timestamp_tz" | "timestamp_ltz" | "timestamp with time zone" => {
                ColumnType::TimestampTz
            }
            _ => {
                return Err(format!(
                    "meshql cannot map physicalType `{text}` to a SQL type (supported: boolean, tinyint, smallint, int, bigint, real, double, decimal(p,s), varchar, varbinary, date, time, timestamp, timestamp with time zone)"
                ));
            }
        };
        let takes_length = matches!(ty, ColumnType::String | ColumnType::Binary);
        if !args.is_empty() && !takes_length {
            return Err(format!("`{text}`: type `{base}` takes no arguments"));
        }
        Ok(ty)
    }

    /// The default physical type of an ODCS `logicalType`.
    pub fn from_logical(logical: &str) -> Result<ColumnType, String> {
        Ok(match logical {
            "string" => ColumnType::String,
            "integer" => ColumnType::Int64,
            "number" => ColumnType::Float64,
            "boolean" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::TimestampTz,
            "time" => ColumnType::Time,
            "object" | "array" => {
                return Err(format!(
                    "meshql cannot map logicalType `{logical}`: nested columns are not supported yet"
                ));
            }
            other => {
                return Err(format!(
                    "unknown logicalType `{other}` (ODCS allows string, integer, number, boolean, date, timestamp, time, object, array)"
                ));
            }
        })
    }

    /// Whether a column of this type may carry the given ODCS `logicalType`.
    pub fn fits_logical(&self, logical: &str) -> bool {
        match logical {
            "string" => matches!(self, ColumnType::String | ColumnType::Binary),
            "integer" => {
                matches!(
                    self,
                    ColumnType::Int8 | ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64
                ) || matches!(self, ColumnType::Decimal { scale: 0, .. })
            }
            "number" => matches!(
                self,
                ColumnType::Float32
                    | ColumnType::Float64
                    | ColumnType::Decimal { .. }
                    | ColumnType::Int8
                    | ColumnType::Int16
                    | ColumnType::Int32
                    | ColumnType::Int64
            ),
            "boolean" => matches!(self, ColumnType::Boolean),
            "date" => matches!(self, ColumnType::Date),
            "timestamp" => matches!(self, ColumnType::Timestamp | ColumnType::TimestampTz),
            "time" => matches!(self, ColumnType::Time),
            _ => false,
        }
    }
}

/// A contract's `servers[]` entry: where the product's data lives.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Server {
    /// The name of a storage defined in `mesh.yaml`.
    pub server: String,
    pub pos: Pos,
    pub kind: String,
    pub format: String,
    /// File, directory or prefix inside the storage; for an Iceberg table
    /// without a catalog, its `metadata.json`.
    pub path: String,
    pub environment: Option<String>,
    /// For `type: iceberg` on a catalog: the table in it.
    pub iceberg: Option<IcebergTableRef>,
}

impl Server {
    /// Whether the product is an Iceberg table (in a catalog, or by its
    /// metadata file).
    pub fn is_iceberg(&self) -> bool {
        self.kind == "iceberg"
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SlaProperty {
    pub property: String,
    pub pos: Pos,
    pub value: String,
    pub unit: Option<String>,
    pub element: Option<String>,
}

impl SlaProperty {
    /// For `freshness` and `latency`: the longest the data may lag, from
    /// `value` and `unit` (`s`, `m`/`min`, `h`, `d`, `w`, `y` and their
    /// long forms; days when no unit is given).
    pub fn max_age(&self) -> Result<std::time::Duration, String> {
        let value: f64 = self
            .value
            .trim()
            .parse()
            .map_err(|_| format!("{} value `{}` is not a number", self.property, self.value))?;
        if !(value.is_finite() && value >= 0.0) {
            return Err(format!(
                "{} value `{}` must be a non-negative number",
                self.property, self.value
            ));
        }
        let unit = self
            .unit
            .as_deref()
            .unwrap_or("d")
            .trim()
            .to_ascii_lowercase();
        let seconds = match unit.as_str() {
            "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 7.0 * 86_400.0,
            "y" | "yr" | "year" | "years" => 365.0 * 86_400.0,
            other => {
                return Err(format!(
                    "{} unit `{other}` is not a unit of time (s, m, h, d, w, y)",
                    self.property
                ));
            }
        };
        Ok(std::time::Duration::from_secs_f64(value * seconds))
    }

    /// Whether this property bounds how old the data may be.
    pub fn is_freshness(&self) -> bool {
        matches!(self.property.as_str(), "freshness" | "latency")
    }
}

/// An ODCS quality rule, of the product (`schema[].quality`, or the
/// contract's top-level `quality`) or of one column
/// (`properties[].quality`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Quality {
    pub name: Option<String>,
    pub pos: Pos,
    /// `text`, `library`, `sql` or `custom`.
    pub kind: String,
    pub description: Option<String>,
    /// A `library` rule's metric: `nullValues`, `missingValues`,
    /// `invalidValues`, `duplicateValues` or `rowCount` (`metric`, or
    /// ODCS 3.0's `rule`).
    pub metric: Option<String>,
    /// A `sql` rule's query, with `{object}` and `{property}` placeholders.
    pub query: Option<String>,
    /// The column a column-level rule belongs to.
    pub column: Option<String>,
    /// `arguments.validValues`.
    pub valid_values: Vec<String>,
    /// `arguments.pattern`: a regular expression valid values match.
    pub pattern: Option<String>,
    /// `arguments.missingValues`: values that count as missing besides NULL.
    pub missing_values: Vec<String>,
    /// `arguments.properties`: the columns a `duplicateValues` rule on the
    /// product looks at together.
    pub properties: Vec<String>,
    /// What the measured value must satisfy.
    pub expect: Option<Expectation>,
    /// `rows` (the default) or `percent`.
    pub unit: Option<String>,
    pub dimension: Option<String>,
    pub severity: Option<String>,
}

impl Quality {
    /// The rule's name for reports: its `name`, else its metric or kind,
    /// with the column.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let what = self.metric.clone().unwrap_or_else(|| self.kind.clone());
        match &self.column {
            Some(c) => format!("{what}({c})"),
            None => what,
        }
    }
}

/// An ODCS quality operator and its operand(s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub enum Expectation {
    Be(f64),
    NotBe(f64),
    GreaterThan(f64),
    GreaterOrEqualTo(f64),
    LessThan(f64),
    LessOrEqualTo(f64),
    Between(f64, f64),
    NotBetween(f64, f64),
}

impl Expectation {
    pub fn holds(&self, v: f64) -> bool {
        match *self {
            Expectation::Be(x) => v == x,
            Expectation::NotBe(x) => v != x,
            Expectation::GreaterThan(x) => v > x,
            Expectation::GreaterOrEqualTo(x) => v >= x,
            Expectation::LessThan(x) => v < x,
            Expectation::LessOrEqualTo(x) => v <= x,
            Expectation::Between(a, b) => a <= v && v <= b,
            Expectation::NotBetween(a, b) => v < a || v > b,
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Be(x) => write!(f, "must be {x}"),
            Expectation::NotBe(x) => write!(f, "must not be {x}"),
            Expectation::GreaterThan(x) => write!(f, "must be greater than {x}"),
            Expectation::GreaterOrEqualTo(x) => write!(f, "must be at least {x}"),
            Expectation::LessThan(x) => write!(f, "must be less than {x}"),
            Expectation::LessOrEqualTo(x) => write!(f, "must be at most {x}"),
            Expectation::Between(a, b) => write!(f, "must be between {a} and {b}"),
            Expectation::NotBetween(a, b) => write!(f, "must not be between {a} and {b}"),
        }
    }
}
