//! `meshql user hash-password`: a password from standard input as the
//! argon2id hash `users.yaml` holds.

use std::process::ExitCode;

pub(crate) fn hash_password() -> anyhow::Result<ExitCode> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    println!("{}", meshql::hash_password(password)?);
    Ok(ExitCode::SUCCESS)
}
