//! The OpenAPI document of the service, generated from the route handlers
//! (utoipa), served at `GET /v1/openapi.json` and committed as
//! `server/openapi.json` (a test keeps the two equal).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{agents, memory, observe, plugins};

/// Every error: its machine-readable `code` and a message for people.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `no_agent`,
    /// `method_not_allowed`, `too_large`, `rate_limited`, `busy`,
    /// `bad_plugin`, `unsigned_refused`, `bad_workflow`, `agent_failed`,
    /// `quota_exceeded`, `internal`.
    code: String,
    /// What went wrong, and what to do.
    message: String,
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from the service's access file; its role (read < operator < admin) \
                         decides what it may do. Without an access file a loopback service admits \
                         anyone.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "elex",
        description = "The elex agent swarm as a service: 593 RAN feature agents and loaded plugins, \
                       routed queries, feedback, the memory graph and workflows.",
        license(name = "Apache-2.0")
    ),
    paths(
        agents::health,
        agents::ready,
        observe::prometheus,
        agents::query,
        agents::feedback,
        agents::agents,
        agents::agent,
        plugins::plugins,
        plugins::load_plugin,
        plugins::unload_plugin,
        memory::create_engram,
        memory::engram,
        memory::search,
        memory::create_context,
        memory::context,
        memory::add_to_context,
        memory::run_workflow,
        observe::events,
        observe::openapi,
        crate::cluster::status,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    tags(
        (name = "service", description = "Health and readiness (no role), metrics and events (role: read), this document (no role)"),
        (name = "agents", description = "Queries and feedback (role: operator), the agents (role: read)"),
        (name = "plugins", description = "Plugins loaded (role: admin) and unloaded (admin) while the service runs, and listed (read)"),
        (name = "memory", description = "The memory graph and workflows (role: operator)"),
    )
)]
struct ApiDoc;

/// The document, as pretty JSON (the version is the crate's).
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json().expect("the OpenAPI document is JSON") + "\n"
}

#[cfg(test)]
mod tests {
    /// The committed document is the one the code generates: regenerate it
    /// with `ELEX_WRITE_OPENAPI=1 cargo test -p elex-server openapi`.
    #[test]
    fn the_committed_openapi_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = super::document();
        if std::env::var_os("ELEX_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "server/openapi.json is out of date: run `ELEX_WRITE_OPENAPI=1 cargo test -p elex-server openapi`"
        );
        let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert_eq!(doc["paths"].as_object().unwrap().len(), 19, "every route is documented");
    }
}
