//! The web console in a real browser (headless Chromium over WebDriver) against the real
//! server: sign in, plan a kv-copy from the form, dry-run it, run it and watch it finish live,
//! download its results; cancel, retry and roll back; what a viewer sees; CSRF and sessions;
//! an event stream dropped mid-job; a partial migration's failures, recovery actions and the
//! retry of its failed objects. Screenshots land in `target/console-screenshots` (or in
//! `docs/` with `PLOVER_SCREENSHOTS=1`, to refresh the ones the README shows).

use super::common::{ADMIN, Server, plugin_dir};
use super::contract_0_2::{import, upload_tolerant_copy};
use plover_tests::browser::{Browser, screenshot_dir};
use serde_json::{Value, json};

fn server() -> (Server, tempfile::TempDir, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    (Server::start(data.path(), plugins.path()), data, plugins)
}

/// Sign in through the page with `token`.
fn sign_in(b: &Browser, s: &Server, token: &str) {
    b.goto(&format!("{}/", s.url));
    let input = b.find("#token");
    b.type_into(&input, token);
    b.click(&b.find("form button[type=submit]"));
    b.find("#nav a");
}

/// Wait until the status badge of the page says `status`.
fn wait_status(b: &Browser, status: &str) {
    b.wait_for(&format!("status {status}"), || {
        (b.text_of(".state .badge")
            .trim_start_matches(|c: char| !c.is_alphabetic())
            == status)
            .then_some(())
    });
}

fn click_action(b: &Browser, action: &str) {
    b.click(&b.find(&format!("button[data-action={action}]")));
}

fn confirm(b: &Browser) {
    b.click(&b.find("#confirm-ok"));
}

fn save_screenshot(b: &Browser, name: &str) {
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_dir().join(name), png).unwrap();
}

fn stepper(s: &Server, steps: Value, options: Value) -> String {
    s.create(&json!({
        "handler": "stepper", "parameters": { "steps": steps },
        "grants": { "data": "data" }, "options": options
    }))
}

#[test]
fn an_operator_plans_dry_runs_and_runs_a_kv_copy_and_downloads_its_results() {
    let (s, _d, _p) = server();
    let lines: String = (0..300)
        .map(|i| format!("{{\"key\": \"s/{i:04}\", \"value\": {{\"user\": {i}}}}}\n"))
        .collect();
    let imported = s
        .http
        .post(s.api("/buckets/console-src/import"))
        .bearer_auth(ADMIN)
        .body(lines)
        .send()
        .unwrap();
    assert_eq!(imported.status(), 200);
    let b = Browser::start(1280, 900);
    sign_in(&b, &s, ADMIN);
    b.click(&b.find("#nav a[href='#/new']"));
    b.find("#n-handler option");
    let handler: String = b
        .js(
            "return [...document.querySelectorAll('#n-handler option')].map(o => o.value).find(v => v.startsWith('kv-copy@'))",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_string();
    b.select("#n-handler", &handler);
    b.type_into(&b.find("#n-params"), r#"{"prefix": "s/"}"#);
    let connections = b.all(".grant .g-connection");
    b.type_into(&connections[0], "console-src");
    b.type_into(&connections[1], "console-dst");
    b.type_into(&b.find("#n-options"), r#"{"batch_size": 10}"#);
    b.click(&b.find("form button[type=submit]"));
    wait_status(&b, "planned");
    let id = b.wait_for("the job page", || {
        b.js("return location.hash", json!([]))
            .as_str()
            .and_then(|h| h.strip_prefix("#/jobs/").map(str::to_string))
    });

    click_action(&b, "validate");
    b.wait_for("the dry run's verdict", || {
        b.text_of(".card h3 + div").contains("passed").then_some(())
    });
    click_action(&b, "execute");
    wait_status(&b, "completed");
    b.wait_for("the bar at 100 %", || {
        (b.text_of(".progress .pct") == "100.0 %").then_some(())
    });
    // What arrived live over the event stream, after the page was opened.
    let seen = b.js(
        "return window.ploverConsole.seen().map(e => e[1])",
        json!([]),
    );
    let kinds: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for kind in ["state", "progress", "objects", "log", "final"] {
        assert!(kinds.contains(&kind), "no live {kind} event: {kinds:?}");
    }
    assert_eq!(
        b.all(".objects tbody tr").len(),
        100,
        "the first page of results"
    );
    let (_, logs) = s.get(&format!("/migrations/{id}/logs?limit=1000"), ADMIN);
    let kept = logs["items"].as_array().unwrap().len();
    assert!(kept > 0);
    assert_eq!(b.all(".log .line").len(), kept, "every kept log line shown");
    assert!(
        b.text_of(".stats").contains("300"),
        "{}",
        b.text_of(".stats")
    );

    // The export the console offers: every result once, with a header row.
    b.click(&b.find("a[href$='/export/objects.csv']"));
    let csv = String::from_utf8(b.downloaded(&format!("{id}-objects.csv"))).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "index,step,name,type,status,duration_micros,error,at"
    );
    assert_eq!(rows.len(), 301, "a row per copied key");
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.contains(",copy,s/") && r.contains(",success,"))
    );
    // The copied keys are in the target bucket, as the API lists it.
    let (_, page) = s.get("/buckets/console-dst/entries?limit=1000", ADMIN);
    assert_eq!(page["items"].as_array().unwrap().len(), 300);
}

#[test]
fn cancel_retry_and_rollback_from_the_console_with_screenshots() {
    let (s, _d, _p) = server();
    let b = Browser::start(1280, 900);
    sign_in(&b, &s, ADMIN);
    // A long one, cancelled while it runs.
    let long = stepper(
        &s,
        json!([{ "id": "load", "batches": 80, "batch_ms": 100, "per_batch": 3 }]),
        json!({}),
    );
    b.goto(&format!("{}/#/jobs/{long}", s.url));
    wait_status(&b, "planned");
    click_action(&b, "execute");
    wait_status(&b, "executing");
    b.wait_for("progress", || {
        let pct: f64 = b
            .text_of(".progress .pct")
            .trim_end_matches(" %")
            .parse()
            .unwrap_or(0.0);
        (pct >= 15.0).then_some(())
    });
    save_screenshot(&b, "console-running.png");
    click_action(&b, "cancel");
    confirm(&b);
    wait_status(&b, "cancelled");
    assert_eq!(s.job(&long)["status"], "cancelled");

    // One that fails: retried from the page, then rolled back.
    let failing = stepper(
        &s,
        json!([
            { "id": "extract", "batches": 3, "per_batch": 2 },
            { "id": "transform", "after": ["extract"], "fail": "always" }
        ]),
        json!({ "auto_rollback": false, "retry": { "attempts": 1 } }),
    );
    b.goto(&format!("{}/#/jobs/{failing}", s.url));
    wait_status(&b, "planned");
    click_action(&b, "execute");
    wait_status(&b, "failed");
    let errors = b.text_of("#err-h + ul");
    assert!(
        errors.contains("step-failed") && errors.contains("transform"),
        "{errors}"
    );
    assert!(
        errors.contains("Next:"),
        "what to do next is shown: {errors}"
    );
    save_screenshot(&b, "console-failed.png");
    let errors_before = s.job(&failing)["errors"].as_array().unwrap().len();
    click_action(&b, "retry");
    b.wait_for("the retry to fail again", || {
        let job = s.job(&failing);
        (job["status"] == "failed" && job["errors"].as_array().unwrap().len() > errors_before)
            .then_some(())
    });
    wait_status(&b, "failed");
    click_action(&b, "rollback");
    confirm(&b);
    wait_status(&b, "rolled-back");

    // And one that simply completes, so the list shows the usual mix.
    let quick = stepper(
        &s,
        json!([{ "id": "copy", "batches": 4, "per_batch": 5 }]),
        json!({}),
    );
    assert_eq!(
        s.post(&format!("/migrations/{quick}/execute"), ADMIN, &json!({}))
            .0,
        202
    );
    s.wait_for(&quick, |j| j["status"] == "completed");

    b.goto(&format!("{}/#/", s.url));
    b.wait_for("the list", || {
        (b.all("table.jobs tbody tr[data-id]").len() == 3).then_some(())
    });
    let list = b.text_of("table.jobs");
    for status in ["rolled-back", "cancelled", "completed"] {
        assert!(list.contains(status), "{status} in {list}");
    }
    save_screenshot(&b, "console-list.png");
    // A narrow window keeps the page usable: nothing wider than the window but the tables,
    // which scroll in their own boxes.
    b.resize(420, 900);
    b.goto(&format!("{}/#/jobs/{failing}", s.url));
    wait_status(&b, "rolled-back");
    let overflow = b.js(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        json!([]),
    );
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page overflows by {overflow}px"
    );
}

#[test]
fn a_viewer_sees_no_mutating_buttons_and_requests_without_the_csrf_token_are_refused() {
    let (s, _d, _p) = server();
    let id = stepper(&s, json!([{ "id": "a", "batches": 2 }]), json!({}));
    let (_, viewer) = s.post(
        "/tokens",
        ADMIN,
        &json!({ "name": "watcher", "role": "viewer" }),
    );
    let viewer = viewer["token"].as_str().unwrap().to_string();
    let b = Browser::start(1280, 900);
    sign_in(&b, &s, &viewer);
    assert!(
        b.all("#nav a[href='#/new']").is_empty(),
        "no New migration for a viewer"
    );
    b.goto(&format!("{}/#/jobs/{id}", s.url));
    wait_status(&b, "planned");
    assert!(
        b.all("button[data-action]").is_empty(),
        "a viewer gets no action buttons"
    );
    assert!(b.text_of(".actions").contains("Viewers can watch"));
    b.goto(&format!("{}/#/", s.url));
    b.find("table.jobs tbody tr[data-id]");
    assert!(b.all("#try-it").is_empty());

    // An admin's session: a POST without the session's CSRF token is refused, one with it is
    // not; the token never reaches the page's storage or its URLs.
    b.click(&b.find("#who button"));
    b.find("#token");
    sign_in(&b, &s, ADMIN);
    let forged = b.js_async(
        "const done = arguments[arguments.length - 1];
         fetch(arguments[0], { method: 'POST', credentials: 'same-origin' })
           .then(async r => done([r.status, (await r.json()).code]));",
        json!([format!("/api/v1/migrations/{id}/execute")]),
    );
    assert_eq!(forged, json!([403, "csrf"]));
    assert_eq!(
        s.job(&id)["status"],
        "planned",
        "the forged request changed nothing"
    );
    let with_token = b.js_async(
        "const done = arguments[arguments.length - 1];
         fetch('/api/v1/session').then(r => r.json()).then(me =>
           fetch(arguments[0], { method: 'POST', headers: { 'X-CSRF-Token': me.csrf } }))
           .then(r => done(r.status));",
        json!([format!("/api/v1/migrations/{id}/execute")]),
    );
    assert_eq!(with_token, json!(202));
    let stored = b.js(
        "return JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie + location.href",
        json!([]),
    );
    assert!(!stored.as_str().unwrap().contains(ADMIN), "{stored}");

    // Revoking the token ends its sessions: the page is back at sign-in.
    let (status, _) = s.delete("/tokens/watcher", ADMIN);
    assert_eq!(status, 204);
    b.click(&b.find("#who button"));
    sign_in(&b, &s, ADMIN);
    let (_, other) = s.post(
        "/tokens",
        ADMIN,
        &json!({ "name": "short-lived", "role": "operator" }),
    );
    let other = other["token"].as_str().unwrap().to_string();
    b.click(&b.find("#who button"));
    sign_in(&b, &s, &other);
    assert!(b.text_of("#who").contains("short-lived"));
    assert_eq!(s.delete("/tokens/short-lived", ADMIN).0, 204);
    b.goto(&format!("{}/#/plugins", s.url));
    b.find("#token");
    let me = b.js_async(
        "const done = arguments[arguments.length - 1]; fetch('/api/v1/session').then(r => done(r.status));",
        json!([]),
    );
    assert_eq!(me, json!(401), "the session ended with its token");
}

#[test]
fn the_job_page_resumes_its_event_stream_after_drops_without_gaps_or_repeats() {
    let (s, _d, _p) = server();
    let id = stepper(
        &s,
        json!([{ "id": "a", "batches": 60, "batch_ms": 40, "per_batch": 2 }]),
        json!({}),
    );
    let b = Browser::start(1280, 900);
    sign_in(&b, &s, ADMIN);
    b.goto(&format!("{}/#/jobs/{id}", s.url));
    wait_status(&b, "planned");
    click_action(&b, "execute");
    for drops in 1..=3 {
        b.wait_for("some events", || {
            let n = b.js("return window.ploverConsole.seen().length", json!([]));
            (n.as_u64().unwrap() >= drops * 8).then_some(())
        });
        b.js("window.ploverConsole.reconnect()", json!([]));
    }
    wait_status(&b, "completed");
    let job = s.job(&id);
    let seen = b.js(
        // The final event carries no id of its own (it repeats the last one).
        "return window.ploverConsole.seen().filter(e => e[1] !== 'final').map(e => e[0])",
        json!([]),
    );
    let ids: Vec<u64> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let after = b.js("return window.ploverConsole.startedAfter", json!([]));
    let expected: Vec<u64> =
        (after.as_u64().unwrap() + 1..=job["last_event_seq"].as_u64().unwrap()).collect();
    assert_eq!(
        ids, expected,
        "every event once, in order, across three dropped streams"
    );
    assert!(
        b.text_of(".stats").contains("120"),
        "{}",
        b.text_of(".stats")
    );
}

#[test]
fn recovery_actions_show_and_a_partial_migration_retries_its_failed_objects_from_the_page() {
    let (s, _d, _p) = server();
    upload_tolerant_copy(&s);
    import(&s, "con-src", &[("a", "1"), ("b", "bad")]);
    let job = |parameters: Value| {
        s.create(&json!({
            "handler": "contract-v0-2-0", "parameters": parameters,
            "grants": { "source": "con-src", "target": "con-dst" },
            "options": { "auto_rollback": false },
        }))
    };
    let strict = job(json!({ "tolerate": false }));
    let tolerant = job(json!({}));
    let b = Browser::start(1280, 900);
    sign_in(&b, &s, ADMIN);

    b.goto(&format!("{}/#/jobs/{strict}", s.url));
    wait_status(&b, "planned");
    click_action(&b, "execute");
    wait_status(&b, "failed");
    let errors = b.text_of("#err-h + ul");
    assert!(
        errors.contains("fix-source") && errors.contains("correct the values that read 'bad'"),
        "the handler's recovery actions are shown: {errors}"
    );

    b.goto(&format!("{}/#/jobs/{tolerant}", s.url));
    wait_status(&b, "planned");
    click_action(&b, "execute");
    wait_status(&b, "partial");
    let cards = b.text_of(".stat.bad");
    assert!(cards.contains('1'), "one failed object: {cards}");
    let step = b.text_of("li.step[data-step=copy]");
    assert!(
        step.contains("estimated 40 ms") && step.contains("partial: some objects failed"),
        "the step shows its estimate and outcome: {step}"
    );
    import(&s, "con-src", &[("b", "2")]);
    click_action(&b, "retry-objects");
    wait_status(&b, "completed");
    let done = s.job(&tolerant);
    assert_eq!(
        (
            done["completed_objects"].as_u64(),
            done["failed_objects"].as_u64()
        ),
        (Some(2), Some(0))
    );
}
