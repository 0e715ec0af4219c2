//! The console in a real Chromium (Debian's, through chromedriver: see `common::browser`).

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::common;
use crate::common::browser::{Browser, DESKTOP, PHONE};
use crate::common::docker::Project;
use crate::common::{Alertmanager, Db, TestApp};

/// True when the page is no wider than the space it is shown in, which is the whole viewport
/// (no scrollbar takes from it): nothing to scroll sideways.
const NO_SIDEWAYS_SCROLL: &str = "const d = document.documentElement; \
     return d.scrollWidth <= d.clientWidth && d.clientWidth === window.innerWidth";

/// Signs in through the form, as a person would.
async fn sign_in(b: &Browser, app: &TestApp, name: &str, password: &str) {
    b.goto(&format!("{}/", app.url)).await;
    // Anonymous: sent to the sign-in form.
    b.wait_for("form input[name=username]").await;
    assert!(b.current_url().await.contains("/login"));
    b.type_into("input[name=username]", name).await;
    b.type_into("input[name=password]", password).await;
    b.click("form button[type=submit]").await;
    b.wait_for("#live[data-connected=true]").await;
}

/// The whole loop in a real Chromium at phone width: sign in, a restart confirmed from the
/// command bar, a real Alertmanager's APIDown showing up without a reload, Acknowledge, a
/// restart that now needs a second person, approved from another signed-in browser, sign out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_runs_an_incident_in_a_real_browser_at_phone_width() {
    let p = Project::with_healthy_backend().await;
    let app = TestApp::spawn_with(p.options(Db::Sqlite)).await;
    app.add_account("ana", "correct horse battery", &["devops-lead"])
        .await;
    app.add_account("luis", "another long passphrase", &["devops-lead"])
        .await;

    let ana = Browser::start("console_incident", PHONE).await;
    sign_in(&ana, &app, "ana", "correct horse battery").await;
    ana.wait_for_text("#me", "ana").await;
    assert_eq!(
        ana.eval(NO_SIDEWAYS_SCROLL).await,
        true,
        "the empty page at {PHONE:?}"
    );

    // The command bar: completion from commands/, then a restart with its confirmation.
    ana.type_into("#command", "/rest").await;
    ana.wait_until(
        "completion to offer /restart",
        "return [...document.querySelectorAll('#command-list option')].some(o => o.value.startsWith('/restart'))",
    )
    .await;
    ana.eval("document.getElementById('command').value = ''; return true")
        .await;
    ana.type_into("#command", "/restart backend").await;
    ana.click("#command-bar button[type=submit]").await;
    ana.wait_for("#results button[data-verb=confirm]").await;
    ana.click("#results button[data-verb=confirm]").await;
    ana.wait_for_text("#results", "restarted backend").await;

    // A real Alertmanager fires APIDown: its card shows up without a reload.
    let am = Alertmanager::start(&common::alertmanager_config(&app)).await;
    am.push(serde_json::json!([{
        "labels": {"alertname": "APIDown", "service": "backend", "instance": "backend-1", "severity": "critical"},
        "annotations": {"summary": "<img src=x onerror=alert(1)> backend is down"},
    }]))
    .await;
    ana.wait_for_text("#open-cards", "API down").await;
    assert!(
        ana.find_all("#open-cards img").await.is_empty(),
        "a hostile annotation is shown as text"
    );
    assert_eq!(
        ana.eval(NO_SIDEWAYS_SCROLL).await,
        true,
        "a card at {PHONE:?}"
    );
    ana.screenshot("incident-375").await;

    // Acknowledge, from the card's button: the card says who.
    ana.eval(
        "[...document.querySelectorAll('#open-cards button[data-button]')].find(b => b.textContent === 'Acknowledge').click(); return true",
    )
    .await;
    ana.wait_for_text("#open-cards .ack", "ana").await;

    // During a Sev1 on backend, a restart needs a second person: luis, signed in on his own
    // browser, sees the request show up by itself and approves it.
    let luis = Browser::start("console_incident_approver", DESKTOP).await;
    sign_in(&luis, &app, "luis", "another long passphrase").await;
    ana.type_into("#command", "/restart backend").await;
    ana.click("#command-bar button[type=submit]").await;
    ana.wait_for("#results button[data-verb=approve]").await;
    luis.wait_for("#results button[data-verb=approve]").await;
    luis.click("#results button[data-verb=approve]").await;
    luis.wait_for_text("#results", "approved").await;
    // The result reaches ana's page live.
    ana.wait_for_text("#results", "restarted backend").await;
    luis.close().await;

    // Sign out: the session ends, and the console is closed again.
    ana.click("#logout button").await;
    ana.wait_for("form input[name=username]").await;
    ana.goto(&format!("{}/", app.url)).await;
    ana.wait_for("form input[name=username]").await;
    let errors: Vec<String> = ana
        .console_errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("/favicon.ico - Failed to load resource"))
        .collect();
    assert_eq!(errors, Vec::<String>::new(), "the browser's console");
    ana.close().await;
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
