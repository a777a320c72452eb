//! HTML of the web catalog: escaping, the page layout, tables of results.

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::Viewer;

/// `text` escaped for HTML text and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped for a URL query value.
pub(crate) fn url(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The sections of the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Search,
    Domains,
    Products,
    Query,
    Me,
    None,
}

/// A whole page: `title` (unique per page, with the mesh's name), the
/// navigation with `section` current, and `body` inside `<main>`.
pub(crate) fn page(
    mesh: &str,
    title: &str,
    viewer: Option<&Viewer>,
    section: Section,
    body: &str,
) -> String {
    let nav = match viewer {
        Some(v) => {
            let link = |href: &str, label: &str, s: Section| {
                let current = if s == section {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                format!("<li><a href=\"{href}\"{current}>{label}</a></li>")
            };
            let out = match &v.csrf {
                Some(csrf) => format!(
                    "<form method=\"post\" action=\"/logout\" class=\"signout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
                    esc(csrf)
                ),
                None => String::new(),
            };
            format!(
                "<nav aria-label=\"Main\"><ul>{}{}{}{}</ul></nav><div class=\"who\"><span>Signed in as <strong>{}</strong></span>{out}</div>",
                link("/", "Search", Section::Search),
                link("/domains", "Domains", Section::Domains),
                link("/query", "Query", Section::Query),
                link("/me", "My access", Section::Me),
                esc(&v.principal.user),
            )
        }
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · {} · meshql</title><link rel=\"stylesheet\" href=\"/static/meshql.css\"></head><body><a class=\"skip\" href=\"#main\">Skip to content</a><header class=\"top\"><a class=\"brand\" href=\"/\">meshql <span>{}</span></a>{nav}</header><main id=\"main\" tabindex=\"-1\">{body}</main><footer class=\"foot\"><p>Every page shows what you would get from a query: your masks, your row filters, your products.</p></footer></body></html>",
        esc(title),
        esc(mesh),
        esc(mesh),
    )
}

/// The cells of `batches` as text, `NULL` as `None`, with the column
/// names; at most `max` rows.
pub(crate) fn cells(
    batches: &[RecordBatch],
    max: usize,
) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let names = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for r in 0..batch.num_rows() {
            if rows.len() >= max {
                return (names, rows);
            }
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| {
                        if c.is_null(r) {
                            None
                        } else {
                            f.as_ref().map(|f| f.value(r).to_string())
                        }
                    })
                    .collect(),
            );
        }
    }
    (names, rows)
}

/// A result as an HTML table with a caption.
pub(crate) fn table(caption: &str, names: &[String], rows: &[Vec<Option<String>>]) -> String {
    let mut out = format!(
        "<div class=\"scroll\" role=\"region\" aria-label=\"{}\" tabindex=\"0\"><table><caption>{}</caption><thead><tr>",
        esc(caption),
        esc(caption)
    );
    for n in names {
        out.push_str(&format!("<th scope=\"col\">{}</th>", esc(n)));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            match cell {
                Some(v) => out.push_str(&format!("<td>{}</td>", esc(v))),
                None => out.push_str("<td class=\"null\">NULL</td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}
