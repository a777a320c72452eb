//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, checked
//! against a stored verifier: the server keeps `StoredKey` and `ServerKey`,
//! never the password or anything that logs in by itself.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Iterations of a verifier made here, as PostgreSQL's default.
pub const ITERATIONS: u32 = 4096;

/// A parsed `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, Debug)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// PBKDF2-HMAC-SHA-256 with one output block: SCRAM's `Hi`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u.clone();
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(&u) {
            *o ^= b;
        }
    }
    out
}

impl Verifier {
    /// The verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Self {
        Self::with_salt(password, &rand_bytes::<16>(), ITERATIONS)
    }

    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = hi(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(&client_key).to_vec(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok()?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: STANDARD.decode(stored).ok()?,
            server_key: STANDARD.decode(server).ok()?,
        })
    }

    /// A verifier that no password matches, for a user who does not exist
    /// or has none: the exchange looks the same, and fails.
    pub fn impossible() -> Self {
        Self {
            iterations: ITERATIONS,
            salt: rand_bytes::<16>().to_vec(),
            stored_key: rand_bytes::<32>().to_vec(),
            server_key: rand_bytes::<32>().to_vec(),
        }
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&meshql::random_bytes(N));
    out
}

/// The server's side of one exchange.
#[derive(Debug)]
pub struct Exchange {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Takes the client-first message; answers the server-first one.
    pub fn start(verifier: Verifier, client_first: &[u8]) -> Result<(Self, String), String> {
        let text = std::str::from_utf8(client_first).map_err(|_| "not UTF-8".to_string())?;
        // gs2 header: `n,,` (no channel binding) or `y,,` (the client could
        // bind but thinks the server cannot); `p=` asks for binding, which
        // SCRAM-SHA-256 without -PLUS does not offer.
        let bare = text
            .strip_prefix("n,,")
            .or_else(|| text.strip_prefix("y,,"))
            .ok_or_else(|| "channel binding is not offered".to_string())?;
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| "no client nonce".to_string())?;
        let server_nonce = hex_nonce();
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            Self {
                verifier,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks the client-final message's proof; answers the server-final
    /// message, or `None` when the password was wrong.
    pub fn finish(&self, client_final: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(client_final).ok()?;
        let (without_proof, proof) = text.rsplit_once(",p=")?;
        let nonce = without_proof
            .split(',')
            .find_map(|a| a.strip_prefix("r="))?;
        if nonce != self.nonce {
            return None;
        }
        let proof = STANDARD.decode(proof).ok()?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return None;
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored = Sha256::digest(&client_key);
        // Constant time: every byte is compared.
        let same = stored
            .iter()
            .zip(&self.verifier.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
            && stored.len() == self.verifier.stored_key.len();
        if !same {
            return None;
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Some(format!("v={}", STANDARD.encode(server_signature)))
    }
}

fn hex_nonce() -> String {
    format!("{}{}", meshql::random_id(), meshql::random_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange: user `user`, password `pencil`.
    #[test]
    fn the_rfc_7677_exchange_verifies() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let verifier = Verifier::with_salt("pencil", &salt, 4096);
        let text = verifier.to_string();
        let parsed = Verifier::parse(&text).expect("parses");
        assert_eq!(parsed.stored_key, verifier.stored_key);
        let (mut exchange, _) =
            Exchange::start(parsed, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("starts");
        // The RFC's server nonce, so that its client proof applies.
        exchange.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        exchange.server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .into();
        let final_message = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            exchange.finish(final_message).as_deref(),
            Some("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        );
        let wrong = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(exchange.finish(wrong), None);
        assert!(
            Verifier::impossible()
                .to_string()
                .starts_with("SCRAM-SHA-256$4096:")
        );
    }
}
