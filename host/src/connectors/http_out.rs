//! Outgoing HTTP for plugins, through connections the operator configures.
//!
//! Invariant: no packet leaves for an address the connection does not allow. Every hop (the
//! first request and each redirect, which the host follows itself) is checked before it is
//! sent: the origin against the allow-list, then every address its host resolves to against
//! the private, loopback and link-local ranges (unless `allow_private`). The request then goes
//! to exactly the addresses that were checked, so a second DNS answer cannot swap them.
//!
//! Invariant: an exchange ends by the call's deadline or its force stop, whatever the server
//! does (a body trickled one byte at a time included): it runs as a future on a small runtime
//! of its own, raced against the deadline and the stop, and is dropped (its connection
//! closed) when either comes first. An exchange cut short is an error, never a response.
//! Headers the host owns (`Host`, framing, hop-by-hop) are refused; in a dry run, so are a
//! body and method overrides.

use crate::stop::ForceStop;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// What one HTTP connection allows (the `[connections.NAME]` table with `type = "http"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRules {
    /// Allowed origins: `scheme://host[:port]`, where host may start with `*.` to allow its
    /// subdomains, e.g. `http://*.internal.example:8080`. The port defaults to the scheme's.
    pub allow: Vec<String>,
    /// Allow addresses in private, loopback and link-local ranges (refused by default).
    #[serde(default)]
    pub allow_private: bool,
    /// Time limit of one request, redirects included, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body accepted, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// How many redirects are followed.
    #[serde(default = "default_max_redirects")]
    pub max_redirects: u32,
    /// PEM file of extra root certificates to trust for https (an internal CA), besides the
    /// system's.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

impl HttpRules {
    /// Rules allowing `origins` (see [`HttpRules::allow`]), everything else at its default.
    pub fn allowing(origins: impl IntoIterator<Item = impl Into<String>>) -> Self {
        HttpRules {
            allow: origins.into_iter().map(Into::into).collect(),
            allow_private: false,
            timeout_ms: default_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
            max_redirects: default_max_redirects(),
            ca_cert: None,
        }
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_response_bytes() -> u64 {
    10 << 20
}
fn default_max_redirects() -> u32 {
    5
}

/// One allowed origin, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    /// Lower case; with `wildcard`, the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: u16,
}

impl Origin {
    fn parse(pattern: &str) -> Result<Origin, String> {
        let bad = |why: &str| format!("allowed origin '{pattern}': {why}");
        let (scheme, rest) = pattern
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('@') || rest.is_empty() {
            return Err(bad("only scheme, host and port are allowed"));
        }
        // Split host and port, keeping bracketed IPv6 hosts intact.
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, host),
        };
        if host.is_empty() || host.contains('*') {
            return Err(bad("a wildcard may only be a leading '*.'"));
        }
        Ok(Origin {
            scheme: scheme.into(),
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    fn allows(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|head| head.ends_with('.') && head.len() > 1)
        } else {
            host == self.host
        };
        url.scheme() == self.scheme && host_ok && url.port_or_known_default() == Some(self.port)
    }
}

/// Whether `ip` is in a range a plugin may not reach without `allow_private`: loopback,
/// private, link-local, shared (CGNAT), unspecified, multicast and broadcast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
        }
    }
}

/// An error and its causes, one after the other: reqwest's own message alone does not say
/// *why* a request failed (a refused connection, an untrusted certificate).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// An HTTP request as a plugin sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request failed (an HTTP error status is a response, not this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("refused during a read-only call: {0}")]
    ReadOnly(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("response too large: {0}")]
    TooLarge(String),
    #[error("transport: {0}")]
    Transport(String),
}

pub struct HttpConnection {
    rules: HttpRules,
    origins: Vec<Origin>,
    roots: Vec<reqwest::Certificate>,
}

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// Headers the host sets itself: a plugin may not forge the destination (`Host`) or the
/// message's framing and connection handling.
const HOST_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "proxy-authorization",
    "expect",
];

/// Headers that turn a GET into a write on servers that honour them: refused in dry runs.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The runtime every exchange runs on (two threads: exchanges mostly wait).
static EXCHANGES: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("plover-http")
        .enable_all()
        .build()
        .expect("building the HTTP runtime")
});

/// Refuse headers a plugin may not send, naming the first.
fn check_headers(headers: &[(String, String)], read_only: bool) -> Result<(), HttpError> {
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(HttpError::InvalidArgument(format!(
                "header name {:?} is not a valid token",
                crate::model::truncated(name, 64)
            )));
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(HttpError::InvalidArgument(format!(
                "the value of header '{name}' contains a line break or NUL"
            )));
        }
        if HOST_HEADERS.contains(&lower.as_str()) {
            return Err(HttpError::InvalidArgument(format!(
                "header '{name}' is the host's to set"
            )));
        }
        if read_only && METHOD_OVERRIDES.contains(&lower.as_str()) {
            return Err(HttpError::ReadOnly(format!(
                "header '{name}' could turn the request into a write; refused during plan and validate"
            )));
        }
    }
    Ok(())
}

impl HttpConnection {
    pub fn new(rules: HttpRules) -> Result<Self, String> {
        let origins = rules
            .allow
            .iter()
            .map(|p| Origin::parse(p))
            .collect::<Result<_, _>>()?;
        let roots = match &rules.ca_cert {
            None => vec![],
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| format!("ca_cert {}: {e}", path.display()))?;
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("ca_cert {}: {e}", path.display()))?
            }
        };
        Ok(HttpConnection {
            rules,
            origins,
            roots,
        })
    }

    /// Check one hop and the addresses it would go to, before anything is sent.
    fn check(&self, url: &reqwest::Url) -> Result<Vec<SocketAddr>, HttpError> {
        if !self.origins.iter().any(|o| o.allows(url)) {
            return Err(HttpError::Denied(format!(
                "{} is not an origin this connection allows",
                url.origin().ascii_serialization()
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| HttpError::InvalidArgument(format!("{url} has no host")))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (bare, port)
                .to_socket_addrs()
                .map_err(|e| HttpError::Transport(format!("resolving {bare}: {e}")))?
                .collect(),
        };
        if !self.rules.allow_private
            && let Some(a) = addrs.iter().find(|a| is_private(a.ip()))
        {
            return Err(HttpError::Denied(format!(
                "{host} resolves to {}, a private, loopback or link-local address this connection does not allow",
                a.ip()
            )));
        }
        if addrs.is_empty() {
            return Err(HttpError::Transport(format!("{host} has no address")));
        }
        Ok(addrs)
    }

    /// Send `request`, following allowed redirects, within the connection's time limit and
    /// `deadline`, ending at once if `stop` is raised. `read_only` allows GET and HEAD only,
    /// without a body or a method override.
    pub fn send(
        &self,
        request: HttpRequest,
        read_only: bool,
        deadline: Instant,
        stop: &ForceStop,
    ) -> Result<HttpResponse, HttpError> {
        let method = request.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(HttpError::InvalidArgument(format!(
                "method '{}' (allowed: {})",
                crate::model::truncated(&request.method, 16),
                METHODS.join(", ")
            )));
        }
        if read_only && !matches!(method.as_str(), "GET" | "HEAD") {
            return Err(HttpError::ReadOnly(format!(
                "{method} {}: only GET and HEAD during plan and validate",
                request.url
            )));
        }
        if read_only && !request.body.is_empty() {
            return Err(HttpError::ReadOnly(format!(
                "{method} {}: a request during plan and validate carries no body",
                request.url
            )));
        }
        check_headers(&request.headers, read_only)?;
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidArgument(format!("url '{}': {e}", request.url)))?;
        let ends = deadline.min(Instant::now() + Duration::from_millis(self.rules.timeout_ms));
        EXCHANGES.block_on(async {
            tokio::select! {
                r = self.exchange(method, url, request.headers, request.body, ends) => r,
                why = ended(ends, stop) => Err(HttpError::Timeout(why)),
            }
        })
    }

    /// The request and its redirects, up to the whole response body.
    async fn exchange(
        &self,
        mut method: String,
        mut url: reqwest::Url,
        headers: Vec<(String, String)>,
        mut body: Vec<u8>,
        ends: Instant,
    ) -> Result<HttpResponse, HttpError> {
        let mut redirects = 0;
        loop {
            let addrs = self.check(&url)?;
            let host = url.host_str().unwrap_or_default().to_string();
            let mut client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .resolve_to_addrs(&host, &addrs);
            for root in &self.roots {
                client = client.add_root_certificate(root.clone());
            }
            let client = client
                .build()
                .map_err(|e| HttpError::Transport(with_causes(&e)))?;
            let mut builder = client.request(method.parse().expect("one of METHODS"), url.clone());
            for (name, value) in &headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            if !body.is_empty() {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(|e| {
                if e.is_builder() {
                    HttpError::InvalidArgument(with_causes(&e))
                } else {
                    HttpError::Transport(format!("{url}: {}", with_causes(&e)))
                }
            })?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(reqwest::header::LOCATION)
            {
                redirects += 1;
                if redirects > self.rules.max_redirects {
                    return Err(HttpError::Denied(format!(
                        "more than {} redirects",
                        self.rules.max_redirects
                    )));
                }
                let location = location
                    .to_str()
                    .map_err(|_| HttpError::Transport("a redirect Location is not text".into()))?;
                url = url
                    .join(location)
                    .map_err(|e| HttpError::Transport(format!("redirect to '{location}': {e}")))?;
                // As browsers do: 303 (and 301/302 after a POST) continue as a GET.
                if status.as_u16() == 303 || (status.as_u16() <= 302 && method == "POST") {
                    method = "GET".into();
                    body.clear();
                }
                if Instant::now() >= ends {
                    return Err(HttpError::Timeout(format!("no answer from {url} in time")));
                }
                continue;
            }
            return self.read(response).await;
        }
    }

    async fn read(&self, mut response: reqwest::Response) -> Result<HttpResponse, HttpError> {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let limit = self.rules.max_response_bytes;
        let mut body = vec![];
        // Chunk by chunk: a body that breaks off is an error, not a short response.
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| HttpError::Transport(format!("reading the body: {}", with_causes(&e))))?
        {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > limit {
                return Err(HttpError::TooLarge(format!(
                    "the body is larger than this connection's {limit} bytes"
                )));
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// Resolves when `ends` passes or `stop` is raised, saying which.
async fn ended(ends: Instant, stop: &ForceStop) -> String {
    loop {
        if stop.is_triggered() {
            return "the call was stopped while waiting for the server".into();
        }
        let left = ends.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return "the exchange did not finish by the call's deadline or the connection's time limit".into();
        }
        tokio::time::sleep(left.min(Duration::from_millis(10))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(allow: &[&str], allow_private: bool) -> HttpConnection {
        HttpConnection::new(HttpRules {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            allow_private,
            timeout_ms: 1000,
            max_response_bytes: 1024,
            max_redirects: 2,
            ca_cert: None,
        })
        .unwrap()
    }

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn origins_match_scheme_host_and_port_with_leading_wildcards() {
        let tls = conn(&["https://secure.example.com"], false);
        assert!(
            tls.origins
                .iter()
                .any(|o| o.allows(&url("https://secure.example.com/x")))
        );
        assert!(
            !tls.origins
                .iter()
                .any(|o| o.allows(&url("http://secure.example.com/x"))),
            "https does not allow plain http"
        );
        let c = conn(
            &["http://api.example.com", "http://*.internal.example:8080"],
            false,
        );
        let allowed = |u| c.origins.iter().any(|o| o.allows(&url(u)));
        assert!(allowed("http://api.example.com/v1?q=1"));
        assert!(allowed("http://API.example.com:80/"));
        assert!(!allowed("http://api.example.com:8080/"), "another port");
        assert!(!allowed("http://evil-api.example.com/"));
        assert!(allowed("http://a.b.internal.example:8080/"));
        assert!(
            !allowed("http://internal.example:8080/"),
            "the bare suffix is not a subdomain"
        );
        assert!(!allowed("http://xinternal.example:8080/"));
        assert!(!allowed("ftp://api.example.com/"));
    }

    #[test]
    fn bad_origin_patterns_are_refused_with_the_reason() {
        for bad in [
            "api.example.com",
            "http://a.*.example",
            "http://x/path",
            "gopher://x",
            "http://x:port",
        ] {
            assert!(
                HttpConnection::new(HttpRules {
                    allow: vec![bad.into()],
                    allow_private: false,
                    timeout_ms: 1,
                    max_response_bytes: 1,
                    max_redirects: 0,
                    ca_cert: None,
                })
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn private_loopback_and_link_local_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn refusals_happen_before_any_connection() {
        // None of these addresses is contacted: each is refused by the checks alone.
        let c = conn(
            &[
                "http://api.example.com",
                "http://10.0.0.7",
                "http://localhost:9",
            ],
            false,
        );
        let far = Instant::now() + Duration::from_secs(5);
        let stop = ForceStop::new();
        let get = |u: &str| HttpRequest {
            method: "GET".into(),
            url: u.into(),
            headers: vec![],
            body: vec![],
        };
        assert!(matches!(
            c.send(get("http://other.example.com/"), false, far, &stop),
            Err(HttpError::Denied(_))
        ));
        assert!(
            matches!(c.send(get("http://10.0.0.7/"), false, far, &stop), Err(HttpError::Denied(m)) if m.contains("private"))
        );
        assert!(
            matches!(c.send(get("http://localhost:9/"), false, far, &stop), Err(HttpError::Denied(m)) if m.contains("127.0.0.1") || m.contains("::1"))
        );
        let mut post = get("http://api.example.com/");
        post.method = "POST".into();
        assert!(matches!(
            c.send(post, true, far, &stop),
            Err(HttpError::ReadOnly(_))
        ));
        let mut odd = get("http://api.example.com/");
        odd.method = "CONNECT".into();
        assert!(matches!(
            c.send(odd, false, far, &stop),
            Err(HttpError::InvalidArgument(_))
        ));
    }
}
