//! The HTTP floor for `make bench`: a bare axum server on the same tokio runtime set-up as
//! ferrum-serve whose `POST /models/{name}/predict` only parses the same JSON body (the way a
//! plain serde service would: each row into a `HashMap<String, f32>`) and answers a tiny JSON.
//! No model, no validation, no logging: what HTTP + JSON alone cost on this machine.
//!
//! `cargo run --release --example http_floor -- 127.0.0.1:8081`

use std::collections::HashMap;

use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Body {
    instances: Vec<HashMap<String, f32>>,
}

async fn predict(Json(body): Json<Body>) -> Json<Value> {
    let n = body.instances.len();
    let features: usize = body.instances.iter().map(HashMap::len).sum();
    Json(json!({"rows": n, "features": features}))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let app = Router::new().route("/models/{name}/predict", post(predict));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
