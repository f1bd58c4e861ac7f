//! The staff incident API under `/staff/api/v1/incidents`: open, list, show, update, acknowledge
//! obligations, close, and the Art. 33(3) draft. Every route needs a staff session that passed a
//! second factor (the breach register's [`leadmaps_core::tenancy::BreachScope`] comes from it);
//! closing also spends a step-up grant for `incident.close`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use leadmaps_core::breach::{
    Ack, Assessment, BreachStoreExt as _, DataSet, Details, Engine, Incident, NewIncident,
    ObligationId, Reassessment, Risk, Severity, Status,
};
use leadmaps_core::tenancy::BreachScope;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Ctx, SensitiveAction, Subject, error, json_body, staff_principal, staff_session};

/// The incident routes, merged into the staff router.
pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/staff/api/v1/incidents", get(list).post(open))
        .route("/staff/api/v1/incidents/{id}", get(show).post(update))
        .route(
            "/staff/api/v1/incidents/{id}/obligations/{obligation}/ack",
            post(ack),
        )
        .route("/staff/api/v1/incidents/{id}/close", post(close))
        .route("/staff/api/v1/incidents/{id}/draft", get(draft))
}

/// The staff session's breach scope and the engine, or the response that refuses.
async fn breach(ctx: &Ctx, headers: &HeaderMap) -> Result<(BreachScope, Arc<Engine>), Response> {
    let session = staff_session(ctx, headers).await?;
    let principal = staff_principal(&session, None)
        .map_err(|_| error(StatusCode::FORBIDDEN, "staff access needs a second factor"))?;
    let scope = ctx
        .services()
        .gate
        .authorize_breach(&principal)
        .map_err(|_| error(StatusCode::FORBIDDEN, "staff access needs a second factor"))?;
    let engine = ctx
        .state
        .incidents
        .clone()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "incidents are not configured"))?;
    Ok((scope, engine))
}

/// Maps a breach error: the rule broken is told to staff (messages name rules, never data).
pub(super) fn failed(e: &leadmaps_core::Error) -> Response {
    use leadmaps_core::{Error, ErrorKind};
    match (e, e.kind()) {
        (Error::Invalid(message), _) => error(StatusCode::UNPROCESSABLE_ENTITY, message),
        (Error::Conflict(message), _) => error(StatusCode::CONFLICT, message),
        (_, ErrorKind::NotFound) => error(StatusCode::NOT_FOUND, "not found"),
        (_, ErrorKind::Denied) => error(StatusCode::FORBIDDEN, "not permitted"),
        (_, kind) => {
            tracing::warn!(?kind, "incident route failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "try again later")
        }
    }
}

pub(super) fn bad(message: &str) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// An incident as JSON, each obligation with where it stands now.
fn incident_json(incident: &Incident, now: OffsetDateTime) -> Value {
    let mut value = serde_json::to_value(incident).unwrap_or(Value::Null);
    if let Some(list) = value.get_mut("obligations").and_then(Value::as_array_mut) {
        for (json, obligation) in list.iter_mut().zip(&incident.obligations) {
            json["standing"] = json!(obligation.standing(now).as_str());
        }
    }
    value
}

/// An id from the path; one that does not parse names nothing: not found.
pub(super) fn id_of<T: std::str::FromStr>(text: &str) -> Result<T, leadmaps_core::Error> {
    text.parse().map_err(|_| leadmaps_core::Error::NotFound)
}

async fn list(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let (scope, engine) = match breach(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = engine.now();
    match (engine.incidents(&scope).await, engine.due(&scope).await) {
        (Ok(incidents), Ok(due)) => axum::Json(json!({
            "incidents": incidents.iter().map(|i| incident_json(i, now)).collect::<Vec<_>>(),
            "due": due,
        }))
        .into_response(),
        (Err(e), _) | (_, Err(e)) => failed(&e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OpenBody {
    title: String,
    severity: String,
    personal_data: bool,
    risk: Option<String>,
    /// RFC 3339; now when absent.
    aware_at: Option<String>,
    workspaces: Vec<String>,
    data_sets: Vec<DataSet>,
    details: Option<Details>,
}

fn parse_workspaces(
    ids: &[String],
) -> Result<Vec<leadmaps_core::tenancy::WorkspaceId>, leadmaps_core::Error> {
    ids.iter()
        .map(|id| {
            id.parse()
                .map_err(|_| leadmaps_core::Error::invalid("a workspace id is not a UUID"))
        })
        .collect()
}

fn assessment(personal_data: bool, risk: Option<&str>) -> Result<Assessment, leadmaps_core::Error> {
    let risk = match risk {
        Some(risk) => risk.parse::<Risk>()?,
        None => Risk::None,
    };
    Ok(Assessment {
        personal_data,
        risk,
    })
}

async fn open(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (scope, engine) = match breach(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let body: OpenBody = match json_body(&headers, &body) {
        Ok(body) => body,
        Err((code, message)) => return error(code, message),
    };
    let new = (|| {
        Ok::<_, leadmaps_core::Error>(NewIncident {
            title: body.title,
            severity: body.severity.parse::<Severity>()?,
            assessment: assessment(body.personal_data, body.risk.as_deref())?,
            aware_at: match &body.aware_at {
                Some(at) => OffsetDateTime::parse(at, &Rfc3339).map_err(|_| {
                    leadmaps_core::Error::invalid("aware_at is not an RFC 3339 time")
                })?,
                None => engine.now(),
            },
            workspaces: parse_workspaces(&body.workspaces)?,
            data_sets: body.data_sets,
            details: body.details.unwrap_or_default(),
        })
    })();
    let new = match new {
        Ok(new) => new,
        Err(e) => return failed(&e),
    };
    match engine.open(&scope, new).await {
        Ok(incident) => (
            StatusCode::CREATED,
            axum::Json(incident_json(&incident, engine.now())),
        )
            .into_response(),
        Err(e) => failed(&e),
    }
}

async fn show(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (scope, engine) = match breach(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(e) => return failed(&e),
    };
    let incident = match engine.incident(&scope, id).await {
        Ok(incident) => incident,
        Err(e) => return failed(&e),
    };
    let register: Vec<_> = match engine.store().all_register_entries(&scope).await {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| e.incident == id)
            .map(|e| {
                json!({
                    "seq": e.seq,
                    "at": e.at.format(&Rfc3339).unwrap_or_default(),
                    "actor": leadmaps_core::breach::actor_name(e.actor),
                    "change": e.change.as_str(),
                    "hash": e.hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                })
            })
            .collect(),
        Err(e) => return failed(&e),
    };
    let deliveries = match engine.store().deliveries(&scope, id).await {
        Ok(deliveries) => deliveries,
        Err(e) => return failed(&e),
    };
    axum::Json(json!({
        "incident": incident_json(&incident, engine.now()),
        "register": register,
        "deliveries": deliveries,
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UpdateBody {
    severity: Option<String>,
    personal_data: Option<bool>,
    risk: Option<String>,
    workspaces: Option<Vec<String>>,
    data_sets: Option<Vec<DataSet>>,
    details: Option<Details>,
    status: Option<String>,
}

/// Reassesses (severity, assessment, workspaces, data sets), replaces the details, and moves the
/// status forward, each when given, each with its own register entry.
async fn update(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (scope, engine) = match breach(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(e) => return failed(&e),
    };
    let body: UpdateBody = match json_body(&headers, &body) {
        Ok(body) => body,
        Err((code, message)) => return error(code, message),
    };
    let mut incident = match engine.incident(&scope, id).await {
        Ok(incident) => incident,
        Err(e) => return failed(&e),
    };
    let change = (|| {
        let assessment = match (body.personal_data, &body.risk) {
            (None, None) => None,
            (personal, risk) => Some(assessment(
                personal.unwrap_or(incident.assessment.personal_data),
                Some(risk.as_deref().unwrap_or(incident.assessment.risk.as_str())),
            )?),
        };
        Ok::<_, leadmaps_core::Error>(Reassessment {
            severity: body
                .severity
                .as_deref()
                .map(str::parse::<Severity>)
                .transpose()?,
            assessment,
            workspaces: body
                .workspaces
                .as_deref()
                .map(parse_workspaces)
                .transpose()?,
            data_sets: body.data_sets,
        })
    })();
    let change = match change {
        Ok(change) => change,
        Err(e) => return failed(&e),
    };
    let status = match body.status.as_deref().map(str::parse::<Status>).transpose() {
        Ok(status) => status,
        Err(e) => return failed(&e),
    };
    if change != Reassessment::default() {
        match engine.reassess(&scope, id, change).await {
            Ok(next) => incident = next,
            Err(e) => return failed(&e),
        }
    }
    if let Some(details) = body.details {
        match engine.set_details(&scope, id, details).await {
            Ok(next) => incident = next,
            Err(e) => return failed(&e),
        }
    }
    if let Some(status) = status {
        match engine.advance(&scope, id, status).await {
            Ok(next) => incident = next,
            Err(e) => return failed(&e),
        }
    }
    axum::Json(incident_json(&incident, engine.now())).into_response()
}

/// Body of the acknowledge routes of incidents and vulnerability reports.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AckBody {
    /// What shows it was done (for the authority: its reference).
    evidence: Option<String>,
    /// With `evidence`: why it is done late.
    late_reason: Option<String>,
    /// Without `evidence`: why it is late.
    reason: Option<String>,
}

/// What an acknowledge route names and says: the record's id, the obligation, and the
/// acknowledgement (404 for ids that do not parse, then the body's refusal).
pub(super) fn ack_of<T: std::str::FromStr>(
    id: &str,
    obligation: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(T, ObligationId, Ack), (StatusCode, &'static str)> {
    let (Ok(id), Ok(obligation)) = (id_of::<T>(id), obligation.parse::<ObligationId>()) else {
        return Err((StatusCode::NOT_FOUND, "not found"));
    };
    let body: AckBody = json_body(headers, body)?;
    let ack = body.ack().ok_or((
        StatusCode::UNPROCESSABLE_ENTITY,
        "send evidence (done) or reason (late), not both",
    ))?;
    Ok((id, obligation, ack))
}

impl AckBody {
    /// Done with evidence (and a reason when late), or still owed with the reason it is late;
    /// `None` for neither or both.
    fn ack(self) -> Option<Ack> {
        match (self.evidence, self.reason) {
            (Some(evidence), None) => Some(Ack::Done {
                evidence,
                late_reason: self.late_reason,
            }),
            (None, Some(reason)) => Some(Ack::Reason(reason)),
            _ => None,
        }
    }
}

async fn ack(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path((id, obligation)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (scope, engine) = match breach(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let (id, obligation, ack) = match ack_of(&id, &obligation, &headers, &body) {
        Ok(found) => found,
        Err((code, message)) => return error(code, message),
    };
    match engine.acknowledge(&scope, id, obligation, ack).await {
        Ok(incident) => axum::Json(incident_json(&incident, engine.now())).into_response(),
        Err(e) => failed(&e),
    }
}

async fn close(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (scope, engine) = match breach(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(e) => return failed(&e),
    };
    // Check first, so a refused close does not spend the step-up grant.
    match engine.incident(&scope, id).await {
        Ok(incident) => {
            if let Err(e) = incident.clone().close(engine.now()) {
                return failed(&e);
            }
        }
        Err(e) => return failed(&e),
    }
    let staff = match ctx.state.session(&headers).await.map(|s| s.subject) {
        Some(Subject::Staff(staff)) => staff,
        _ => return error(StatusCode::FORBIDDEN, "staff only"),
    };
    if ctx
        .services()
        .step_up
        .spend(staff, SensitiveAction::CloseIncident)
        .await
        .is_err()
    {
        return error(
            StatusCode::FORBIDDEN,
            "closing an incident needs a step-up: POST /staff/api/v1/step-up with action incident.close",
        );
    }
    match engine.close(&scope, id).await {
        Ok(incident) => axum::Json(incident_json(&incident, engine.now())).into_response(),
        Err(e) => failed(&e),
    }
}

#[derive(Deserialize)]
struct DraftQuery {
    format: Option<String>,
}

async fn draft(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<DraftQuery>,
) -> Response {
    let (scope, engine) = match breach(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(e) => return failed(&e),
    };
    let draft = match engine.draft(&scope, id).await {
        Ok(draft) => draft,
        Err(e) => return failed(&e),
    };
    match query.format.as_deref() {
        None | Some("json") => axum::Json(draft.to_json()).into_response(),
        Some("md") => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            draft.to_markdown(),
        )
            .into_response(),
        Some(_) => bad("format is json or md"),
    }
}
