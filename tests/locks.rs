//! Locks that hold across replicas and restarts, leases in the database: every age is by the
//! database's clock.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Db;
use runbot::store::{Store, TakeLock};
use sqlx::Connection;

// ---------------------------------------------------------------------------------------------
// The store's lease API, on both databases.

async fn two_stores(db: Db, dir: &Path) -> (String, Store, Store) {
    let url = common::fresh_database(db, dir).await;
    let settings = runbot::config::Settings::load_from(
        None,
        vec![("RUNBOT__DATABASE__URL".into(), url.clone())],
    )
    .unwrap();
    let a = Store::connect(&settings.database).await.unwrap();
    let b = Store::connect(&settings.database).await.unwrap();
    (url, a, b)
}

/// Runs one statement on the database at `url`.
async fn exec(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    }
}

/// SQL for the database's own clock `secs` ago, as runbot stores times.
fn db_ago(url: &str, secs: u64) -> String {
    if url.starts_with("sqlite:") {
        format!("(strftime('%Y-%m-%dT%H:%M:%f', 'now', '-{secs} seconds') || '000000Z')")
    } else {
        format!(
            "(to_char((now() - interval '{secs} seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '000Z')"
        )
    }
}

/// Sets a time of lock `name` back by `secs`, by the database's clock.
async fn set_back(url: &str, name: &str, column: &str, secs: u64) {
    exec(
        url,
        &format!(
            "UPDATE locks SET {column} = {} WHERE name = '{name}'",
            db_ago(url, secs)
        ),
    )
    .await;
}

#[tokio::test]
async fn a_lease_is_held_renewed_and_released_by_its_owner_only_and_taken_over_once_stale() {
    for db in common::BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (url, a, b) = two_stores(db, dir.path()).await;
        let name = "stack:saas";
        let dana = "deploy #3 of v2 by Dana";
        let bruno = "/restart backend by Bruno";
        assert_eq!(
            a.take_lock(name, "a1", dana, Some("inv-a"), 60)
                .await
                .unwrap(),
            TakeLock::Taken,
            "{db:?}"
        );

        // Another replica is told who holds it, and for how long by the database's clock.
        set_back(&url, name, "taken_at", 40).await;
        let TakeLock::Held(h) = b.take_lock(name, "b1", bruno, None, 60).await.unwrap() else {
            panic!("{db:?}: two holders at once")
        };
        assert_eq!(
            (
                h.owner.as_str(),
                h.holder.as_str(),
                h.invocation_id.as_deref()
            ),
            ("a1", dana, Some("inv-a")),
            "{db:?}"
        );
        assert!((40..45).contains(&h.held.as_secs()), "{db:?}: {h:?}");
        assert!(h.silent < Duration::from_secs(5), "{db:?}: {h:?}");

        // Only its owner renews or frees it.
        assert!(!b.renew_lock(name, "b1").await.unwrap(), "{db:?}");
        assert!(!b.release_lock(name, "b1").await.unwrap(), "{db:?}");
        assert!(a.renew_lock(name, "a1").await.unwrap(), "{db:?}");
        assert_eq!(a.lock_holder(name).await.unwrap().unwrap().owner, "a1");

        // Another name is another lock.
        assert_eq!(
            b.take_lock(
                "database:app@db:5432/app",
                "b2",
                "/backup by Dora",
                None,
                60
            )
            .await
            .unwrap(),
            TakeLock::Taken,
            "{db:?}"
        );

        // Silent for 50 s is not stale at 60 s.
        set_back(&url, name, "heartbeat_at", 50).await;
        assert!(
            matches!(
                b.take_lock(name, "b1", bruno, None, 60).await.unwrap(),
                TakeLock::Held(_)
            ),
            "{db:?}"
        );

        // Silent for 2 minutes (its runbot died): taken over. The old owner learns it lost it
        // at its next renewal and cannot free the new owner's lock.
        set_back(&url, name, "heartbeat_at", 120).await;
        assert_eq!(
            b.take_lock(name, "b1", bruno, None, 60).await.unwrap(),
            TakeLock::Taken,
            "{db:?}"
        );
        let h = a.lock_holder(name).await.unwrap().unwrap();
        assert_eq!((h.owner.as_str(), h.holder.as_str()), ("b1", bruno));
        assert!(h.held < Duration::from_secs(5), "{db:?}: {h:?}");
        assert!(!a.renew_lock(name, "a1").await.unwrap(), "{db:?}");
        assert!(!a.release_lock(name, "a1").await.unwrap(), "{db:?}");
        assert!(b.release_lock(name, "b1").await.unwrap(), "{db:?}");
        assert_eq!(a.lock_holder(name).await.unwrap(), None, "{db:?}");
        assert_eq!(
            a.take_lock(name, "a2", dana, None, 60).await.unwrap(),
            TakeLock::Taken,
            "{db:?}"
        );
    }
}

#[tokio::test]
async fn of_many_replicas_trying_at_once_exactly_one_gets_a_free_or_stale_lease() {
    for db in common::BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (url, a, b) = two_stores(db, dir.path()).await;
        for round in 0..2 {
            let tries = (0..16).map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                async move {
                    store
                        .take_lock("stack:saas", &format!("o{round}-{i}"), "x", None, 60)
                        .await
                        .unwrap()
                }
            });
            let results = futures_util::future::join_all(tries).await;
            let taken = results.iter().filter(|r| **r == TakeLock::Taken).count();
            assert_eq!(taken, 1, "{db:?} round {round}: {results:?}");
            // The winner dies: its lease goes stale and the next round takes it over.
            set_back(&url, "stack:saas", "heartbeat_at", 120).await;
        }
    }
}
