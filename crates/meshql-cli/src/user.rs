//! `meshql user hash-password`: a password from standard input as what
//! `users.yaml` holds of it: the argon2id hash that Flight SQL, the web
//! catalog and the shell check, and the SCRAM-SHA-256 verifier that
//! PostgreSQL clients log in against. Neither gives the password back.

use std::process::ExitCode;

pub(crate) fn hash_password() -> anyhow::Result<ExitCode> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    println!("passwordHash: {}", meshql::hash_password(password)?);
    println!(
        "scramSha256: {}",
        meshql_server::pg::scram::Verifier::new(password)
    );
    Ok(ExitCode::SUCCESS)
}
