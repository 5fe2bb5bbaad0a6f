//! The HTTP connector against servers these tests start on loopback: what a dry run may send,
//! deadlines and force stops however slow the server, cut-off bodies, the allow list, loopback
//! and redirect rules, and TLS verification.

use plover_host::connectors::{Connector, HttpConnection, HttpRules};
use plover_host::runtime::{PluginFailure, stats};
use plover_host::testing::{HarnessError, TestHarness};
use plover_tests::artifacts;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

mod support;
use support::*;

fn http_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || answer(stream));
        }
    });
    (base, hits)
}

/// Answer one request of [`http_server`]'s.
fn answer(mut stream: std::net::TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap_or(0);
    let mut length = 0usize;
    let mut headers = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        headers.push_str(&line);
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let (status, extra, body) = match path.as_str() {
        "/ok" => ("200 OK", String::new(), b"hello".to_vec()),
        "/to-ok" => ("302 Found", "Location: /ok\r\n".into(), vec![]),
        "/away" => (
            "302 Found",
            "Location: http://blocked.example/steal\r\n".into(),
            vec![],
        ),
        "/big" => ("200 OK", String::new(), vec![b'x'; 64 * 1024]),
        // Promise 1000 bytes, then send one every 200 ms.
        "/trickle" => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
            for _ in 0..1000 {
                if stream.write_all(b"t").is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            return;
        }
        // Promise 1000 bytes, send 10, hang up.
        "/dies" => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
            return;
        }
        "/echo-headers" => ("200 OK", String::new(), headers.into_bytes()),
        _ => ("404 Not Found", String::new(), vec![]),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn http_op(method: &str, url: &str, body: &str, headers: Value) -> Value {
    json!({ "op": "http", "binding": "api", "method": method, "url": url, "body": body, "headers": headers })
}

#[test]
fn http_in_a_dry_run_sends_nothing_that_could_write_and_the_host_owns_framing() {
    let (base, hits) = http_server();
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant_connector("api", http_connection(&base, true));
    let url = format!("{base}/echo-headers");
    let refusals: [(Value, &str); 6] = [
        (http_op("GET", &url, "a body", json!([])), "carries no body"),
        (
            http_op(
                "HEAD",
                &url,
                "",
                json!([["X-HTTP-Method-Override", "DELETE"]]),
            ),
            "could turn the request into a write",
        ),
        (
            http_op("GET", &url, "", json!([["Host", "internal.example"]])),
            "is the host's to set",
        ),
        (
            http_op("GET", &url, "", json!([["Transfer-Encoding", "chunked"]])),
            "is the host's to set",
        ),
        (
            http_op("GET", &url, "", json!([["x-evil", "a\r\nX-Injected: 1"]])),
            "contains a line break",
        ),
        (
            http_op("GET", &url, "", json!([["bad header", "1"]])),
            "is not a valid token",
        ),
    ];
    for (op, expected) in refusals {
        let before = hits.load(Ordering::SeqCst);
        let spec = ops_spec(&h, "validate", json!([op.clone()]));
        let plan = h.plan(&ops_spec(&h, "execute", json!([]))).unwrap();
        let outcome = h.validate(&spec, &plan);
        let text = match outcome {
            Ok(report) => report.findings[0].message.clone(),
            Err(e) => e.to_string(),
        };
        assert!(text.contains(expected), "{op}: {text}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            before,
            "{op}: nothing was sent"
        );
    }
    // A header line break is refused in execute too, clearly (not "builder error").
    let answers = execute_ops(
        &h,
        json!([http_op("POST", &url, "", json!([["x-evil", "a\r\nb"]]))]),
    );
    assert!(
        answers[0]["err"]
            .as_str()
            .unwrap()
            .contains("contains a line break"),
        "{answers:?}"
    );
    // And a plain GET in a dry run still goes through.
    let spec = ops_spec(&h, "validate", json!([http_op("GET", &url, "", json!([]))]));
    let plan = h.plan(&ops_spec(&h, "execute", json!([]))).unwrap();
    let report = h.validate(&spec, &plan).unwrap();
    assert!(
        report.findings[0].message.contains("x-probe: 1"),
        "{report:?}"
    );
}

#[test]
fn an_http_exchange_ends_at_the_deadline_or_a_force_stop_however_slow_the_server() {
    let (base, _) = http_server();
    let mut h = probe_with_deadline(std::time::Duration::from_secs(2));
    h.grant_connector("api", http_connection(&base, true));
    // A body trickled a byte every 200 ms for 200 s: the 2 s call deadline ends the exchange
    // and the call.
    let started = std::time::Instant::now();
    let spec = ops_spec(
        &h,
        "execute",
        json!([http_op("GET", &format!("{base}/trickle"), "", json!([]))]),
    );
    let plan = h.plan(&spec).unwrap();
    let outcome = h.execute(&spec, &plan.steps[0], None);
    let took = started.elapsed();
    assert!(
        matches!(&outcome, Err(HarnessError::Plugin(e)) if matches!(e.cause, PluginFailure::Deadline { .. })),
        "{outcome:?}"
    );
    assert!(took < std::time::Duration::from_secs(4), "{took:?}");

    // A force stop ends it at once, mid-body.
    let stop = h.force_stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        stop.trigger();
    });
    let started = std::time::Instant::now();
    let spec = ops_spec(
        &h,
        "execute",
        json!([http_op("GET", &format!("{base}/trickle"), "", json!([]))]),
    );
    let plan = h.plan(&spec).unwrap();
    let outcome = h.execute(&spec, &plan.steps[0], None);
    assert!(
        matches!(&outcome, Err(HarnessError::Plugin(e)) if e.cause == PluginFailure::ForceStopped),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_response_cut_off_mid_body_is_an_error_not_a_success() {
    let (base, _) = http_server();
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant_connector("api", http_connection(&base, true));
    let answers = execute_ops(
        &h,
        json!([http_op("GET", &format!("{base}/dies"), "", json!([]))]),
    );
    let err = answers[0]["err"].as_str().unwrap();
    assert!(
        err.contains("Transport") && err.contains("end of file before message length"),
        "{err}"
    );
}

#[test]
fn http_allow_list_loopback_and_redirects_are_enforced_before_connecting() {
    let (base, hits) = http_server();
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant_connector("local", http_connection(&base, true));
    h.grant_connector("strict", http_connection(&base, false));
    let get = |binding: &str, url: String| json!({ "op": "http", "binding": binding, "method": "GET", "url": url });
    let denied_before = stats::refusals("http", "denied");

    let answers = execute_ops(
        &h,
        json!([
            get("local", format!("{base}/ok")),
            get("local", format!("{base}/to-ok")),
            get("local", format!("{base}/away")),
            get("local", "http://not-allowed.example/".into()),
            get("local", "http://169.254.169.254/latest/meta-data".into()),
            get("local", format!("{base}/big")),
        ]),
    );
    assert_eq!(answers[0]["ok"], json!({ "status": 200, "body": "hello" }));
    assert_eq!(
        answers[1]["ok"],
        json!({ "status": 200, "body": "hello" }),
        "an allowed redirect is followed"
    );
    let away = answers[2]["err"].as_str().unwrap();
    assert!(
        away.contains("Denied") && away.contains("blocked.example"),
        "{away}"
    );
    assert!(answers[3]["err"].as_str().unwrap().contains("Denied"));
    assert!(
        answers[4]["err"].as_str().unwrap().contains("Denied"),
        "{}",
        answers[4]
    );
    assert!(answers[5]["err"].as_str().unwrap().contains("TooLarge"));
    // /ok, /to-ok + /ok, /away and /big reached the server; nothing else was sent anywhere.
    assert_eq!(hits.load(Ordering::SeqCst), 5);

    // Without allow_private, loopback is refused before any connection.
    let answers = execute_ops(&h, json!([get("strict", format!("{base}/ok"))]));
    let e = answers[0]["err"].as_str().unwrap();
    assert!(e.contains("Denied") && e.contains("127.0.0.1"), "{e}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        5,
        "the strict connection sent nothing"
    );
    assert!(stats::refusals("http", "denied") >= denied_before + 4);
    let logged = h.events.log_lines();
    assert!(
        logged
            .iter()
            .any(|l| l.starts_with("host refused (http)") && l.contains("/away")),
        "{logged:?}"
    );

    // During validate only GET and HEAD go out; a POST fails the dry run unsent.
    let spec = ops_spec(
        &h,
        "validate",
        json!([{ "op": "http", "binding": "local", "method": "POST", "url": format!("{base}/ok"), "body": "x" }]),
    );
    let plan = h.plan(&spec).unwrap();
    let err = h.validate(&spec, &plan).unwrap_err();
    assert!(
        matches!(&err, HarnessError::Plugin(e) if matches!(e.cause, PluginFailure::WriteDenied { .. })),
        "{err:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 5);
}

fn https_server(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let (acceptor, cert) = plover_tests::services::loopback_tls(dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Ok(mut tls) = acceptor.accept(stream) else {
                continue;
            };
            let mut reader = BufReader::new(&mut tls);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let body = "secure hello";
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, cert)
}

#[test]
fn https_origins_verify_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cert) = https_server(dir.path());
    let rules = |ca_cert: Option<std::path::PathBuf>| HttpRules {
        allow: vec![base.clone()],
        allow_private: true,
        timeout_ms: 5_000,
        max_response_bytes: 1024,
        max_redirects: 0,
        ca_cert,
    };
    let mut h = TestHarness::load(artifacts::CONNECTOR_PROBE).unwrap();
    h.grant_connector(
        "trusting",
        Connector::Http(Arc::new(HttpConnection::new(rules(Some(cert))).unwrap())),
    );
    h.grant_connector(
        "default",
        Connector::Http(Arc::new(HttpConnection::new(rules(None)).unwrap())),
    );
    let get = |binding: &str| json!({ "op": "http", "binding": binding, "method": "GET", "url": format!("{base}/") });
    let answers = execute_ops(&h, json!([get("trusting"), get("default")]));
    assert_eq!(
        answers[0]["ok"],
        json!({ "status": 200, "body": "secure hello" })
    );
    let untrusted = answers[1]["err"].as_str().unwrap();
    assert!(
        untrusted.contains("Transport") && untrusted.to_lowercase().contains("certificate"),
        "a certificate the connection does not trust is refused: {untrusted}"
    );
}
