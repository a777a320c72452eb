//! The web catalog's server-side render time: the product page, its schema
//! tab and a search, on the demo mesh and on a generated mesh of 10,000
//! contracts, as a signed-in analyst (masks and row filters apply).
//! Requests go through the catalog's router in-process, so the time is
//! rendering (discovery queries, governance, HTML), not the network.
//! Results go to `<out>/web.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use meshql::Mesh;
use meshql_server::{MeshFlightSql, ServerOptions};
use tower::ServiceExt;

use crate::measure::{median, ms};

async fn send(
    app: &axum::Router,
    request: Request<Body>,
) -> Result<(StatusCode, String, Vec<String>)> {
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let cookies = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
        .collect();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), cookies))
}

/// Signs in as `user` (password `<user>-demo`); the session cookie.
async fn sign_in(app: &axum::Router, user: &str) -> Result<String> {
    let (_, form, cookies) = send(app, Request::get("/login").body(Body::empty())?).await?;
    let marker = "name=\"csrf\" value=\"";
    let at = form.find(marker).context("the login form's token")? + marker.len();
    let token: String = form[at..].chars().take_while(|c| *c != '"').collect();
    let body = format!("username={user}&password={user}-demo&csrf={token}");
    let (status, _, cookies) = send(
        app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, cookies.join("; "))
            .body(Body::from(body))?,
    )
    .await?;
    if status != StatusCode::SEE_OTHER {
        bail!("signing in as {user} answered {status}");
    }
    cookies
        .into_iter()
        .find(|c| c.starts_with("meshql_session="))
        .context("a session cookie")
}

struct Timed {
    mesh: String,
    page: String,
    p50: Duration,
    p95: Duration,
}

async fn time(
    app: &axum::Router,
    cookie: &str,
    path: &str,
    runs: usize,
) -> Result<(Duration, Duration)> {
    let get = || {
        Request::get(path)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
    };
    for _ in 0..3 {
        let (status, body, _) = send(app, get()?).await?;
        if status != StatusCode::OK {
            bail!("{path} answered {status}: {body}");
        }
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        send(app, get()?).await?;
        times.push(t.elapsed());
    }
    times.sort();
    let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
    Ok((median(times), p95))
}

pub fn run(out: &Path, contracts: usize, runs: usize) -> Result<()> {
    let generated = tempfile::tempdir()?;
    crate::mesh_scale::generate(generated.path(), contracts)?;
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../catalog");
    let cases: [(String, PathBuf, Vec<&str>); 2] = [
        (
            "demo (7 products)".into(),
            demo,
            vec![
                "/",
                "/products/customers.customers",
                "/products/customers.customers/schema",
                "/?q=email",
            ],
        ),
        (
            format!("generated ({contracts} products)"),
            generated.path().to_path_buf(),
            vec![
                "/",
                "/products/domain_042.product_0007",
                "/products/domain_042.product_0007/schema",
                // A few products match, and the freshness facet reads them.
                "/?q=product_0042",
                // Every product matches.
                "/?q=product",
            ],
        ),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    runtime.block_on(async {
        for (label, dir, pages) in &cases {
            let mesh = Mesh::open_strict(dir)?;
            let sql = Arc::new(MeshFlightSql::new(mesh, ServerOptions::default())?);
            let app = meshql_server::web::router(sql, false, "127.0.0.1:32010".into());
            let cookie = sign_in(&app, "analyst").await?;
            for page in pages {
                let (p50, p95) = time(&app, &cookie, page, runs).await?;
                eprintln!(
                    "{label} {page}: p50 {:.2} ms, p95 {:.2} ms",
                    ms(p50),
                    ms(p95)
                );
                rows.push(Timed {
                    mesh: label.clone(),
                    page: page.to_string(),
                    p50,
                    p95,
                });
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let mut md = format!(
        "# The web catalog: server-side render time\n\n{} ({}), as `analyst`, through the catalog's router in-process; {runs} requests per page after 3 warm-ups. Targets: p50 under 20 ms for a page and under 100 ms for a search at 10,000 contracts.\n\n| mesh | page | p50 | p95 |\n| --- | --- | --: | --: |\n",
        crate::tpch::machine(),
        crate::tpch::today()
    );
    for r in &rows {
        writeln!(
            md,
            "| {} | `{}` | {:.2} ms | {:.2} ms |",
            r.mesh,
            r.page,
            ms(r.p50),
            ms(r.p95)
        )?;
    }
    std::fs::create_dir_all(out)?;
    let path = out.join("web.md");
    std::fs::write(&path, &md)?;
    println!("{md}\nwritten to {}", path.display());
    Ok(())
}
