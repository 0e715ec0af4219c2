//! Interaction ids already answered (see `migrations/*/0010_seen_interactions.sql`): the replay
//! check that holds across replicas and restarts.

use super::Store;

impl Store {
    /// Records that `id` arrived from `platform`; false when it had already arrived (a replay).
    /// The row is kept until `expires_at` (RFC 3339), after which the request's own timestamp
    /// refuses it.
    pub async fn first_sight(
        &self,
        platform: &str,
        id: &str,
        expires_at: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = "INSERT INTO seen_interactions (platform, id, expires_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (platform, id) DO NOTHING";
        Ok(self.execute(sql, (platform, id, expires_at)).await? == 1)
    }

    /// Forgets ids whose time is up; answers how many.
    pub async fn forget_seen(&self, now: &str) -> Result<u64, sqlx::Error> {
        self.execute(
            "DELETE FROM seen_interactions WHERE expires_at < $1",
            (now,),
        )
        .await
    }
}
