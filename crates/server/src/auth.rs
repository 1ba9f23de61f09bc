//! Bearer-token authentication for the user-facing `/api/*` routes.
//!
//! Tokens are compact JWS (JWT) signed with EdDSA over Ed25519 by mana-auth. Public keys
//! come from the auth service's JWKS (`${MANA_AUTH_URL}/api/v1/auth/jwks`), cached by `kid`,
//! refreshed after a TTL and when a token names an unknown `kid` (rate-limited by a
//! cooldown, so a flood of forged `kid`s cannot turn into a flood of JWKS fetches). While
//! the JWKS endpoint is unreachable the cached keys stay usable for at most
//! [`DEFAULT_JWKS_MAX_STALE`] after their last successful fetch; then every token is
//! refused until a fetch succeeds, so a key removed upstream cannot stay valid forever.
//! Accepted issuers are only the configured ones (`JWT_ISSUER`, `MANA_AUTH_URL`).
//!
//! Verification uses aws-lc-rs (already the workspace's crypto library) and only accepts
//! `alg` `EdDSA`/`Ed25519`: there is no algorithm negotiation to confuse. Claims checked:
//! signature, `exp` (required), `nbf`, `iss` (one of the accepted issuers), `aud`
//! (contains the audience), `sub` (non-empty string; becomes the user id).
//!
//! Every failure maps to one of three client-facing messages (see [`AuthError`]); details
//! go to the debug log only, never the token itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

// The tokio clock (the system monotonic clock unless a test pauses time), so the cache TTL
// and the refresh cooldown can be tested without waiting for them.
use tokio::time::Instant;

use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

/// Longest token accepted (bytes); real tokens are well under 2 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest JWKS document read (bytes).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWKS document.
pub const MAX_JWKS_KEYS: usize = 32;
/// How long cached JWKS keys stay usable after their last successful fetch when the
/// endpoint cannot be reached (then tokens are refused until a fetch succeeds).
pub const DEFAULT_JWKS_MAX_STALE: Duration = Duration::from_secs(3600);

/// Why a request was not authenticated. `Display` is the exact client-facing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("Missing authorization header")]
    MissingHeader,
    /// A valid token without a usable `sub` claim.
    #[error("Token missing subject claim")]
    MissingSubject,
    /// Anything else: malformed, bad signature, unknown key, wrong issuer/audience, expired.
    #[error("Invalid or expired token")]
    Invalid,
}

/// Settings of [`JwtVerifier`].
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Full JWKS URL.
    pub jwks_url: String,
    /// Accepted `iss` values (exact match).
    pub issuers: Vec<String>,
    /// Required member of `aud`.
    pub audience: String,
    /// Keys older than this are refetched (default 10 min).
    pub cache_ttl: Duration,
    /// Keys older than this are not used at all (default [`DEFAULT_JWKS_MAX_STALE`]):
    /// the bound on how long a key removed upstream stays valid while the JWKS endpoint
    /// is unreachable.
    pub max_stale: Duration,
    /// Minimum time between two JWKS fetches (default 30 s).
    pub refresh_cooldown: Duration,
    /// Clock tolerance for `exp`/`nbf` (default 0).
    pub leeway: Duration,
    /// Timeout of one JWKS fetch (default 5 s).
    pub fetch_timeout: Duration,
}

impl JwtConfig {
    /// The service's settings: JWKS under `auth_url`, issuers {`extra_issuer`,
    /// `auth_url`} — only configured values (the original also always accepted
    /// `https://auth.mana.how` and `http://localhost:3001`) — default cache timings.
    pub fn for_auth_url(auth_url: &str, extra_issuer: Option<&str>, audience: &str) -> Self {
        let base = auth_url.trim_end_matches('/');
        let mut issuers: Vec<String> = Vec::new();
        for iss in [extra_issuer, Some(base)].into_iter().flatten() {
            if !iss.is_empty() && !issuers.iter().any(|i| i == iss) {
                issuers.push(iss.to_string());
            }
        }
        Self {
            jwks_url: format!("{base}/api/v1/auth/jwks"),
            issuers,
            audience: audience.to_string(),
            cache_ttl: Duration::from_secs(600),
            max_stale: DEFAULT_JWKS_MAX_STALE,
            refresh_cooldown: Duration::from_secs(30),
            leeway: Duration::ZERO,
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Errors building a verifier.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot build the JWKS HTTP client: {0}")]
    Client(String),
}

/// One Ed25519 verification key from the JWKS.
#[derive(Clone)]
struct Jwk {
    kid: Option<String>,
    x: [u8; 32],
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Jwk>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    generation: u64,
}

impl KeySet {
    /// Keys a token may have been signed with: the one with its `kid`, or all when the
    /// token names none.
    fn candidates(&self, kid: Option<&str>) -> Vec<[u8; 32]> {
        match kid {
            Some(k) => self
                .keys
                .iter()
                .filter(|j| j.kid.as_deref() == Some(k))
                .map(|j| j.x)
                .collect(),
            None => self.keys.iter().map(|j| j.x).collect(),
        }
    }

    fn is_fresh(&self, now: Instant, ttl: Duration) -> bool {
        self.fetched_at
            .is_some_and(|t| now.saturating_duration_since(t) < ttl)
    }

    /// The candidates while the keys are younger than `max_stale`, else none.
    fn usable_candidates(&self, kid: Option<&str>, max_stale: Duration) -> Vec<[u8; 32]> {
        if self.is_fresh(Instant::now(), max_stale) {
            self.candidates(kid)
        } else {
            Vec::new()
        }
    }
}

/// Verifies EdDSA JWTs against a remote JWKS with caching.
pub struct JwtVerifier {
    cfg: JwtConfig,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    refresh_lock: Mutex<()>,
}

/// Claims of an accepted token that callers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `sub` claim.
    pub user_id: String,
}

impl JwtVerifier {
    pub fn new(cfg: JwtConfig) -> Result<Self, AuthSetupError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthSetupError::Client(e.to_string()))?;
        Ok(Self {
            cfg,
            http,
            keys: RwLock::new(KeySet::default()),
            refresh_lock: Mutex::new(()),
        })
    }

    /// The verifier's settings.
    pub fn config(&self) -> &JwtConfig {
        &self.cfg
    }

    /// Verifies a compact JWS token and its claims at the current time.
    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let parsed = ParsedToken::parse(token)?;
        let kid = parsed.kid.as_deref();
        let (mut candidates, generation, fresh) = {
            let ks = self.keys.read().await;
            (
                ks.usable_candidates(kid, self.cfg.max_stale),
                ks.generation,
                ks.is_fresh(Instant::now(), self.cfg.cache_ttl),
            )
        };
        if candidates.is_empty() || !fresh {
            self.refresh_if_allowed(generation).await;
            candidates = self
                .keys
                .read()
                .await
                .usable_candidates(kid, self.cfg.max_stale);
        }
        if candidates.is_empty() {
            tracing::debug!(kid = ?kid, "token rejected: no matching (or no fresh enough) JWKS key");
            return Err(AuthError::Invalid);
        }
        if !candidates.iter().any(|x| parsed.signature_matches(x)) {
            tracing::debug!(kid = ?kid, "token rejected: bad signature");
            return Err(AuthError::Invalid);
        }
        check_claims(&parsed.claims, &self.cfg, unix_now())
    }

    /// Fetches the JWKS unless another task already did since `seen_generation` or the
    /// last attempt is within the cooldown. Fetch failures keep the previous keys.
    async fn refresh_if_allowed(&self, seen_generation: u64) {
        let _guard = self.refresh_lock.lock().await;
        {
            let ks = self.keys.read().await;
            if ks.generation != seen_generation {
                return;
            }
            if ks
                .last_attempt
                .is_some_and(|t| t.elapsed() < self.cfg.refresh_cooldown)
            {
                return;
            }
        }
        let result = self.fetch().await;
        let mut ks = self.keys.write().await;
        ks.last_attempt = Some(Instant::now());
        match result {
            Ok(keys) => {
                tracing::debug!(count = keys.len(), "JWKS refreshed");
                ks.keys = keys;
                ks.fetched_at = Some(Instant::now());
                ks.generation = ks.generation.wrapping_add(1);
            }
            Err(e) => {
                tracing::warn!(url = %self.cfg.jwks_url, error = %e, "JWKS fetch failed; keeping the cached keys");
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Jwk>, String> {
        let mut resp = self
            .http
            .get(&self.cfg.jwks_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("body: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("JWKS document too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("JSON: {e}"))?;
        parse_jwks(&doc)
    }
}

/// Extracts the usable Ed25519 signing keys of a JWKS document. Other key types are
/// skipped; a document without any usable key is an error (keeps the old cache).
fn parse_jwks(doc: &Value) -> Result<Vec<Jwk>, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut out = Vec::new();
    for k in keys {
        let s = |name: &str| k.get(name).and_then(Value::as_str);
        if s("kty") != Some("OKP") || s("crv") != Some("Ed25519") {
            continue;
        }
        if !matches!(s("use"), None | Some("sig"))
            || !matches!(s("alg"), None | Some("EdDSA" | "Ed25519"))
        {
            continue;
        }
        let Some(x) = s("x")
            .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        else {
            continue;
        };
        out.push(Jwk {
            kid: s("kid").map(str::to_string),
            x,
        });
        if out.len() == MAX_JWKS_KEYS {
            break;
        }
    }
    if out.is_empty() {
        return Err("no Ed25519 signing key in the JWKS".into());
    }
    Ok(out)
}

/// A structurally valid token, not yet verified.
struct ParsedToken<'a> {
    signing_input: &'a str,
    signature: Vec<u8>,
    kid: Option<String>,
    claims: serde_json::Map<String, Value>,
}

impl<'a> ParsedToken<'a> {
    fn parse(token: &'a str) -> Result<Self, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid);
        };
        let header = decode_json_object(h)?;
        match header.get("alg").and_then(Value::as_str) {
            Some("EdDSA" | "Ed25519") => {}
            _ => return Err(AuthError::Invalid),
        }
        // No JWS extension is understood, so any critical one must be refused (RFC 7515 §4.1.11).
        if header.contains_key("crit") {
            return Err(AuthError::Invalid);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(AuthError::Invalid),
        };
        let claims = decode_json_object(p)?;
        let signature = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Invalid)?;
        Ok(Self {
            signing_input: &token[..h.len() + 1 + p.len()],
            signature,
            kid,
            claims,
        })
    }

    fn signature_matches(&self, key: &[u8; 32]) -> bool {
        UnparsedPublicKey::new(&ED25519, key)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .is_ok()
    }
}

fn decode_json_object(part: &str) -> Result<serde_json::Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Invalid)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AuthError::Invalid),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or(0.0)
}

/// Checks the registered claims of a signature-verified token at `now` (Unix seconds).
fn check_claims(
    claims: &serde_json::Map<String, Value>,
    cfg: &JwtConfig,
    now: f64,
) -> Result<Verified, AuthError> {
    let leeway = cfg.leeway.as_secs_f64();
    let num = |name: &str| -> Result<Option<f64>, AuthError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(AuthError::Invalid),
        }
    };
    // `exp` is required: a token without expiry would be valid forever.
    let exp = num("exp")?.ok_or(AuthError::Invalid)?;
    if exp <= now - leeway {
        return Err(AuthError::Invalid);
    }
    if let Some(nbf) = num("nbf")? {
        if nbf > now + leeway {
            return Err(AuthError::Invalid);
        }
    }
    num("iat")?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(AuthError::Invalid)?;
    if !cfg.issuers.iter().any(|i| i == iss) {
        return Err(AuthError::Invalid);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == cfg.audience,
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str() == Some(cfg.audience.as_str())),
        _ => false,
    };
    if !aud_ok {
        return Err(AuthError::Invalid);
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => Ok(Verified {
            user_id: sub.to_string(),
        }),
        _ => Err(AuthError::MissingSubject),
    }
}

/// How `/api/*` requests are authenticated.
pub enum Authenticator {
    /// Verify bearer JWTs.
    Jwt(Box<JwtVerifier>),
    /// Development only (`NODE_ENV=development` + `DEV_BYPASS_AUTH=true`): every request
    /// is this user, with or without a token.
    DevBypass { user_id: String },
}

impl Authenticator {
    /// The user id of a request with this `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        match self {
            Authenticator::DevBypass { user_id } => Ok(user_id.clone()),
            Authenticator::Jwt(v) => {
                let token = bearer_token(authorization).ok_or(AuthError::MissingHeader)?;
                v.verify(token).await.map(|ok| ok.user_id)
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer_token(value: Option<&str>) -> Option<&str> {
    let v = value?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    fn cfg() -> JwtConfig {
        JwtConfig::for_auth_url("http://auth.test", None, "mana")
    }

    fn sign(kp: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let sig = URL_SAFE_NO_PAD.encode(kp.sign(input.as_bytes()).as_ref());
        format!("{input}.{sig}")
    }

    fn claims(now: f64) -> serde_json::Map<String, Value> {
        json!({"sub":"u1","iss":"http://auth.test","aud":"mana","exp": now + 60.0, "iat": now})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn issuers_are_only_the_configured_ones() {
        let c = JwtConfig::for_auth_url("http://localhost:3001/", Some("https://x"), "mana");
        assert_eq!(c.issuers, vec!["https://x", "http://localhost:3001"]);
        assert_eq!(c.jwks_url, "http://localhost:3001/api/v1/auth/jwks");
        let c = JwtConfig::for_auth_url("http://auth.internal:3001", None, "mana");
        assert_eq!(c.issuers, vec!["http://auth.internal:3001"]);
        assert_eq!(c.max_stale, DEFAULT_JWKS_MAX_STALE);
    }

    #[test]
    fn claim_checks() {
        let now = 1_700_000_000.0;
        let c = cfg();
        assert_eq!(check_claims(&claims(now), &c, now).unwrap().user_id, "u1");
        type Edit = fn(&mut serde_json::Map<String, Value>);
        let table: Vec<(&str, Edit, Result<(), AuthError>)> = vec![
            (
                "no exp",
                |m| {
                    m.remove("exp");
                },
                Err(AuthError::Invalid),
            ),
            (
                "exp now",
                |m| {
                    m.insert("exp".into(), json!(1_700_000_000.0));
                },
                Err(AuthError::Invalid),
            ),
            (
                "exp string",
                |m| {
                    m.insert("exp".into(), json!("9999999999"));
                },
                Err(AuthError::Invalid),
            ),
            (
                "nbf future",
                |m| {
                    m.insert("nbf".into(), json!(1_700_000_010.0));
                },
                Err(AuthError::Invalid),
            ),
            (
                "nbf past",
                |m| {
                    m.insert("nbf".into(), json!(1_699_999_990.0));
                },
                Ok(()),
            ),
            (
                "iat not a number",
                |m| {
                    m.insert("iat".into(), json!("x"));
                },
                Err(AuthError::Invalid),
            ),
            (
                "wrong iss",
                |m| {
                    m.insert("iss".into(), json!("https://evil"));
                },
                Err(AuthError::Invalid),
            ),
            (
                "formerly hard-coded iss",
                |m| {
                    m.insert("iss".into(), json!("https://auth.mana.how"));
                },
                Err(AuthError::Invalid),
            ),
            (
                "formerly hard-coded local iss",
                |m| {
                    m.insert("iss".into(), json!("http://localhost:3001"));
                },
                Err(AuthError::Invalid),
            ),
            (
                "no iss",
                |m| {
                    m.remove("iss");
                },
                Err(AuthError::Invalid),
            ),
            (
                "aud list",
                |m| {
                    m.insert("aud".into(), json!(["x", "mana"]));
                },
                Ok(()),
            ),
            (
                "aud wrong list",
                |m| {
                    m.insert("aud".into(), json!(["x"]));
                },
                Err(AuthError::Invalid),
            ),
            (
                "aud wrong",
                |m| {
                    m.insert("aud".into(), json!("manax"));
                },
                Err(AuthError::Invalid),
            ),
            (
                "no aud",
                |m| {
                    m.remove("aud");
                },
                Err(AuthError::Invalid),
            ),
            (
                "no sub",
                |m| {
                    m.remove("sub");
                },
                Err(AuthError::MissingSubject),
            ),
            (
                "empty sub",
                |m| {
                    m.insert("sub".into(), json!(""));
                },
                Err(AuthError::MissingSubject),
            ),
            (
                "numeric sub",
                |m| {
                    m.insert("sub".into(), json!(5));
                },
                Err(AuthError::MissingSubject),
            ),
        ];
        for (name, edit, want) in table {
            let mut m = claims(now);
            edit(&mut m);
            let got = check_claims(&m, &c, now).map(|_| ());
            assert_eq!(got, want, "{name}");
        }
        // Leeway widens exp and nbf.
        let mut lenient = cfg();
        lenient.leeway = Duration::from_secs(30);
        let mut m = claims(now);
        m.insert("exp".into(), json!(now - 10.0));
        assert!(check_claims(&m, &lenient, now).is_ok());
        assert!(check_claims(&m, &c, now).is_err());
    }

    #[test]
    fn token_parsing_and_signature() {
        let kp = Ed25519KeyPair::generate().unwrap();
        let other = Ed25519KeyPair::generate().unwrap();
        let x: [u8; 32] = kp.public_key().as_ref().try_into().unwrap();
        let y: [u8; 32] = other.public_key().as_ref().try_into().unwrap();
        let body = json!({"sub":"u"});
        let tok = sign(&kp, &json!({"alg":"EdDSA","kid":"k1"}), &body);
        let p = ParsedToken::parse(&tok).unwrap();
        assert_eq!(p.kid.as_deref(), Some("k1"));
        assert!(p.signature_matches(&x));
        assert!(!p.signature_matches(&y));

        for header in [
            json!({"alg":"HS256"}),
            json!({"alg":"none"}),
            json!({}),
            json!({"alg":"EdDSA","crit":["b64"]}),
            json!({"alg":"EdDSA","kid":7}),
        ] {
            let t = sign(&kp, &header, &body);
            assert!(ParsedToken::parse(&t).is_err(), "{header}");
        }
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.AA",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(ParsedToken::parse(bad).is_err(), "{bad:.20}");
        }
        // A payload swapped under a valid signature fails.
        let parts: Vec<&str> = tok.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(json!({"sub":"admin"}).to_string()),
            parts[2]
        );
        assert!(!ParsedToken::parse(&forged).unwrap().signature_matches(&x));
    }

    #[test]
    fn jwks_parsing_keeps_only_ed25519_signing_keys() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let doc = json!({"keys":[
            {"kty":"OKP","crv":"Ed25519","x": x, "kid":"a"},
            {"kty":"OKP","crv":"Ed25519","x": x, "kid":"b", "use":"enc"},
            {"kty":"OKP","crv":"X25519","x": x, "kid":"c"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","kid":"d"},
            {"kty":"OKP","crv":"Ed25519","x": "short", "kid":"e"},
            {"kty":"OKP","crv":"Ed25519","x": x},
        ]});
        let keys = parse_jwks(&doc).unwrap();
        let kids: Vec<Option<&str>> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec![Some("a"), None]);
        assert!(parse_jwks(&json!({"keys":[]})).is_err());
        assert!(parse_jwks(&json!({})).is_err());
    }

    #[test]
    fn bearer_header_forms() {
        for (raw, want) in [
            (Some("Bearer abc"), Some("abc")),
            (Some("bearer  abc "), Some("abc")),
            (Some("Basic abc"), None),
            (Some("Bearer"), None),
            (Some(""), None),
            (None, None),
        ] {
            assert_eq!(bearer_token(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn error_messages_are_the_contract() {
        assert_eq!(
            AuthError::MissingHeader.to_string(),
            "Missing authorization header"
        );
        assert_eq!(
            AuthError::MissingSubject.to_string(),
            "Token missing subject claim"
        );
        assert_eq!(AuthError::Invalid.to_string(), "Invalid or expired token");
    }
}
