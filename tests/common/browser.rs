//! A real browser for the dashboard's tests: Debian's headless Chromium driven through
//! chromedriver (WebDriver) by fantoccini, at 1280×800. Missing locally, a test skips with a
//! message saying what to install; `.ci/run` installs both, so CI always runs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use super::services::{free_port, wait_port};

pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium session, or `None` (after saying why) when chromium or chromedriver
/// is not installed.
pub async fn open() -> Option<Browser> {
    let (Some(chromium), Some(driver)) = (on_path("chromium"), on_path("chromedriver")) else {
        eprintln!(
            "SKIPPED: the dashboard's browser tests need chromium and chromedriver \
             (apt-get install chromium chromium-driver; .ci/run installs them)"
        );
        return None;
    };
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    wait_port(port, true);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,800", "--hide-scrollbars"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session");
    client
        .set_window_size(1280, 800)
        .await
        .expect("window size");
    Some(Browser {
        client,
        driver: child,
    })
}

impl Browser {
    /// The first element matching `css` once there is one.
    pub async fn wait(&self, css: &str, timeout: Duration) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} after {timeout:?}: {e}"))
    }

    /// The text of `css`, once it contains `want`.
    pub async fn wait_text(&self, css: &str, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = el.text().await
            {
                if text.contains(want) {
                    return text;
                }
                last = text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let banner = self.text_of("#banner").await;
        panic!(
            "{css} never showed {want:?} in {timeout:?}; it shows {last:?} (banner: {banner:?})"
        );
    }

    pub async fn text_of(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    pub async fn click(&self, css: &str) {
        self.wait(css, Duration::from_secs(10))
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Signs in through the page's form with `token`.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/")).await;
        let input = self.wait("#signin-token", Duration::from_secs(10)).await;
        input.send_keys(token).await.expect("type the token");
        self.click("#signin-submit").await;
        self.wait("#sign-out", Duration::from_secs(10)).await;
    }

    /// Runs `script` (an async function body whose result is returned) in the page.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; (async () => {{ {script} }})().then(done, (e) => done(String(e)));"
        );
        self.client
            .execute_async(&wrapped, vec![])
            .await
            .expect("script")
    }

    /// Writes the page as it is now to `docs/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        // Let the last refresh settle so the picture is of a finished page.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}
