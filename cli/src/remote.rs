//! `elex --server URL …`: the commands that use a runtime, sent to a
//! running `elex serve` over HTTP instead of starting one here.
//!
//! The service answers with the same JSON objects the local commands print
//! with `--json` (`ran::json`, `Runtime::answer_json`); a query is shown the
//! same way in both modes (`crate::answer`), other commands print the
//! service's JSON. Plain `http://` only: reach a remote service through a
//! TLS-terminating proxy or an SSH tunnel.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::output::outln;

/// Longest a request may take (a plugin load compiles its component).
const TIMEOUT: Duration = Duration::from_secs(600);

/// A running `elex serve`.
pub struct Remote {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Runtime,
}

impl Remote {
    /// The service at `url` (`http://HOST:PORT`), with a bearer token if
    /// given.
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Remote> {
        let base = url.trim_end_matches('/').to_string();
        let Some(rest) = base.strip_prefix("http://") else {
            bail!(
                "--server {url:?}: give http://HOST:PORT (elex speaks plain HTTP; reach a remote \
                 service through a TLS proxy or an SSH tunnel)"
            );
        };
        if rest.is_empty() || rest.contains('/') {
            bail!("--server {url:?}: give http://HOST:PORT, without a path");
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Remote { base, token, client, runtime })
    }

    /// One request; the JSON answer, or the service's error as an error.
    pub fn call(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> anyhow::Result<Value> {
        let mut request = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let (content_type, bytes) = body.unwrap_or(("application/json", Vec::new()));
        let request = request.header("Content-Type", content_type).body(Full::new(Bytes::from(bytes)))?;
        let (status, bytes) = self.runtime.block_on(async {
            let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
                .await
                .map_err(|_| anyhow!("{} did not answer within {} s", self.base, TIMEOUT.as_secs()))?
                .with_context(|| format!("cannot reach {} (is `elex serve` running there?)", self.base))?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        })?;
        let value: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} answered {status} with a body that is not JSON", self.base))?;
        if !status.is_success() {
            let code = value["code"].as_str().unwrap_or("error");
            let message = value["message"].as_str().unwrap_or_default();
            bail!("{} answered {status} ({code}): {message}", self.base);
        }
        Ok(value)
    }

    /// `call` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call("POST", path, Some(("application/json", serde_json::to_vec(body)?)))
    }
}

/// Prints `value` as pretty JSON.
pub fn print(value: &Value) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// `elex query` over the service.
pub fn query(
    remote: &Remote,
    text: &str,
    agent: Option<String>,
    best_guess: bool,
    json: bool,
) -> anyhow::Result<()> {
    let answer =
        remote.post("/v1/query", &json!({ "text": text, "agent": agent, "clarify": !best_guess }))?;
    crate::answer::print(&answer, json)
}

/// `elex feedback` over the service.
pub fn feedback(
    remote: &Remote,
    query_id: &str,
    reward: Option<f32>,
    agent: Option<&str>,
    operator: Option<String>,
) -> anyhow::Result<()> {
    let out = remote.post(
        "/v1/feedback",
        &json!({ "query_id": query_id, "reward": reward, "agent": agent, "operator": operator }),
    )?;
    if let Some(r) = out.get("rewarded") {
        outln!(
            "{} rewarded {:+.2} for {query_id}",
            r["agent"].as_str().unwrap_or("?"),
            reward.unwrap_or(0.0)
        )?;
    }
    if let Some(c) = out.get("corrected") {
        outln!(
            "{query_id} was meant for {} (on {}'s word): kept as an example question",
            c["agent"].as_str().unwrap_or("?"),
            c["operator"].as_str().unwrap_or("?")
        )?;
    }
    Ok(())
}

/// `elex load` over the service: a registry name, or with
/// `--allow-unsigned` a component file uploaded (the service must allow
/// unsigned plugins too).
pub fn load(remote: &Remote, spec: &str, allow_unsigned: bool, grants: &[String]) -> anyhow::Result<()> {
    let loaded = if allow_unsigned {
        let bytes = crate::read_component_file(std::path::Path::new(spec))?;
        let query: String = grants
            .iter()
            .map(|g| format!("grant={}", form_urlencoded::byte_serialize(g.as_bytes()).collect::<String>()))
            .collect::<Vec<_>>()
            .join("&");
        let path =
            if query.is_empty() { String::from("/v1/plugins") } else { format!("/v1/plugins?{query}") };
        remote.call("POST", &path, Some(("application/wasm", bytes)))?
    } else {
        remote.post("/v1/plugins", &json!({ "name": spec, "grants": grants }))?
    };
    outln!(
        "loaded plugin {} ({}) into the running service: {}",
        loaded["id"].as_str().unwrap_or("?"),
        loaded["name"].as_str().unwrap_or("?"),
        loaded["source"].as_str().unwrap_or("?")
    )?;
    Ok(())
}

/// `elex unload` over the service.
pub fn unload(remote: &Remote, id: &str) -> anyhow::Result<()> {
    let path = format!("/v1/plugins/{}", form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>());
    remote.call("DELETE", &path, None)?;
    outln!("unloaded plugin {id} from the running service (what it learned stays stored)")?;
    Ok(())
}

/// A path segment naming an agent (FAJ codes have spaces).
pub fn agent_path(id: &str) -> String {
    format!(
        "/v1/agents/{}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>().replace('+', "%20")
    )
}
