//! Regressions for the holes a security review found (issue 12): what an outsider controls never
//! becomes unbounded memory or a metric label; the console and its API are not open to the
//! network; "local" is not a credential; slow clients cannot hold sockets; refusals cannot flood
//! the audit trail.

mod common;

use std::collections::BTreeSet;

use common::{Db, Options, TestApp};

/// Every value the label `name` takes in the series of `metric` in a Prometheus text page.
fn label_values(page: &str, metric: &str, name: &str) -> BTreeSet<String> {
    let key = format!("{name}=\"");
    page.lines()
        .filter(|l| l.starts_with(metric))
        .filter_map(|l| {
            let start = l.find(&key)? + key.len();
            let end = l[start..].find('"')? + start;
            Some(l[start..end].to_string())
        })
        .collect()
}

/// Made-up methods and paths are the caller's to choose; each would be a new series kept
/// forever. They are labelled from a closed set, so the page does not grow with them.
#[tokio::test]
async fn made_up_methods_and_paths_never_become_metric_labels() {
    let app = TestApp::spawn_with(Options::new(Db::Sqlite)).await;
    let send = |method: String, path: &'static str| {
        let client = app.client.clone();
        let url = format!("{}{path}", app.url);
        async move {
            client
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mut statuses = BTreeSet::new();
    for i in 0..200 {
        for path in ["/webhooks/alertmanager", "/metrics", "/api/alert-groups"] {
            statuses.insert(send(format!("M{i}X"), path).await.as_u16());
        }
        send("GET".into(), "/no/such/path").await;
    }
    assert_eq!(
        statuses,
        BTreeSet::from([405]),
        "made-up methods are refused"
    );
    let page = app.get("/metrics").await.text().await.unwrap();
    let metric = "runbot_http_request_duration_seconds_count";
    let methods = label_values(&page, metric, "method");
    assert!(
        methods.is_subset(&BTreeSet::from(
            ["GET", "HEAD", "POST", "other"].map(String::from)
        )),
        "{methods:?}"
    );
    assert!(methods.contains("other"), "{methods:?}");
    let routes = label_values(&page, metric, "route");
    assert!(
        routes.iter().all(|r| !r.contains("no/such")),
        "paths that match no route are no label: {routes:?}"
    );
    let series = page.lines().filter(|l| l.starts_with(metric)).count();
    assert!(series < 30, "{series} series:\n{page}");
    app.stop().await;
}
