//! Contract 0.2 over HTTP: a native 0.2 plugin's partial outcome, retry of its failed objects,
//! estimates and recovery actions; a queue name the host cannot serve refused; the bundled
//! kv-copy recording a bad value as a failed object; plugins of the 0.1 line through their whole
//! lifecycle on the 0.2 host.

use super::common::{ADMIN, Server, plugin_dir};
use plover_tests::artifacts;
use serde_json::{Value, json};

pub(super) fn import(s: &Server, bucket: &str, entries: &[(&str, &str)]) {
    let lines: String = entries
        .iter()
        .map(|(k, v)| format!("{}\n", json!({ "key": k, "value": v })))
        .collect();
    let r = s
        .http
        .post(s.api(&format!("/buckets/{bucket}/import")))
        .bearer_auth(ADMIN)
        .body(lines)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

pub(super) fn upload_tolerant_copy(s: &Server) {
    upload(s, artifacts::CONTRACT_V0_2_0);
}

fn upload(s: &Server, artifact: &str) {
    let r = s
        .http
        .post(s.api("/plugins"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/wasm")
        .body(std::fs::read(artifact).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

fn tolerant_copy(parameters: Value) -> Value {
    json!({
        "handler": "contract-v0-2-0",
        "parameters": parameters,
        "grants": { "source": "c2-src", "target": "c2-dst" },
    })
}

#[test]
fn a_0_2_plugin_ends_partial_its_failed_objects_are_listed_retried_and_rolled_back() {
    let data = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let s = Server::start(data.path(), plugins.path());
    upload_tolerant_copy(&s);
    let (_, listed) = s.get("/plugins/contract-v0-2-0/0.2.0", ADMIN);
    assert_eq!(listed["contract_version"], "0.2.0", "{listed}");
    import(&s, "c2-src", &[("a", "1"), ("b", "bad"), ("c", "3")]);

    let id = s.create(&tolerant_copy(json!({})));
    let planned = s.job(&id);
    assert_eq!(
        planned["estimated_duration_ms"], 50,
        "the plan's own estimate"
    );
    assert_eq!(planned["steps"][0]["estimated_duration_ms"], 40);
    let (status, _) = s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    assert_eq!(status, 202);
    let done = s.wait_for(&id, |j| {
        j["status"] != "executing" && j["status"] != "planned"
    });
    assert_eq!(done["status"], "partial", "{done}");
    assert_eq!(done["steps"][0]["outcome"], "partial");
    assert!(done["steps"][0]["duration_ms"].is_u64(), "{done}");
    assert_eq!(done["completed_objects"], 2);
    assert_eq!(done["failed_objects"], 1);
    assert!(done["errors"].as_array().unwrap().is_empty(), "{done}");
    let allowed = done["allowed_actions"].as_array().unwrap();
    assert!(allowed.contains(&json!("rollback")), "{allowed:?}");

    let (_, failed) = s.get(&format!("/migrations/{id}/objects?status=error"), ADMIN);
    let names: Vec<&str> = failed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"], "{failed}");
    let (_, page) = s.get("/migrations?status=partial", ADMIN);
    assert_eq!(page["total"], 1, "partial is a status lists filter by");
    assert!(
        s.metrics().contains("plover_jobs{state=\"partial\"} 1"),
        "the jobs gauge has a partial series"
    );

    // The operator fixes the value and retries only the failed object.
    let (status, body) = s.post(
        &format!("/migrations/{id}/retry-objects"),
        ADMIN,
        &json!({ "step": "nope" }),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid-request")),
        "{body}"
    );
    import(&s, "c2-src", &[("b", "2")]);
    let (status, retrying) = s.post(
        &format!("/migrations/{id}/retry-objects"),
        ADMIN,
        &json!({}),
    );
    assert_eq!(status, 202, "{retrying}");
    let from = retrying["steps"][0]["results_from"].as_u64().unwrap();
    let retried = s.wait_for(&id, |j| j["status"] == "completed");
    assert_eq!(retried["completed_objects"], 3);
    assert_eq!(retried["failed_objects"], 0);
    let (_, round) = s.get(
        &format!("/migrations/{id}/objects?after={}", from - 1),
        ADMIN,
    );
    let items = round["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only the failed object ran again: {round}");
    assert_eq!(
        (items[0]["name"].as_str(), items[0]["status"].as_str()),
        (Some("b"), Some("success"))
    );
    let (status, body) = s.post(
        &format!("/migrations/{id}/retry-objects"),
        ADMIN,
        &json!({}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("illegal-transition")),
        "{body}"
    );
    // The error `b` had is history; each object's latest result is what `current` shows.
    let names = |query: &str| -> Vec<String> {
        let (_, page) = s.get(&format!("/migrations/{id}/objects?{query}"), ADMIN);
        assert!(page["next_after"].is_null(), "one page: {page}");
        let mut names: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o["name"].as_str().unwrap(),
                    o["status"].as_str().unwrap()
                )
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("status=error"), ["b error"]);
    assert!(names("status=error&current=true").is_empty());
    assert_eq!(
        names("current=true"),
        ["a success", "b success", "c success"]
    );

    s.post(&format!("/migrations/{id}/rollback"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "rolled-back");
    let (_, left) = s.get("/buckets/c2-dst/entries", ADMIN);
    assert_eq!(left["items"].as_array().unwrap().len(), 0, "{left}");

    // A handler that does not tolerate a bad value fails the step with what to do next.
    import(&s, "c2-src", &[("b", "bad")]);
    let mut strict = tolerant_copy(json!({ "tolerate": false }));
    strict["options"] = json!({ "auto_rollback": false });
    let id = s.create(&strict);
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let failed = s.wait_for(&id, |j| j["status"] == "failed");
    let error = &failed["errors"][0];
    assert_eq!(error["kind"], "data-corruption", "{error}");
    assert_eq!(error["recovery"][0]["action"], "fix-source", "{error}");
    assert_eq!(error["recovery"][1]["action"], "rollback", "{error}");

    // A plan the handler refuses says what to change.
    let (status, body) = s.post(
        "/migrations",
        ADMIN,
        &tolerant_copy(json!({ "refuse": true })),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "handler-refused");
    assert_eq!(
        body["details"]["recovery"][0]["action"], "fix-parameters",
        "{body}"
    );

    // A queue name the host could not serve is refused by name, as the plugin's fault (it made
    // the plan); no job is made.
    let (_, before) = s.get("/migrations", ADMIN);
    let (status, body) = s.post(
        "/migrations",
        ADMIN,
        &tolerant_copy(json!({ "queue": "re index" })),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "plugin-failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("names worker queue \"re index\""),
        "{body}"
    );
    let (_, after) = s.get("/migrations", ADMIN);
    assert_eq!(after["total"], before["total"]);

    bundled_kv_copy_records_a_bad_value_and_retries_it(&s);
    plugins_of_the_0_1_line_run_their_whole_lifecycle(&s);
}

/// Plugins built against the frozen 0.1.0 and 0.1.1 folders, uploaded to the 0.2 host: plan,
/// execute to `completed`, and (0.1.1, whose step is reversible) roll back.
fn plugins_of_the_0_1_line_run_their_whole_lifecycle(s: &Server) {
    upload(s, artifacts::CONTRACT_V0_1_0);
    upload(s, artifacts::CONTRACT_V0_1_1);
    for (name, version) in [("contract-v0-1-0", "0.1.0"), ("contract-v0-1-1", "0.1.1")] {
        let (_, shown) = s.get(&format!("/plugins/{name}/{version}"), ADMIN);
        assert_eq!(shown["contract_version"], version, "{shown}");
    }
    let run = |handler: &str, kind: &str, source: &str, target: &str| {
        let id = s.create(&json!({
            "handler": handler,
            "kind": kind,
            "grants": { "source": source, "target": target },
        }));
        s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
        let done = s.wait_for(&id, |j| {
            j["status"] != "executing" && j["status"] != "planned"
        });
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["steps"][0]["outcome"], "complete", "{done}");
        id
    };
    let entries = |bucket: &str| -> Vec<(String, String)> {
        let (_, page) = s.get(&format!("/buckets/{bucket}/entries"), ADMIN);
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let text = |f: &str| e[f].as_str().unwrap().to_string();
                (text("key"), text("value"))
            })
            .collect()
    };

    import(s, "v010-src", &[("greeting", "hello")]);
    run("contract-v0-1-0", "old", "v010-src", "v010-dst");
    assert_eq!(entries("v010-dst"), [("greeting".into(), "HELLO".into())]);

    import(s, "v011-src", &[("a", "1"), ("b", "2")]);
    let id = run("contract-v0-1-1", "ttl-copy", "v011-src", "v011-dst");
    let (_, objects) = s.get(&format!("/migrations/{id}/objects"), ADMIN);
    assert_eq!(objects["items"].as_array().unwrap().len(), 2, "{objects}");
    assert_eq!(
        entries("v011-dst"),
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    s.post(&format!("/migrations/{id}/rollback"), ADMIN, &json!({}));
    s.wait_for(&id, |j| j["status"] == "rolled-back");
    assert!(entries("v011-dst").is_empty());
}

/// The bundled kv-copy (SDK-built, contract 0.2) with `on_bad_value: record`: the job ends
/// `partial` with the bad key listed, and `retry-objects` copies just that key once fixed.
fn bundled_kv_copy_records_a_bad_value_and_retries_it(s: &Server) {
    import(
        s,
        "kv2-src",
        &[
            ("s/1", r#"{"a":1}"#),
            ("s/2", "oops"),
            ("s/3", r#"{"a":3}"#),
        ],
    );
    let id = s.create(&json!({
        "handler": "kv-copy@^1",
        "kind": "kv-copy",
        "parameters": { "prefix": "s/", "set_fields": { "v": 2 }, "on_bad_value": "record" },
        "grants": { "source": "kv2-src", "target": "kv2-dst" },
    }));
    let plugin = s.job(&id)["plugin"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, shown) = s.get(&format!("/plugins/kv-copy/{plugin}"), ADMIN);
    assert_eq!(shown["contract_version"], "0.2.0", "{shown}");
    s.post(&format!("/migrations/{id}/execute"), ADMIN, &json!({}));
    let done = s.wait_for(&id, |j| {
        j["status"] != "executing" && j["status"] != "planned"
    });
    assert_eq!(done["status"], "partial", "{done}");
    assert_eq!(done["steps"][0]["outcome"], "partial");
    assert_eq!(
        done["steps"][1]["status"], "completed",
        "verify ran: {done}"
    );
    assert_eq!(done["failed_objects"], 1);
    let (_, failed) = s.get(&format!("/migrations/{id}/objects?status=error"), ADMIN);
    assert_eq!(failed["items"][0]["name"], "s/2", "{failed}");
    assert!(
        failed["items"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{failed}"
    );

    import(s, "kv2-src", &[("s/2", r#"{"a":2}"#)]);
    let (status, body) = s.post(
        &format!("/migrations/{id}/retry-objects"),
        ADMIN,
        &json!({ "step": "copy" }),
    );
    assert_eq!(status, 202, "{body}");
    let retried = s.wait_for(&id, |j| j["status"] == "completed");
    assert_eq!(retried["failed_objects"], 0, "{retried}");
    let (_, copied) = s.get("/buckets/kv2-dst/entries", ADMIN);
    let values: Vec<(&str, &str)> = copied["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        values,
        [
            ("s/1", r#"{"a":1,"v":2}"#),
            ("s/2", r#"{"a":2,"v":2}"#),
            ("s/3", r#"{"a":3,"v":2}"#)
        ]
    );
}
