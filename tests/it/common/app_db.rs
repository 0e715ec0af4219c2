//! The stack's application database in tests: a PostgreSQL database of the test's own on the
//! server scripts/test starts, and what tests read of backups.

use std::io::Read;
use std::path::Path;

use sqlx::{Connection, PgConnection};

/// An application database of the test's own, with a login role that owns it; both dropped
/// when this is, also when the test panics.
pub struct AppDb {
    pub name: String,
    pub role: String,
    pub password: String,
    pub admin: String,
    /// host:port of the test server.
    pub addr: String,
}

impl AppDb {
    pub async fn new() -> AppDb {
        Self::on(super::pg_admin_url()).await
    }

    /// On the server `admin` (a superuser's URL) reaches.
    pub async fn on(admin: String) -> AppDb {
        let parsed = url::Url::parse(&admin).expect("RUNBOT_TEST_PG_URL is a URL");
        let addr = format!(
            "{}:{}",
            parsed.host_str().unwrap_or("127.0.0.1"),
            parsed.port().unwrap_or(5432)
        );
        let id = super::unique();
        let db = AppDb {
            name: format!("rb_app_{id}"),
            role: format!("rb_app_user_{id}"),
            // Distinctive, so any leak is found by a plain search.
            password: format!("Pw9zQx{id}"),
            admin,
            addr,
        };
        let mut c = PgConnection::connect(&db.admin).await.unwrap();
        sqlx::query(&format!(
            "CREATE ROLE {} LOGIN PASSWORD '{}'",
            db.role, db.password
        ))
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::query(&format!("CREATE DATABASE {} OWNER {}", db.name, db.role))
            .execute(&mut c)
            .await
            .unwrap();
        db
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@{}/{}",
            self.role, self.password, self.addr, self.name
        )
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url()).await.unwrap()
    }

    pub async fn exec(&self, sql: &str) {
        let mut c = self.connect().await;
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    }

    pub async fn count(&self, table: &str) -> i64 {
        let mut c = self.connect().await;
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut c)
            .await
            .unwrap()
    }

    pub async fn table_exists(&self, table: &str) -> bool {
        let mut c = self.connect().await;
        sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(&mut c)
            .await
            .unwrap()
            .is_some()
    }

    /// The café's tables: 50 customers, 200 orders, 10 menu items.
    pub async fn seed(&self) {
        self.exec(
            "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
             CREATE TABLE orders (id serial PRIMARY KEY,
                                  customer_id int NOT NULL REFERENCES customers(id),
                                  total numeric(10,2) NOT NULL);
             CREATE INDEX orders_customer ON orders (customer_id);
             CREATE TABLE menu (id serial PRIMARY KEY, item text NOT NULL, price numeric(6,2));
             INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 50) g;
             INSERT INTO orders (customer_id, total)
                 SELECT 1 + g % 50, g * 1.25 FROM generate_series(1, 200) g;
             INSERT INTO menu (item, price) SELECT 'item ' || g, g FROM generate_series(1, 10) g;",
        )
        .await;
    }
}

impl Drop for AppDb {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and psql is there (the commands use it).
        let _ = std::process::Command::new("psql")
            .arg(&self.admin)
            .args(["-X", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .args(["-c"])
            .arg(format!("DROP ROLE IF EXISTS {}", self.role))
            .output();
    }
}

pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

pub fn gunzip(path: &Path) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut out)
        .expect("a valid gzip file of SQL text");
    out
}
