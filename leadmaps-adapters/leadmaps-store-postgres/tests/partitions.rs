//! Events partitioned by month: where rows land, how partitions are locked down, idempotency
//! across batches and months, partitions made on demand (also after one was dropped, and by two
//! stores at once), the optimistic write falling back to the careful one, and the upgrade of an
//! unpartitioned V2 schema.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use leadmaps_core::ingest::{EventId, RejectReason, Verdict};
use leadmaps_core::store::{DropCount, EventSink, Store};
use leadmaps_core::tenancy::{Action, Region};
use leadmaps_store_postgres::{
    DEFAULT_APP_ROLE, LOOKUP_ROLE, OWNER_ROLE, PostgresStore, doctor, migrate_to,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use common::{Tenants, event};

/// The partitions of leadmaps.events, by name.
async fn partitions(su: &Client) -> BTreeSet<String> {
    su.query(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'leadmaps.events'::regclass",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// A policy as comparable text: name, kind, command, roles, USING, WITH CHECK.
async fn policies_of(su: &Client, table: &str) -> Vec<String> {
    su.query(
        "SELECT format('%s %s %s %s %s %s', policyname, permissive, cmd, roles, qual, with_check)
         FROM pg_policies WHERE schemaname = 'leadmaps' AND tablename = $1 ORDER BY policyname",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

#[tokio::test]
async fn events_land_in_monthly_partitions_that_are_locked_down() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = PostgresStore::connect(&db.store_config()).await.unwrap();
            assert!(store.capabilities().bulk_copy);
            let t = Tenants::new(datetime!(2026-02-15 12:00 UTC));
            let (a, b) = (t.workspace(&store).await, t.workspace(&store).await);
            // 23:30 at UTC-2 on New Year's Eve is already January in UTC: partitions are UTC months.
            let events = [
                event(a, 1, datetime!(2021-03-10 08:00 UTC)),
                event(a, 2, datetime!(2026-02-15 12:00 UTC)),
                event(b, 3, datetime!(2026-02-15 12:00 UTC)),
                event(a, 4, datetime!(2031-12-31 23:30 -2)),
            ];
            assert_eq!(
                store.append_events(&t.batch(&events)).await.unwrap(),
                [Verdict::Accepted; 4]
            );
            let su = db.superuser().await;
            let placed: Vec<(String, Uuid)> = su
                .query(
                    "SELECT tableoid::regclass::text, id FROM leadmaps.events ORDER BY id",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let expected = [
                ("leadmaps.events_y2021m03", 1),
                ("leadmaps.events_y2026m02", 2),
                ("leadmaps.events_y2026m02", 3),
                ("leadmaps.events_y2032m01", 4),
            ]
            .map(|(table, n)| (table.to_owned(), Uuid::from_u128(n)));
            assert_eq!(placed, expected);

            // Every partition (made by the migration for this month and the next, or on demand)
            // is a locked-down copy of the parent's tenancy.
            let names = partitions(&su).await;
            assert!(names.len() >= 3, "{names:?}");
            let parent_policies: Vec<String> = policies_of(&su, "events").await;
            assert_eq!(parent_policies.len(), 2);
            for name in &names {
                let row = su
                    .query_one(
                        "SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner)::text,
                                EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = 1),
                                (SELECT array_agg(DISTINCT pg_get_userbyid(x.grantee)::text)
                                 FROM aclexplode(c.relacl) x)
                         FROM pg_class c WHERE c.oid = format('leadmaps.%I', $1::text)::regclass",
                        &[name],
                    )
                    .await
                    .unwrap();
                let (enabled, forced, owner, indexed, grantees): (bool, bool, String, bool, Vec<String>) =
                    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
                assert!(enabled && forced, "{name}: RLS enabled and forced");
                assert_eq!(owner, OWNER_ROLE, "{name}");
                assert!(indexed, "{name}: an index leads with workspace_id");
                assert_eq!(grantees, [OWNER_ROLE], "{name}: no privilege for anyone but the owner");
                assert_eq!(policies_of(&su, name).await, parent_policies, "{name}: the parent's policies");
                for role in [DEFAULT_APP_ROLE, LOOKUP_ROLE] {
                    let any: bool = su
                        .query_one(
                            "SELECT has_table_privilege($1, format('leadmaps.%I', $2::text), 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')",
                            &[&role, name],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    assert!(!any, "{name}: {role} has no privilege on the partition");
                }
            }

            // The app role reaches events through the parent only, under the parent's policies.
            let mut app = db.connect_as(DEFAULT_APP_ROLE).await;
            let mut tx = app.transaction().await.unwrap();
            tx.execute(
                "SELECT set_config('leadmaps.workspace_id', $1, true)",
                &[&a.to_string()],
            )
            .await
            .unwrap();
            let through_parent: i64 = tx
                .query_one("SELECT count(*) FROM leadmaps.events", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(through_parent, 3, "A's events, in three partitions");
            for sql in [
                "SELECT count(*) FROM leadmaps.events_y2026m02",
                "INSERT INTO leadmaps.events_y2026m02 SELECT * FROM leadmaps.events LIMIT 0",
                "DELETE FROM leadmaps.events_y2026m02",
            ] {
                let savepoint = tx.savepoint("direct").await.unwrap();
                let error = savepoint.batch_execute(sql).await.expect_err(sql);
                assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{sql}");
                savepoint.rollback().await.unwrap();
            }
            tx.rollback().await.unwrap();

            // FORCE binds the owner on each partition too: it may name them, and sees no row.
            let mut as_owner = db.superuser().await;
            let owner = as_owner.transaction().await.unwrap();
            owner
                .batch_execute(&format!("SET LOCAL ROLE {OWNER_ROLE}"))
                .await
                .unwrap();
            for name in &names {
                let seen: i64 = owner
                    .query_one(&format!("SELECT count(*) FROM leadmaps.{name}"), &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(seen, 0, "{name} as owner");
            }
            owner.rollback().await.unwrap();

            let report = doctor(&db.store_config()).await.unwrap();
            assert!(report.is_clean(), "{report}");
        })
        .await;
}

#[tokio::test]
async fn idempotency_spans_batches_and_months_and_retention_forgets_ids() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = PostgresStore::connect(&db.store_config()).await.unwrap();
            let t = Tenants::new(datetime!(2026-02-15 12:00 UTC));
            let (a, b) = (t.workspace(&store).await, t.workspace(&store).await);
            let feb = datetime!(2026-02-10 10:00 UTC);
            let day = Duration::days(1);
            let first = [
                event(a, 1, feb),
                event(a, 2, feb + 30 * day),
                event(a, 1, feb + 60 * day),
                event(a, 3, feb),
                event(b, 1, feb + 60 * day),
            ];
            assert_eq!(
                store.append_events(&t.batch(&first)).await.unwrap(),
                [
                    Verdict::Accepted,
                    Verdict::Accepted,
                    Verdict::Duplicate,
                    Verdict::Accepted,
                    Verdict::Accepted
                ]
            );
            // The same ids in other months, in a later batch: still duplicates.
            let second = [
                event(a, 1, feb + 90 * day),
                event(a, 4, feb + 90 * day),
                event(a, 2, feb),
                event(a, 4, feb),
            ];
            assert_eq!(
                store.append_events(&t.batch(&second)).await.unwrap(),
                [
                    Verdict::Duplicate,
                    Verdict::Accepted,
                    Verdict::Duplicate,
                    Verdict::Duplicate
                ]
            );
            let read = t.admin(a, Action::EventRead);
            let stored = store
                .events(&read, feb - day, feb + 365 * day, 100)
                .await
                .unwrap();
            let ids: Vec<u128> = stored.iter().map(|e| e.id.0.as_u128()).collect();
            assert_eq!(ids, [1, 3, 2, 4], "the first occurrences, by time then id");
            assert_eq!(stored[0], event(a, 1, feb), "every field round-trips");
            assert_eq!(stored[3], event(a, 4, feb + 90 * day));
            let su = db.superuser().await;
            let ids_kept: i64 = su
                .query_one(
                    "SELECT count(*) FROM leadmaps.event_ids WHERE workspace_id = $1",
                    &[a.as_uuid()],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(ids_kept, 4);

            // Retention deletes the events and forgets their ids with them, so event_ids does not
            // grow without bound; an id re-sent after its event expired is stored again.
            let (gone, record) = store
                .delete_events_before(&t.retention(a), feb + day, 1000, feb + day)
                .await
                .unwrap();
            assert_eq!(gone, 2, "ids 1 and 3");
            assert_eq!(record.unwrap().after.unwrap()["deleted"], 2);
            assert!(
                !store
                    .has_event(&read, EventId(Uuid::from_u128(1)))
                    .await
                    .unwrap()
            );
            assert!(
                store
                    .has_event(&read, EventId(Uuid::from_u128(2)))
                    .await
                    .unwrap()
            );
            assert_eq!(
                store
                    .append_events(&t.batch(&[event(a, 1, feb + 120 * day), event(a, 2, feb)]))
                    .await
                    .unwrap(),
                [Verdict::Accepted, Verdict::Duplicate]
            );
            let ids: Vec<u128> = store
                .events(&read, feb - day, feb + 365 * day, 100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id.0.as_u128())
                .collect();
            assert_eq!(ids, [2, 4, 1], "only the accepted event was moved");
            let b_read = t.admin(b, Action::EventRead);
            assert_eq!(
                store
                    .events(&b_read, feb - day, feb + 365 * day, 100)
                    .await
                    .unwrap()
                    .len(),
                1,
                "B untouched"
            );
        })
        .await;
}

#[tokio::test]
async fn a_partition_dropped_behind_the_stores_back_is_made_again() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = PostgresStore::connect(&db.store_config()).await.unwrap();
            let t = Tenants::new(datetime!(2026-02-15 12:00 UTC));
            let a = t.workspace(&store).await;
            let at = datetime!(2024-06-01 00:00 UTC);
            store
                .append_events(&t.batch(&[event(a, 1, at)]))
                .await
                .unwrap();
            let su = db.superuser().await;
            assert!(partitions(&su).await.contains("events_y2024m06"));
            su.batch_execute("DROP TABLE leadmaps.events_y2024m06")
                .await
                .unwrap();
            assert_eq!(
                store
                    .append_events(&t.batch(&[event(a, 2, at + Duration::days(3))]))
                    .await
                    .unwrap(),
                [Verdict::Accepted]
            );
            assert!(partitions(&su).await.contains("events_y2024m06"));
            let read = t.admin(a, Action::EventRead);
            let ids: Vec<u128> = store
                .events(&read, at, at + Duration::days(30), 10)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id.0.as_u128())
                .collect();
            assert_eq!(ids, [2]);
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_racing_for_new_months_both_succeed() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let config = db.store_config().with_pool_size(2);
            let first = Arc::new(PostgresStore::connect(&config).await.unwrap());
            let second = Arc::new(PostgresStore::connect(&config).await.unwrap());
            let t = Tenants::new(datetime!(2026-02-15 12:00 UTC));
            let a = t.workspace(first.as_ref()).await;
            let start = datetime!(2040-01-15 00:00 UTC);
            let batches = |offset: u128| {
                (0..12u128)
                    .map(|m| {
                        let at = start + Duration::days(31 * m as i64);
                        t.batch(&[
                            event(a, 1000 * m + offset, at),
                            event(a, 1000 * m + 500, at),
                        ])
                    })
                    .collect::<Vec<_>>()
            };
            let (left, right) = (batches(1), batches(2));
            let run = |store: Arc<PostgresStore>, batches: Vec<_>| {
                tokio::spawn(async move {
                    let mut verdicts = Vec::new();
                    for batch in batches {
                        verdicts.push(store.append_events(&batch).await.unwrap());
                    }
                    verdicts
                })
            };
            let (left, right) = (run(first.clone(), left), run(second.clone(), right));
            let (left, right) = (left.await.unwrap(), right.await.unwrap());
            for (l, r) in left.iter().zip(&right) {
                assert_eq!((l[0], r[0]), (Verdict::Accepted, Verdict::Accepted));
                // The shared id is stored once, by whichever batch got there first.
                let shared = [l[1], r[1]];
                assert!(
                    shared.contains(&Verdict::Accepted) && shared.contains(&Verdict::Duplicate),
                    "{shared:?}"
                );
            }
            let su = db.superuser().await;
            let made: Vec<String> = partitions(&su)
                .await
                .into_iter()
                .filter(|name| name.starts_with("events_y2040") || name.starts_with("events_y2041"))
                .collect();
            assert_eq!(made.len(), 12, "{made:?}");
            first.close();
            second.close();
        })
        .await;
}

#[tokio::test]
async fn upgrading_from_the_unpartitioned_schema_keeps_every_event() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let config = db.store_config();
            assert_eq!(migrate_to(&config, 2).await.unwrap().version, 2);
            let su = db.superuser().await;
            let t = Tenants::new(datetime!(2026-02-15 12:00 UTC));
            let ws = Uuid::new_v4();
            su.execute(
                "INSERT INTO leadmaps.workspaces (workspace_id, name, region, created_at)
                 VALUES ($1, 'old', 'eu', now())",
                &[&ws],
            )
            .await
            .unwrap();
            for (n, at) in [
                (1u128, datetime!(2020-05-05 05:05 UTC)),
                (2, datetime!(2026-02-01 00:00 UTC)),
            ] {
                su.execute(
                    "INSERT INTO leadmaps.events (workspace_id, id, received_at, domain, name, hostname,
                         pathname, props, interactive, visitor)
                     VALUES ($1, $2, $3, 'example.com', 'pageview', 'example.com', '/', '{\"k\": \"v\"}', true, $4)",
                    &[&ws, &Uuid::from_u128(n), &at, &vec![n as u8; 16]],
                )
                .await
                .unwrap();
            }
            let store = PostgresStore::connect(&config).await.unwrap();
            let workspace = leadmaps_core::tenancy::WorkspaceId::from_uuid(ws);
            let read = t.admin(workspace, Action::EventRead);
            let from: OffsetDateTime = datetime!(2020-01-01 00:00 UTC);
            let moved = store
                .events(&read, from, datetime!(2027-01-01 00:00 UTC), 10)
                .await
                .unwrap();
            assert_eq!(
                moved.iter().map(|e| e.id.0.as_u128()).collect::<Vec<_>>(),
                [1, 2]
            );
            assert_eq!(moved[0].props.get("k").map(String::as_str), Some("v"));
            assert_eq!(
                store
                    .append_events(&t.batch(&[event(workspace, 1, datetime!(2026-02-20 00:00 UTC))]))
                    .await
                    .unwrap(),
                [Verdict::Duplicate],
                "ids of moved events are known"
            );
            assert!(partitions(&su).await.contains("events_y2020m05"));
            let old_table: Option<String> = su
                .query_one("SELECT to_regclass('leadmaps.events_v2')::text", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(old_table, None, "the unpartitioned table is gone");
            let report = doctor(&config).await.unwrap();
            assert!(report.is_clean(), "{report}");
        })
        .await;
}

#[tokio::test]
async fn the_partition_function_refuses_wide_or_odd_requests() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            leadmaps_store_postgres::migrate(&db.store_config())
                .await
                .unwrap();
            let app = db.connect_as(DEFAULT_APP_ROLE).await;
            let call = "SELECT leadmaps.ensure_event_partitions($1::date[])";
            let too_many: Vec<time::Date> = (0..65)
                .map(|m| (datetime!(2030-01-01 00:00 UTC) + Duration::days(31 * m)).date())
                .collect();
            let odd = vec![datetime!(1969-12-01 00:00 UTC).date()];
            for months in [too_many, odd] {
                let error = app.query_one(call, &[&months]).await.unwrap_err();
                assert_eq!(error.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
            }
            let made: i32 = app
                .query_one(call, &[&vec![datetime!(2030-07-19 00:00 UTC).date(); 3]])
                .await
                .unwrap()
                .get(0);
            assert_eq!(made, 1, "one month asked three times");
            let again: i32 = app
                .query_one(call, &[&vec![datetime!(2030-07-01 00:00 UTC).date()]])
                .await
                .unwrap()
                .get(0);
            assert_eq!(again, 0);
            // Nobody else may call it.
            let lookup_can: bool = db
                .superuser()
                .await
                .query_one(
                    "SELECT has_function_privilege($1, 'leadmaps.ensure_event_partitions(date[])', 'EXECUTE')",
                    &[&LOOKUP_ROLE],
                )
                .await
                .unwrap()
                .get(0);
            assert!(!lookup_can);
        })
        .await;
}

#[tokio::test]
async fn connect_refuses_an_app_role_that_cannot_stage_batches() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            leadmaps_store_postgres::migrate(&db.store_config())
                .await
                .unwrap();
            db.superuser()
                .await
                .batch_execute(&format!(
                    "REVOKE TEMPORARY ON DATABASE \"{}\" FROM PUBLIC",
                    db.name
                ))
                .await
                .unwrap();
            let error = PostgresStore::connect(&db.store_config().with_migrate_on_connect(false))
                .await
                .unwrap_err();
            assert_eq!(error.kind(), leadmaps_core::ErrorKind::Invalid, "{error:?}");
            assert!(error.to_string().contains("TEMPORARY"), "{error}");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_racing_another_writer_for_an_id_waits_for_it() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = Arc::new(PostgresStore::connect(&db.store_config()).await.unwrap());
            let t = Arc::new(Tenants::new(datetime!(2026-02-15 12:00 UTC)));
            let a = t.workspace(store.as_ref()).await;
            let at = datetime!(2026-02-15 12:00 UTC);
            for (n, commit) in [(1u128, true), (2, false)] {
                // Another writer has claimed id n and not finished.
                let mut other = db.connect_as(DEFAULT_APP_ROLE).await;
                let tx = other.transaction().await.unwrap();
                tx.execute(
                    "SELECT set_config('leadmaps.workspace_id', $1, true)",
                    &[&a.to_string()],
                )
                .await
                .unwrap();
                tx.execute(
                    "INSERT INTO leadmaps.event_ids (workspace_id, id) VALUES ($1, $2)",
                    &[a.as_uuid(), &Uuid::from_u128(n)],
                )
                .await
                .unwrap();
                let batch = t.batch(&[event(a, n, at), event(a, n + 100, at)]);
                let pending = {
                    let store = store.clone();
                    tokio::spawn(async move { store.append_events(&batch).await })
                };
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                assert!(
                    !pending.is_finished(),
                    "the batch waits for the other writer"
                );
                if commit {
                    tx.commit().await.unwrap();
                } else {
                    tx.rollback().await.unwrap();
                }
                let verdicts = pending.await.unwrap().unwrap();
                let first = if commit {
                    Verdict::Duplicate
                } else {
                    Verdict::Accepted
                };
                assert_eq!(
                    verdicts,
                    [first, Verdict::Accepted],
                    "other writer commit={commit}"
                );
            }
        })
        .await;
}

#[tokio::test]
async fn a_batch_meeting_a_stored_id_is_written_carefully_for_every_workspace() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = PostgresStore::connect(&db.store_config()).await.unwrap();
            let t = Tenants::new(datetime!(2026-02-15 12:00 UTC));
            let (a, b) = (t.workspace(&store).await, t.workspace(&store).await);
            let at = datetime!(2026-02-15 12:00 UTC);
            assert_eq!(
                store
                    .append_events(&t.batch(&[event(a, 1, at), event(b, 1, at)]))
                    .await
                    .unwrap(),
                [Verdict::Accepted; 2]
            );
            // Stored and new ids of two workspaces, a repeat within the batch, and drop counts:
            // the optimistic attempt fails on A's id 1, in another month, and rolls back whole.
            let mut batch = t.batch(&[
                event(b, 2, at),
                event(a, 1, at + Duration::days(40)),
                event(a, 2, at),
                event(b, 1, at),
                event(b, 2, at),
            ]);
            for (ws, count) in [(a, 3), (b, 5)] {
                batch
                    .push_drop(
                        Region::Eu,
                        t.ingest(ws),
                        at.date(),
                        RejectReason::Bot,
                        count,
                    )
                    .unwrap();
            }
            assert_eq!(
                store.append_events(&batch).await.unwrap(),
                [
                    Verdict::Accepted,
                    Verdict::Duplicate,
                    Verdict::Accepted,
                    Verdict::Duplicate,
                    Verdict::Duplicate
                ]
            );
            // Batches with a new and a stored id (written carefully at once), then batches of new
            // ids only (optimistic again once the careful run is over): the same verdicts.
            for n in 3..45u128 {
                let (batch, verdicts) = if n < 20 {
                    (
                        t.batch(&[event(a, n, at), event(b, 1, at)]),
                        vec![Verdict::Accepted, Verdict::Duplicate],
                    )
                } else {
                    (t.batch(&[event(a, n, at)]), vec![Verdict::Accepted])
                };
                assert_eq!(
                    store.append_events(&batch).await.unwrap(),
                    verdicts,
                    "batch {n}"
                );
            }
            let su = db.superuser().await;
            for (ws, expected) in [(a, (1..45).collect::<Vec<u128>>()), (b, vec![1, 2])] {
                for table in ["leadmaps.events", "leadmaps.event_ids"] {
                    let ids: Vec<u128> = su
                        .query(
                            &format!("SELECT id FROM {table} WHERE workspace_id = $1 ORDER BY id"),
                            &[ws.as_uuid()],
                        )
                        .await
                        .unwrap()
                        .iter()
                        .map(|row| row.get::<_, Uuid>(0).as_u128())
                        .collect();
                    assert_eq!(ids, expected, "{table}: every id once");
                }
            }
            for (ws, count) in [(a, 3), (b, 5)] {
                assert_eq!(
                    store
                        .drop_counts(&t.admin(ws, Action::EventRead))
                        .await
                        .unwrap(),
                    [DropCount {
                        day: at.date(),
                        reason: RejectReason::Bot,
                        count
                    }],
                    "drops counted once"
                );
            }
        })
        .await;
}

/// Retention drops a month's partition when it is wholly expired and holds only the workspace's
/// events (their id claims go with it), and deletes row by row in a month it shares; the other
/// workspace's events, and anything inside the period, stay; each step is audited with its count.
#[tokio::test]
async fn retention_drops_a_month_the_workspace_has_alone_and_deletes_in_shared_ones() {
    let server = server_or_skip!();
    server
        .with_db(|db| async move {
            let store = PostgresStore::connect(&db.store_config()).await.unwrap();
            let t = Tenants::new(datetime!(2026-04-01 12:00 UTC));
            let (a, b) = (t.workspace(&store).await, t.workspace(&store).await);
            let (jan, feb, apr) = (
                datetime!(2026-01-10 10:00 UTC),
                datetime!(2026-02-10 10:00 UTC),
                datetime!(2026-04-01 10:00 UTC),
            );
            store
                .append_events(&t.batch(&[
                    event(a, 1, jan),
                    event(a, 2, jan + Duration::days(5)),
                    event(a, 3, feb),
                    event(a, 4, apr),
                    event(b, 1, feb),
                ]))
                .await
                .unwrap();
            let su = db.superuser().await;
            assert!(partitions(&su).await.contains("events_y2026m01"));
            let cutoff = datetime!(2026-03-15 00:00 UTC);
            let retention = t.retention(a);
            let mut steps = Vec::new();
            loop {
                let (deleted, record) = store
                    .delete_events_before(&retention, cutoff, 1000, cutoff)
                    .await
                    .unwrap();
                if deleted == 0 {
                    assert!(record.is_none());
                    break;
                }
                assert_eq!(record.unwrap().after.unwrap()["deleted"], deleted);
                steps.push((deleted, partitions(&su).await.contains("events_y2026m01")));
            }
            // January (A's alone) went as a partition, February (shared with B) row by row.
            assert_eq!(steps, [(2, false), (1, false)]);
            assert!(partitions(&su).await.contains("events_y2026m02"));
            let read = t.admin(a, Action::EventRead);
            let left: Vec<u128> = store
                .events(
                    &read,
                    jan - Duration::days(40),
                    apr + Duration::days(1),
                    100,
                )
                .await
                .unwrap()
                .iter()
                .map(|e| e.id.0.as_u128())
                .collect();
            assert_eq!(left, [4], "inside the period");
            let b_read = t.admin(b, Action::EventRead);
            assert_eq!(
                store
                    .events(
                        &b_read,
                        feb - Duration::days(1),
                        feb + Duration::days(1),
                        10
                    )
                    .await
                    .unwrap()
                    .len(),
                1,
                "B's event in the shared month stays"
            );
            // The dropped month's ids were forgotten with it: re-sent, they are stored again (in a
            // January partition made anew).
            assert_eq!(
                store
                    .append_events(&t.batch(&[event(a, 1, jan)]))
                    .await
                    .unwrap(),
                [Verdict::Accepted]
            );
            // The functions only work for the workspace of the transaction, and only on a month
            // that ends before the cutoff.
            let mut app = db.connect_as(DEFAULT_APP_ROLE).await;
            let tx = app.transaction().await.unwrap();
            tx.execute(
                "SELECT set_config('leadmaps.workspace_id', $1, true)",
                &[&a.to_string()],
            )
            .await
            .unwrap();
            let refused = tx
                .query_one(
                    "SELECT leadmaps.drop_event_month($1, DATE '2026-02-01', $2)",
                    &[b.as_uuid(), &cutoff],
                )
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
            drop(tx);
            let tx = app.transaction().await.unwrap();
            tx.execute(
                "SELECT set_config('leadmaps.workspace_id', $1, true)",
                &[&a.to_string()],
            )
            .await
            .unwrap();
            let early = tx
                .query_one(
                    "SELECT leadmaps.drop_event_month($1, DATE '2026-04-01', $2)",
                    &[a.as_uuid(), &cutoff],
                )
                .await
                .unwrap_err();
            assert_eq!(early.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
            drop(tx);
            assert!(partitions(&su).await.contains("events_y2026m04"));
        })
        .await;
}
