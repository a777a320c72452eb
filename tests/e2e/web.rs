//! The web catalog over HTTP on 127.0.0.1: every page and API route as
//! each demo principal, sign-in, cookies, CSRF and escaping.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use meshql::Mesh;
use meshql_server::ServerOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

/// A server with Flight SQL and the web catalog, stopped when dropped.
pub(crate) struct WebServer {
    pub(crate) http: SocketAddr,
    pub(crate) flight: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) async fn start(mesh: Mesh, options: ServerOptions) -> WebServer {
    start_tls(mesh, options, None).await
}

pub(crate) async fn start_tls(
    mesh: Mesh,
    options: ServerOptions,
    tls: Option<meshql_server::Tls>,
) -> WebServer {
    let bind = || async {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
    };
    let (flight, http) = (bind().await, bind().await);
    let (flight_addr, http_addr) = (
        flight.local_addr().expect("addr"),
        http.local_addr().expect("addr"),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        meshql_server::serve_with_web(
            flight,
            Some(http),
            mesh,
            options,
            tls,
            shutdown,
            Duration::from_secs(1),
        )
        .await
        .expect("serves");
    });
    WebServer {
        http: http_addr,
        flight: flight_addr,
        stop: Some(stop),
    }
}

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// Header names in lower case; repeated headers joined by "\n".
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    request_on(stream, addr, method, path, headers, body).await
}

/// One HTTP/1.1 request over `stream`.
pub(crate) async fn request_on(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("writes");
    stream.write_all(body).await.expect("writes");
    // Read the header block, then as many bytes as it says (some servers
    // keep the connection open despite `Connection: close`), else to the
    // end.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).await.expect("reads");
        assert!(n > 0, "the connection closed before the headers");
        raw.extend_from_slice(&buf[..n]);
    };
    let length = String::from_utf8_lossy(&raw[..split])
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        });
    match length {
        Some(len) => {
            while raw.len() < split + 4 + len {
                let n = stream.read(&mut buf).await.expect("reads");
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut raw).await.expect("reads");
        }
    }
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let entry = headers.entry(k.trim().to_lowercase()).or_default();
            if !entry.is_empty() {
                entry.push('\n');
            }
            entry.push_str(v.trim());
        }
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        body = unchunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&raw[..end])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

/// The value of the hidden form field `name` in a page.
pub(crate) fn field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name}: {page}"))
        + marker.len();
    page[at..].split('"').next().unwrap_or_default().to_string()
}

/// A `name=value` pair of a `set-cookie` header.
fn cookie_pair(reply: &Reply, name: &str) -> Option<String> {
    reply
        .header("set-cookie")
        .lines()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
}

/// A signed-in browser: its session cookie and CSRF token.
pub(crate) struct Browser {
    pub(crate) addr: SocketAddr,
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

impl Browser {
    /// Fills in and sends the sign-in form.
    pub(crate) async fn attempt(addr: SocketAddr, user: &str, password: &str) -> Reply {
        let form = request(addr, "GET", "/login", &[], b"").await;
        assert_eq!(form.status, 200, "{}", form.text());
        let login_cookie = cookie_pair(&form, "meshql_login").expect("a login cookie");
        let token = field(&form.text(), "csrf");
        let body = format!(
            "username={}&password={}&csrf={}",
            form_escape(user),
            form_escape(password),
            form_escape(&token)
        );
        request(
            addr,
            "POST",
            "/login",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &login_cookie),
            ],
            body.as_bytes(),
        )
        .await
    }

    pub(crate) async fn sign_in(addr: SocketAddr, user: &str) -> Browser {
        let signed = Browser::attempt(addr, user, &format!("{user}-demo")).await;
        assert_eq!(signed.status, 303, "{user}: {}", signed.text());
        let cookie = cookie_pair(&signed, "meshql_session").expect("a session cookie");
        let home = request(addr, "GET", "/", &[("Cookie", &cookie)], b"").await;
        assert_eq!(home.status, 200, "{}", home.text());
        let csrf = field(&home.text(), "csrf");
        Browser { addr, cookie, csrf }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[("Cookie", &self.cookie)], b"").await
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_escape(v)))
            .collect();
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Cookie", &self.cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.join("&").as_bytes(),
        )
        .await
    }
}

fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_sets_a_strict_cookie_and_every_response_is_locked_down() {
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let addr = server.http;
    // Signed out: pages send to the sign-in form, the API says 401.
    let home = request(addr, "GET", "/", &[], b"").await;
    assert_eq!(home.status, 303);
    assert_eq!(home.header("location"), "/login");
    let api = request(addr, "GET", "/api/v1/products", &[], b"").await;
    assert_eq!(api.status, 401, "{}", api.text());
    // Every response: CSP without inline script or other origins, no
    // framing, no sniffing, private caching.
    for reply in [&home, &api] {
        let csp = reply.header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("http"),
            "{csp}"
        );
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert!(reply.header("cache-control").contains("private"));
    }
    // A login form posted without its pairing cookie is refused, as is a
    // wrong password; neither sets a session.
    let form = request(addr, "GET", "/login", &[], b"").await;
    let token = field(&form.text(), "csrf");
    let login_cookie = cookie_pair(&form, "meshql_login").expect("login cookie");
    let forged = request(
        addr,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!(
            "username=admin&password=admin-demo&csrf={}",
            form_escape(&token)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(forged.status, 401, "{}", forged.text());
    assert!(cookie_pair(&forged, "meshql_session").is_none());
    let wrong = request(
        addr,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &login_cookie),
        ],
        format!("username=admin&password=nope&csrf={}", form_escape(&token)).as_bytes(),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("Invalid user name or password"));
    assert!(cookie_pair(&wrong, "meshql_session").is_none());

    let analyst = Browser::sign_in(addr, "analyst").await;
    let signed = request(
        addr,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &login_cookie),
        ],
        format!(
            "username=analyst&password=analyst-demo&csrf={}",
            form_escape(&token)
        )
        .as_bytes(),
    )
    .await;
    let set = signed
        .header("set-cookie")
        .lines()
        .find(|c| c.starts_with("meshql_session="))
        .expect("a session cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=3600", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "not over TLS: {set}");
    // A tampered cookie is no session.
    let tampered = analyst.cookie.replace("eyJ1Ijoi", "eyJ1IjoiY");
    let refused = request(addr, "GET", "/", &[("Cookie", &tampered)], b"").await;
    assert_eq!(refused.status, 303);

    // Signing out is a POST with the session's CSRF token.
    let no_token = analyst.post("/logout", &[]).await;
    assert_eq!(no_token.status, 403, "{}", no_token.text());
    let out = analyst.post("/logout", &[("csrf", &analyst.csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(
        out.header("set-cookie").contains("meshql_session=; "),
        "{out:?}"
    );
    // A query form without the token does not run.
    let analyst = Browser::sign_in(addr, "analyst").await;
    let csrf_less = analyst.post("/query", &[("sql", "SELECT 1")]).await;
    assert_eq!(csrf_less.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_answers_as_the_person_looking() {
    let audit = tempfile::NamedTempFile::new().expect("audit file");
    let server = start(
        demo_mesh(),
        ServerOptions {
            audit: Some(audit.path().to_path_buf()),
            ..ServerOptions::default()
        },
    )
    .await;
    let addr = server.http;
    let product = "/products/customers.customers";
    let missing = "/products/customers.nothing_here";
    for user in ["admin", "analyst", "eu_analyst", "finance", "guest"] {
        let b = Browser::sign_in(addr, user).await;
        let overview = b.get(product).await;
        let nothing = b.get(missing).await;
        assert_eq!(nothing.status, 404, "{user}");
        if user == "guest" {
            // Hidden: the same page as a product that does not exist, on
            // every tab and in the API, and no trace in search or domains.
            assert_eq!(overview.status, 404, "{user}");
            assert_eq!(overview.text(), nothing.text(), "{user}");
            for tab in ["schema", "sample", "quality", "lineage", "contract", "use"] {
                let page = b.get(&format!("{product}/{tab}")).await;
                assert_eq!(page.status, 404, "{user} {tab}");
                assert_eq!(page.text(), nothing.text(), "{user} {tab}");
            }
            assert_eq!(
                b.get("/api/v1/products/customers.customers").await.status,
                404
            );
            assert_eq!(
                b.get("/api/v1/products/customers.customers/columns")
                    .await
                    .status,
                404
            );
            for part in ["quality", "lineage"] {
                let reply = b
                    .get(&format!("/api/v1/products/customers.customers/{part}"))
                    .await;
                assert_eq!(reply.status, 404, "{user} {part}");
            }
            for page in ["/?q=customers", "/?q=email", "/domains", "/api/v1/products"] {
                let text = b.get(page).await.text();
                assert!(
                    !text.contains("customers.customers"),
                    "{user} {page}: {text}"
                );
            }
            continue;
        }
        assert_eq!(overview.status, 200, "{user}: {}", overview.text());
        let text = overview.text();
        assert!(text.contains("<title>customers.customers · "), "{user}");
        // The row filter banner: the EU analyst's only.
        assert_eq!(
            text.contains("Row filter for you"),
            user == "eu_analyst",
            "{user}"
        );
        // Masked columns are marked, with the rule; the sample shows the
        // masked values.
        let schema = b.get(&format!("{product}/schema")).await.text();
        let sample = b.get(&format!("{product}/sample")).await.text();
        let masked = user != "admin";
        assert_eq!(
            schema.contains("Masked for you"),
            masked,
            "{user}: {schema}"
        );
        if masked {
            assert!(schema.contains("mask_email"), "{user}");
            assert!(
                schema.contains("policies.yaml:"),
                "{user}: the rule's file and line"
            );
            assert!(
                !schema.contains(&root().display().to_string()),
                "{user}: the server's paths: {schema}"
            );
            assert!(sample.contains("***@"), "{user}: {sample}");
        } else {
            assert!(
                sample.contains("charlotte.smith1@soylent.fr"),
                "{user}: {sample}"
            );
        }
        if user == "eu_analyst" {
            assert!(
                !sample.contains("<td>NA</td>"),
                "{user}: a row outside the EU"
            );
        }
        // Search finds the product by a column name.
        let found = b.get("/?q=email").await.text();
        assert!(found.contains("/products/customers.customers"), "{user}");
        assert!(found.contains("column email"), "{user}: where it matched");
        // The API says the same.
        let columns = b.get("/api/v1/products/customers.customers/columns").await;
        assert_eq!(columns.status, 200, "{user}");
        let json: serde_json::Value = serde_json::from_slice(&columns.body).expect("json");
        let email = json["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .find(|c| c["column_name"] == "email")
            .cloned()
            .expect("email");
        assert_eq!(email["masked"] == "true", masked, "{user}: {email}");
        for part in ["quality", "lineage"] {
            let reply = b
                .get(&format!("/api/v1/products/customers.customers/{part}"))
                .await;
            assert_eq!(reply.status, 200, "{user} {part}: {}", reply.text());
            let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
            assert!(json[part].is_array(), "{user} {part}: {json}");
        }
        let one = b.get("/api/v1/products/customers.customers").await;
        let json: serde_json::Value = serde_json::from_slice(&one.body).expect("json");
        assert_eq!(json["name"], "customers.customers", "{user}");
        assert_eq!(
            json.get("row_filter").is_some(),
            user == "eu_analyst",
            "{user}: {json}"
        );
        // The query box runs as the viewer, with errors located.
        let ran = b
            .post(
                "/query",
                &[
                    ("csrf", &b.csrf),
                    (
                        "sql",
                        "SELECT email FROM customers.customers ORDER BY customer_id LIMIT 1",
                    ),
                    ("format", "html"),
                ],
            )
            .await;
        assert_eq!(ran.status, 200, "{user}: {}", ran.text());
        assert!(ran.text().contains("1 row,"), "{user}");
        assert_eq!(
            ran.text().contains("***@"),
            masked,
            "{user}: {}",
            ran.text()
        );
        let failed = b
            .post(
                "/query",
                &[
                    ("csrf", &b.csrf),
                    ("sql", "SELECT nope FROM customers.customers"),
                ],
            )
            .await;
        assert_eq!(failed.status, 400, "{user}");
        assert!(
            failed.text().contains("line 1, column"),
            "{user}: {}",
            failed.text()
        );
        let csv = b
            .post(
                "/query",
                &[
                    ("csrf", &b.csrf),
                    (
                        "sql",
                        "SELECT customer_id, email FROM customers.customers ORDER BY 1 LIMIT 2",
                    ),
                    ("format", "csv"),
                ],
            )
            .await;
        assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
        assert!(
            csv.text().starts_with("customer_id,email\n"),
            "{}",
            csv.text()
        );
        assert_eq!(csv.text().contains("***@"), masked, "{user}");
        let parquet = b
            .post(
                "/query",
                &[
                    ("csrf", &b.csrf),
                    ("sql", "SELECT 1 AS one"),
                    ("format", "parquet"),
                ],
            )
            .await;
        assert!(parquet.body.starts_with(b"PAR1"), "{user}");
        // POST /api/v1/query, with the session's token in a header.
        let body = br#"{"sql": "SELECT count(*) AS n FROM customers.customers"}"#;
        let no_token = request(
            addr,
            "POST",
            "/api/v1/query",
            &[("Cookie", &b.cookie), ("Content-Type", "application/json")],
            body,
        )
        .await;
        assert_eq!(no_token.status, 403, "{user}");
        let counted = request(
            addr,
            "POST",
            "/api/v1/query",
            &[
                ("Cookie", &b.cookie),
                ("X-CSRF-Token", &b.csrf),
                ("Content-Type", "application/json"),
            ],
            body,
        )
        .await;
        assert_eq!(counted.status, 200, "{user}: {}", counted.text());
        let json: serde_json::Value = serde_json::from_slice(&counted.body).expect("json");
        let n: u64 = json["rows"][0]["n"]
            .as_str()
            .expect("n")
            .parse()
            .expect("number");
        assert_eq!(n < 2000, user == "eu_analyst", "{user}: {n}");
        // Every tab renders.
        for tab in ["quality", "lineage", "contract", "use"] {
            let page = b.get(&format!("{product}/{tab}")).await;
            assert_eq!(page.status, 200, "{user} {tab}");
        }
        let usage = b.get(&format!("{product}/use")).await.text();
        assert!(usage.contains(&server.flight.to_string()), "{user}");
        assert!(
            !usage.contains(&format!("{user}-demo")),
            "{user}: a password in a snippet"
        );
        for page in ["/domains", "/me", "/query"] {
            assert_eq!(b.get(page).await.status, 200, "{user} {page}");
        }
    }
    // The sample and the queries went to the audit log as their users.
    let log = std::fs::read_to_string(audit.path()).expect("audit log");
    assert!(
        log.contains("SELECT * FROM customers.customers LIMIT 20"),
        "{log}"
    );
    assert!(log.contains("\"eu_analyst\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_large_to_hold_fails_instead_of_filling_the_server() {
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let b = Browser::sign_in(server.http, "analyst").await;
    // About 300 MiB of text.
    let sql = "SELECT repeat('x', 10000) AS s FROM generate_series(1, 30000)";
    let reply = b
        .post(
            "/query",
            &[("csrf", &b.csrf), ("sql", sql), ("format", "csv")],
        )
        .await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert!(
        reply.text().contains("larger than 256 MiB"),
        "{}",
        reply.text()
    );
    // The server goes on.
    let ok = b
        .post("/query", &[("csrf", &b.csrf), ("sql", "SELECT 1 AS one")])
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_and_my_access_show_only_what_the_viewer_may_see() {
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let admin = Browser::sign_in(server.http, "admin").await;
    let guest = Browser::sign_in(server.http, "guest").await;
    // sales.order_items declares its upstream products.
    let lineage = admin
        .get("/products/sales.order_items/lineage")
        .await
        .text();
    assert!(lineage.contains("<svg"), "{lineage}");
    assert!(lineage.contains("role=\"img\""));
    assert!(lineage.contains("<title id=\"lineage-title\">Lineage of sales.order_items</title>"));
    let guest_lineage = guest.get("/products/sales.order_items/lineage").await;
    if guest_lineage.status == 200 {
        assert!(
            !guest_lineage.text().contains("customers.customers"),
            "a product hidden from guest is drawn"
        );
    }
    // The audit log is on the auditor's page only.
    let admin_me = admin.get("/me").await.text();
    let guest_me = guest.get("/me").await.text();
    assert!(admin_me.contains("Audit log"), "{admin_me}");
    assert!(!guest_me.contains("Audit log"), "{guest_me}");
    assert!(guest_me.contains("The rules that apply to you"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_text_with_markup_is_escaped_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = root().join("catalog");
    copy_dir(&catalog, dir.path());
    // Absolute paths to the demo's data, from the copy.
    let data = demo_data();
    let mesh_yaml = std::fs::read_to_string(dir.path().join("mesh.yaml"))
        .expect("mesh.yaml")
        .replace("../data/demo", &data.display().to_string())
        .replace(
            "../data/audit.jsonl",
            &dir.path().join("audit.jsonl").display().to_string(),
        );
    write(dir.path(), "mesh.yaml", &mesh_yaml);
    let contract = dir.path().join("customers/customers.yaml");
    let text = std::fs::read_to_string(&contract).expect("contract");
    let marked = text.replacen(
        "purpose: ",
        "purpose: <script>alert('x')</script><img src=x onerror=alert(1)> ",
        1,
    );
    assert_ne!(marked, text);
    std::fs::write(&contract, marked).expect("writes");
    let mesh = Mesh::open_strict(dir.path()).expect("opens");
    let server = start(mesh, ServerOptions::default()).await;
    let admin = Browser::sign_in(server.http, "admin").await;
    for page in [
        "/products/customers.customers",
        "/products/customers.customers/contract",
        "/?q=customers",
        "/domains",
    ] {
        let text = admin.get(page).await.text();
        assert!(!text.contains("<script>"), "{page}: {text}");
        assert!(!text.contains("<img src=x"), "{page}");
        assert!(
            text.contains("&lt;script&gt;"),
            "{page}: the text is shown, escaped"
        );
    }
    // The download is the contract as published.
    let download = admin
        .get("/products/customers.customers/contract?download=1")
        .await;
    assert!(
        download
            .header("content-disposition")
            .contains("attachment")
    );
    assert!(download.text().contains("<script>alert('x')</script>"));
}

/// The quality tab: the last results failures first, and the history of
/// runs; what a check measured only for who reads the product unrestricted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quality_tab_shows_the_history_and_withholds_raw_measures() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&root().join("catalog"), dir.path());
    let data = demo_data();
    let mesh_yaml = std::fs::read_to_string(dir.path().join("mesh.yaml"))
        .expect("mesh.yaml")
        .replace("../data/demo", &data.display().to_string())
        .replace(
            "../data/check-results.json",
            &dir.path().join("check-results.json").display().to_string(),
        )
        .replace(
            "../data/audit.jsonl",
            &dir.path().join("audit.jsonl").display().to_string(),
        );
    write(dir.path(), "mesh.yaml", &mesh_yaml);
    let contract = dir.path().join("sales/orders.yaml");
    let text = std::fs::read_to_string(&contract).expect("contract");
    let check = |mesh: &Mesh| {
        let mesh = mesh.clone();
        async move {
            let options = meshql::check::CheckOptions {
                products: vec!["sales.orders".into()],
                data: true,
                against: None,
            };
            let report = meshql::check::run(&mesh, &options).await;
            meshql::check::keep_results(&mesh, &report).expect("kept");
        }
    };
    // A passing run, then one with a failing rule.
    check(&Mesh::open_strict(dir.path()).expect("opens")).await;
    let failing = text.replacen(
        "quality:\n",
        "quality:\n  - name: enough_orders\n    type: library\n    metric: rowCount\n    mustBeGreaterThan: 1000000\n",
        1,
    );
    assert_ne!(failing, text, "the contract has quality rules");
    std::fs::write(&contract, failing).expect("writes");
    let mesh = Mesh::open_strict(dir.path()).expect("opens");
    check(&mesh).await;
    let server = start(mesh, ServerOptions::default()).await;
    let page = "/products/sales.orders/quality";
    let analyst = Browser::sign_in(server.http, "analyst")
        .await
        .get(page)
        .await;
    assert_eq!(analyst.status, 200);
    let a = analyst.text();
    assert!(a.contains("1 failed"), "{a}");
    let first_row = a.split("<tbody>").nth(1).expect("a table");
    assert!(
        first_row
            .trim_start_matches("<tr><td>")
            .starts_with("failed</td>"),
        "failures first: {first_row}"
    );
    assert!(a.contains("row count is 20000"), "{a}");
    assert!(
        a.contains("<h2>History</h2>") && a.contains("The last 2 runs"),
        "{a}"
    );
    assert!(a.contains("aria-labelledby=\"history-title\""), "{a}");
    assert!(a.contains("2 runs, 1 with failed checks"), "{a}");
    assert!(
        a.contains("<td>enough_orders</td>"),
        "the failing rule of a run is named: {a}"
    );
    for user in ["guest", "eu_analyst"] {
        let b = Browser::sign_in(server.http, user).await;
        let t = b.get(page).await.text();
        assert!(
            t.contains("1 failed") && t.contains("The last 2 runs"),
            "{user}: {t}"
        );
        assert!(!t.contains("20000"), "{user} learns no raw row count: {t}");
        assert!(t.contains("withheld"), "{user}");
        let api = b.get("/api/v1/products/sales.orders/quality").await;
        assert_eq!(api.status, 200, "{user}");
        assert!(!api.text().contains("20000"), "{user}: {}", api.text());
    }
}

/// The catalog's search (`Session::search`, no query planned) finds what
/// `meshql::search_sql` finds over the discovery tables, for every demo
/// principal: the same products, the same matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_search_finds_what_the_search_query_finds() {
    let mesh = demo_mesh();
    let terms = [
        "email",
        "ORDERS",
        "order",
        "pii",
        "region",
        "revenue",
        "attributed_revenue",
        "card",
        "sales.",
        "%",
        "_",
        "'",
        "a",
        "nothing-like-this",
        "campaign, ",
    ];
    let mut found = BTreeMap::new();
    for user in ["admin", "analyst", "eu_analyst", "finance", "guest"] {
        let session = mesh.session(mesh.principal(user).expect("user"));
        for term in terms {
            let native: Vec<Vec<String>> = session
                .search(term)
                .into_iter()
                .map(|h| {
                    vec![
                        h.product,
                        h.owner.unwrap_or_else(|| "NULL".into()),
                        h.description.unwrap_or_else(|| "NULL".into()),
                        h.matches.join(", "),
                    ]
                })
                .collect();
            let sql = rows(
                &session
                    .collect(&meshql::search_sql(term))
                    .await
                    .expect("the search query runs"),
            );
            assert_eq!(native, sql, "{user} searching {term:?}");
            found.insert((user, term), native);
        }
    }
    // Neither side is empty where it should not be, and hidden stays hidden.
    let products =
        |user, term| -> Vec<String> { found[&(user, term)].iter().map(|r| r[0].clone()).collect() };
    assert!(products("admin", "email").contains(&"customers.customers".to_string()));
    assert!(!products("guest", "email").contains(&"customers.customers".to_string()));
    assert!(
        products("admin", "attributed_revenue")
            .contains(&"marketing.campaign_performance".to_string())
    );
    assert!(
        products("guest", "attributed_revenue").is_empty(),
        "a hidden column is not found"
    );
    assert!(products("admin", "nothing-like-this").is_empty());
}

/// Guessing passwords: after 5 failures of one user from one address, the
/// next attempt is refused with 429 before its password is checked, even
/// the right one, until a lockout that doubles has passed; other users and
/// pages are not held up, and the answer is the same for a user that does
/// not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_passwords_is_slowed_down_for_that_user_only() {
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let addr = server.http;
    for user in ["analyst", "nobody_here"] {
        for i in 0..5 {
            let wrong = Browser::attempt(addr, user, "guess").await;
            assert_eq!(wrong.status, 401, "{user} attempt {i}");
            assert!(
                wrong.text().contains("Invalid user name or password"),
                "{user} {i}"
            );
        }
        let locked = Browser::attempt(addr, user, &format!("{user}-demo")).await;
        assert_eq!(locked.status, 429, "{user}: {}", locked.text());
        assert!(
            locked.text().contains("Too many failed sign-ins"),
            "{}",
            locked.text()
        );
        let wait: u64 = locked.header("retry-after").parse().expect("Retry-After");
        assert!(
            (1..=2).contains(&wait),
            "the first lockout is short: {wait}"
        );
    }
    // Another user from the same address signs in, and pages answer.
    let admin = Browser::sign_in(addr, "admin").await;
    assert_eq!(admin.get("/domains").await.status, 200);
    // After the lockout the right password works and clears the count.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let signed = Browser::attempt(addr, "analyst", "analyst-demo").await;
    assert_eq!(signed.status, 303, "{}", signed.text());
    let wrong = Browser::attempt(addr, "analyst", "guess").await;
    assert_eq!(wrong.status, 401, "a success starts the count again");
    // A failure after the lockout locks out again, for longer.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..5 {
        Browser::attempt(addr, "nobody_here", "guess").await;
    }
    let again = Browser::attempt(addr, "nobody_here", "guess").await;
    assert_eq!(again.status, 429);
    let wait: u64 = again.header("retry-after").parse().expect("Retry-After");
    assert!(wait >= 2, "the lockout doubles: {wait}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("reads") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copies");
        }
    }
}

/// Under TLS (`meshql serve --tls-cert/--tls-key`) the catalog is served
/// over HTTPS with the same certificate, and its cookies are `Secure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tls_the_catalog_is_https_and_its_cookies_are_secure() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let tls = meshql_server::Tls {
        cert: root().join("testdata/tls/server.crt"),
        key: root().join("testdata/tls/server.key"),
    };
    let server = start_tls(demo_mesh(), ServerOptions::default(), Some(tls)).await;
    let pem = std::fs::read(root().join("testdata/tls/server.crt")).expect("cert");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("a certificate")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("connects");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = connector.connect(name, tcp).await.expect("a TLS handshake");
    let login = request_on(stream, server.http, "GET", "/login", &[], b"").await;
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login.header("set-cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        login
            .header("content-security-policy")
            .contains("frame-ancestors 'none'")
    );
    // Plain HTTP on the same port gets no page.
    let mut tcp = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("connects");
    let plain = tokio::time::timeout(Duration::from_secs(15), async move {
        let _ = tcp
            .write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("the server closes the connection");
    assert!(!plain.contains("<title>"), "{plain}");
}
