//! The machine's floor under the serving benchmarks: an axum server that does only the
//! I/O of nudge-serve's two hot routes and none of their work, so that what the load
//! benchmarks measure of nudge-serve can be set against what the same machine gives at
//! best with the same stack (tokio, hyper through axum, redis-rs, mimalloc) and the same
//! load generators sharing its two cores.
//!
//! - `GET /v1/features/{user_id}`: one `HMGET` of a hash with the id's field and a
//!   version field (nudge-serve's feature read), then a fixed answer of the size of
//!   nudge-serve's.
//! - `POST /v1/score`: the body read whole, the same `HMGET` and a `ZRANGE` pipelined in
//!   one round trip (nudge-serve's feature and quota reads), then a fixed answer of the
//!   size of nudge-serve's for 5 candidates.
//! - `GET /static`: a fixed answer, no Redis: HTTP on loopback alone.
//!
//! No parsing, hashing, scoring, gates, metrics or decision log. Without `--redis-url`
//! the two hot routes skip Redis too. Run it through `benches/floor.sh`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::Parser;
use redis::aio::ConnectionManager;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves fixed answers after nudge-serve's Redis reads, to measure the machine's floor.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18090")]
    listen: std::net::SocketAddr,
    /// Redis to read from; unset = no Redis reads.
    #[arg(long)]
    redis_url: Option<String>,
    /// Prefix of the keys read (nothing is written).
    #[arg(long, default_value = "nudge-floor:")]
    prefix: String,
}

/// A features answer of the size of nudge-serve's (24 catalog features).
const FEATURES_ANSWER: &str = concat!(
    r#"{"user_id":"u12345","as_of":"2026-03-06T00:00:00Z","features":{"sessions_1d":1,"#,
    r#""sessions_7d":4,"sessions_30d":17,"active_days_7d":3,"active_days_30d":12,"#,
    r#""events_30d":88,"hours_since_last_activity":13.571428,"contacts_created_30d":2,"#,
    r#""contacts_viewed_30d":7,"outreach_30d":1,"notifs_sent_7d":5,"notifs_opened_7d":2,"#,
    r#""notifs_dismissed_7d":1,"notifs_sent_30d":14,"notifs_opened_30d":6,"#,
    r#""open_rate_30d":0.42857143,"hours_since_last_notif":21.333334,"opted_out":false,"#,
    r#""contacts_due":3,"days_since_last_outreach":11.25,"share_overdue":0.25,"#,
    r#""intent_score":41,"magnetism_index":37.5,"magnetism_band":"cooling","#,
    r#""timezone":"Europe/Berlin"}}"#
);

/// A score answer of the size of nudge-serve's for 5 candidates.
const SCORE_ANSWER: &str = concat!(
    r#"{"request_id":"019ae4c2-6a3b-7c1d-9e2f-3a4b5c6d7e8f","arm":"canary","mode":"canary","#,
    r#""model":{"name":"notif_ranker","version":"20261122T120000-3f2a9c1b"},"#,
    r#""policy_version":"9d1e4b7a2c3f","threshold":0.3,"cold_start":false,"#,
    r#""timezone":"UTC","timezone_assumed_utc":false,"decisions":["#,
    r#"{"id":"n-1","score":0.41234567,"send":true,"reason":"model_top"},"#,
    r#"{"id":"n-2","score":0.21234567,"send":false,"reason":"not_top"},"#,
    r#"{"id":"n-3","score":0.31234567,"send":false,"reason":"not_top"},"#,
    r#"{"id":"n-4","score":0.11234567,"send":false,"reason":"not_top"},"#,
    r#"{"id":"n-5","score":0.01234567,"send":false,"reason":"not_top"}]}"#
);

type Redis = Option<(ConnectionManager, String)>;

async fn features(State(redis): State<Redis>, Path(user): Path<String>) -> impl IntoResponse {
    if let Some((conn, prefix)) = redis {
        let mut conn = conn.clone();
        let _: Result<Vec<Option<Vec<u8>>>, _> = redis::cmd("HMGET")
            .arg(format!("{prefix}features:live"))
            .arg(":version")
            .arg(&user)
            .query_async(&mut conn)
            .await;
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        FEATURES_ANSWER,
    )
}

async fn score(State(redis): State<Redis>, body: Bytes) -> impl IntoResponse {
    if let Some((conn, prefix)) = redis {
        let mut conn = conn.clone();
        // The user id as benches/score.lua places it (`{"user_id":"…"`); no parsing.
        let rest = body.get(12..).unwrap_or_default();
        let user = &rest[..rest.iter().position(|&b| b == b'"').unwrap_or(rest.len())];
        let mut features = conn.clone();
        let hmget = redis::cmd("HMGET")
            .arg(format!("{prefix}features:live"))
            .arg(":version")
            .arg(user)
            .to_owned();
        let zrange = redis::cmd("ZRANGE")
            .arg(format!("{prefix}quota:"))
            .arg(0)
            .arg(-1)
            .to_owned();
        // The answers are discarded: the floor measures the round trip, not its use.
        let _ = tokio::join!(
            hmget.query_async::<Vec<Option<Vec<u8>>>>(&mut features),
            zrange.query_async::<Vec<Vec<u8>>>(&mut conn)
        );
    }
    ([(header::CONTENT_TYPE, "application/json")], SCORE_ANSWER)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let redis: Redis = match &args.redis_url {
        Some(url) => Some((
            ConnectionManager::new(redis::Client::open(url.as_str())?).await?,
            args.prefix.clone(),
        )),
        None => None,
    };
    let app = Router::new()
        .route("/static", get(|| async { FEATURES_ANSWER }))
        .route("/v1/features/{user_id}", get(features))
        .route("/v1/score", post(score))
        .with_state(redis);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("floor server on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
