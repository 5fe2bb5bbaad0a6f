//! The HTTP client the commands share: the server's address, the token, one error type.

use serde_json::Value;

/// A failed request or bad input: exit status 2 with the message.
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

/// An API error answer: the status and the body's `code` and `message`.
pub struct ApiError {
    pub status: reqwest::StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn message(&self) -> String {
        let message = self
            .body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("request failed");
        format!("{}: {message}", self.status)
    }
}

pub struct Client {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::blocking::Client,
}

impl Client {
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Send; an API error answer is kept apart from a failure to reach the server.
    pub fn try_send(
        &self,
        r: reqwest::blocking::RequestBuilder,
    ) -> Result<Result<Value, ApiError>, CliError> {
        let resp = r
            .send()
            .map_err(|e| CliError(format!("cannot reach {}: {e}", self.base)))?;
        let status = resp.status();
        let text = resp.text()?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(if status.is_success() {
            Ok(body)
        } else {
            Err(ApiError { status, body })
        })
    }

    /// Send, and turn an API error into its message.
    pub fn send(&self, r: reqwest::blocking::RequestBuilder) -> Result<Value, CliError> {
        self.try_send(r)?.map_err(|e| CliError(e.message()))
    }

    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::GET, path))
    }

    pub fn post(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::POST, path))
    }
}

/// `/plugins/NAME/VERSION` for `NAME@VERSION`.
pub fn plugin_path(spec: &str) -> Result<String, CliError> {
    let (name, version) = spec
        .split_once('@')
        .ok_or_else(|| CliError(format!("'{spec}': expected NAME@VERSION")))?;
    Ok(format!("/plugins/{name}/{version}"))
}
