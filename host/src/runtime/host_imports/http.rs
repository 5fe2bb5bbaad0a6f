//! `http`: outgoing requests through granted connections.

use super::{CallState, Refusal};
use crate::connectors::http_out::{HttpError, HttpRequest};
use crate::runtime::contract::v0_2::plover::migration::http;

impl http::Host for CallState {
    fn send(
        &mut self,
        binding: String,
        request: http::Request,
    ) -> wasmtime::Result<Result<http::Response, http::HttpError>> {
        let granted = match &self.job {
            Some(j) => j.grants.http(&binding).cloned(),
            None => Err("no job: describe may not send requests".into()),
        };
        let connection = match granted {
            Ok(c) => c,
            Err(why) => {
                return Ok(Err(http::HttpError::NotGranted(self.refuse(
                    "http",
                    Refusal::NotGranted,
                    why,
                ))));
            }
        };
        let request = HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        let target = format!("{} {}", request.method, request.url);
        let sent = connection.send(
            request,
            self.read_only_binding(&binding),
            self.wait_limit.deadline,
            &self.wait_limit.force_stop,
        );
        Ok(match sent {
            Ok(r) => Ok(http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(HttpError::ReadOnly(m)) => Err(http::HttpError::ReadOnly(self.refuse(
                "http",
                Refusal::ReadOnly,
                m,
            ))),
            Err(HttpError::Denied(m)) => Err(http::HttpError::Denied(self.refuse(
                "http",
                Refusal::Denied,
                format!("{target} on '{binding}': {m}"),
            ))),
            Err(HttpError::InvalidArgument(m)) => Err(http::HttpError::InvalidArgument(m)),
            Err(HttpError::Timeout(m)) => Err(http::HttpError::Timeout(m)),
            Err(HttpError::TooLarge(m)) => Err(http::HttpError::TooLarge(m)),
            Err(HttpError::Transport(m)) => Err(http::HttpError::Transport(m)),
        })
    }
}
