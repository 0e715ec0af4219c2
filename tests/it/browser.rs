//! The console in a real Chromium (Debian's, through chromedriver: see `common::browser`).

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::common::browser::{Browser, DESKTOP, PHONE};
use crate::common::{fixtures, Db, TestApp};

/// True when the page is no wider than the space it is shown in, which is the whole viewport
/// (no scrollbar takes from it): nothing to scroll sideways.
const NO_SIDEWAYS_SCROLL: &str = "const d = document.documentElement; \
     return d.scrollWidth <= d.clientWidth && d.clientWidth === window.innerWidth";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_at_phone_width_shows_a_new_group_and_loads_nothing_from_elsewhere() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let b = Browser::start("console_phone", PHONE).await;
    assert_eq!(b.viewport().await, PHONE);

    b.goto(&format!("{}/", app.url)).await;
    b.wait_for_text("h1", "Open alert groups").await;
    b.wait_for("#empty").await;
    assert_eq!(
        b.eval(NO_SIDEWAYS_SCROLL).await,
        true,
        "the empty page scrolls sideways at {PHONE:?}"
    );

    let f = fixtures()
        .into_iter()
        .find(|f| f.name == "04-firing-APIDown-1alerts.json")
        .expect("the APIDown fixture");
    let r = app.post_webhook(f.body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    b.reload().await;
    b.wait_for_text("#groups", "APIDown").await;
    assert!(b.find_all("#empty").await.is_empty());
    let scroll = b
        .eval("const d = document.documentElement; return [d.scrollWidth, d.clientWidth]")
        .await;
    assert_eq!(
        b.eval(NO_SIDEWAYS_SCROLL).await,
        true,
        "the page with a group scrolls sideways at {PHONE:?}: [scrollWidth, clientWidth] = {scroll}"
    );

    // Every resource the page loaded (stylesheet, script, images, fonts) came from runbot.
    let outside = b
        .eval(
            "return performance.getEntriesByType('resource')
                .map(e => e.name)
                .filter(u => new URL(u).origin !== location.origin)",
        )
        .await;
    assert_eq!(outside, serde_json::json!([]), "loaded from elsewhere");
    let loaded = b
        .eval("return performance.getEntriesByType('resource').length")
        .await;
    assert!(
        loaded.as_u64().unwrap() >= 1,
        "the page loads its stylesheet, so the check above saw something"
    );
    // Chromium asks every site for /favicon.ico, which the console does not serve (yet).
    let errors: Vec<String> = b
        .console_errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("/favicon.ico - Failed to load resource"))
        .collect();
    assert_eq!(errors, Vec::<String>::new(), "the browser's console");

    let shot = b.screenshot("index-375").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    b.click("#groups a[href^='/groups/']").await;
    b.wait_for_text("#alerts", "firing").await;
    assert_eq!(
        b.eval(NO_SIDEWAYS_SCROLL).await,
        true,
        "the group page scrolls sideways at {PHONE:?}"
    );
    b.screenshot("group-375").await;

    b.goto(&format!("{}/", app.url)).await;
    b.click("a[href='/?status=resolved']").await;
    b.wait_for_text("h1", "Resolved alert groups").await;
    b.wait_for("#empty").await;
    b.close().await;
    app.stop().await;
}

/// The harness itself, on a page of its own: typing, clicking, waiting for what a script
/// does later, the window size, and that a dropped browser (a failed test) leaves no process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_harness_types_clicks_waits_and_cleans_up_after_a_failed_test() {
    let b = Browser::start("harness", DESKTOP).await;
    assert_eq!(b.viewport().await, DESKTOP);
    b.goto(
        "data:text/html,<input id=q><button id=go>Go</button><p id=out></p>\
         <a id=file download=notes.txt href='data:text/plain,hello'>file</a><script>\
         go.onclick = () => setTimeout(() => { out.textContent = 'got ' + q.value }, 300)\
         </script>",
    )
    .await;
    b.type_into("#q", "restart backend").await;
    b.click("#go").await;
    // Shows after the click's timer, so a helper that did not poll would miss it.
    b.wait_for_text("#out", "got restart backend").await;
    b.wait_until(
        "the field to keep its text",
        "return q.value === 'restart backend'",
    )
    .await;
    assert!(b.find_all("#nothing").await.is_empty());
    b.click("#file").await;
    assert_eq!(b.wait_for_download("notes.txt").await, b"hello");

    // A wait that times out fails the test, saying what it waited for, with a screenshot.
    let missed = AssertUnwindSafe(b.wait_for_within("#nothing", Duration::from_millis(300)))
        .catch_unwind()
        .await
        .expect_err("waiting for what never shows fails");
    let why = missed
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(
        why.starts_with("no visible \"#nothing\" after 300ms"),
        "{why}"
    );
    assert!(
        why.contains("got restart backend"),
        "the page's text: {why}"
    );
    let shot = why
        .split("screenshot: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    assert!(std::path::Path::new(shot).is_file(), "{why}");

    let (driver, dir) = b.process_key();
    assert!(
        !Browser::processes(driver, &dir).is_empty(),
        "Chromium runs while the browser is open"
    );
    drop(b);
    // The killed processes' zombies go to init, which reaps them when it gets to it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = Browser::processes(driver, &dir);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still there 10 s after the browser was dropped: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
