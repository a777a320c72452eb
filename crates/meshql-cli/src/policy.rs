//! `meshql policy explain`: what a principal sees of a product, and which
//! rule decided.

use super::*;

pub(crate) fn explain(dir: &Path, user: Option<&str>, product: &str) -> anyhow::Result<ExitCode> {
    let mesh = Mesh::open(dir)?;
    let principal = principal(&mesh, user)?;
    let wanted = product.to_lowercase();
    let Some(policy) =
        mesh.explain_policy(&principal, wanted.strip_prefix("mesh.").unwrap_or(&wanted))
    else {
        anyhow::bail!("product `{product}` does not exist");
    };
    let attributes: Vec<String> = principal
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "principal {} (roles: {}; groups: {}; attributes: {})",
        principal.user,
        principal.roles.join(", "),
        principal.groups.join(", "),
        attributes.join(", ")
    );
    println!("product   {}", policy.product);
    match &policy.rule {
        Some(rule) => println!("rule      {rule}"),
        None => println!("rule      none matched: no access"),
    }
    if !policy.visible {
        println!("access    denied: the product does not exist for this principal");
        return Ok(ExitCode::SUCCESS);
    }
    println!("access    allowed");
    match &policy.row_filter {
        Some(f) => println!("rows      only where {} ({})", f.sql, f.location),
        None => println!("rows      all"),
    }
    println!("columns");
    for c in &policy.columns {
        let (what, detail) = match &c.action {
            ColumnDecision::Allow => ("raw", String::new()),
            ColumnDecision::Deny => ("hidden", String::new()),
            ColumnDecision::Mask(m) => ("masked", format!(" as {}", m.sql)),
        };
        let because = c
            .because
            .as_deref()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default();
        println!("  {:<20} {what}{detail}{because}", c.name);
    }
    Ok(ExitCode::SUCCESS)
}
