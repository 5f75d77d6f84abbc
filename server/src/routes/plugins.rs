//! Plugins loaded and unloaded while the service runs.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::{Admin, ApiError, AppState, Body, Caller, Reader, UrlPath};
use axum::extract::FromRequest;
use axum::http::header;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadRequest {
    /// `name[@version-requirement]` of a signed registry entry.
    #[schema(example = "moon-phases@^0.1")]
    name: String,
    /// Capabilities granted (each one its manifest asks for: `env:NAME`,
    /// `read:/guest=/host/dir`, `connect:HOST:PORT`).
    #[serde(default)]
    grants: Vec<String>,
}

fn plugin_json(p: &elex_ran::Plugin) -> serde_json::Value {
    use elex_ran::host::snapshots::PluginSource;
    let source = match &p.installed.source {
        PluginSource::Registry { name, version } => format!("registry {name}@{version}"),
        PluginSource::Unsigned => String::from("unsigned upload"),
    };
    json!({
        "id": p.manifest.id,
        "name": p.manifest.name,
        "description": p.manifest.description,
        "source": source,
        "digest": p.installed.digest,
        "grants": p.installed.grants,
        "operator": p.installed.operator,
    })
}

/// `POST /v1/plugins`: a JSON `{"name", "grants"?}` loads a signed
/// component from the registry; a wasm body (`Content-Type:
/// application/wasm`, grants as `?grant=` parameters) is an unsigned
/// upload, taken only when the service allows it.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins", request_body(content((LoadRequest = "application/json"), (Vec<u8> = "application/wasm")), description = "A signed registry entry by name, or an unsigned component (only with `elex serve --allow-unsigned`; grants as `?grant=CAP`, repeatable)"), params(("grant" = Option<Vec<String>>, Query, description = "A capability granted to an uploaded component (repeatable)")), security(("bearer" = [])), responses((status = 201, description = "Loaded into the running swarm: the plugin record", body = serde_json::Value), (status = 403, description = "Not an admin, or an upload to a service that takes signed plugins only (`unsigned_refused`)", body = crate::openapi::ErrorBody), (status = 413, description = "The upload is larger than `--max-upload-bytes`", body = crate::openapi::ErrorBody), (status = 422, description = "Not a plugin: not a component, unsigned or untrusted, no manifest, wrong world, its id taken, capabilities not granted (`bad_plugin`)", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody), (status = 415, description = "`unsupported_media_type`: the body is not Content-Type: application/json", body = crate::openapi::ErrorBody)))]
pub(crate) async fn load_plugin(
    State(s): State<AppState>,
    Caller(who, _): Caller<Admin>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    // `?grant=CAP` (repeatable) for an upload; nothing else.
    let mut upload_grants = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        if key != "grant" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown parameter {key:?}: an upload takes `grant` (repeatable)"),
            ));
        }
        upload_grants.push(value.into_owned());
    }
    let wasm = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/wasm"));
    let (spec, grants, upload_file) = if wasm {
        if !s.limits.allow_unsigned {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "unsigned_refused",
                "this service takes signed plugins from its registry only (POST {\"name\": \"id@version\"}); \
                 an uploaded component is unsigned and needs `elex serve --allow-unsigned`",
            ));
        }
        let bytes = axum::body::to_bytes(request.into_body(), s.limits.upload_bytes).await.map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("{e}; an upload is at most {} bytes", s.limits.upload_bytes),
            )
        })?;
        let file = tempfile::NamedTempFile::new().map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot keep the upload: {e}"),
            )
        })?;
        std::fs::write(file.path(), &bytes).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot keep the upload: {e}"),
            )
        })?;
        (elex_ran::PluginSpec::Unsigned(file.path().to_path_buf()), upload_grants, Some(file))
    } else {
        let Body(req) = Body::<LoadRequest>::from_request(request, &s).await?;
        if !upload_grants.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give grants in the JSON body",
            ));
        }
        (elex_ran::PluginSpec::Registry(req.name), req.grants, None)
    };
    let cluster = s.cluster.clone();
    s.run_write(move |rt| {
        let plugin = rt.load_plugin(&spec, &who, &grants)?;
        drop(upload_file);
        // In a cluster a plugin from the registry is loaded by every host:
        // the exact version loaded here.
        if let (Some(cluster), elex_ran::host::snapshots::PluginSource::Registry { name, version }) =
            (&cluster, &plugin.installed.source)
        {
            let exact = format!("{name}@={version}");
            cluster.share_plugin_blocking(&plugin.manifest.id, &exact, &grants, &who).map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_replicated",
                    format!(
                        "{} is loaded on this host, but the other hosts were not told: {e}",
                        plugin.manifest.id
                    ),
                )
            })?;
        }
        Ok((StatusCode::CREATED, Json(plugin_json(&plugin))))
    })
    .await
}

#[utoipa::path(delete, path = "/v1/plugins/{id}", tag = "plugins", params(("id" = String, Path, description = "The plugin id")), security(("bearer" = [])), responses((status = 200, description = "`{\"unloaded\": id}`: out of routing at once, its state stored", body = serde_json::Value), (status = 404, description = "No plugin with that id", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn unload_plugin(
    State(s): State<AppState>,
    _caller: Caller<Admin>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = s.cluster.clone();
    s.run_write(move |rt| {
        let unloaded = rt.unload_plugin(&id)?;
        // In a cluster every host unloads a shared plugin.
        let unshared = match &cluster {
            Some(cluster) => cluster.unshare_plugin_blocking(&id).map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_replicated",
                    format!("{id} is unloaded on this host, but the other hosts were not told: {e}"),
                )
            })?,
            None => false,
        };
        if !unloaded && !unshared {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_agent",
                format!("no plugin {id:?} is loaded"),
            ));
        }
        Ok(Json(json!({ "unloaded": id })))
    })
    .await
}

#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", security(("bearer" = [])), responses((status = 200, description = "The installed plugins: `[{\"id\", \"name\", \"description\", \"source\", \"digest\", \"grants\", \"operator\"}]`", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn plugins(
    State(s): State<AppState>,
    _caller: Caller<Reader>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.run(|rt| Ok(Json(json!(rt.plugins()?.iter().map(plugin_json).collect::<Vec<_>>())))).await
}
