//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`), both sides: the CLI and tests sign with
//! [`sign`]; the API verifies with [`parse_authorization`] + [`verify`].
//!
//! - Canonical request: method, canonical URI (each path segment URI-encoded again, as AWS
//!   does for every service but S3), canonical query (names and values decoded, strictly
//!   re-encoded, sorted), canonical headers (lower-case names, trimmed values with runs of
//!   spaces collapsed, sorted), signed header list, payload hash (hex SHA-256 of the body, or
//!   `UNSIGNED-PAYLOAD` when `x-amz-content-sha256` says so).
//! - Credential scope `YYYYMMDD/region/service/aws4_request`; the service must be `berth` (or `ecs`), the
//!   date must be the date of `x-amz-date`, any region is accepted.
//! - `x-amz-date` must be within [`MAX_SKEW`] of the server's clock (bounds replays).
//! - Signatures are compared in constant time.

use crate::util::percent;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::crypto::{ct_eq, hmac, sha256_hex};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const SERVICE: &str = "berth";
/// The ECS JSON 1.1 protocol (`api::ecs`) is signed with service name `ecs`.
pub const ECS_SERVICE: &str = "ecs";
pub const DEFAULT_REGION: &str = "us-east-1";
/// Requests dated further than this from the server's clock are refused.
pub const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(5);
const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const MAX_SIGNED_HEADERS: usize = 64;
/// Signed by berth's own signer: a random value per request.
pub const NONCE_HEADER: &str = "x-berth-nonce";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("malformed Authorization header: {0}")]
    Malformed(String),
    #[error("missing header {0} (it must be present and signed)")]
    MissingHeader(String),
    #[error("x-amz-date {0:?} is not a valid YYYYMMDDTHHMMSSZ time")]
    BadDate(String),
    #[error("request time {0} is outside the allowed clock skew of 5 minutes (signature expired or replayed)")]
    Skew(String),
    #[error("credential scope {0:?} does not match the request (date/region/berth/aws4_request)")]
    Scope(String),
    #[error("the payload hash in x-amz-content-sha256 does not match the body")]
    PayloadHash,
    #[error("the request signature does not match")]
    Signature,
}

/// The fields of an `AWS4-HMAC-SHA256` Authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuth {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl ParsedAuth {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Parse `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`. Strict about shapes, lenient about spacing.
pub fn parse_authorization(h: &str) -> Result<ParsedAuth, SigError> {
    let bad = |m: &str| SigError::Malformed(m.to_string());
    let rest = h
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| bad("expected the AWS4-HMAC-SHA256 algorithm"))?;
    if !rest.starts_with(' ') {
        return Err(bad("expected a space after the algorithm"));
    }
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad("expected Name=Value parts"))?;
        let slot = match k.trim() {
            "Credential" => &mut cred,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => {
                return Err(bad(
                    "unknown part (expected Credential, SignedHeaders, Signature)",
                ))
            }
        };
        if slot.replace(v.trim()).is_some() {
            return Err(bad("a part appears twice"));
        }
    }
    let cred = cred.ok_or_else(|| bad("missing Credential"))?;
    let signed = signed.ok_or_else(|| bad("missing SignedHeaders"))?;
    let sig = sig.ok_or_else(|| bad("missing Signature"))?;

    let parts: Vec<&str> = cred.split('/').collect();
    let [akid, date, region, service, term] = parts[..] else {
        return Err(bad(
            "Credential must be ACCESS_KEY_ID/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if akid.len() < 16 || akid.len() > 128 || !akid.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad("invalid access key id"));
    }
    if date.len() != 8 || !date.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("credential date must be YYYYMMDD"));
    }
    let token_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !token_ok(region) || !token_ok(service) {
        return Err(bad("invalid region or service in the credential scope"));
    }
    if term != "aws4_request" {
        return Err(bad("credential scope must end with aws4_request"));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers.is_empty()
        || signed_headers.len() > MAX_SIGNED_HEADERS
        || signed_headers.iter().any(|h| {
            h.is_empty()
                || !h
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        })
    {
        return Err(bad(
            "SignedHeaders must be lower-case header names joined by ';'",
        ));
    }
    if sig.len() != 64 || !sig.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(bad("Signature must be 64 lower-case hex digits"));
    }
    Ok(ParsedAuth {
        access_key_id: akid.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: sig.to_string(),
    })
}

/// What is signed of a request.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as sent on the wire (percent-encoded), e.g. `/v1/services/web`.
    pub path: &'a str,
    /// The raw query string without `?` (may be empty).
    pub query: &'a str,
    /// Every header (name, value); names in any case.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body or `UNSIGNED-PAYLOAD`.
    pub payload_hash: &'a str,
}

fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The first value of a header.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    header_values(headers, name).into_iter().next()
}

pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    percent::encode(path, true)
}

pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = String::from_utf8_lossy(&percent::decode(k)).into_owned();
            let v = String::from_utf8_lossy(&percent::decode(v)).into_owned();
            (percent::encode(&k, false), percent::encode(&v, false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn trim_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request; errors if a signed header is absent from the request.
pub fn canonical_request(
    parts: &RequestParts,
    signed_headers: &[String],
) -> Result<String, SigError> {
    let mut names: Vec<String> = signed_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let mut canon_headers = String::new();
    for n in &names {
        let vals = header_values(parts.headers, n);
        if vals.is_empty() {
            return Err(SigError::MissingHeader(n.clone()));
        }
        let joined: Vec<String> = vals.iter().map(|v| trim_value(v)).collect();
        canon_headers.push_str(n);
        canon_headers.push(':');
        canon_headers.push_str(&joined.join(","));
        canon_headers.push('\n');
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        parts.method.to_ascii_uppercase(),
        canonical_uri(parts.path),
        canonical_query(parts.query),
        canon_headers,
        names.join(";"),
        parts.payload_hash
    ))
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    )
}

pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

pub fn parse_amz_date(s: &str) -> Result<DateTime<Utc>, SigError> {
    NaiveDateTime::parse_from_str(s, AMZ_DATE_FORMAT)
        .map(|t| t.and_utc())
        .map_err(|_| SigError::BadDate(s.chars().take(40).collect()))
}

pub fn format_amz_date(t: DateTime<Utc>) -> String {
    t.format(AMZ_DATE_FORMAT).to_string()
}

/// Check everything that does not need the secret: date format and skew, scope, the
/// required signed headers, the payload hash. Returns the `x-amz-date` value.
pub fn precheck(
    auth: &ParsedAuth,
    parts: &RequestParts,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<String, SigError> {
    let amz_date = header(parts.headers, "x-amz-date")
        .ok_or_else(|| SigError::MissingHeader("x-amz-date".into()))?
        .trim()
        .to_string();
    let t = parse_amz_date(&amz_date)?;
    if (now - t).abs() > MAX_SKEW {
        return Err(SigError::Skew(amz_date));
    }
    if auth.date != amz_date[..8] || (auth.service != SERVICE && auth.service != ECS_SERVICE) {
        return Err(SigError::Scope(auth.scope()));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SigError::MissingHeader(required.into()));
        }
    }
    for conditional in ["x-amz-security-token", "x-amz-content-sha256"] {
        if header(parts.headers, conditional).is_some()
            && !auth.signed_headers.iter().any(|h| h == conditional)
        {
            return Err(SigError::MissingHeader(conditional.into()));
        }
    }
    if parts.payload_hash != UNSIGNED_PAYLOAD
        && !ct_eq(parts.payload_hash.as_bytes(), sha256_hex(body).as_bytes())
    {
        return Err(SigError::PayloadHash);
    }
    Ok(amz_date)
}

/// The payload hash a request claims: `x-amz-content-sha256` if present, else the body's.
pub fn payload_hash_of(headers: &[(String, String)], body: &[u8]) -> String {
    match header(headers, "x-amz-content-sha256") {
        Some(v) => v.trim().to_string(),
        None => sha256_hex(body),
    }
}

/// Verify the signature with the access key's secret (after [`precheck`]).
pub fn verify(
    auth: &ParsedAuth,
    parts: &RequestParts,
    amz_date: &str,
    secret: &str,
) -> Result<(), SigError> {
    let canonical = canonical_request(parts, &auth.signed_headers)?;
    let sts = string_to_sign(amz_date, &auth.scope(), &canonical);
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    let expected = hex::encode(hmac(&key, sts.as_bytes()));
    if ct_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigError::Signature)
    }
}

/// Credentials to sign with.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// From `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Option<Credentials> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Credentials {
            access_key_id: get("AWS_ACCESS_KEY_ID")?,
            secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
            session_token: get("AWS_SESSION_TOKEN"),
        })
    }
}

/// Sign a request: adds `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token` (with a
/// session token) and `authorization` to `headers`, which must already hold `host`.
/// `body: None` signs `UNSIGNED-PAYLOAD`.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    creds: &Credentials,
    region: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &mut Vec<(String, String)>,
    body: Option<&[u8]>,
    now: DateTime<Utc>,
) {
    let strip = [
        "authorization",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
    ];
    headers.retain(|(n, _)| !strip.iter().any(|s| n.eq_ignore_ascii_case(s)));
    let amz_date = format_amz_date(now);
    let payload_hash = match body {
        Some(b) => sha256_hex(b),
        None => UNSIGNED_PAYLOAD.to_string(),
    };
    // A nonce makes every signed request unique, so the server's replay refusal of signed
    // writes never hits a legitimate repeat within the same second.
    if header(headers, NONCE_HEADER).is_none() {
        headers.push((
            NONCE_HEADER.into(),
            hex::encode(super::crypto::random_bytes::<12>()),
        ));
    }
    headers.push(("x-amz-date".into(), amz_date.clone()));
    headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), t.clone()));
    }
    let mut signed: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| {
            n == "host" || n.starts_with("x-amz-") || n == "content-type" || n == NONCE_HEADER
        })
        .collect();
    signed.sort();
    signed.dedup();
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let parts = RequestParts {
        method,
        path,
        query,
        headers,
        payload_hash: &payload_hash,
    };
    let canonical = canonical_request(&parts, &signed).expect("signed headers are present");
    let sts = string_to_sign(&amz_date, &scope, &canonical);
    let key = signing_key(&creds.secret_access_key, date, region, SERVICE);
    let sig = hex::encode(hmac(&key, sts.as_bytes()));
    headers.push((
        "authorization".into(),
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
            creds.access_key_id,
            signed.join(";")
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example (IAM ListUsers, from the SigV4 documentation).
    #[test]
    fn matches_the_aws_documentation_example() {
        let headers = vec![
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("Host".to_string(), "iam.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let parts = RequestParts {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            payload_hash: &sha256_hex(b""),
        };
        let signed: Vec<String> = ["content-type", "host", "x-amz-date"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let canonical = canonical_request(&parts, &signed).unwrap();
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let sts = string_to_sign(
            "20150830T123600Z",
            "20150830/us-east-1/iam/aws4_request",
            &canonical,
        );
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(hmac(&key, sts.as_bytes())),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "ASIAAAAAAAAAAAAAAAAA".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("tok".into()),
        }
    }

    fn signed_request(body: &[u8], now: DateTime<Utc>) -> Vec<(String, String)> {
        let mut h = vec![("host".to_string(), "127.0.0.1:7400".to_string())];
        sign(
            &creds(),
            "eu-west-1",
            "POST",
            "/v1/tasks/abc/stop",
            "b=2&a=1",
            &mut h,
            Some(body),
            now,
        );
        h
    }

    fn check(
        h: &[(String, String)],
        path: &str,
        body: &[u8],
        now: DateTime<Utc>,
        secret: &str,
    ) -> Result<(), SigError> {
        let auth = parse_authorization(header(h, "authorization").unwrap())?;
        let ph = payload_hash_of(h, body);
        let parts = RequestParts {
            method: "POST",
            path,
            query: "a=1&b=2",
            headers: h,
            payload_hash: &ph,
        };
        let d = precheck(&auth, &parts, body, now)?;
        verify(&auth, &parts, &d, secret)
    }

    #[test]
    fn sign_then_verify_and_tampering() {
        let now = Utc::now();
        let h = signed_request(b"{}", now);
        check(&h, "/v1/tasks/abc/stop", b"{}", now, "s3cr3t").unwrap();
        assert_eq!(
            check(&h, "/v1/tasks/abd/stop", b"{}", now, "s3cr3t"),
            Err(SigError::Signature)
        );
        assert_eq!(
            check(&h, "/v1/tasks/abc/stop", b"{\"x\":1}", now, "s3cr3t"),
            Err(SigError::PayloadHash)
        );
        assert_eq!(
            check(&h, "/v1/tasks/abc/stop", b"{}", now, "wrong"),
            Err(SigError::Signature)
        );
        let later = now + chrono::Duration::minutes(6);
        assert!(matches!(
            check(&h, "/v1/tasks/abc/stop", b"{}", later, "s3cr3t"),
            Err(SigError::Skew(_))
        ));
        let earlier = now - chrono::Duration::minutes(4);
        check(&h, "/v1/tasks/abc/stop", b"{}", earlier, "s3cr3t").unwrap();
        // An unsigned security token header is refused.
        let mut h2 = h.clone();
        let auth = header(&h2, "authorization")
            .unwrap()
            .replace(";x-amz-security-token", "");
        h2.retain(|(n, _)| n != "authorization");
        h2.push(("authorization".into(), auth));
        assert!(matches!(
            check(&h2, "/v1/tasks/abc/stop", b"{}", now, "s3cr3t"),
            Err(SigError::MissingHeader(_))
        ));
    }

    #[test]
    fn parses_and_rejects_headers() {
        let ok = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/berth/aws4_request, SignedHeaders=host;range;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";
        let p = parse_authorization(ok).unwrap();
        assert_eq!(p.access_key_id, "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(p.signed_headers, vec!["host", "range", "x-amz-date"]);
        for bad in [
            "",
            "AWS4-HMAC-SHA256",
            "Bearer abc",
            "AWS4-HMAC-SHA256 Credential=A/20130524/us-east-1/berth/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/2013052/us-east-1/berth/aws4_request, SignedHeaders=host, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/berth/aws4_request, SignedHeaders=Host, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/berth/aws4_request, Credential=x, SignedHeaders=host, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_query_normalizes() {
        assert_eq!(canonical_query("b=2&a=x%20y&c"), "a=x%20y&b=2&c=");
        assert_eq!(canonical_query("a=%7e"), "a=~");
        assert_eq!(canonical_uri("/v1/services/a b"), "/v1/services/a%20b");
        assert_eq!(canonical_uri("/v1/x%2Fy"), "/v1/x%252Fy");
        assert_eq!(percent::decode("%"), b"%");
        assert_eq!(percent::decode("%4"), b"%4");
        assert_eq!(percent::decode("%41"), b"A");
    }
}
