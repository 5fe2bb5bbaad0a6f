//! A real browser for the console's tests: headless Chromium from the distribution's packages,
//! driven over the W3C WebDriver protocol by a ChromeDriver this module starts on a loopback
//! port. Chromium runs with its background networking off and every host name unresolvable,
//! so it talks to nothing but the test's own server.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
    downloads: tempfile::TempDir,
}

/// An element of the page.
#[derive(Clone)]
pub struct Element(String);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// A new browser window of `width` × `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup.sh --services installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let started = Instant::now();
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-default-apps".into(),
            "--disable-domain-reliability".into(),
            "--disable-client-side-phishing-detection".into(),
            "--no-proxy-server".into(),
            // Nothing but loopback can be reached, even by name.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        } } });
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        let browser = Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
            downloads,
        };
        // Downloads of a headless window go to the directory only when told through CDP.
        browser.cdp(
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": browser.downloads.path().display().to_string() }),
        );
        browser
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    fn post(&self, path: &str, body: Value) -> Value {
        value_of(path, self.http.post(self.url(path)).json(&body))
    }

    fn get(&self, path: &str) -> Value {
        value_of(path, self.http.get(self.url(path)))
    }

    /// A Chrome DevTools command, through ChromeDriver.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
    }

    pub fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }));
    }

    /// Run `script` in the page (`arguments[0..]` are `args`); its return value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Run `script`, which calls `arguments[arguments.length - 1](result)` when done.
    pub fn js_async(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": args }))
    }

    /// Every element matching `css` now.
    pub fn all(&self, css: &str) -> Vec<Element> {
        self.post(
            "/elements",
            json!({ "using": "css selector", "value": css }),
        )
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| Element(e[ELEMENT].as_str().unwrap().to_string()))
        .collect()
    }

    /// The first element matching `css`, waiting up to `WAIT` for one.
    pub fn find(&self, css: &str) -> Element {
        self.wait_for(&format!("an element {css}"), || {
            self.all(css).into_iter().next()
        })
    }

    /// Poll `f` until it gives something, at most [`WAIT`].
    pub fn wait_for<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(started.elapsed() < WAIT, "waited {WAIT:?} for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn click(&self, e: &Element) {
        self.post(&format!("/element/{}/click", e.0), json!({}));
    }

    pub fn type_into(&self, e: &Element, text: &str) {
        self.post(&format!("/element/{}/clear", e.0), json!({}));
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }));
    }

    pub fn text(&self, e: &Element) -> String {
        self.get(&format!("/element/{}/text", e.0))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The text of the first element matching `css` (empty when there is none), read in one
    /// step: a live page may replace the element between a lookup and a read.
    pub fn text_of(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Choose `value` in the `<select>` matching `css`, telling the page it changed.
    pub fn select(&self, css: &str, value: &str) {
        self.js(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
             s.dispatchEvent(new Event('change', { bubbles: true }));",
            json!([css, value]),
        );
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self.get("/screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    }

    /// The files downloaded so far.
    pub fn downloads(&self) -> PathBuf {
        self.downloads.path().to_path_buf()
    }

    /// Wait for a finished download named `name`; its bytes.
    pub fn downloaded(&self, name: &str) -> Vec<u8> {
        let path: PathBuf = self.downloads.path().join(name);
        self.wait_for(&format!("the download {name}"), || {
            let partial = std::fs::read_dir(self.downloads.path())
                .unwrap()
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "crdownload"));
            (!partial && path.exists()).then(|| std::fs::read(&path).unwrap())
        })
    }
}

/// How long a wait for the page lasts at most.
pub const WAIT: Duration = Duration::from_secs(60);

/// Send a WebDriver command; its `value`, or a panic naming the driver's error.
fn value_of(path: &str, request: reqwest::blocking::RequestBuilder) -> Value {
    let answer: Value = request.send().unwrap().json().unwrap();
    if let Some(error) = answer["value"]["error"].as_str() {
        panic!("WebDriver {path}: {error}: {}", answer["value"]["message"]);
    }
    answer["value"].clone()
}

/// Where a test's screenshots go: `docs/` of the repository with `PLOVER_SCREENSHOTS=1` (to
/// refresh the committed ones), else a directory under the target dir.
pub fn screenshot_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = if std::env::var_os("PLOVER_SCREENSHOTS").is_some() {
        repo.join("docs")
    } else {
        repo.join("target").join("console-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
