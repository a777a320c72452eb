//! The web catalog: the mesh's experience plane, served next to Flight SQL
//! by the same process (`meshql serve --http`). People find products,
//! read their contracts, schemas, quality and lineage, look at sample rows
//! and run queries, and every page is rendered through meshql's own
//! governance as the person looking: a hidden product answers 404 as a
//! missing one does, a masked column shows masked values and says so, and
//! the row filter that applies is named on the page.
//!
//! Pages are server-rendered HTML that needs no script; the stylesheet is
//! in the binary. Sign-in is a form (a `users.yaml` password) that sets a
//! signed, expiring, `HttpOnly`, `SameSite=Strict` cookie, or a bearer
//! token (meshql's own or a JWT, validated as Flight SQL validates them)
//! on each request. Every state-changing request is a POST that carries
//! the session's CSRF token. Queries, samples included, run through the
//! Flight SQL service's own path: the same guard, slots, limits and audit.

mod api;
mod html;
mod pages;
mod throttle;

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meshql::Principal;
use serde::{Deserialize, Serialize};

use crate::auth::now;
use crate::service::MeshFlightSql;

/// The session cookie.
const COOKIE: &str = "meshql_session";
/// The cookie that pairs a login form with its CSRF token.
const LOGIN_COOKIE: &str = "meshql_login";
/// The kinds of what [`crate::Signer`] signs here.
const SESSION_KIND: &str = "mqw1";
const LOGIN_KIND: &str = "mql1";

/// What the web catalog serves with.
#[derive(Clone)]
pub(crate) struct Web {
    sql: Arc<MeshFlightSql>,
    /// Cookies are `Secure` (the catalog is served over TLS).
    secure: bool,
    /// The Flight SQL address clients connect to, for snippets.
    flight: String,
    /// Failed sign-ins, and the password checks under way.
    throttle: Arc<throttle::Throttle>,
    /// Each principal's rows of `meshql.products`, as the pages list them.
    product_rows:
        Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<pages::ProductRow>>>>>,
}

/// What a session cookie says.
#[derive(Serialize, Deserialize)]
struct SessionClaims {
    /// The user.
    u: String,
    /// Expiry, seconds since the epoch.
    exp: u64,
    /// The session's CSRF token.
    c: String,
}

/// What a login form's token says.
#[derive(Serialize, Deserialize)]
struct LoginClaims {
    n: String,
    exp: u64,
}

/// Who is looking.
pub(crate) struct Viewer {
    pub(crate) principal: Principal,
    /// The CSRF token state-changing forms carry; `None` for a request
    /// authenticated by a bearer token, which needs none.
    pub(crate) csrf: Option<String>,
}

/// The router of the web catalog over `sql`'s mesh, sessions and limits.
pub fn router(sql: Arc<MeshFlightSql>, secure: bool, flight: String) -> Router {
    let web = Web {
        sql,
        secure,
        flight,
        throttle: Arc::new(throttle::Throttle::new()),
        product_rows: Arc::default(),
    };
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/domains", get(pages::domains))
        .route("/products/{name}", get(pages::product))
        .route("/products/{name}/{tab}", get(pages::product_tab))
        .route("/query", get(pages::query_form).post(pages::query))
        .route("/me", get(pages::me))
        .route("/static/meshql.css", get(stylesheet))
        .route("/api/v1/products", get(api::products))
        .route("/api/v1/products/{name}", get(api::product))
        .route("/api/v1/products/{name}/{part}", get(api::product_part))
        .route("/api/v1/query", post(api::query))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(web)
}

/// Serves the catalog on `listener` until `shutdown` resolves: over TLS
/// with `tls` (Flight SQL's certificate and key; cookies are then
/// `Secure`), else plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sql: Arc<MeshFlightSql>,
    flight: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
    tls: Option<crate::Tls>,
) -> Result<(), String> {
    let Some(tls) = tls else {
        let app = router(sql, false, flight)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| format!("the web catalog failed: {e}"));
    };
    let acceptor = tls_acceptor(&tls, &[b"http/1.1"])?;
    let app = router(sql, true, flight);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "the web catalog could not accept a connection");
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A handshake that fails or stalls ends this connection only.
            let Ok(Ok(stream)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await
            else {
                return;
            };
            let service =
                hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    tower::ServiceExt::oneshot(app.clone(), request.map(axum::body::Body::new))
                });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}

/// A TLS acceptor for the server's certificate, offering `alpn`.
pub(crate) fn tls_acceptor(
    tls: &crate::Tls,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read the TLS certificate {}: {e}",
                tls.cert.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("cannot read the TLS key {}: {e}", tls.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("invalid TLS certificate or key: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("meshql.css"),
    )
        .into_response()
}

/// Headers every response carries: no script or style from anywhere but
/// the catalog itself and no inline script, no framing, no sniffing, and
/// responses that only the viewer's browser may keep.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::CACHE_CONTROL, "private, no-cache");
    response
}

impl Web {
    fn flight_addr(&self) -> &str {
        &self.flight
    }

    fn mesh_name(&self) -> String {
        self.sql.mesh().catalog().mesh.name.clone()
    }

    /// The viewer of a request: its bearer token, else its session cookie.
    fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        if let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if !value.starts_with("Bearer ") && !value.starts_with("bearer ") {
                return None;
            }
            return self.sql.authorization(value).ok().map(|principal| Viewer {
                principal,
                csrf: None,
            });
        }
        let cookie = cookie(headers, COOKIE)?;
        let claims: SessionClaims = self.sql.signer().verify(SESSION_KIND, &cookie)?;
        if claims.exp <= now() {
            return None;
        }
        let principal = self.sql.mesh().principal(&claims.u).ok()?;
        Some(Viewer {
            principal,
            csrf: Some(claims.c),
        })
    }

    /// A session cookie for `user`.
    fn session_cookie(&self, user: &str) -> String {
        let ttl = self.sql.options().token_ttl.as_secs();
        let claims = SessionClaims {
            u: user.to_string(),
            exp: now().saturating_add(ttl),
            c: meshql::random_id(),
        };
        let value = self.sql.signer().sign(SESSION_KIND, &claims);
        self.cookie_header(COOKIE, &value, ttl)
    }

    fn cookie_header(&self, name: &str, value: &str, max_age: u64) -> String {
        format!(
            "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// A login form's token and the cookie it is paired with.
    fn login_token(&self) -> (String, String) {
        let nonce = meshql::random_id();
        let token = self.sql.signer().sign(
            LOGIN_KIND,
            &LoginClaims {
                n: nonce.clone(),
                exp: now() + 3600,
            },
        );
        (token, self.cookie_header(LOGIN_COOKIE, &nonce, 3600))
    }

    /// Whether a login form's token is this server's, fresh, and paired
    /// with the request's login cookie.
    fn login_token_ok(&self, headers: &HeaderMap, token: &str) -> bool {
        let Some(claims) = self.sql.signer().verify::<LoginClaims>(LOGIN_KIND, token) else {
            return false;
        };
        claims.exp > now() && cookie(headers, LOGIN_COOKIE).is_some_and(|n| n == claims.n)
    }
}

/// Whether a state-changing request carries the viewer's CSRF token (or
/// needs none: a bearer token is not sent by a browser on its own).
fn csrf_ok(viewer: &Viewer, sent: Option<&str>) -> bool {
    match &viewer.csrf {
        None => true,
        Some(expected) => sent.is_some_and(|s| {
            use hmac::Mac;
            // Compared in constant time.
            let mut a = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(b"csrf")
                .expect("HMAC takes keys of any length");
            a.update(s.as_bytes());
            let mut b = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(b"csrf")
                .expect("HMAC takes keys of any length");
            b.update(expected.as_bytes());
            a.verify_slice(&b.finalize().into_bytes()).is_ok()
        }),
    }
}

/// A cookie's value.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The caller's address, for the audit log (none where the router is
/// served without connection information).
pub(crate) struct Client(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(
            parts
                .extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|ConnectInfo(a)| a.to_string()),
        ))
    }
}

/// A product name from a URL: `domain.product`, each an SQL identifier.
fn product_name(name: &str) -> Option<(String, String)> {
    let (domain, product) = name.split_once('.')?;
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    (ident(domain) && ident(product) && domain != "meshql")
        .then(|| (domain.to_string(), product.to_string()))
}

/// An SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The status a Flight SQL error answers with, as HTTP.
fn http_status(status: &tonic::Status) -> StatusCode {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Ok
        | Code::Unknown
        | Code::AlreadyExists
        | Code::Aborted
        | Code::Internal
        | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
