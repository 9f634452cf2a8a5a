//! `sluice check` of a `[cluster]` table: one bounded connection to its
//! Redis, without announcing a replica.

use super::{redacted, ClusterParams, CONNECT_TIMEOUT};

/// Probes `params`' Redis once (`sluice check`): the live replicas, or
/// why it does not answer.
pub fn probe(params: &ClusterParams) -> Result<u32, String> {
    let shown = redacted(&params.redis_url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = redis::Client::open(params.redis_url.as_str())
        .map_err(|e| format!("cluster.redis_url = {shown:?}: {e}"))?;
    rt.block_on(async {
        let answer = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut con = client.get_multiplexed_async_connection().await?;
            redis::cmd("ZCARD")
                .arg(format!("{}:replicas", params.key_prefix))
                .query_async::<u32>(&mut con)
                .await
        })
        .await;
        match answer {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(format!(
                "cluster.redis_url = {shown:?}: Redis does not answer: {e}"
            )),
            Err(_) => Err(format!(
                "cluster.redis_url = {shown:?}: Redis does not answer within {CONNECT_TIMEOUT:?}"
            )),
        }
    })
}
