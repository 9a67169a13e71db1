//! The API's endpoints: which path and method does what, and how each request is checked.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use super::ApiContext;
use super::dfp::{self, DfpError, DfpResponse, NO_SERVICE_NAME_REMOVE, Params};
use super::http::{ApiError, HttpResponse, json_body, json_response, only_fields, query_pairs};
use super::state::StateError;
use super::views::{ServicesView, SourcesView};
use crate::pipeline::intake::{Applied, ApplyError};
use crate::pipeline::overrides::{AdminState, BackendOverride, Edit, ServiceRef, check_weight};

/// Dispatches on method and path; `Err` becomes `{"error", "field"}`.
pub async fn route(
    context: &ApiContext,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let segments: Vec<String> = request
        .uri()
        .path()
        .split('/')
        .skip(1)
        .map(|s| super::http::decode(s, false))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::bad("path", format!("path: {e}")))?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let allowed: &[Method] = match segments.as_slice() {
        ["v1", "sources"] if method == Method::GET => return Ok(sources(context)),
        ["v1", "refresh"] if method == Method::POST => return Ok(refresh(context)),
        ["v1", "services"] if method == Method::GET => return Ok(services(context)),
        ["v1", "services", name, "backends", backend] => {
            let edit = match method {
                Method::PUT => Some(set_backend(name, backend, request).await?),
                Method::DELETE => Some(Edit::Clear {
                    service: ServiceRef::parse(name),
                    backend: parse_backend(backend, "backend")?,
                }),
                _ => None,
            };
            if let Some(edit) = edit {
                return change(context, edit).await;
            }
            &[Method::PUT, Method::DELETE]
        }
        ["v1", "services", name, "switch"] => {
            let edit = match method {
                Method::POST | Method::PUT => Some(switch(name, request).await?),
                Method::DELETE => Some(Edit::ClearSwitch {
                    service: ServiceRef::parse(name),
                }),
                _ => None,
            };
            if let Some(edit) = edit {
                return change(context, edit).await;
            }
            &[Method::POST, Method::PUT, Method::DELETE]
        }
        // docker-flow-proxy answers these whatever the method.
        ["v1", "docker-flow-proxy", "reconfigure"] => {
            return Ok(reconfigure(context, &request).await);
        }
        ["v1", "docker-flow-proxy", "remove"] => return Ok(remove(context, &request).await),
        ["v1", "docker-flow-proxy", "ping"] => {
            return Ok(json_response(StatusCode::OK, &DfpResponse::ok("")));
        }
        ["v1", "sources"] | ["v1", "services"] => &[Method::GET],
        ["v1", "refresh"] => &[Method::POST],
        _ => {
            return Err(ApiError::not_found(
                "path",
                format!("path: no endpoint {}", request.uri().path()),
            ));
        }
    };
    let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        format!(
            "method: {method} is not allowed on {path}; use {}",
            names.join(", ")
        ),
    )
    .response();
    if let Ok(value) = names.join(", ").parse() {
        response.headers_mut().insert(hyper::header::ALLOW, value);
    }
    Ok(response)
}

fn sources(context: &ApiContext) -> HttpResponse {
    json_response(
        StatusCode::OK,
        &SourcesView {
            sources: context.sources.sources(),
        },
    )
}

/// `POST /v1/refresh`: every source re-reads everything now, as on SIGHUP (marathon-lb's
/// `/_mlb_signal/hup`). Answers 202 with the sources asked; the API's own source has nothing to re-read.
fn refresh(context: &ApiContext) -> HttpResponse {
    let own = context.state.id();
    let asked: Vec<_> = context
        .sources
        .refresh_all()
        .into_iter()
        .filter(|id| id != own)
        .collect();
    tracing::info!(
        sources = asked.len(),
        "refresh asked through the API, re-reading every source"
    );
    json_response(StatusCode::ACCEPTED, &json!({ "refreshing": asked }))
}

fn services(context: &ApiContext) -> HttpResponse {
    let current = context.publisher.current();
    let view = ServicesView::build(
        &context.publisher.inputs_view(),
        current.as_deref(),
        context.dataplanes.dataplanes(),
    );
    json_response(StatusCode::OK, &view)
}

fn parse_backend(text: &str, field: &str) -> Result<SocketAddr, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad(
            field,
            format!("{field}: {text:?} is not an address like 10.0.0.1:8080 or [::1]:8080"),
        )
    })
}

/// `PUT /v1/services/<name>/backends/<ip:port>` with `{"state": "ready|drain|maint", "weight": 1..=1000}`.
async fn set_backend(
    name: &str,
    backend: &str,
    request: Request<Incoming>,
) -> Result<Edit, ApiError> {
    let backend = parse_backend(backend, "backend")?;
    let body = json_body(request.into_body()).await?;
    only_fields(&body, &["state", "weight"])?;
    let state = match body.get("state") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(AdminState::parse(s).ok_or_else(|| {
            ApiError::bad(
                "state",
                format!("state: {s:?} is not ready, drain or maint"),
            )
        })?),
        Some(other) => {
            return Err(ApiError::bad(
                "state",
                format!("state: {other} is not ready, drain or maint"),
            ));
        }
    };
    let weight = match body.get("weight") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => Some(
            check_weight(n.as_i64().unwrap_or_default())
                .map_err(|e| ApiError::bad("weight", e.to_string()))?,
        ),
        Some(other) => {
            return Err(ApiError::bad(
                "weight",
                format!("weight: {other} is not an integer in 1..=1000"),
            ));
        }
    };
    Ok(Edit::Set {
        service: ServiceRef::parse(name),
        backend,
        value: BackendOverride { state, weight },
    })
}

/// `POST /v1/services/<name>/switch` with `{"backends": ["ip:port", ...]}`.
async fn switch(name: &str, request: Request<Incoming>) -> Result<Edit, ApiError> {
    let body = json_body(request.into_body()).await?;
    only_fields(&body, &["backends"])?;
    let Some(Value::Array(list)) = body.get("backends") else {
        return Err(ApiError::bad(
            "backends",
            "backends: a list of \"ip:port\" strings is required",
        ));
    };
    let mut backends = BTreeSet::new();
    for (i, item) in list.iter().enumerate() {
        let field = format!("backends[{i}]");
        let text = item
            .as_str()
            .ok_or_else(|| ApiError::bad(&field, format!("{field}: {item} is not a string")))?;
        backends.insert(parse_backend(text, &field)?);
    }
    Ok(Edit::Switch {
        service: ServiceRef::parse(name),
        backends,
    })
}

/// Applies an override edit and answers with the snapshot that carries it.
async fn change(context: &ApiContext, edit: Edit) -> Result<HttpResponse, ApiError> {
    let applied = context.state.edit(edit.clone()).await.map_err(api_error)?;
    let inputs = context.publisher.inputs_view();
    let listen = match edit.service() {
        ServiceRef::Listen(listen) => Some(*listen),
        named => named.resolve(&inputs.merged().catalog),
    };
    let name = match edit.service() {
        ServiceRef::Name(name) => json!(name),
        ServiceRef::Listen(_) => Value::Null,
    };
    let mut answer = json!({
        "service": name,
        "listen": listen,
        "version": applied.version,
        "changed": applied.changed,
    });
    let overrides = &inputs.overrides;
    match &edit {
        Edit::Set { backend, .. } | Edit::Clear { backend, .. } => {
            answer["backend"] = json!(backend);
            answer["override"] = json!(listen.and_then(|l| overrides.backend(l, *backend)));
        }
        Edit::Switch { .. } | Edit::ClearSwitch { .. } => {
            answer["switch"] = json!(listen.and_then(|l| overrides.switch(l)));
        }
    }
    Ok(json_response(StatusCode::OK, &answer))
}

fn api_error(error: StateError) -> ApiError {
    match error {
        StateError::Apply(ApplyError::Override(e)) => {
            let status = if e.is_not_found() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, e.field(), e.to_string())
        }
        other => {
            let (status, field) = failure(&other);
            ApiError::new(status, field, format!("{field}: {other}"))
        }
    }
}

/// Status and field of a change that was valid but did not go through (or was not saved).
fn failure(error: &StateError) -> (StatusCode, &'static str) {
    match error {
        StateError::Apply(ApplyError::Publish(_)) => (StatusCode::CONFLICT, "snapshot"),
        StateError::Apply(ApplyError::Stopped) => (StatusCode::SERVICE_UNAVAILABLE, "controlplane"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "state_file"),
    }
}

fn dfp_answer(status: u16, response: &DfpResponse) -> HttpResponse {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        response,
    )
}

fn dfp_params(request: &Request<Incoming>) -> Result<Params, DfpError> {
    query_pairs(request.uri().query())
        .map(Params::new)
        .map_err(|e| DfpError {
            status: e.status.as_u16(),
            field: e.field,
            message: e.message,
        })
}

fn dfp_failure(name: &str, error: &StateError) -> HttpResponse {
    if let StateError::Refused(refused) = error {
        return dfp_answer(refused.status, &DfpResponse::error(name, refused));
    }
    let (status, field) = match error {
        StateError::Apply(ApplyError::Override(e)) => (StatusCode::BAD_REQUEST, e.field()),
        other => {
            let (status, field) = failure(other);
            (status, field.to_string())
        }
    };
    let error = DfpError {
        status: status.as_u16(),
        field,
        message: error.to_string(),
    };
    dfp_answer(error.status, &DfpResponse::error(name, &error))
}

fn with_applied(mut response: DfpResponse, applied: Applied) -> DfpResponse {
    response.ringway_version = applied.version;
    response.ringway_changed = Some(applied.changed);
    response
}

/// docker-flow-proxy's `reconfigure`.
async fn reconfigure(context: &ApiContext, request: &Request<Incoming>) -> HttpResponse {
    let params = match dfp_params(request) {
        Ok(params) => params,
        Err(e) => return dfp_answer(e.status, &DfpResponse::error("", &e)),
    };
    let name = params.service_name().unwrap_or_default().to_string();
    let policy = &context.policy;
    let parsed = match dfp::parse_reconfigure(&params)
        .and_then(|parsed| policy.check_ports(&parsed.registration).map(|()| parsed))
    {
        Ok(parsed) => parsed,
        Err(e) => return dfp_answer(e.status, &DfpResponse::error(&name, &e)),
    };
    let hosts_from_name = parsed.hosts_from_name;
    let registration = match dfp::resolve(parsed)
        .await
        .and_then(|r| policy.check_backends(&r, hosts_from_name).map(|()| r))
    {
        Ok(registration) => registration,
        Err(e) => return dfp_answer(e.status, &DfpResponse::error(&name, &e)),
    };
    match context
        .state
        .reconfigure(registration.clone(), policy)
        .await
    {
        Ok(applied) => dfp_answer(
            200,
            &with_applied(
                DfpResponse::ok(&name).with_registration(&registration),
                applied,
            ),
        ),
        Err(e) => dfp_failure(&name, &e),
    }
}

/// docker-flow-proxy's `remove`. Removing what was never registered answers OK, as docker-flow-proxy
/// does (its swarm listener retries failures), and says so in `Message`.
async fn remove(context: &ApiContext, request: &Request<Incoming>) -> HttpResponse {
    let params = match dfp_params(request) {
        Ok(params) => params,
        Err(e) => return dfp_answer(e.status, &DfpResponse::error("", &e)),
    };
    let Some(name) = params.service_name().map(str::to_string) else {
        let error = DfpError {
            status: 400,
            field: "serviceName".into(),
            message: NO_SERVICE_NAME_REMOVE.into(),
        };
        return dfp_answer(400, &DfpResponse::error("", &error));
    };
    match context.state.remove(&name).await {
        Ok(Some(applied)) => dfp_answer(200, &with_applied(DfpResponse::ok(&name), applied)),
        Ok(None) => {
            let mut response = DfpResponse::ok(&name);
            response.message = format!(
                "serviceName: {name:?} was not registered through the API; nothing changed"
            );
            response.ringway_version = context.publisher.current().map(|p| p.version());
            response.ringway_changed = Some(false);
            dfp_answer(200, &response)
        }
        Err(e) => dfp_failure(&name, &e),
    }
}
