//! The catalog's pages. Each reads what it shows through the viewer's own
//! session: the `meshql` discovery tables for metadata, the governed engine
//! for sample rows and queries. Nothing is read around the policy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{Section, cells, esc, page, table, url};
use super::{Client, Viewer, Web, csrf_ok, lit, product_name};

/// Rows of a discovery query: column names and text cells.
pub(crate) type Rows = (Vec<String>, Vec<Vec<Option<String>>>);

/// Most rows a page shows of a result.
const SHOWN_ROWS: usize = 1000;
/// Rows of a product's sample.
const SAMPLE_ROWS: usize = 20;
/// Search results a page lists.
const HITS_SHOWN: usize = 50;
/// The most search results whose freshness is read for the facet.
const FRESHNESS_FOR: usize = 500;

impl Web {
    /// Metadata for the viewer: a query over the `meshql` discovery tables
    /// in the viewer's session (these are not statements of the viewer's,
    /// so they are neither queued nor audited).
    pub(crate) async fn meta(&self, viewer: &Viewer, sql: &str) -> Result<Rows, String> {
        let session = self.sql.session(&viewer.principal);
        let batches = session.collect(sql).await.map_err(|e| e.to_string())?;
        Ok(cells(&batches, usize::MAX))
    }

    /// The viewer's products, as `meshql.products` shows them, without
    /// the columns that read storage (last update, freshness) or that only
    /// one product's page shows.
    /// Kept per principal: the mesh and a principal's policies do not
    /// change while the server runs, and these columns read no storage.
    pub(crate) async fn products(&self, viewer: &Viewer) -> Result<Vec<ProductRow>, String> {
        let key = format!("{:?}", viewer.principal);
        if let Some(rows) = self
            .product_rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(rows.as_ref().clone());
        }
        let (names, rows) = self
            .meta(
                viewer,
                "SELECT domain, product, version, status, owner, members, description, tags, storage, location, sla \
                 FROM meshql.products ORDER BY domain, product",
            )
            .await?;
        let rows: Vec<ProductRow> = rows
            .into_iter()
            .map(|r| ProductRow::from_cells(&names, r))
            .collect();
        let mut kept = self.product_rows.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= 1024 {
            kept.clear();
        }
        kept.insert(key, Arc::new(rows.clone()));
        Ok(rows)
    }

    /// Whether each of `products` meets its freshness SLA (`true`,
    /// `false`; absent without one), read from storage for those only.
    pub(crate) async fn freshness_of(
        &self,
        viewer: &Viewer,
        products: &[&ProductRow],
    ) -> Result<BTreeMap<String, String>, String> {
        if products.is_empty() {
            return Ok(BTreeMap::new());
        }
        let (domains, names) = in_lists(
            products
                .iter()
                .map(|p| (p.domain.as_str(), p.product.as_str())),
        );
        let (_, rows) = self
            .meta(
                viewer,
                &format!(
                    "SELECT domain || '.' || product, CAST(freshness_met AS VARCHAR) FROM meshql.products \
                     WHERE domain IN ({}) AND product IN ({})",
                    domains, names
                ),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r[0].clone()?, r[1].clone()?)))
            .collect())
    }

    /// One product the viewer can see, every column of `meshql.products`;
    /// `None` also when it does not exist.
    pub(crate) async fn product_row(
        &self,
        viewer: &Viewer,
        domain: &str,
        product: &str,
    ) -> Result<Option<ProductRow>, String> {
        let (names, rows) = self
            .meta(
                viewer,
                &format!(
                    "SELECT domain, product, version, status, owner, members, description, tags, storage, location, sla, \
                     CAST(last_updated AS VARCHAR) AS last_updated, freshness_sla, freshness_met, row_filter \
                     FROM meshql.products WHERE domain = {} AND product = {}",
                    lit(domain),
                    lit(product)
                ),
            )
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|r| ProductRow::from_cells(&names, r)))
    }
}

/// The SQL lists of the distinct domains and product names of `products`
/// (`domain`, `product`), for `domain IN (...) AND product IN (...)`: a
/// superset of the pairs, which the discovery tables build alone.
fn in_lists<'a>(products: impl Iterator<Item = (&'a str, &'a str)>) -> (String, String) {
    let (mut domains, mut names) = (BTreeSet::new(), BTreeSet::new());
    for (d, p) in products {
        domains.insert(lit(d));
        names.insert(lit(p));
    }
    let join = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>().join(", ");
    (join(domains), join(names))
}

/// A row of `meshql.products`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProductRow {
    pub(crate) domain: String,
    pub(crate) product: String,
    /// `domain.product`.
    qualified: String,
    /// Shared by the copies of one viewer's rows; copied on write.
    pub(crate) fields: Arc<BTreeMap<String, String>>,
}

impl ProductRow {
    fn from_cells(names: &[String], row: Vec<Option<String>>) -> Self {
        let mut fields = BTreeMap::new();
        for (n, v) in names.iter().zip(row) {
            if let Some(v) = v {
                fields.insert(n.clone(), v);
            }
        }
        let domain = fields.get("domain").cloned().unwrap_or_default();
        let product = fields.get("product").cloned().unwrap_or_default();
        Self {
            qualified: format!("{domain}.{product}"),
            domain,
            product,
            fields: Arc::new(fields),
        }
    }

    pub(crate) fn name(&self) -> String {
        self.qualified.clone()
    }

    /// `domain.product`, without a copy.
    pub(crate) fn key(&self) -> &str {
        &self.qualified
    }

    pub(crate) fn get(&self, field: &str) -> &str {
        self.fields.get(field).map_or("", String::as_str)
    }

    fn tags(&self) -> Vec<String> {
        self.get("tags")
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// `met`, `missed` or `unknown`.
    fn freshness(&self) -> &'static str {
        match self.get("freshness_met") {
            "true" => "met",
            "false" => "missed",
            _ => "unknown",
        }
    }
}

fn html(status: StatusCode, body: String) -> Response {
    (status, Html(body)).into_response()
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// The page of a product that is hidden or missing: the same for both.
pub(crate) async fn not_found(State(web): State<Web>, headers: HeaderMap) -> Response {
    let viewer = web.viewer(&headers);
    not_found_page(&web, viewer.as_ref())
}

fn not_found_page(web: &Web, viewer: Option<&Viewer>) -> Response {
    html(
        StatusCode::NOT_FOUND,
        page(
            &web.mesh_name(),
            "Not found",
            viewer,
            Section::None,
            "<h1>Not found</h1><p>There is no such page or data product. <a href=\"/\">Search the catalog</a>.</p>",
        ),
    )
}

fn error_page(web: &Web, viewer: &Viewer, message: &str) -> Response {
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        page(
            &web.mesh_name(),
            "Error",
            Some(viewer),
            Section::None,
            &format!(
                "<h1>Something went wrong</h1><p role=\"alert\" class=\"error\">{}</p>",
                esc(message)
            ),
        ),
    )
}

// ---- Signing in and out ----

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn login_page(web: &Web, error: Option<&str>) -> Response {
    let (token, cookie) = web.login_token();
    let error = error
        .map(|e| format!("<p role=\"alert\" class=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<div class=\"card narrow\"><h1>Sign in</h1>{error}<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><p><label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus></p><p><label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></p><p><button type=\"submit\">Sign in</button></p></form><p class=\"hint\">Tools can send <code>Authorization: Bearer</code> with a token of your identity provider instead.</p></div>",
        esc(&token)
    );
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    (
        status,
        [(header::SET_COOKIE, cookie)],
        Html(page(
            &web.mesh_name(),
            "Sign in",
            None,
            Section::None,
            &body,
        )),
    )
        .into_response()
}

pub(crate) async fn login_form(State(web): State<Web>, headers: HeaderMap) -> Response {
    if web.viewer(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login_page(&web, None)
}

pub(crate) async fn login(
    State(web): State<Web>,
    headers: HeaderMap,
    client: Client,
    Form(form): Form<LoginForm>,
) -> Response {
    if !web.login_token_ok(&headers, &form.csrf) {
        return login_page(
            &web,
            Some("The sign-in form expired or did not come from this catalog; try again."),
        );
    }
    // The address without its port: one guesser, whatever connection.
    let address = client
        .0
        .as_deref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let throttle = &web.throttle;
    if let Some(wait) = throttle.locked(&address, &form.username) {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        tracing::info!(
            user = form.username,
            address,
            "sign-in refused: locked out after failed sign-ins"
        );
        let mut response = login_page(
            &web,
            Some(&format!(
                "Too many failed sign-ins for this user from your address; try again in {seconds} s."
            )),
        );
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(v) = seconds.to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    // argon2 on the blocking pool, a few at once.
    let checked = match throttle.verifying.acquire().await {
        Ok(_permit) => {
            let sql = Arc::clone(&web.sql);
            let (user, password) = (form.username.clone(), form.password.clone());
            tokio::task::spawn_blocking(move || sql.login(&user, &password).ok())
                .await
                .ok()
                .flatten()
        }
        Err(_) => None,
    };
    match checked {
        Some(principal) => {
            throttle.succeeded(&address, &form.username);
            tracing::info!(user = principal.user, "signed in to the web catalog");
            let session = web.session_cookie(&principal.user);
            let clear = web.cookie_header(super::LOGIN_COOKIE, "", 0);
            let mut response = Redirect::to("/").into_response();
            let headers = response.headers_mut();
            for c in [session, clear] {
                if let Ok(v) = c.parse() {
                    headers.append(header::SET_COOKIE, v);
                }
            }
            response
        }
        None => {
            throttle.failed(&address, &form.username);
            login_page(&web, Some("Invalid user name or password."))
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return to_login();
    };
    if !csrf_ok(&viewer, Some(&form.csrf)) {
        return forbidden(&web, &viewer);
    }
    let clear = web.cookie_header(super::COOKIE, "", 0);
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

fn forbidden(web: &Web, viewer: &Viewer) -> Response {
    html(
        StatusCode::FORBIDDEN,
        page(
            &web.mesh_name(),
            "Refused",
            Some(viewer),
            Section::None,
            "<h1>Refused</h1><p role=\"alert\" class=\"error\">The form did not come from this catalog (its CSRF token is missing or wrong). Reload the page and try again.</p>",
        ),
    )
}

// ---- Search ----

#[derive(Deserialize, Default)]
pub(crate) struct SearchParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    fresh: String,
}

/// A search result: the product, where the term matched, its rank.
pub(crate) struct Hit {
    pub(crate) product: ProductRow,
    pub(crate) matches: Vec<String>,
    pub(crate) score: u32,
}

impl Web {
    /// The viewer's products that match `params`, best first.
    pub(crate) async fn search(
        &self,
        viewer: &Viewer,
        params: &SearchParams,
    ) -> Result<Vec<Hit>, String> {
        let products = self.products(viewer).await?;
        let term = params.q.trim();
        let mut matched: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if !term.is_empty() {
            // The same matches as `meshql::search_sql`, without building
            // `meshql.columns` for every search.
            let session = self.sql.session(&viewer.principal);
            for hit in session.search(term) {
                matched.insert(hit.product, hit.matches);
            }
        }
        let mut products = products;
        if !term.is_empty() {
            products.retain(|p| matched.contains_key(p.key()));
        }
        // Freshness reads storage: for the matching products only, and not
        // for more than a page of facets can use.
        if products.len() <= FRESHNESS_FOR {
            let refs: Vec<&ProductRow> = products.iter().collect();
            let fresh = self.freshness_of(viewer, &refs).await?;
            for p in &mut products {
                if let Some(f) = fresh.get(p.key()) {
                    Arc::make_mut(&mut p.fields).insert("freshness_met".into(), f.clone());
                }
            }
        }
        let mut hits: Vec<Hit> = products
            .into_iter()
            .filter(|p| facet_ok(p, params))
            .filter_map(|p| {
                if term.is_empty() {
                    return Some(Hit {
                        product: p,
                        matches: Vec::new(),
                        score: 0,
                    });
                }
                let matches = matched.remove(p.key())?;
                let score = matches
                    .iter()
                    .map(|m| match m.as_str() {
                        "name" => 100,
                        "tag" => 40,
                        "description" => 20,
                        _ => 10,
                    })
                    .sum();
                Some(Hit {
                    product: p,
                    matches,
                    score,
                })
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then_with(|| a.product.key().cmp(b.product.key()))
        });
        Ok(hits)
    }
}

/// A facet: its label, its URL parameter and the values of a product.
type Facet = (
    &'static str,
    &'static str,
    Box<dyn Fn(&ProductRow) -> Vec<String>>,
);

fn facet_ok(p: &ProductRow, f: &SearchParams) -> bool {
    (f.domain.is_empty() || p.domain == f.domain)
        && (f.owner.is_empty() || p.get("owner") == f.owner)
        && (f.tag.is_empty() || p.tags().contains(&f.tag))
        && (f.status.is_empty() || p.get("status") == f.status)
        && (f.fresh.is_empty() || p.freshness() == f.fresh)
}

/// The search URL of `params` with `key` set to `value` (or removed when
/// empty).
fn search_url(params: &SearchParams, key: &str, value: &str) -> String {
    let mut pairs = vec![
        ("q", params.q.as_str()),
        ("domain", params.domain.as_str()),
        ("owner", params.owner.as_str()),
        ("tag", params.tag.as_str()),
        ("status", params.status.as_str()),
        ("fresh", params.fresh.as_str()),
    ];
    for p in &mut pairs {
        if p.0 == key {
            p.1 = value;
        }
    }
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", url(v)))
        .collect();
    if query.is_empty() {
        "/".into()
    } else {
        format!("/?{}", query.join("&"))
    }
}

pub(crate) async fn home(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return to_login();
    };
    let hits = match web.search(&viewer, &params).await {
        Ok(h) => h,
        Err(e) => return error_page(&web, &viewer, &e),
    };
    let mut body = format!(
        "<h1>Find data products</h1><form method=\"get\" action=\"/\" class=\"search\" role=\"search\"><label for=\"q\">Search names, descriptions, tags, columns and classifications</label><div class=\"row\"><input id=\"q\" name=\"q\" type=\"search\" value=\"{}\"><button type=\"submit\">Search</button></div>",
        esc(&params.q)
    );
    for (k, v) in [
        ("domain", &params.domain),
        ("owner", &params.owner),
        ("tag", &params.tag),
        ("status", &params.status),
        ("fresh", &params.fresh),
    ] {
        if !v.is_empty() {
            body.push_str(&format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(v)
            ));
        }
    }
    body.push_str("</form><div class=\"results\"><aside class=\"facets\" aria-label=\"Filters\"><h2>Filters</h2>");
    // Facets over the results, each a link that adds or removes itself.
    let facets: [Facet; 5] = [
        ("Domain", "domain", Box::new(|p| vec![p.domain.clone()])),
        (
            "Owner",
            "owner",
            Box::new(|p| vec![p.get("owner").to_string()]),
        ),
        ("Tag", "tag", Box::new(|p| p.tags())),
        (
            "Status",
            "status",
            Box::new(|p| vec![p.get("status").to_string()]),
        ),
        (
            "Freshness",
            "fresh",
            Box::new(|p| vec![p.freshness().to_string()]),
        ),
    ];
    for (label, key, values) in &facets {
        if *key == "fresh" && hits.len() > FRESHNESS_FOR {
            continue;
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for h in &hits {
            for v in values(&h.product) {
                if !v.is_empty() {
                    *counts.entry(v).or_default() += 1;
                }
            }
        }
        let current = match *key {
            "domain" => &params.domain,
            "owner" => &params.owner,
            "tag" => &params.tag,
            "status" => &params.status,
            _ => &params.fresh,
        };
        body.push_str(&format!("<h3>{label}</h3><ul>"));
        for (v, n) in counts {
            if *current == v {
                body.push_str(&format!(
                    "<li><a href=\"{}\" aria-current=\"true\">{} ({n}) <span class=\"chip\">selected, remove</span></a></li>",
                    esc(&search_url(&params, key, "")),
                    esc(&v)
                ));
            } else {
                body.push_str(&format!(
                    "<li><a href=\"{}\">{} ({n})</a></li>",
                    esc(&search_url(&params, key, &v)),
                    esc(&v)
                ));
            }
        }
        body.push_str("</ul>");
    }
    body.push_str("</aside><section aria-labelledby=\"found\">");
    body.push_str(&format!(
        "<h2 id=\"found\">{} product{}{}</h2><ol class=\"hits\">",
        hits.len(),
        if hits.len() == 1 { "" } else { "s" },
        if params.q.trim().is_empty() {
            String::new()
        } else {
            format!(" for “{}”", esc(params.q.trim()))
        }
    ));
    for h in hits.iter().take(HITS_SHOWN) {
        let p = &h.product;
        let matched = if h.matches.is_empty() {
            String::new()
        } else {
            format!(
                "<p class=\"matched\">Matched in: {}</p>",
                esc(&h.matches.join(", "))
            )
        };
        body.push_str(&format!(
            "<li class=\"card\"><h3><a href=\"/products/{name}\">{name}</a></h3><p>{}</p><p class=\"meta\">Owner {} · {} · version {} · freshness {}</p>{matched}</li>",
            esc(p.get("description")),
            esc(p.get("owner")),
            esc(p.get("status")),
            esc(p.get("version")),
            freshness_text(p),
            name = esc(&p.name()),
        ));
    }
    body.push_str("</ol>");
    if hits.len() > HITS_SHOWN {
        body.push_str(&format!(
            "<p role=\"status\">The first {HITS_SHOWN} of {} are listed: add a term or a filter to narrow them.</p>",
            hits.len()
        ));
    }
    if hits.len() > FRESHNESS_FOR {
        body.push_str(&format!(
            "<p class=\"meta\">Freshness is shown once at most {FRESHNESS_FOR} products match.</p>"
        ));
    }
    body.push_str("</section></div>");
    let title = if params.q.trim().is_empty() {
        "Data products".to_string()
    } else {
        format!("Search: {}", params.q.trim())
    };
    html(
        StatusCode::OK,
        page(
            &web.mesh_name(),
            &title,
            Some(&viewer),
            Section::Search,
            &body,
        ),
    )
}

fn freshness_text(p: &ProductRow) -> String {
    match p.freshness() {
        "met" => "<span class=\"ok\">✓ SLA met</span>".into(),
        "missed" => "<span class=\"bad\">✗ SLA missed</span>".into(),
        _ => "<span>no freshness SLA</span>".into(),
    }
}

// ---- Domains ----

pub(crate) async fn domains(State(web): State<Web>, headers: HeaderMap) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return to_login();
    };
    let products = match web.products(&viewer).await {
        Ok(p) => p,
        Err(e) => return error_page(&web, &viewer, &e),
    };
    let mut by_domain: BTreeMap<String, Vec<&ProductRow>> = BTreeMap::new();
    for p in &products {
        by_domain.entry(p.domain.clone()).or_default().push(p);
    }
    let mut body = format!("<h1>Domains</h1><p>{} domains.</p>", by_domain.len());
    for (domain, list) in &by_domain {
        let owners: BTreeSet<&str> = list.iter().map(|p| p.get("owner")).collect();
        body.push_str(&format!(
            "<section class=\"card\" aria-labelledby=\"d-{d}\"><h2 id=\"d-{d}\">{d}</h2><p class=\"meta\">Owners: {}</p><ul>",
            esc(&owners.into_iter().collect::<Vec<_>>().join(", ")),
            d = esc(domain)
        ));
        for p in list {
            body.push_str(&format!(
                "<li><a href=\"/products/{n}\">{n}</a> <span class=\"meta\">{}</span></li>",
                esc(p.get("description")),
                n = esc(&p.name())
            ));
        }
        body.push_str("</ul></section>");
    }
    html(
        StatusCode::OK,
        page(
            &web.mesh_name(),
            "Domains",
            Some(&viewer),
            Section::Domains,
            &body,
        ),
    )
}

// ---- A product ----

const TABS: [(&str, &str); 7] = [
    ("", "Overview"),
    ("schema", "Schema"),
    ("sample", "Sample"),
    ("quality", "Quality"),
    ("lineage", "Lineage"),
    ("contract", "Contract"),
    ("use", "Use it"),
];

#[derive(Deserialize, Default)]
pub(crate) struct TabParams {
    #[serde(default)]
    download: Option<String>,
}

pub(crate) async fn product(
    State(web): State<Web>,
    headers: HeaderMap,
    Client(client): Client,
    Path(name): Path<String>,
) -> Response {
    render_product(
        web,
        headers,
        client,
        name,
        String::new(),
        TabParams::default(),
    )
    .await
}

pub(crate) async fn product_tab(
    State(web): State<Web>,
    headers: HeaderMap,
    Client(client): Client,
    Path((name, tab)): Path<(String, String)>,
    Query(params): Query<TabParams>,
) -> Response {
    render_product(web, headers, client, name, tab, params).await
}

async fn render_product(
    web: Web,
    headers: HeaderMap,
    client: Option<String>,
    name: String,
    tab: String,
    params: TabParams,
) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return to_login();
    };
    let Some((domain, product)) = product_name(&name) else {
        return not_found_page(&web, Some(&viewer));
    };
    let Some(&(_, tab_label)) = TABS.iter().find(|(t, _)| *t == tab) else {
        return not_found_page(&web, Some(&viewer));
    };
    let row = match web.product_row(&viewer, &domain, &product).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found_page(&web, Some(&viewer)),
        Err(e) => return error_page(&web, &viewer, &e),
    };
    if tab == "contract" && params.download.is_some() {
        return match web.contract_text(&viewer, &row).await {
            Ok((text, _)) => (
                [
                    (
                        header::CONTENT_TYPE,
                        "application/yaml; charset=utf-8".to_string(),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{}.yaml\"", row.name()),
                    ),
                ],
                text,
            )
                .into_response(),
            Err(e) => error_page(&web, &viewer, &e),
        };
    }
    let content = match tab.as_str() {
        "" => web.overview(&viewer, &row).await,
        "schema" => web.schema(&viewer, &row).await,
        "sample" => web.sample(&viewer, &row, client).await,
        "quality" => web.quality(&viewer, &row).await,
        "lineage" => web.lineage(&viewer, &row).await,
        "contract" => web
            .contract_text(&viewer, &row)
            .await
            .map(|(text, note)| {
                format!(
                    "{note}<p><a class=\"button\" href=\"/products/{}/contract?download=1\">Download the contract (YAML)</a></p><pre class=\"code\"><code>{}</code></pre>",
                    esc(&row.name()),
                    esc(&text)
                )
            }),
        _ => Ok(web.use_it(&viewer, &row)),
    };
    let content = match content {
        Ok(c) => c,
        Err(e) => format!("<p role=\"alert\" class=\"error\">{}</p>", esc(&e)),
    };
    let mut tabs = String::from("<nav class=\"tabs\" aria-label=\"Product\"><ul>");
    for (t, label) in TABS {
        let href = if t.is_empty() {
            format!("/products/{}", row.name())
        } else {
            format!("/products/{}/{t}", row.name())
        };
        let current = if t == tab {
            " aria-current=\"page\""
        } else {
            ""
        };
        tabs.push_str(&format!(
            "<li><a href=\"{}\"{current}>{label}</a></li>",
            esc(&href)
        ));
    }
    tabs.push_str("</ul></nav>");
    let banner = match row.fields.get("row_filter") {
        Some(filter) => format!(
            "<p class=\"banner\" role=\"note\"><strong>Row filter for you:</strong> you see only the rows where <code>{}</code>.</p>",
            esc(filter)
        ),
        None => String::new(),
    };
    let body = format!(
        "<p class=\"crumbs\"><a href=\"/domains\">Domains</a> › {d}</p><h1>{name}</h1><p class=\"lead\">{}</p>{banner}{tabs}<section class=\"tab\" aria-labelledby=\"tab-title\"><h2 id=\"tab-title\">{tab_label}</h2>{content}</section>",
        esc(row.get("description")),
        d = esc(&row.domain),
        name = esc(&row.name()),
    );
    let title = if tab.is_empty() {
        row.name()
    } else {
        format!("{} · {tab_label}", row.name())
    };
    html(
        StatusCode::OK,
        page(
            &web.mesh_name(),
            &title,
            Some(&viewer),
            Section::Products,
            &body,
        ),
    )
}

impl Web {
    /// `text` with the mesh directory's path taken out of file locations.
    fn relative(&self, text: &str) -> String {
        let file = &self.sql.mesh().catalog().mesh.file;
        let mut out = text.to_string();
        if let Some(dir) = file.parent() {
            let mut dirs = vec![dir.to_path_buf()];
            if let Ok(c) = dir.canonicalize() {
                dirs.push(c);
            }
            for d in dirs {
                if d.as_os_str().is_empty() {
                    continue;
                }
                let prefix = format!("{}/", d.display());
                out = out.replace(&prefix, "");
            }
        }
        out
    }

    /// The contract of a product the viewer sees, if the viewer sees it.
    fn contract(&self, row: &ProductRow) -> Option<&meshql::manifest::Contract> {
        self.sql
            .mesh()
            .catalog()
            .contracts
            .iter()
            .find(|c| c.qualified_name() == row.name())
    }

    /// Which of `names` (`domain.product`) the viewer sees, in order.
    async fn visible_among(
        &self,
        viewer: &Viewer,
        names: Vec<String>,
    ) -> Result<Vec<String>, String> {
        let pairs: Vec<(String, String)> = names.iter().filter_map(|n| product_name(n)).collect();
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let (domains, products) = in_lists(pairs.iter().map(|(d, p)| (d.as_str(), p.as_str())));
        let (_, rows) = self
            .meta(
                viewer,
                &format!(
                    "SELECT domain || '.' || product FROM meshql.products WHERE domain IN ({}) AND product IN ({})",
                    domains, products
                ),
            )
            .await?;
        let seen: BTreeSet<String> = rows.into_iter().filter_map(|r| r[0].clone()).collect();
        let mut out: Vec<String> = names.into_iter().filter(|n| seen.contains(n)).collect();
        out.dedup();
        Ok(out)
    }

    /// The products a contract names as upstream that the viewer sees.
    async fn upstream(&self, viewer: &Viewer, row: &ProductRow) -> Result<Vec<String>, String> {
        let declared: Vec<String> = self
            .contract(row)
            .and_then(|c| c.custom_properties.get("upstream"))
            .map(|u| {
                u.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        self.visible_among(viewer, declared).await
    }

    /// The products the viewer sees that name `row` as upstream.
    async fn downstream(&self, viewer: &Viewer, row: &ProductRow) -> Result<Vec<String>, String> {
        let me = row.name();
        let declaring: Vec<String> = self
            .sql
            .mesh()
            .catalog()
            .contracts
            .iter()
            .filter(|c| {
                c.custom_properties
                    .get("upstream")
                    .is_some_and(|u| u.split(',').any(|s| s.trim() == me))
            })
            .map(|c| c.qualified_name())
            .collect();
        self.visible_among(viewer, declaring).await
    }

    async fn overview(&self, viewer: &Viewer, row: &ProductRow) -> Result<String, String> {
        let upstream = self.upstream(viewer, row).await?;
        let links = |list: &[String]| {
            if list.is_empty() {
                "none".to_string()
            } else {
                list.iter()
                    .map(|p| format!("<a href=\"/products/{p}\">{p}</a>", p = esc(p)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let mut out = String::from("<dl class=\"facts\">");
        for (label, value) in [
            ("Owner", esc(row.get("owner"))),
            ("Members", esc(row.get("members"))),
            ("Status", esc(row.get("status"))),
            ("Version", esc(row.get("version"))),
            ("Tags", esc(&row.tags().join(", "))),
            ("SLAs", esc(row.get("sla"))),
            ("Last updated", esc(row.get("last_updated"))),
            (
                "Freshness",
                format!("{} {}", freshness_text(row), esc(row.get("freshness_sla"))),
            ),
            ("Storage", esc(row.get("storage"))),
            ("Upstream products", links(&upstream)),
        ] {
            let value = if value.is_empty() {
                "—".into()
            } else {
                value
            };
            out.push_str(&format!("<dt>{label}</dt><dd>{value}</dd>"));
        }
        out.push_str("</dl>");
        Ok(out)
    }

    /// The viewer's columns of a product, and the rule that masks each
    /// masked one.
    pub(crate) async fn columns(&self, viewer: &Viewer, row: &ProductRow) -> Result<Rows, String> {
        self.meta(
            viewer,
            &format!(
                "SELECT column_name, data_type, required, primary_key, classification, tags, description, masked, mask \
                 FROM meshql.columns WHERE domain = {} AND product = {} ORDER BY position",
                lit(&row.domain),
                lit(&row.product)
            ),
        )
        .await
    }

    async fn schema(&self, viewer: &Viewer, row: &ProductRow) -> Result<String, String> {
        let (names, rows) = self.columns(viewer, row).await?;
        // The rule that decided this product for the viewer, and where
        // each column's treatment comes from.
        let policy = self
            .sql
            .mesh()
            .explain_policy(&viewer.principal, &row.name());
        let at = |n: &str| names.iter().position(|x| x == n).unwrap_or(0);
        let get = |r: &Vec<Option<String>>, n: &str| r[at(n)].clone().unwrap_or_default();
        let mut out = String::from(
            "<div class=\"scroll\" role=\"region\" aria-label=\"Columns\" tabindex=\"0\"><table><caption>Columns you can see</caption><thead><tr><th scope=\"col\">Column</th><th scope=\"col\">Type</th><th scope=\"col\">Required</th><th scope=\"col\">Key</th><th scope=\"col\">Classification</th><th scope=\"col\">Tags</th><th scope=\"col\">Description</th><th scope=\"col\">For you</th></tr></thead><tbody>",
        );
        for r in &rows {
            let column = get(r, "column_name");
            let masked = get(r, "masked") == "true";
            let yes = |v: String| if v == "true" { "yes" } else { "no" };
            let mark = if masked {
                let because = policy
                    .as_ref()
                    .and_then(|p| p.columns.iter().find(|c| c.name == column))
                    .and_then(|c| c.because.clone());
                let rule = policy.as_ref().and_then(|p| p.rule.clone());
                // Locations relative to the mesh: the server's own paths
                // are nobody's business.
                let (rule, because) = (
                    rule.map(|r| self.relative(&r)),
                    because.map(|b| self.relative(&b)),
                );
                let by = match (rule, because) {
                    (Some(rule), Some(at)) => format!(
                        " by rule <strong>{}</strong>, column rule at {}",
                        esc(&rule),
                        esc(&at)
                    ),
                    (Some(rule), None) => format!(" by rule <strong>{}</strong>", esc(&rule)),
                    (None, _) => String::new(),
                };
                format!(
                    "<span class=\"masked\">Masked for you</span>: <code>{}</code>{by}",
                    esc(&get(r, "mask"))
                )
            } else {
                "raw".to_string()
            };
            out.push_str(&format!(
                "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{mark}</td></tr>",
                esc(&column),
                esc(&get(r, "data_type")),
                yes(get(r, "required")),
                if get(r, "primary_key") == "true" { "primary key" } else { "" },
                esc(&get(r, "classification")),
                esc(&get(r, "tags")),
                esc(&get(r, "description")),
            ));
        }
        out.push_str("</tbody></table></div>");
        Ok(out)
    }

    async fn sample(
        &self,
        viewer: &Viewer,
        row: &ProductRow,
        client: Option<String>,
    ) -> Result<String, String> {
        let sql = format!("SELECT * FROM {} LIMIT {SAMPLE_ROWS}", row.name());
        let started = Instant::now();
        let (_, batches) = self
            .sql
            .collect(&viewer.principal, &sql, client)
            .await
            .map_err(|s| s.message().to_string())?;
        let took = started.elapsed();
        let (names, rows) = cells(&batches, SAMPLE_ROWS);
        Ok(format!(
            "<p>The first {} rows as you see them (<code>{}</code>, {:.1} ms), run through the governed engine and recorded in the audit log.</p>{}",
            rows.len(),
            esc(&sql),
            took.as_secs_f64() * 1e3,
            table("Sample rows", &names, &rows)
        ))
    }

    async fn quality(&self, viewer: &Viewer, row: &ProductRow) -> Result<String, String> {
        let of = format!(
            "domain = {} AND product = {}",
            lit(&row.domain),
            lit(&row.product)
        );
        let (names, rows) = self
            .meta(
                viewer,
                &format!(
                    "SELECT outcome, \"check\", rule, column_name, message, CAST(checked_at AS VARCHAR) AS checked_at, location \
                     FROM meshql.quality WHERE {of} \
                     ORDER BY CASE outcome WHEN 'failed' THEN 0 WHEN 'skipped' THEN 1 ELSE 2 END, \"check\", rule"
                ),
            )
            .await?;
        if rows.is_empty() {
            return Ok("<p>No results yet: <code>meshql check</code> records them.</p>".into());
        }
        let count = |outcome: &str| {
            rows.iter()
                .filter(|r| r[0].as_deref() == Some(outcome))
                .count()
        };
        let (failed, skipped) = (count("failed"), count("skipped"));
        let summary = format!(
            "<p class=\"{}\">{} checks in the last run: {failed} failed, {skipped} skipped, {} passed{}.</p>",
            if failed > 0 { "bad" } else { "ok" },
            rows.len(),
            rows.len() - failed - skipped,
            if failed + skipped > 0 {
                " (listed first)"
            } else {
                ""
            }
        );
        let (hnames, history) = self
            .meta(
                viewer,
                &format!(
                    "SELECT CAST(checked_at AS VARCHAR) AS run, \
                     count(*) FILTER (WHERE outcome = 'passed') AS passed, \
                     count(*) FILTER (WHERE outcome = 'failed') AS failed, \
                     count(*) FILTER (WHERE outcome = 'skipped') AS skipped, \
                     string_agg(rule, ', ') FILTER (WHERE outcome = 'failed') AS failing \
                     FROM meshql.quality_history WHERE {of} \
                     GROUP BY checked_at ORDER BY checked_at DESC"
                ),
            )
            .await?;
        let history_html = if history.is_empty() {
            String::new()
        } else {
            format!(
                "<h2>History</h2><p>The last {} runs of <code>meshql check</code> for this product (at most {}), newest first.</p>{}{}",
                history.len(),
                meshql::check::HISTORY_RUNS,
                history_svg(&history),
                table("Results over time", &hnames, &history)
            )
        };
        Ok(format!(
            "{summary}{}{history_html}",
            table("Last results of meshql check", &names, &rows)
        ))
    }

    async fn lineage(&self, viewer: &Viewer, row: &ProductRow) -> Result<String, String> {
        let upstream = self.upstream(viewer, row).await?;
        let mut downstream = self.downstream(viewer, row).await?;
        // Observed from the audit log, for auditors: products read together.
        let mut related: Vec<String> = Vec::new();
        if let Ok((_, rows)) = self
            .meta(
                viewer,
                &format!(
                    "SELECT DISTINCT related_product FROM meshql.lineage WHERE product = {} AND relation <> 'upstream' ORDER BY 1",
                    lit(&row.name())
                ),
            )
            .await
        {
            for r in rows {
                if let Some(p) = r.into_iter().next().flatten()
                    && p != row.name()
                {
                    related.push(p);
                }
            }
        }
        let observed = self.visible_among(viewer, related).await?;
        downstream.retain(|d| !upstream.contains(d));
        let svg = lineage_svg(&row.name(), &upstream, &downstream, &observed);
        let mut all = upstream.clone();
        all.extend(downstream.iter().cloned());
        all.extend(observed.iter().cloned());
        let mut kinds: Vec<String> = vec!["upstream (declared)".into(); upstream.len()];
        kinds.extend(vec!["downstream (declared)".into(); downstream.len()]);
        kinds.extend(vec!["read together (observed)".into(); observed.len()]);
        let rows: Vec<Vec<Option<String>>> = all
            .iter()
            .zip(&kinds)
            .map(|(p, k)| vec![Some(p.clone()), Some(k.clone())])
            .collect();
        if rows.is_empty() {
            return Ok(format!(
                "{svg}<p>No related products that you can see: its contract declares no upstream products, and no product you can see declares it as theirs.</p>"
            ));
        }
        Ok(format!(
            "{svg}{}",
            table(
                "Related products",
                &["product".into(), "relation".into()],
                &rows
            )
        ))
    }

    /// The contract as published, or, when the viewer cannot see some of
    /// its columns, as the viewer sees it (those columns left out) with a
    /// note saying so.
    pub(crate) async fn contract_text(
        &self,
        viewer: &Viewer,
        row: &ProductRow,
    ) -> Result<(String, String), String> {
        let contract = self.contract(row).ok_or("the contract is gone")?;
        let text = std::fs::read_to_string(&contract.file)
            .map_err(|e| format!("cannot read the contract: {e}"))?;
        let (_, rows) = self.columns(viewer, row).await?;
        let seen: BTreeSet<String> = rows
            .iter()
            .filter_map(|r| r.first().cloned().flatten())
            .collect();
        let all: Vec<String> = contract
            .product
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect();
        if all.iter().all(|c| seen.contains(c)) {
            return Ok((text, String::new()));
        }
        let reduced = without_columns(&text, &seen)?;
        Ok((
            reduced,
            "<p class=\"banner\" role=\"note\">Some columns of this product are not visible to you, so they are left out of the contract below (and its comments with them).</p>".into(),
        ))
    }

    fn use_it(&self, viewer: &Viewer, row: &ProductRow) -> String {
        let addr = self.flight_addr();
        let user = &viewer.principal.user;
        let name = row.name();
        let shell =
            format!("meshql --connect grpc://{addr} -u {user}\nSELECT * FROM {name} LIMIT 10;");
        let python = format!(
            "import os\nimport adbc_driver_flightsql.dbapi as flightsql\n\nconn = flightsql.connect(\n    \"grpc://{addr}\",\n    db_kwargs={{\"username\": \"{user}\", \"password\": os.environ[\"MESHQL_PASSWORD\"]}},\n)\nwith conn.cursor() as cur:\n    cur.execute(\"SELECT * FROM {name} LIMIT 10\")\n    print(cur.fetch_arrow_table())"
        );
        let jdbc = format!("jdbc:arrow-flight-sql://{addr}?useEncryption=false&user={user}");
        format!(
            "<p>Every client runs as you, with your masks and row filters. Passwords and tokens stay out of these snippets: give them to the client yourself.</p><h3>The meshql shell</h3><pre class=\"code\"><code>{}</code></pre><h3>Python (ADBC)</h3><pre class=\"code\"><code>{}</code></pre><h3>Any Flight SQL client (JDBC, ODBC, DBeaver, Tableau)</h3><pre class=\"code\"><code>{}</code></pre>",
            esc(&shell),
            esc(&python),
            esc(&jdbc)
        )
    }
}

/// A contract's YAML without the columns not in `seen`.
fn without_columns(text: &str, seen: &BTreeSet<String>) -> Result<String, String> {
    use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let Some(doc) = docs.first_mut() else {
        return Err("the contract is empty".into());
    };
    if let Yaml::Hash(top) = doc
        && let Some(Yaml::Array(schema)) = top.get_mut(&Yaml::String("schema".into()))
    {
        for object in schema.iter_mut() {
            if let Yaml::Hash(object) = object
                && let Some(Yaml::Array(props)) = object.get_mut(&Yaml::String("properties".into()))
            {
                props.retain(|p| p["name"].as_str().is_some_and(|n| seen.contains(n)));
            }
        }
    }
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(doc)
        .map_err(|e| e.to_string())?;
    Ok(out.trim_start_matches("---\n").to_string() + "\n")
}

/// The lineage of `me` as an SVG drawing: upstream products left,
/// downstream and observed right, each a link.
/// The history as bars, oldest on the left: each run's checks, the failed
/// and skipped ones stacked on the passed; the table next to it says the
/// same in text.
fn history_svg(history: &[Vec<Option<String>>]) -> String {
    let num = |c: &Option<String>| {
        c.as_deref()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let most = history
        .iter()
        .map(|r| num(&r[1]) + num(&r[2]) + num(&r[3]))
        .max()
        .unwrap_or(0)
        .max(1);
    let (bar, gap, height) = (14usize, 6usize, 60usize);
    let width = history.len() * (bar + gap) + gap;
    let failing_runs = history.iter().filter(|r| num(&r[2]) > 0).count();
    let mut out = format!(
        "<figure class=\"history\"><svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-labelledby=\"history-title\"><title id=\"history-title\">{} runs, {failing_runs} with failed checks</title>",
        history.len()
    );
    for (i, r) in history.iter().rev().enumerate() {
        let x = gap + i * (bar + gap);
        let mut y = height;
        for (n, class) in [
            (num(&r[1]), "passed"),
            (num(&r[3]), "skipped"),
            (num(&r[2]), "failed"),
        ] {
            if n == 0 {
                continue;
            }
            let h = (n * (height - 4)).div_ceil(most);
            y -= h;
            out.push_str(&format!(
                "<rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\"><title>{}: {n} {class}</title></rect>",
                esc(r[0].as_deref().unwrap_or(""))
            ));
        }
    }
    out.push_str("</svg><figcaption>Each bar is a run: passed at the bottom, then skipped, failed on top, outlined.</figcaption></figure>");
    out
}

fn lineage_svg(
    me: &str,
    upstream: &[String],
    downstream: &[String],
    observed: &[String],
) -> String {
    let right: Vec<(&String, &str)> = downstream
        .iter()
        .map(|d| (d, "downstream"))
        .chain(observed.iter().map(|o| (o, "read together")))
        .collect();
    let rows = upstream.len().max(right.len()).max(1);
    let (w, box_w, box_h, gap) = (760.0_f64, 220.0, 40.0, 16.0);
    let h = rows as f64 * (box_h + gap) + gap;
    let mid_y = h / 2.0 - box_h / 2.0;
    let node = |x: f64, y: f64, name: &str, class: &str, link: bool| {
        let label = format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"{box_w}\" height=\"{box_h}\" rx=\"6\" class=\"{class}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x + box_w / 2.0,
            y + box_h / 2.0 + 5.0,
            esc(name)
        );
        if link {
            format!("<a href=\"/products/{}\">{label}</a>", esc(name))
        } else {
            label
        }
    };
    let mut svg = format!(
        "<figure class=\"lineage\"><svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"lineage-title lineage-desc\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"lineage-title\">Lineage of {me}</title><desc id=\"lineage-desc\">{} upstream and {} downstream or related products you can see.</desc>",
        upstream.len(),
        right.len(),
        me = esc(me)
    );
    let ys = |n: usize, i: usize| {
        let total = n as f64 * (box_h + gap) - gap;
        (h - total) / 2.0 + i as f64 * (box_h + gap)
    };
    for (i, u) in upstream.iter().enumerate() {
        let y = ys(upstream.len(), i);
        svg.push_str(&format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"edge\"/>",
            box_w,
            y + box_h / 2.0,
            (w - box_w) / 2.0,
            mid_y + box_h / 2.0
        ));
        svg.push_str(&node(0.0, y, u, "up", true));
    }
    for (i, (d, kind)) in right.iter().enumerate() {
        let y = ys(right.len(), i);
        svg.push_str(&format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"edge{}\"/>",
            (w + box_w) / 2.0,
            mid_y + box_h / 2.0,
            w - box_w,
            y + box_h / 2.0,
            if *kind == "read together" {
                " observed"
            } else {
                ""
            }
        ));
        svg.push_str(&node(w - box_w, y, d, "down", true));
    }
    svg.push_str(&node((w - box_w) / 2.0, mid_y, me, "me", false));
    svg.push_str("</svg><figcaption>Upstream on the left, downstream on the right (dashed: read together in queries, from the audit log). The table below lists the same.</figcaption></figure>");
    svg
}

// ---- Query ----

#[derive(Deserialize, Default)]
pub(crate) struct QueryForm {
    #[serde(default)]
    sql: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    format: String,
}

fn query_page(web: &Web, viewer: &Viewer, sql: &str, result: &str, status: StatusCode) -> Response {
    let csrf = viewer.csrf.clone().unwrap_or_default();
    let body = format!(
        "<h1>Query</h1><p>Runs as you, with your masks, row filters and limits, and is recorded in the audit log. <code>EXPLAIN</code> shows your governed plan.</p><form method=\"post\" action=\"/query\" class=\"query\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><p><label for=\"sql\">SQL</label><textarea id=\"sql\" name=\"sql\" rows=\"8\" spellcheck=\"false\" required>{}</textarea></p><p class=\"row\"><button type=\"submit\" name=\"format\" value=\"html\">Run</button><button type=\"submit\" name=\"format\" value=\"csv\" class=\"secondary\">Download CSV</button><button type=\"submit\" name=\"format\" value=\"parquet\" class=\"secondary\">Download Parquet</button></p></form>{result}",
        esc(&csrf),
        esc(sql)
    );
    html(
        status,
        page(
            &web.mesh_name(),
            "Query",
            Some(viewer),
            Section::Query,
            &body,
        ),
    )
}

pub(crate) async fn query_form(State(web): State<Web>, headers: HeaderMap) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return to_login();
    };
    query_page(&web, &viewer, "", "", StatusCode::OK)
}

pub(crate) async fn query(
    State(web): State<Web>,
    headers: HeaderMap,
    Client(client): Client,
    Form(form): Form<QueryForm>,
) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return to_login();
    };
    if !csrf_ok(&viewer, Some(&form.csrf)) {
        return forbidden(&web, &viewer);
    }
    let started = Instant::now();
    let result = web.sql.collect(&viewer.principal, &form.sql, client).await;
    let took = started.elapsed();
    match result {
        Err(status) => {
            let body = format!(
                "<div role=\"alert\" class=\"error\"><h2>The query failed</h2><p>{}</p></div>",
                esc(status.message())
            );
            query_page(&web, &viewer, &form.sql, &body, super::http_status(&status))
        }
        Ok((schema, batches)) => match form.format.as_str() {
            "csv" => match super::api::csv(&batches) {
                Ok(bytes) => download(bytes, "text/csv; charset=utf-8", "result.csv"),
                Err(e) => error_page(&web, &viewer, &e),
            },
            "parquet" => match super::api::parquet(&schema, &batches) {
                Ok(bytes) => download(bytes, "application/vnd.apache.parquet", "result.parquet"),
                Err(e) => error_page(&web, &viewer, &e),
            },
            _ => {
                let total: usize = batches.iter().map(|b| b.num_rows()).sum();
                let (names, rows) = cells(&batches, SHOWN_ROWS);
                let shown = if total > rows.len() {
                    format!(" (the first {} shown; download for all)", rows.len())
                } else {
                    String::new()
                };
                let body = format!(
                    "<section aria-labelledby=\"result\"><h2 id=\"result\">Result</h2><p role=\"status\">{total} row{}{shown}, {:.1} ms.</p>{}</section>",
                    if total == 1 { "" } else { "s" },
                    took.as_secs_f64() * 1e3,
                    table("Result", &names, &rows)
                );
                query_page(&web, &viewer, &form.sql, &body, StatusCode::OK)
            }
        },
    }
}

fn download(bytes: Vec<u8>, content_type: &'static str, file: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

// ---- My access ----

#[derive(Deserialize, Default)]
pub(crate) struct AuditParams {
    #[serde(default)]
    user: String,
    #[serde(default)]
    product: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    since: String,
}

pub(crate) async fn me(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(params): Query<AuditParams>,
) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return to_login();
    };
    let policies = match web
        .meta(
            &viewer,
            "SELECT rule, location, access, domain, product, columns, row_filter FROM meshql.my_policies",
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return error_page(&web, &viewer, &e),
    };
    let p = &viewer.principal;
    let mut body = format!(
        "<h1>My access</h1><dl class=\"facts\"><dt>User</dt><dd>{}</dd><dt>Roles</dt><dd>{}</dd><dt>Groups</dt><dd>{}</dd></dl>{}",
        esc(&p.user),
        esc(&p.roles.join(", ")),
        esc(&p.groups.join(", ")),
        table("The rules that apply to you", &policies.0, &policies.1)
    );
    // The audit log, for principals who may read it.
    let mut filters = Vec::new();
    if !params.user.is_empty() {
        filters.push(format!("\"user\" = {}", lit(&params.user)));
    }
    if !params.product.is_empty() {
        filters.push(format!(
            "product LIKE {}",
            lit(&format!("%{}%", params.product))
        ));
    }
    if !params.outcome.is_empty() {
        filters.push(format!("outcome = {}", lit(&params.outcome)));
    }
    if !params.since.is_empty() {
        filters.push(format!("time >= CAST({} AS TIMESTAMP)", lit(&params.since)));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    let sql = format!(
        "SELECT CAST(time AS VARCHAR) AS time, \"user\", product, outcome, \"rows\", duration_ms, statement FROM meshql.audit {filter} ORDER BY time DESC LIMIT 200"
    );
    if let Ok((names, rows)) = web.meta(&viewer, &sql).await {
        body.push_str(&format!(
            "<section aria-labelledby=\"audit\"><h2 id=\"audit\">Audit log</h2><form method=\"get\" action=\"/me\" class=\"filters\"><p><label for=\"f-user\">User</label><input id=\"f-user\" name=\"user\" value=\"{}\"></p><p><label for=\"f-product\">Product</label><input id=\"f-product\" name=\"product\" value=\"{}\"></p><p><label for=\"f-outcome\">Outcome</label><input id=\"f-outcome\" name=\"outcome\" value=\"{}\"></p><p><label for=\"f-since\">Since (YYYY-MM-DD)</label><input id=\"f-since\" name=\"since\" value=\"{}\"></p><p><button type=\"submit\">Filter</button></p></form>{}</section>",
            esc(&params.user),
            esc(&params.product),
            esc(&params.outcome),
            esc(&params.since),
            table("The latest 200 statements", &names, &rows)
        ));
    }
    html(
        StatusCode::OK,
        page(
            &web.mesh_name(),
            "My access",
            Some(&viewer),
            Section::Me,
            &body,
        ),
    )
}
