//! A real browser for the dashboard's end-to-end test: headless Chromium
//! driven by chromedriver over the W3C WebDriver HTTP API (plain JSON over
//! reqwest, so nothing beyond the Debian packages `chromium` and
//! `chromium-driver` is needed, and no network). scripts/test.sh installs them.

use crate::{free_port, wait_port};
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn find(candidates: &[&str], what: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{what} is not installed: run scripts/test.sh, which installs it (apt-get install chromium chromium-driver)")
        })
}

/// A chromedriver process and one headless Chromium session.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium with a
    /// `width`×`height` window and Chinese as its language.
    pub async fn start(width: u32, height: u32) -> Self {
        let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"], "chromium");
        let driver_bin = find(
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
            "chromedriver",
        );
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        wait_port(port, Duration::from_secs(20));
        // Every WebDriver command answers within seconds; a stuck one fails the test instead of hanging it.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--hide-scrollbars", "--lang=zh-CN", "--force-device-scale-factor=1",
                         format!("--window-size={width},{height}")]
            }
        }}});
        let r: Value = http
            .post(format!("http://127.0.0.1:{port}/session"))
            .json(&caps)
            .send()
            .await
            .expect("create WebDriver session")
            .json()
            .await
            .expect("session reply");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session from chromedriver: {r}"))
            .to_owned();
        let mut b = Self { driver, http, session };
        b.session = format!("http://127.0.0.1:{port}/session/{}", b.session);
        b
    }

    async fn try_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        tracing::debug!(path, "WebDriver command");
        let r = req.send().await.map_err(|e| format!("WebDriver {path}: {e}"))?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| format!("WebDriver {path}: {e}"))?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("WebDriver {path}: {status} {v}"))
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Loads `url`.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Waits until `script` returns something truthy, and returns it; panics with `what` after `timeout`.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script, args.clone()).await;
            let truthy = !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0));
            if truthy {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first element matching a CSS selector (WebDriver reference).
    pub async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Clicks an element as a user would (scrolled into view, real pointer events).
    /// The page redraws itself on live updates, so an element found a moment
    /// ago may be gone: the click is retried on a fresh lookup.
    pub async fn click(&self, css: &str) {
        let mut last = String::new();
        for _ in 0..5 {
            let id = self.element(css).await;
            match self
                .try_call(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({})))
                .await
            {
                Ok(_) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("click {css}: {last}");
    }

    /// Clears an input and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/clear"), Some(json!({})))
            .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Resizes the window (e.g. to fit a long page into one screenshot).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Renders the page as for printing (`print`) or for the screen (`""`),
    /// through chromedriver's DevTools pass-through, so the print style can be
    /// seen in a screenshot.
    pub async fn media(&self, media: &str) {
        self.call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {"media": media}})),
        )
        .await;
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot is base64"))
            .expect("screenshot decodes");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Ends the session (closing Chromium) and chromedriver.
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        // Drop need not end it again.
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test must leave neither chromedriver nor its Chromium
        // behind. Drop cannot await, so the session is ended with a plain
        // blocking HTTP request (chromedriver then closes Chromium), and
        // chromedriver is killed.
        if let Some(rest) = self.session.strip_prefix("http://") {
            if let Some((addr, path)) = rest.split_once('/') {
                if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let req = format!(
                        "DELETE /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    if s.write_all(req.as_bytes()).is_ok() {
                        let _ = s.read_to_end(&mut Vec::new());
                    }
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
