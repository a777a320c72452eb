//! Signed, stateless credentials: bearer tokens and statement handles.
//!
//! Both are `<kind>.<payload>.<mac>`: the payload is base64url JSON and the
//! MAC is HMAC-SHA256 over `<kind>.<payload>` under a key the server draws
//! at start. A token cannot be used as a handle or the other way round (the
//! kind is signed), nothing can be forged without the key, and every handle
//! names the user it was issued to.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::Sha256;
use tonic::Status;

/// Signs and checks tokens and handles.
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { .. }")
    }
}

/// What a bearer token says: who, until when.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The user.
    pub u: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// A nonce, so two tokens are never alike.
    pub n: String,
}

/// What a statement handle or ticket carries.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HandleClaims {
    /// The user it was issued to.
    pub u: String,
    /// The statement.
    pub q: String,
    /// The query id (tickets) or statement id (prepared statements).
    pub id: String,
    /// Bound parameter values: one row, Arrow IPC stream, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<String>,
    /// The search path the statement was planned with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<Vec<String>>,
}

pub const TOKEN: &str = "mqt1";
pub const HANDLE: &str = "mqh1";

impl Signer {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    pub fn random() -> Self {
        Self::new(meshql::random_bytes(32))
    }

    pub fn sign<T: Serialize>(&self, kind: &str, claims: &T) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let body = format!("{kind}.{}", URL_SAFE_NO_PAD.encode(json));
        let mac = self.mac(body.as_bytes()).finalize().into_bytes();
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The claims of `text` if it is a `kind` this server signed.
    pub fn verify<T: DeserializeOwned>(&self, kind: &str, text: &str) -> Option<T> {
        let (body, mac) = text.rsplit_once('.')?;
        let (k, payload) = body.split_once('.')?;
        if k != kind {
            return None;
        }
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        // Compared in constant time.
        self.mac(body.as_bytes()).verify_slice(&mac).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    /// HMAC-SHA-256 of `body` under the server's key.
    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(body);
        mac
    }

    pub fn issue_token(&self, user: &str, ttl_seconds: u64) -> String {
        let claims = TokenClaims {
            u: user.to_string(),
            exp: now().saturating_add(ttl_seconds),
            n: meshql::random_id(),
        };
        self.sign(TOKEN, &claims)
    }

    /// The user of a token this server issued, if it has not expired.
    #[allow(clippy::result_large_err)]
    pub fn check_token(&self, token: &str) -> Result<String, Status> {
        let claims: TokenClaims = self
            .verify(TOKEN, token)
            .ok_or_else(|| Status::unauthenticated("invalid bearer token"))?;
        if claims.exp <= now() {
            return Err(Status::unauthenticated(
                "the bearer token has expired; log in again",
            ));
        }
        Ok(claims.u)
    }

    /// Encodes a handle for `Any`-wrapped bytes fields.
    pub fn issue_handle(&self, claims: &HandleClaims) -> Vec<u8> {
        self.sign(HANDLE, claims).into_bytes()
    }

    /// The claims of a handle, which must have been issued to `user`.
    #[allow(clippy::result_large_err)]
    pub fn check_handle(&self, handle: &[u8], user: &str) -> Result<HandleClaims, Status> {
        let claims: HandleClaims = std::str::from_utf8(handle)
            .ok()
            .and_then(|t| self.verify(HANDLE, t))
            .ok_or_else(|| {
                Status::permission_denied(
                    "invalid statement handle: it was not issued by this server",
                )
            })?;
        if claims.u != user {
            return Err(Status::permission_denied(
                "this statement handle was issued to another user",
            ));
        }
        Ok(claims)
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// User and password of an `authorization: Basic ...` header value.
#[allow(clippy::result_large_err)]
pub fn parse_basic(value: &str) -> Result<(String, String), Status> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(|| Status::unauthenticated("expected Basic credentials"))?;
    // Some clients (Go's Flight client) leave the padding off.
    let encoded = encoded.trim();
    let decoded = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .map_err(|_| Status::unauthenticated("Basic credentials are not valid base64"))?;
    let text = String::from_utf8(decoded)
        .map_err(|_| Status::unauthenticated("Basic credentials are not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| Status::unauthenticated("Basic credentials must be user:password"))?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_is_hmac_sha256_of_rfc_4231() {
        let s = Signer {
            key: b"Jefe".to_vec(),
        };
        let mac = s
            .mac(b"what do ya want for nothing?")
            .finalize()
            .into_bytes();
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_verify_and_tampering_is_refused() {
        let s = Signer::random();
        let t = s.issue_token("analyst", 60);
        assert_eq!(s.check_token(&t).expect("valid"), "analyst");
        // Change the user inside the payload: the MAC no longer matches.
        let (kind, rest) = t.split_once('.').expect("kind");
        let (_, mac) = rest.split_once('.').expect("mac");
        let forged_claims = TokenClaims {
            u: "admin".into(),
            exp: now() + 60,
            n: "x".into(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).expect("json"));
        let forged = format!("{kind}.{payload}.{mac}");
        assert!(s.check_token(&forged).is_err());
        // Another server's key.
        assert!(Signer::random().check_token(&t).is_err());
        // A token is not a handle.
        assert!(s.check_handle(t.as_bytes(), "analyst").is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let s = Signer::random();
        let claims = TokenClaims {
            u: "analyst".into(),
            exp: now() - 1,
            n: "n".into(),
        };
        let t = s.sign(TOKEN, &claims);
        let err = s.check_token(&t).expect_err("expired");
        assert!(err.message().contains("expired"), "{err}");
    }

    #[test]
    fn handles_belong_to_their_user() {
        let s = Signer::random();
        let h = s.issue_handle(&HandleClaims {
            u: "analyst".into(),
            q: "SELECT 1".into(),
            id: "1".into(),
            p: None,
            d: None,
        });
        assert_eq!(s.check_handle(&h, "analyst").expect("own").q, "SELECT 1");
        let err = s.check_handle(&h, "guest").expect_err("other user");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn basic_credentials_parse() {
        let v = format!("Basic {}", STANDARD.encode("eu_analyst:pw:with:colons"));
        assert_eq!(
            parse_basic(&v).expect("parsed"),
            ("eu_analyst".to_string(), "pw:with:colons".to_string())
        );
        assert!(parse_basic("Bearer x").is_err());
        let unpadded = format!("Basic {}", STANDARD_NO_PAD.encode("guest:guest-demo"));
        assert_eq!(parse_basic(&unpadded).expect("parsed").0, "guest");
    }
}
