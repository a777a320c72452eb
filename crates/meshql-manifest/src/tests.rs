use std::path::Path;

use crate::{Catalog, ColumnType, Error};

const MESH: &str = "apiVersion: meshql/v1\nkind: Mesh\nname: test\nstorage:\n  local:\n    type: local\n    root: data\n";

fn contract(domain: &str, product: &str, columns: &str) -> String {
    format!(
        "apiVersion: v3.1.0\nkind: DataContract\nid: {domain}-{product}\nname: {product}\nversion: 1.0.0\nstatus: active\ndomain: {domain}\nteam:\n  name: {domain}-team\nschema:\n  - name: {product}\n    properties:\n{columns}servers:\n  - server: local\n    type: local\n    path: {domain}/{product}\n"
    )
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn problems(err: Error) -> Vec<String> {
    match err {
        Error::Invalid(p) => p.iter().map(|p| p.to_string()).collect(),
        other => panic!("expected validation problems, got {other}"),
    }
}

#[test]
fn a_valid_contract_loads_with_mapped_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", MESH);
    write(
        dir.path(),
        "sales/orders.yaml",
        &contract(
            "sales",
            "orders",
            "      - name: order_id\n        logicalType: integer\n        physicalType: bigint\n        primaryKey: true\n      - name: total\n        logicalType: number\n        physicalType: decimal(12, 2)\n      - name: email\n        logicalType: string\n        classification: pii\n",
        ),
    );
    let catalog = Catalog::load_strict(dir.path()).expect("valid");
    let c = catalog.contract("sales", "orders").expect("loaded");
    assert_eq!(c.owner(), Some("sales-team"));
    let types: Vec<ColumnType> = c.product.columns.iter().map(|c| c.data_type).collect();
    assert_eq!(
        types,
        vec![
            ColumnType::Int64,
            ColumnType::Decimal {
                precision: 12,
                scale: 2
            },
            ColumnType::String
        ]
    );
    assert!(c.product.columns[0].required, "a primary key is required");
    assert_eq!(c.product.columns[2].classification.as_deref(), Some("pii"));
}

#[test]
fn every_problem_is_reported_at_once_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", MESH);
    let text = "apiVersion: v3.1.0\nkind: DataContract\nid: x\nname: broken\nversion: 1\nstatus: active\ndomain: sales\nownr: me\nschema:\n  - name: Bad-Name\n    properties:\n      - name: a\n        physicalType: geometry\n      - logicalType: string\nservers:\n  - server: nowhere\n    type: local\n    path: x\n";
    write(dir.path(), "sales/broken.yaml", text);
    let all = problems(Catalog::load_strict(dir.path()).expect_err("broken"));
    let joined = all.join("\n");
    assert!(
        joined.contains("broken.yaml:8:1: unknown key `ownr`"),
        "{joined}"
    );
    assert!(
        joined.contains("broken.yaml:10:11: product name `Bad-Name` is not a valid SQL identifier"),
        "{joined}"
    );
    assert!(
        joined.contains("broken.yaml:13:23: meshql cannot map physicalType `geometry`"),
        "{joined}"
    );
    assert!(
        joined.contains("broken.yaml:14:9: missing required field `name` in a column"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "broken.yaml:16:13: server `nowhere` names a storage that mesh.yaml does not define"
        ),
        "{joined}"
    );
    assert_eq!(all.len(), 5, "{joined}");
}

#[test]
fn malformed_yaml_and_missing_fields_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", MESH);
    write(
        dir.path(),
        "sales/bad.yaml",
        "apiVersion: v3.1.0\nkind: [DataContract\n",
    );
    write(
        dir.path(),
        "sales/thin.yaml",
        "apiVersion: v3.1.0\nkind: DataContract\n",
    );
    let all = problems(Catalog::load_strict(dir.path()).expect_err("broken")).join("\n");
    assert!(all.contains("bad.yaml:3:1: invalid YAML"), "{all}");
    for field in [
        "id", "name", "version", "status", "domain", "schema", "servers",
    ] {
        assert!(
            all.contains(&format!("thin.yaml:1:1: missing required field `{field}`")),
            "{field}: {all}"
        );
    }
}

#[test]
fn lenient_loading_keeps_the_good_products_and_reports_the_broken_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", MESH);
    write(
        dir.path(),
        "sales/orders.yaml",
        &contract(
            "sales",
            "orders",
            "      - name: id\n        logicalType: integer\n",
        ),
    );
    write(
        dir.path(),
        "sales/refunds.yaml",
        &contract(
            "sales",
            "refunds",
            "      - name: id\n        logicalType: blob\n",
        ),
    );
    let catalog = Catalog::load(dir.path()).expect("lenient load succeeds");
    assert_eq!(catalog.contracts.len(), 1);
    assert_eq!(catalog.contracts[0].qualified_name(), "sales.orders");
    assert_eq!(catalog.problems.len(), 1);
    assert!(
        catalog.problems[0]
            .message
            .contains("unknown logicalType `blob`")
    );
    assert!(Catalog::load_strict(dir.path()).is_err());
}

#[test]
fn duplicate_products_and_misplaced_files_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", MESH);
    let c = contract(
        "sales",
        "orders",
        "      - name: id\n        logicalType: integer\n",
    );
    write(dir.path(), "sales/orders.yaml", &c);
    write(dir.path(), "sales/orders.yml", &c);
    write(dir.path(), "payments/orders.yaml", &c);
    let all = problems(Catalog::load_strict(dir.path()).expect_err("dupes")).join("\n");
    assert!(
        all.contains("duplicate product `sales.orders`: already defined in"),
        "{all}"
    );
    assert!(
        all.contains("contract for domain `sales` is in directory `payments`"),
        "{all}"
    );
}

#[test]
fn mesh_yaml_problems_are_fatal_even_when_lenient() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "mesh.yaml",
        "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  lake:\n    type: s3\n    endpiont: http://x\n",
    );
    let all = problems(Catalog::load(dir.path()).expect_err("bad mesh")).join("\n");
    assert!(
        all.contains(
            "mesh.yaml:7:5: unknown key `endpiont` in storage `lake` (did you mean `endpoint`?)"
        ),
        "{all}"
    );
    assert!(all.contains("missing required field `bucket`"), "{all}");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "mesh.yaml",
        "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  lake:\n    type: s3\n    bucket: b\n    secretAccessKey: hunter2\n",
    );
    let catalog = Catalog::load(dir.path()).expect("loads");
    assert!(!format!("{catalog:?}").contains("hunter2"));
}

#[test]
fn server_and_audit_settings_load_and_their_mistakes_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "mesh.yaml",
        &format!(
            "{MESH}server:\n  addr: 127.0.0.1:4000\n  maxConcurrentQueries: 4\n  queryMemoryMb: 64\n  jwt:\n    hs256Secret: s3cret\n    audience: meshql\naudit:\n  path: logs/audit.jsonl\ncheck:\n  results: state/check.json\n"
        ),
    );
    let catalog = Catalog::load_strict(dir.path()).expect("valid");
    assert_eq!(
        catalog.mesh.check_results.as_deref(),
        Some(dir.path().join("state/check.json").as_path())
    );
    let server = &catalog.mesh.server;
    assert_eq!(server.addr.as_deref(), Some("127.0.0.1:4000"));
    assert_eq!(server.max_concurrent_queries, Some(4));
    assert_eq!(server.query_memory_mb, Some(64));
    let jwt = server.jwt.as_ref().expect("jwt");
    assert_eq!(jwt.roles_claim, "roles");
    assert_eq!(jwt.audience.as_deref(), Some("meshql"));
    assert!(
        !format!("{server:?} {jwt:?}").contains("s3cret"),
        "secrets stay out of Debug"
    );
    assert_eq!(
        catalog.mesh.audit.as_deref(),
        Some(dir.path().join("logs/audit.jsonl").as_path())
    );

    write(
        dir.path(),
        "mesh.yaml",
        &format!(
            "{MESH}server:\n  addr: localhost:4000\n  maxConcurrentQueries: 0\n  queryMemoryMB: 64\n  jwt:\n    audience: meshql\ncheck:\n  result: x.json\n"
        ),
    );
    let found = problems(Catalog::load(dir.path()).expect_err("invalid"));
    let all = found.join("\n");
    assert!(
        all.contains("mesh.yaml:9:9: `server.addr` must be HOST:PORT"),
        "{all}"
    );
    assert!(
        all.contains("mesh.yaml:10:25: `server.maxConcurrentQueries` must be a positive number"),
        "{all}"
    );
    assert!(
        all.contains("queryMemoryMB") && all.contains("did you mean `queryMemoryMb`"),
        "{all}"
    );
    assert!(
        all.contains("needs exactly one of `hs256Secret` and `publicKeyFile`"),
        "{all}"
    );
    assert!(
        all.contains("mesh.yaml:15:3: unknown key `result` in `check` (did you mean `results`?)"),
        "{all}"
    );
}

#[test]
fn iceberg_catalogs_and_tables_load_and_their_mistakes_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalogs = "catalogs:\n  lake:\n    type: sql\n    uri: sqlite:lake.db\n    storage: local\n    warehouse: /wh/\n  remote:\n    type: rest\n    uri: http://127.0.0.1:8181\n    prefix: silver\n    token: t0ken\n";
    write(dir.path(), "mesh.yaml", &format!("{MESH}{catalogs}"));
    let iceberg = |server: &str| {
        contract(
            "sales",
            "orders",
            "      - name: id\n        physicalType: bigint\n",
        )
        .replace(
            "servers:\n  - server: local\n    type: local\n    path: sales/orders\n",
            server,
        )
    };
    write(
        dir.path(),
        "sales/orders.yaml",
        &iceberg(
            "servers:\n  - server: lake\n    type: iceberg\n    schema: lake.sales\n    table: orders\n",
        ),
    );
    let catalog = Catalog::load_strict(dir.path()).expect("valid");
    let lake = &catalog.mesh.catalogs["lake"];
    assert_eq!(lake.warehouse.as_deref(), Some("wh"));
    let crate::IcebergCatalogKind::Sql { uri } = &lake.kind else {
        panic!("`lake` is a SQL catalog");
    };
    assert!(
        uri.starts_with("sqlite:///") && uri.ends_with("/lake.db"),
        "{uri}"
    );
    assert!(!format!("{:?}", catalog.mesh.catalogs).contains("t0ken"));
    let server = &catalog.contracts[0].servers[0];
    assert!(server.is_iceberg());
    assert_eq!(
        server.iceberg,
        Some(crate::IcebergTableRef {
            namespace: vec!["lake".into(), "sales".into()],
            table: "orders".into()
        })
    );

    // Mistakes, each with its place.
    let bad = "catalogs:\n  lake:\n    type: hive\n    uri: thrift://x\n  lake2:\n    type: sql\n    uri: mysql://x\n    storage: locl\n";
    write(dir.path(), "mesh.yaml", &format!("{MESH}{bad}"));
    write(
        dir.path(),
        "sales/orders.yaml",
        &iceberg("servers:\n  - server: lake2\n    type: iceberg\n    path: orders\n"),
    );
    let all = problems(Catalog::load(dir.path()).expect_err("invalid")).join("\n");
    assert!(
        all.contains("mesh.yaml:10:11: catalog `lake`: unknown catalog type `hive`"),
        "{all}"
    );
    assert!(
        all.contains(
            "mesh.yaml:14:10: catalog `lake2`: `uri` must be `sqlite:PATH` or `postgres://...`"
        ),
        "{all}"
    );
    assert!(
        all.contains(
            "names storage `locl`, which mesh.yaml does not define (did you mean `local`?)"
        ),
        "{all}"
    );

    write(dir.path(), "mesh.yaml", &format!("{MESH}{catalogs}"));
    write(
        dir.path(),
        "sales/orders.yaml",
        &iceberg("servers:\n  - server: lake\n    type: iceberg\n    path: orders\n"),
    );
    let all = problems(Catalog::load_strict(dir.path()).expect_err("invalid")).join("\n");
    assert!(
        all.contains("`path` does not apply to a table in catalog `lake`"),
        "{all}"
    );
    assert!(
        all.contains("sales/orders.yaml:16:5: missing required field `schema` in a server"),
        "{all}"
    );
    write(
        dir.path(),
        "sales/orders.yaml",
        &iceberg(
            "servers:\n  - server: local\n    type: iceberg\n    path: orders/metadata/v1.json\n",
        ),
    );
    let all = problems(Catalog::load_strict(dir.path()).expect_err("invalid")).join("\n");
    assert!(all.contains("`path` must end in `.metadata.json`"), "{all}");
}

#[test]
fn quality_rules_and_freshness_slas_load_and_their_mistakes_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", MESH);
    let good = contract(
        "sales",
        "orders",
        "      - name: status\n        logicalType: string\n        quality:\n          - metric: invalidValues\n            arguments:\n              validValues: [open, shipped]\n            mustBe: 0\n          - rule: nullValues\n            unit: percent\n            mustBeBetween: [0, 1]\n",
    ) + "slaProperties:\n  - property: freshness\n    value: 2\n    unit: h\nquality:\n  - metric: rowCount\n    mustBeGreaterOrEqualTo: 10\n  - type: sql\n    query: SELECT count(*) FROM {object}\n    mustBeLessThan: 5\n";
    write(dir.path(), "sales/orders.yaml", &good);
    let catalog = Catalog::load_strict(dir.path()).expect("valid");
    let c = catalog.contract("sales", "orders").expect("loaded");
    let labels: Vec<String> = c.quality.iter().map(|q| q.label()).collect();
    assert_eq!(
        labels,
        [
            "rowCount",
            "sql",
            "invalidValues(status)",
            "nullValues(status)"
        ]
    );
    assert_eq!(c.quality[2].valid_values, ["open", "shipped"]);
    assert_eq!(
        c.quality[3].expect,
        Some(crate::Expectation::Between(0.0, 1.0))
    );
    assert!(c.quality[0].expect.expect("operator").holds(10.0));
    assert!(!c.quality[1].expect.expect("operator").holds(5.0));
    assert_eq!(
        c.sla[0].max_age().expect("duration"),
        std::time::Duration::from_secs(7200)
    );

    let bad = contract(
        "sales",
        "orders",
        "      - name: status\n        logicalType: string\n        quality:\n          - metric: invalidValue\n            mustBe: 0\n          - metric: invalidValues\n            mustBe: 0\n          - metric: nullValues\n",
    ) + "slaProperties:\n  - property: freshness\n    value: 2\n    unit: fortnights\nquality:\n  - metric: nullValues\n    mustBe: 0\n  - metric: rowCount\n    mustBe: 1\n    mustBeLessThan: 3\n  - metric: rowCount\n    mustBeBetween: [5, 1]\n";
    write(dir.path(), "sales/orders.yaml", &bad);
    let p = problems(Catalog::load_strict(dir.path()).expect_err("invalid"));
    let has = |needle: &str| {
        assert!(
            p.iter().any(|x| x.contains(needle)),
            "no `{needle}` in {p:#?}"
        )
    };
    has("orders.yaml:16:21: unknown quality metric `invalidValue` (did you mean `invalidValues`?)");
    has("orders.yaml:18:21: `invalidValues` needs `arguments.validValues` or `arguments.pattern`");
    has("orders.yaml:20:13: the rule says nothing the result must be");
    has("orders.yaml:26:5: freshness unit `fortnights` is not a unit of time");
    has(
        "orders.yaml:30:13: `nullValues` checks one column: put the rule in that column's `quality`",
    );
    has("orders.yaml:32:5: a quality rule takes one operator");
    has("orders.yaml:36:20: `mustBeBetween` takes two numbers, the lower bound first");
}
