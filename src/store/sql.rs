//! Small helpers for writing sqlx statements without a line per bound value or per column.

use std::future::Future;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::error::BoxDynError;
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{Any, AnyPool, Arguments, Encode, FromRow, Row, Transaction, Type};

use super::values_list;
use crate::config::Backend;

/// A statement on the `Any` driver, its values not yet all bound.
pub(super) type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// What a value needs to be bound to a statement of the `Any` driver.
pub(super) trait AnyValue<'q>: Encode<'q, Any> + Type<Any> + Send + 'q {}
impl<'q, T: Encode<'q, Any> + Type<Any> + Send + 'q> AnyValue<'q> for T {}

/// A statement that takes values: `sqlx::query` and `sqlx::query_as`.
pub(super) trait Bind<'q>: Sized {
    fn bind_one<T: AnyValue<'q>>(self, value: T) -> Self;

    /// Binds a tuple of values to `$1, $2, …` in order: `.bind_all((id, platform, now))`.
    fn bind_all(self, values: impl Values<'q>) -> Self {
        values.bind_to(self)
    }
}

impl<'q> Bind<'q> for AnyQuery<'q> {
    fn bind_one<T: AnyValue<'q>>(self, value: T) -> Self {
        self.bind(value)
    }
}

impl<'q, O> Bind<'q> for QueryAs<'q, Any, O, AnyArguments<'q>> {
    fn bind_one<T: AnyValue<'q>>(self, value: T) -> Self {
        self.bind(value)
    }
}

impl<'q, O> Bind<'q> for QueryScalar<'q, Any, O, AnyArguments<'q>> {
    fn bind_one<T: AnyValue<'q>>(self, value: T) -> Self {
        self.bind(value)
    }
}

/// Values bound before the statement's text is made, for text that depends on how many rows
/// there are. The first value that fails to encode is kept, as a query keeps it.
pub(super) struct Args<'q>(Result<AnyArguments<'q>, BoxDynError>);

impl<'q> Args<'q> {
    pub fn new() -> Self {
        Args(Ok(AnyArguments::default()))
    }

    pub fn into_inner(self) -> Result<AnyArguments<'q>, sqlx::Error> {
        self.0.map_err(sqlx::Error::Encode)
    }
}

impl<'q> Bind<'q> for Args<'q> {
    fn bind_one<T: AnyValue<'q>>(self, value: T) -> Self {
        Args(self.0.and_then(|mut args| args.add(value).map(|()| args)))
    }
}

/// Values bound in order by [`Bind::bind_all`]: tuples of up to sixteen.
pub(super) trait Values<'q> {
    fn bind_to<Q: Bind<'q>>(self, q: Q) -> Q;
}

/// No values: a statement without placeholders.
impl<'q> Values<'q> for () {
    fn bind_to<Q: Bind<'q>>(self, q: Q) -> Q {
        q
    }
}

macro_rules! tuple_values {
    ($($v:ident),+) => {
        impl<'q, $($v: AnyValue<'q>),+> Values<'q> for ($($v,)+) {
            #[allow(non_snake_case)]
            fn bind_to<Q: Bind<'q>>(self, q: Q) -> Q {
                let ($($v,)+) = self;
                q$(.bind_one($v))+
            }
        }
    };
}

tuple_values!(A);
tuple_values!(A, B);
tuple_values!(A, B, C);
tuple_values!(A, B, C, D);
tuple_values!(A, B, C, D, E);
tuple_values!(A, B, C, D, E, F);
tuple_values!(A, B, C, D, E, F, G);
tuple_values!(A, B, C, D, E, F, G, H);
tuple_values!(A, B, C, D, E, F, G, H, I);
tuple_values!(A, B, C, D, E, F, G, H, I, J);
tuple_values!(A, B, C, D, E, F, G, H, I, J, K);
tuple_values!(A, B, C, D, E, F, G, H, I, J, K, L);
tuple_values!(A, B, C, D, E, F, G, H, I, J, K, L, M);
tuple_values!(A, B, C, D, E, F, G, H, I, J, K, L, M, N);
tuple_values!(A, B, C, D, E, F, G, H, I, J, K, L, M, N, O);
tuple_values!(A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P);

/// What `sqlx::query_as` can read a row as (`#[derive(sqlx::FromRow)]` for plain columns).
pub(super) trait Record: for<'r> FromRow<'r, AnyRow> + Send + Unpin {}
impl<T: for<'r> FromRow<'r, AnyRow> + Send + Unpin> Record for T {}

/// Runs `insert`, which returns the new row's `id`. When a unique index refuses the row, the
/// row that holds its place is read with `holder` and returned as `Err`. If that one is gone by
/// then (it ended between the two statements), the violation is returned: the caller may try
/// again.
pub(super) async fn insert_or_holder<T, F>(
    pool: &AnyPool,
    insert: AnyQuery<'_>,
    holder: impl FnOnce() -> F,
) -> Result<Result<i64, T>, sqlx::Error>
where
    F: Future<Output = Result<Option<T>, sqlx::Error>>,
{
    match insert.fetch_one(pool).await {
        Ok(row) => Ok(Ok(row.try_get("id")?)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => match holder().await? {
            Some(holder) => Ok(Err(holder)),
            None => Err(sqlx::Error::Database(e)),
        },
        Err(e) => Err(e),
    }
}

/// One statement with its values on the shared pool: the store's reads and small writes.
impl super::Store {
    /// Answers how many rows the statement changed.
    pub(super) async fn execute<'q>(
        &self,
        sql: &'q str,
        values: impl Values<'q>,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(sql)
            .bind_all(values)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The first row the statement returns, if any.
    pub(super) async fn fetch_optional<'q, T: Record>(
        &self,
        sql: &'q str,
        values: impl Values<'q>,
    ) -> Result<Option<T>, sqlx::Error> {
        sqlx::query_as(sql)
            .bind_all(values)
            .fetch_optional(&self.pool)
            .await
    }

    /// Every row the statement returns.
    pub(super) async fn fetch_all<'q, T: Record>(
        &self,
        sql: &'q str,
        values: impl Values<'q>,
    ) -> Result<Vec<T>, sqlx::Error> {
        sqlx::query_as(sql)
            .bind_all(values)
            .fetch_all(&self.pool)
            .await
    }
}

/// Writes `rows` with multi-row statements `{head} (…),(…) {tail}` of at most `per_statement`
/// rows each, so a large batch costs a few round trips; `bind` adds one row's values, which
/// also says how many placeholders a row takes. Answers the rows the statements return.
pub(super) async fn write_rows<'a, T>(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    (head, tail): (&str, &str),
    rows: &'a [T],
    per_statement: usize,
    bind: impl Fn(Args<'a>, &'a T) -> Args<'a>,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let mut returned = Vec::new();
    for chunk in rows.chunks(per_statement) {
        let args = chunk.iter().fold(Args::new(), &bind).into_inner()?;
        let values = values_list(backend, chunk.len(), args.len() / chunk.len(), 1);
        let sql = format!("{head} {values} {tail}");
        returned.extend(sqlx::query_with(&sql, args).fetch_all(&mut **tx).await?);
    }
    Ok(returned)
}
