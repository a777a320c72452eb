//! The web catalog in a real browser: Debian's Chromium driven over
//! WebDriver (chromedriver on 127.0.0.1), signing in, searching, opening a
//! product, switching tabs, running a query and signing out, as the DOM
//! shows them; a screenshot of every page under the target directory, and
//! axe-core on every page, failing on any serious or critical violation.
//!
//! Without chromedriver on the machine these tests say so and stop; the
//! CI script installs it, so CI always runs them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use meshql_server::ServerOptions;
use serde_json::{Value, json};

use crate::util::*;
use crate::web::{request, start};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver's codes of the Tab and Enter keys.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// chromedriver on an ephemeral port of 127.0.0.1, stopped when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

async fn start_driver(bin: &std::path::Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts chromedriver");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let status = request(addr, "GET", "/status", &[], b"").await;
            if status.status == 200 && status.text().contains("\"ready\":true") {
                return Driver { child, addr };
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("chromedriver did not start");
}

/// A WebDriver session.
struct Browser {
    driver: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(driver: &Driver) -> Browser {
        let profile = tempfile::tempdir().expect("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let reply = call(driver.addr, "POST", "/session", Some(caps)).await;
        let session = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_string();
        Browser {
            driver: driver.addr,
            session,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(
            self.driver,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    async fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    /// Presses and releases one key, as the keyboard would.
    async fn key(&self, key: &str) {
        self.cmd(
            "POST",
            "/actions",
            Some(
                json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                    {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}
                ]}]}),
            ),
        )
        .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The page's title once it starts with `prefix` (a click's
    /// navigation may still be under way when the click returns), or
    /// whatever it is after 10 s.
    async fn title_once(&self, prefix: &str) -> String {
        for _ in 0..100 {
            let t = self.title().await;
            if t.starts_with(prefix) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.title().await
    }

    /// The page's text once it contains `needle`, or whatever it is after
    /// 10 s.
    async fn text_once(&self, needle: &str) -> String {
        for _ in 0..100 {
            let t = self.text().await;
            if t.contains(needle) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.text().await
    }

    async fn title(&self) -> String {
        self.cmd("GET", "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn text(&self) -> String {
        self.script("return document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.cmd("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a PNG");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), bytes).expect("writes");
    }

    /// axe-core's serious and critical violations on the page.
    async fn accessibility(&self) -> Vec<String> {
        let axe =
            std::fs::read_to_string(root().join("testdata/axe-core/axe.min.js")).expect("axe-core");
        let version = self.script(&format!("{axe}\n;return axe.version;")).await;
        assert_eq!(version, "4.14.1", "axe-core did not load");
        let result = self
            .cmd(
                "POST",
                "/execute/async",
                Some(json!({
                    "script": "const done = arguments[arguments.length - 1]; axe.run(document, {resultTypes: ['violations']}).then(r => done(JSON.stringify(r.violations))).catch(e => done(JSON.stringify([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}])));",
                    "args": []
                })),
            )
            .await;
        let violations: Vec<Value> =
            serde_json::from_str(result.as_str().unwrap_or("[]")).expect("violations");
        violations
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| {
                let nodes: Vec<String> = v["nodes"]
                    .as_array()
                    .map(|n| {
                        n.iter()
                            .take(3)
                            .map(|n| n["html"].as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{}: {} {:?}", v["id"], v["help"], nodes)
            })
            .collect()
    }

    async fn close(self) {
        self.cmd("DELETE", "", None).await;
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let reply = request(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    let v: Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", reply.text()));
    if reply.status != 200 {
        panic!("{method} {path}: {} {v}", reply.status);
    }
    v["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_finds_reads_and_queries_a_product_in_a_browser() {
    // The walk is one large future: on the heap, not the test's stack.
    Box::pin(walk()).await;
}

async fn walk() {
    let Some(bin) = chromedriver() else {
        eprintln!(
            "SKIPPED: browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
        );
        return;
    };
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let base = format!("http://{}", server.http);
    let driver = start_driver(&bin).await;
    let b = Browser::open(&driver).await;
    let mut problems = Vec::new();
    let mut check = |page: &str, violations: Vec<String>| {
        for v in violations {
            problems.push(format!("{page}: {v}"));
        }
    };

    // Signing in.
    b.go(&format!("{base}/")).await;
    assert!(
        b.title_once("Sign in").await.starts_with("Sign in"),
        "{}",
        b.title().await
    );
    b.screenshot("login").await;
    check("login", b.accessibility().await);
    b.type_into("#username", "analyst").await;
    b.type_into("#password", "analyst-demo").await;
    b.click("form[action='/login'] button[type=submit]").await;
    assert!(
        b.title_once("Data products")
            .await
            .starts_with("Data products"),
        "{}",
        b.title().await
    );
    assert!(b.text().await.contains("Signed in as analyst"));
    b.screenshot("home").await;
    check("home", b.accessibility().await);

    // Searching, by a column name.
    b.type_into("#q", "email").await;
    b.click("form.search button[type=submit]").await;
    assert!(
        b.title_once("Search: email")
            .await
            .starts_with("Search: email"),
        "{}",
        b.title().await
    );
    let found = b.text_once("customers.customers").await;
    assert!(found.contains("customers.customers"), "{found}");
    assert!(found.contains("Matched in: column email"), "{found}");
    b.screenshot("search").await;
    check("search", b.accessibility().await);

    // A product, tab by tab.
    b.click("a[href='/products/customers.customers']").await;
    assert!(
        b.title_once("customers.customers ·")
            .await
            .starts_with("customers.customers ·"),
        "{}",
        b.title().await
    );
    b.screenshot("product").await;
    check("product", b.accessibility().await);
    for (tab, expect) in [
        ("schema", "Masked for you"),
        ("sample", "***@"),
        ("quality", ""),
        ("lineage", ""),
        ("contract", "apiVersion"),
        ("use", "meshql --connect"),
    ] {
        b.click(&format!(
            "nav.tabs a[href='/products/customers.customers/{tab}']"
        ))
        .await;
        b.title_once(&format!("customers.customers · {}", label(tab)))
            .await;
        let text = b.text_once(expect).await;
        assert!(text.contains(expect), "{tab}: {text}");
        let current = b
            .script("return document.querySelector('nav.tabs a[aria-current=page]').getAttribute('href')")
            .await;
        assert_eq!(
            current.as_str().unwrap_or_default(),
            format!("/products/customers.customers/{tab}")
        );
        b.screenshot(&format!("product-{tab}")).await;
        check(&format!("product {tab}"), b.accessibility().await);
    }

    // A query, as the analyst.
    b.go(&format!("{base}/query")).await;
    b.type_into(
        "#sql",
        "SELECT customer_id, email FROM customers.customers ORDER BY 1 LIMIT 3",
    )
    .await;
    b.click("button[value=html]").await;
    let text = b.text_once("rows,").await;
    assert!(text.contains("3 rows,"), "{text}");
    assert!(text.contains("***@"), "{text}");
    b.screenshot("query").await;
    check("query", b.accessibility().await);

    for (page, name) in [("/domains", "domains"), ("/me", "me")] {
        b.go(&format!("{base}{page}")).await;
        b.screenshot(name).await;
        check(name, b.accessibility().await);
    }

    // 320 px wide: nothing wider than the window.
    b.cmd(
        "POST",
        "/window/rect",
        Some(json!({"width": 320, "height": 800})),
    )
    .await;
    for page in ["/", "/products/customers.customers/schema", "/query"] {
        b.go(&format!("{base}{page}")).await;
        let overflow = b
            .script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        let wide = b
            .script("const w = document.documentElement.clientWidth; return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > w + 1).slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).join(', ')")
            .await;
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "{page} overflows 320 px by {overflow}: {wide}"
        );
    }
    b.go(&format!("{base}/")).await;
    b.screenshot("home-320").await;
    b.cmd(
        "POST",
        "/window/rect",
        Some(json!({"width": 1280, "height": 900})),
    )
    .await;

    // The keyboard: the first Tab shows the skip link, Enter on it moves
    // to the content, and every control Tab reaches has a visible focus
    // outline.
    b.go(&format!("{base}/")).await;
    b.title_once("Data products").await;
    b.key(TAB).await;
    let skip = b
        .script("const e = document.activeElement; const r = e.getBoundingClientRect(); return [e.className, getComputedStyle(e).outlineStyle, r.left >= 0 && r.top >= 0]")
        .await;
    assert_eq!(
        skip,
        json!(["skip", "solid", true]),
        "the skip link comes first and shows"
    );
    b.key(ENTER).await;
    let at = b.script("return location.hash").await;
    assert_eq!(at, "#main", "the skip link leads to the content");
    let mut reached = 0;
    for _ in 0..12 {
        b.key(TAB).await;
        let focus = b
            .script("const e = document.activeElement; const s = getComputedStyle(e); return [e.tagName + ' ' + (e.getAttribute('href') || e.id || e.className), s.outlineStyle, parseFloat(s.outlineWidth)]")
            .await;
        if focus[0].as_str().is_some_and(|t| t.starts_with("BODY")) {
            break;
        }
        reached += 1;
        assert!(
            focus[1] != "none" && focus[2].as_f64().unwrap_or(0.0) >= 2.0,
            "a visible focus outline on {focus}"
        );
    }
    assert!(reached >= 5, "Tab reaches the page's controls ({reached})");

    // The dark colour scheme: the dark palette, and axe on every kind of
    // page again (contrast differs).
    b.cmd(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}})),
    )
    .await;
    for (page, name) in [
        ("/", "home"),
        ("/?q=email", "search"),
        ("/products/customers.customers", "product"),
        ("/products/customers.customers/schema", "product-schema"),
        ("/products/customers.customers/sample", "product-sample"),
        ("/products/customers.customers/quality", "product-quality"),
        ("/products/customers.customers/lineage", "product-lineage"),
        ("/products/customers.customers/contract", "product-contract"),
        ("/products/customers.customers/use", "product-use"),
        ("/domains", "domains"),
        ("/me", "me"),
        ("/query", "query"),
    ] {
        b.go(&format!("{base}{page}")).await;
        let dark = b
            .script("const m = getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number); return [matchMedia('(prefers-color-scheme: dark)').matches, m[0] + m[1] + m[2]]")
            .await;
        assert_eq!(dark[0], true, "{page}: the dark scheme is asked for");
        assert!(
            dark[1].as_i64().unwrap_or(765) < 150,
            "{page}: a dark background ({dark})"
        );
        b.screenshot(&format!("{name}-dark")).await;
        check(&format!("{name} (dark)"), b.accessibility().await);
    }
    b.cmd(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {"features": []}})),
    )
    .await;

    // Signing out.
    b.go(&format!("{base}/")).await;
    b.click("form.signout button").await;
    assert!(
        b.title_once("Sign in").await.starts_with("Sign in"),
        "{}",
        b.title().await
    );
    b.go(&format!("{base}/products/customers.customers")).await;
    assert!(
        b.title_once("Sign in").await.starts_with("Sign in"),
        "signed out for good"
    );
    b.close().await;
    assert!(
        problems.is_empty(),
        "accessibility:\n{}",
        problems.join("\n")
    );
}

/// A product tab's label, as its page title names it.
fn label(tab: &str) -> &'static str {
    match tab {
        "schema" => "Schema",
        "sample" => "Sample",
        "quality" => "Quality",
        "lineage" => "Lineage",
        "contract" => "Contract",
        _ => "Use it",
    }
}
