//! The staff vulnerability API under `/staff/api/v1/vulnerabilities`: record a report (an
//! actively exploited one opens an S0 incident), list with what is due, show, acknowledge an
//! obligation (answered, disclosed, or why it is late), close. Every route needs a staff session
//! that passed a second factor; report contents are never logged.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use leadmaps_core::tenancy::BreachScope;
use leadmaps_core::vulnerability::{Finding, Intake, NewReport, Report};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::incidents::{ack_of, failed, id_of};
use super::{Ctx, error, json_body, staff_principal, staff_session};

/// The vulnerability routes, merged into the staff router.
pub(super) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/staff/api/v1/vulnerabilities", get(list).post(record))
        .route("/staff/api/v1/vulnerabilities/{id}", get(show))
        .route(
            "/staff/api/v1/vulnerabilities/{id}/obligations/{obligation}/ack",
            post(ack),
        )
        .route("/staff/api/v1/vulnerabilities/{id}/close", post(close))
}

/// The staff session's breach scope and the intake, or the response that refuses.
async fn intake(ctx: &Ctx, headers: &HeaderMap) -> Result<(BreachScope, Arc<Intake>), Response> {
    let session = staff_session(ctx, headers).await?;
    let principal = staff_principal(&session, None)
        .map_err(|_| error(StatusCode::FORBIDDEN, "staff access needs a second factor"))?;
    let scope = ctx
        .services()
        .gate
        .authorize_breach(&principal)
        .map_err(|_| error(StatusCode::FORBIDDEN, "staff access needs a second factor"))?;
    let intake = ctx.state.vulnerabilities.clone().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "vulnerability intake is not configured",
        )
    })?;
    Ok((scope, intake))
}

fn report_json(report: &Report, now: OffsetDateTime) -> Value {
    let mut value = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Some(list) = value.get_mut("obligations").and_then(Value::as_array_mut) {
        for (json, obligation) in list.iter_mut().zip(&report.obligations) {
            json["standing"] = json!(obligation.standing(now).as_str());
        }
    }
    value
}

async fn list(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let (scope, intake) = match intake(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = intake.now();
    match (intake.reports(&scope).await, intake.due(&scope).await) {
        (Ok(reports), Ok(due)) => axum::Json(json!({
            "reports": reports.iter().map(|r| report_json(r, now)).collect::<Vec<_>>(),
            "due": due,
        }))
        .into_response(),
        (Err(e), _) | (_, Err(e)) => failed(&e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RecordBody {
    title: String,
    summary: String,
    reporter: Option<String>,
    /// `critical`, `high`, `medium` or `low`.
    severity: String,
    active_exploit: bool,
    /// RFC 3339; now when absent.
    received_at: Option<String>,
}

async fn record(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let (scope, intake) = match intake(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let body: RecordBody = match json_body(&headers, &body) {
        Ok(body) => body,
        Err((code, message)) => return error(code, message),
    };
    let new = (|| {
        Ok::<_, leadmaps_core::Error>(NewReport {
            title: body.title,
            summary: body.summary,
            reporter: body.reporter,
            finding: body.severity.parse::<Finding>()?,
            active_exploit: body.active_exploit,
            received_at: match &body.received_at {
                Some(at) => OffsetDateTime::parse(at, &Rfc3339).map_err(|_| {
                    leadmaps_core::Error::invalid("received_at is not an RFC 3339 time")
                })?,
                None => intake.now(),
            },
        })
    })();
    let new = match new {
        Ok(new) => new,
        Err(e) => return failed(&e),
    };
    match intake.record(&scope, new).await {
        Ok(report) => (
            StatusCode::CREATED,
            axum::Json(report_json(&report, intake.now())),
        )
            .into_response(),
        Err(e) => failed(&e),
    }
}

async fn show(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (scope, intake) = match intake(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(e) => return failed(&e),
    };
    match intake.report(&scope, id).await {
        Ok(report) => axum::Json(report_json(&report, intake.now())).into_response(),
        Err(e) => failed(&e),
    }
}

async fn ack(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path((id, obligation)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (scope, intake) = match intake(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let (id, obligation, ack) = match ack_of(&id, &obligation, &headers, &body) {
        Ok(found) => found,
        Err((code, message)) => return error(code, message),
    };
    match intake.acknowledge(&scope, id, obligation, ack).await {
        Ok(report) => axum::Json(report_json(&report, intake.now())).into_response(),
        Err(e) => failed(&e),
    }
}

async fn close(State(ctx): State<Ctx>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (scope, intake) = match intake(&ctx, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let id = match id_of(&id) {
        Ok(id) => id,
        Err(e) => return failed(&e),
    };
    match intake.close(&scope, id).await {
        Ok(report) => axum::Json(report_json(&report, intake.now())).into_response(),
        Err(e) => failed(&e),
    }
}
