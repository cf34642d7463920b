//! The CLI's HTTP client and its kubeconfig-like config file.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use berth_core::auth::sigv4::{self, Credentials};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CliConfig {
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7400";

pub fn config_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("berth");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".config").join("berth")
}

pub fn config_path() -> PathBuf {
    config_dir().join("config.json")
}

pub fn load_config() -> Option<CliConfig> {
    let text = std::fs::read_to_string(config_path()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Written by `berth up` so that a plain `berth get services` finds it (0600: it may hold a
/// token).
pub fn save_config(cfg: &CliConfig) -> anyhow::Result<PathBuf> {
    let dir = config_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = config_path();
    let tmp = dir.join("config.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(cfg)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    /// AWS SigV4 credentials from the environment (used when no explicit token is given).
    sigv4: Option<berth_core::auth::sigv4::Credentials>,
}

/// An error the server answered with (status + message), or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        details: Vec<Value>,
    },
    #[error("cannot reach berth at {endpoint}: {source} (is `berth up` running there? choose the server with --endpoint URL or BERTH_ENDPOINT, or the `endpoint` in {})", config_path().display())]
    Transport {
        endpoint: String,
        source: reqwest::Error,
    },
}

impl Client {
    pub fn new(endpoint: Option<String>, token: Option<String>) -> Self {
        let cfg = load_config();
        let endpoint = endpoint
            .or_else(|| cfg.as_ref().map(|c| c.endpoint.clone()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        // An explicit token wins; then AWS_ACCESS_KEY_ID/… (SigV4); then the config's token.
        let sigv4 = token
            .is_none()
            .then(berth_core::auth::sigv4::Credentials::from_env)
            .flatten();
        let token = token.or_else(|| cfg.and_then(|c| c.token).filter(|_| sigv4.is_none()));
        Client {
            http: reqwest::Client::new(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            sigv4,
        }
    }

    /// The bearer token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What to do after a 401: where a token comes from.
    fn unauthorized_hint(&self) -> String {
        let sent = match (&self.token, &self.sigv4) {
            (Some(_), _) => "the token sent was not accepted",
            (None, Some(_)) => "the AWS_ACCESS_KEY_ID signature was not accepted",
            (None, None) => "no token was sent",
        };
        format!(
            "hint: {sent} by {}. Pass --token TOKEN or set BERTH_TOKEN: on the machine that \
             runs `berth up`, `berth auth token` prints the admin token (kept in {}); an admin \
             mints one for you with `berth auth identity create NAME --role ROLE`",
            self.endpoint,
            config_path().display()
        )
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let bodyless = matches!(method.as_str(), "GET" | "HEAD" | "DELETE");
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.endpoint));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(c) = &self.sigv4 {
            // Bodies added later are re-signed by `send`; until then UNSIGNED-PAYLOAD.
            r = sign_builder(r, c, !bodyless);
        }
        r
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let r = match &self.sigv4 {
            Some(c) => sign_builder(r, c, false),
            None => r,
        };
        let resp = r.send().await.map_err(|source| ClientError::Transport {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status.is_success() {
            return Ok(v);
        }
        let message = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}: {v}"));
        let details = v["details"].as_array().cloned().unwrap_or_default();
        let message = match status.as_u16() {
            401 => format!("{message}\n{}", self.unauthorized_hint()),
            _ => message,
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
            details,
        })
    }

    /// A GET whose response the caller reads itself (streams: logs, watches, events).
    pub async fn raw_get(&self, path: &str) -> Result<reqwest::Response, reqwest::Error> {
        self.req(reqwest::Method::GET, path).send().await
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.req(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.req(reqwest::Method::DELETE, path)).await
    }
}

// ----- SigV4 request signing (AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY / _SESSION_TOKEN) -----

/// The region to sign for: `AWS_REGION`, `AWS_DEFAULT_REGION`, else us-east-1 (berth accepts
/// any).
pub fn region() -> String {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| sigv4::DEFAULT_REGION.to_string())
}

/// Sign a built request in place (SigV4 over its method, URL, host, content type and body).
pub fn sign_request(req: &mut reqwest::Request, creds: &Credentials, unsigned_payload: bool) {
    let url = req.url().clone();
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    let mut headers = vec![("host".to_string(), host.clone())];
    for (n, v) in req.headers() {
        if n.as_str() == "content-type" {
            if let Ok(v) = v.to_str() {
                headers.push((n.as_str().to_string(), v.to_string()));
            }
        }
    }
    let body: Option<Vec<u8>> = match req.body() {
        _ if unsigned_payload => None,
        None => Some(Vec::new()),
        Some(b) => b.as_bytes().map(<[u8]>::to_vec),
    };
    sigv4::sign(
        creds,
        &region(),
        req.method().as_str(),
        url.path(),
        url.query().unwrap_or(""),
        &mut headers,
        body.as_deref(),
        berth_core::model::now(),
    );
    let h = req.headers_mut();
    for (n, v) in headers {
        if n == "content-type" {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(n.as_bytes()),
            reqwest::header::HeaderValue::from_str(&v),
        ) {
            h.insert(n, v);
        }
    }
}

/// Sign a request builder. `unsigned_payload`: sign `UNSIGNED-PAYLOAD` (the body is not known
/// yet); otherwise the body as built (none counts as empty).
pub fn sign_builder(
    rb: reqwest::RequestBuilder,
    creds: &Credentials,
    unsigned_payload: bool,
) -> reqwest::RequestBuilder {
    let (client, req) = rb.build_split();
    match req {
        Ok(mut req) => {
            sign_request(&mut req, creds, unsigned_payload);
            reqwest::RequestBuilder::from_parts(client, req)
        }
        // An unbuildable request (a malformed URL) fails again when sent.
        Err(_) => client.get("http://invalid.invalid/"),
    }
}
